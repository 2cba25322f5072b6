package methods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/jupyterhub"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// JupyterCopy puts a file or directory from the source storage into a
// user's Jupyter workspace, through JupyterHub: it starts the user's server
// if needed, uploads through the server's contents API in base64 chunks read
// straight from disk (memory stays flat), under a temporary name that is
// renamed to the target at the end, so a failed upload never leaves a
// partial file under the target's name.
type JupyterCopy struct {
	Storage *storage.Storage
	Jupyter Jupyter
	Logger  *slog.Logger // nil: slog.Default()
	// Alive reports whether an operation may still be running somewhere;
	// temporary uploads of operations that are not are removed from the
	// workspace before the next upload. nil: nothing is removed.
	Alive func(ctx context.Context, operationID string) bool
	// MaxDepth bounds how many folders deep a tree may go (MAX_PATH_DEPTH).
	MaxDepth int
}

// Jupyter is how jupyter_copy reaches JupyterHub.
type Jupyter struct {
	Hub          *jupyterhub.Client // nil when JUPYTERHUB_URL is unset: the method is unavailable
	ServiceToken string             // JUPYTERHUB_API_TOKEN; a request's jupyter_token wins
	StartTimeout time.Duration      // JUPYTERHUB_START_TIMEOUT (0: 120s)
	ChunkSize    int64              // bytes per contents API chunk (0: 8 MiB)
	// TokenTTL is the lifetime of the tokens minted for a user's server
	// (renewed when a third is left; 0: 10 minutes).
	TokenTTL time.Duration
}

// MintedTokenNote is the note of the tokens jupyter_copy mints for users'
// servers (and deletes when done).
const MintedTokenNote = "skao staging"

func (JupyterCopy) Name() string { return "jupyter_copy" }

// Traits: run by the jupyter function, which holds the hub's service token.
func (JupyterCopy) Traits() staging.Traits {
	return staging.Traits{Function: "jupyter", NeedsTarget: true, JupyterToken: true}
}

// WorkspaceTempName is the temporary name of an operation's upload, at the
// root of the workspace. Unlike local temporary names it does not start with
// a dot (Jupyter servers refuse to write, rename or delete hidden files) and
// holds no dot at all: notebook 6.4's rename tests "hidden" by cutting the
// relative path at the length of the server's root directory, and refuses
// (500) when the cut lands on a dot. A name without dots at the root is
// never refused as the rename's source.
func WorkspaceTempName(operationID string) string { return "skao-staging-" + operationID + "-tmp" }

// workspaceTemp matches WorkspaceTempName's names; compiled when first
// needed, not at every start.
var workspaceTemp = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^skao-staging-([0-9a-f-]{36})-tmp$`) })

func (m JupyterCopy) Prepare(ctx context.Context, req *staging.Request) (*staging.Plan, error) {
	if m.Jupyter.Hub == nil {
		return nil, staging.Errorf(staging.Unavailable, "jupyter_copy is not available: JUPYTERHUB_URL is not set")
	}
	src, err := m.Storage.Source(req.Source)
	if err != nil {
		return nil, err
	}
	if !src.Info.Mode().IsRegular() && !src.Info.IsDir() {
		return nil, unsupported(req.Source)
	}
	rel, err := storage.TargetRel(req.Target)
	if err != nil {
		return nil, err
	}
	rel = filepath.ToSlash(rel)
	if hidden(rel) {
		return nil, staging.Errorf(staging.Rejected, "Jupyter servers refuse hidden files and folders: %s", req.Target)
	}
	if req.JupyterToken == "" && m.Jupyter.ServiceToken == "" {
		return nil, staging.Errorf(staging.Rejected, "jupyter_copy needs a JupyterHub token: pass jupyter_token (no service token is configured)")
	}
	w := &workspace{m: m, user: req.Username, given: req.JupyterToken, src: src, rel: rel}
	// The listing's walk, one folder per level; the tree's root twice
	// (the listing's and the upload's), the file being uploaded, the two
	// folders os.Root holds at most while it opens a path inside the tree,
	// and the connections to the hub and to the user's server.
	return &staging.Plan{Lock: staging.LockKey("jupyter:"+req.Username, rel), Run: w.run, Files: walkFiles(m.MaxDepth) + 7}, nil
}

// workspace is one jupyter_copy under way.
type workspace struct {
	m       JupyterCopy
	user    string
	given   string // the request's jupyter_token, if any
	token   string // the token for the hub's API (never sent to the user's server unless it is the user's own)
	service bool   // token is JUPYTERHUB_API_TOKEN, not the caller's
	src     *storage.Source
	rel     string // target, relative to the workspace root, with slashes
	c       *jupyterhub.Contents
}

func (w *workspace) run(ctx context.Context, job *staging.Job) (*staging.Result, error) {
	timeout := w.m.Jupyter.StartTimeout
	if timeout <= 0 {
		timeout = 120 * time.Second
	}
	own, err := w.tokens(ctx)
	if err != nil {
		return nil, err
	}
	startCtx, cancel := context.WithTimeout(ctx, timeout)
	server, err := w.m.Jupyter.Hub.Server(startCtx, w.token, w.user)
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, staging.Wrap(staging.UpstreamTimeout,
				fmt.Sprintf("The Jupyter server of %s did not become ready within %s", w.user, timeout), err)
		}
		return nil, w.hubError(err)
	}
	if own {
		w.c = w.m.Jupyter.Hub.Contents(server, jupyterhub.StaticToken(w.token))
	} else {
		// The service token never goes to the user's server (the user's
		// own code, which could keep it): a token owned by the user, for
		// their server only, short-lived, deleted when done.
		access := w.m.Jupyter.Hub.ServerAccess(w.token, w.user, w.m.Jupyter.TokenTTL, MintedTokenNote)
		access.Failed = func(err error) {
			w.logger().WarnContext(ctx, "delete a token minted for a Jupyter server", "user", w.user, "error", err)
		}
		defer access.Close(ctx)
		if _, err := access.Token(ctx); err != nil {
			return nil, w.mintError(err)
		}
		w.c = w.m.Jupyter.Hub.Contents(server, mintedTokens{access, w})
	}
	w.sweep(ctx, job.Operation.ID)

	// A tree is checked for names Jupyter refuses before anything is written.
	var entries []entry
	var total int64
	if w.src.Info.IsDir() {
		tree, err := storage.OpenTree(w.m.Storage.SourceRoot(), w.src.Rel)
		if err != nil {
			return nil, sourceError(err, w.src.Rel)
		}
		defer tree.Close()
		if entries, total, err = listUpload(ctx, tree, w.src.Rel, w.m.MaxDepth); err != nil {
			return nil, err
		}
		for _, e := range entries {
			if hidden(e.rel) {
				return nil, staging.Errorf(staging.Rejected, "Jupyter servers refuse hidden files and folders: %s", path.Join(w.src.Rel, e.rel))
			}
		}
	} else {
		total = w.src.Info.Size()
	}
	job.SetTotal(total)

	parent := path.Dir(w.rel)
	if err := w.mkdirs(ctx, parent); err != nil {
		return nil, err
	}
	where := fmt.Sprintf("%s in the Jupyter workspace of %s", w.rel, w.user)
	if done, err := w.present(ctx, entries); done || err != nil {
		return &staging.Result{Message: alreadyAvailable(where)}, err
	}
	tmp := WorkspaceTempName(job.Operation.ID)
	if err := w.upload(ctx, job, entries, tmp); err != nil {
		w.remove(ctx, tmp)
		return nil, err
	}
	if err := job.Confirm(ctx); err != nil {
		w.remove(ctx, tmp)
		return nil, err
	}
	err = w.rename(ctx, tmp)
	switch {
	case err == nil:
	case jupyterhub.StatusOf(err) == http.StatusConflict:
		// Someone put something there while we uploaded.
		w.remove(ctx, tmp)
		if done, perr := w.present(ctx, entries); done || perr != nil {
			return &staging.Result{Message: alreadyAvailable(where)}, perr
		}
		return nil, w.conflict()
	case jupyterhub.StatusOf(err) == http.StatusInternalServerError && !strings.Contains(w.rel, "/"):
		// notebook 6.4 cannot rename to this top-level name (its bug, see
		// rename; no separator to double): write it directly.
		w.remove(ctx, tmp)
		return w.direct(ctx, job, entries, total, where, err)
	default:
		// Any other failure, including a 5xx: our upload only is removed.
		w.remove(ctx, tmp)
		return nil, w.contentsError(err, w.rel)
	}
	return &staging.Result{Message: staged(w.user, "jupyter_copy"), Bytes: total}, nil
}

// direct writes the source straight under the target's name, for a server
// that cannot rename the upload there (renameErr): only if nothing is there
// right before (what is there is compared, as at the start, and never
// touched), and never removed if the upload fails, since the contents API
// cannot tell what was written there from what someone else put there
// meanwhile. A partial copy may then stay at the target: the answer says so.
func (w *workspace) direct(ctx context.Context, job *staging.Job, entries []entry, total int64, where string, renameErr error) (*staging.Result, error) {
	if done, err := w.present(ctx, entries); done || err != nil {
		return &staging.Result{Message: alreadyAvailable(where)}, err
	}
	w.logger().WarnContext(ctx, "Jupyter server cannot rename the upload; writing the target directly",
		"user", w.user, "path", w.rel, "error", renameErr)
	job.Add(-total)
	if err := job.Confirm(ctx); err != nil {
		return nil, err
	}
	if err := w.upload(ctx, job, entries, w.rel); err != nil {
		kind, detail := staging.KindOf(err)
		return nil, staging.Wrap(kind, fmt.Sprintf("%s (the server cannot rename to %s, so it was written directly: "+
			"what was written is not removed)", detail, w.rel), err)
	}
	return &staging.Result{Message: staged(w.user, "jupyter_copy"), Bytes: total}, nil
}

// upload writes the source to dst: a file, or a tree (folders first).
func (w *workspace) upload(ctx context.Context, job *staging.Job, entries []entry, dst string) error {
	if w.src.Info.IsDir() {
		return w.uploadTree(ctx, job, entries, dst)
	}
	return w.uploadFile(ctx, job, w.m.Storage.SourceRoot(), w.src.Rel, dst)
}

// rename moves the upload at tmp to the target. A 5xx (notebook 6.4's
// rename refusing a name where its hidden-path test cuts at a dot) is tried
// again with the target's first separator doubled, once, twice, three
// times: the server treats "a//b" as "a/b", and the cut moves.
func (w *workspace) rename(ctx context.Context, tmp string) error {
	err := w.c.Rename(ctx, tmp, w.rel)
	if i := strings.Index(w.rel, "/"); i >= 0 {
		for pad := 1; pad <= 3 && jupyterhub.StatusOf(err) >= 500; pad++ {
			err = w.c.Rename(ctx, tmp, w.rel[:i]+strings.Repeat("/", pad)+w.rel[i:])
		}
	}
	return err
}

// mkdirs creates the missing folders of dir, refusing (409) a file in the
// way.
func (w *workspace) mkdirs(ctx context.Context, dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	p := ""
	for _, name := range strings.Split(dir, "/") {
		p = path.Join(p, name)
		m, err := w.c.Get(ctx, p, false)
		switch {
		case jupyterhub.StatusOf(err) == http.StatusNotFound:
			if err := w.c.Mkdir(ctx, p); err != nil {
				return w.contentsError(err, p)
			}
		case err != nil:
			return w.contentsError(err, p)
		case m.Type != "directory":
			return staging.Errorf(staging.Conflict, "A file is in the way of the target folder in the Jupyter workspace of %s: %s", w.user, p)
		}
	}
	return nil
}

// present reports whether the target already holds the source: a file of
// the same size, or a folder with the same names and file sizes. Anything
// else there is a conflict; nothing is overwritten.
func (w *workspace) present(ctx context.Context, entries []entry) (bool, error) {
	m, err := w.c.Get(ctx, w.rel, false)
	if jupyterhub.StatusOf(err) == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, w.contentsError(err, w.rel)
	}
	if !w.src.Info.IsDir() {
		if m.Type == "directory" || m.Size == nil || *m.Size != w.src.Info.Size() {
			return false, w.conflict()
		}
		return true, nil
	}
	if m.Type != "directory" {
		return false, w.conflict()
	}
	there := map[string]int64{}
	if err := w.list(ctx, w.rel, ".", 0, len(entries), there); err != nil {
		if errors.Is(err, errDiffers) {
			return false, w.conflict()
		}
		return false, err
	}
	source := make(map[string]bool, len(entries))
	for _, e := range entries {
		source[e.rel] = true
	}
	for rel := range there {
		if !source[rel] {
			return false, w.conflict()
		}
	}
	for _, e := range entries {
		size, ok := there[e.rel]
		if !ok {
			// Jupyter servers leave names matching their hide_globs
			// (__pycache__, *.pyc, *.so, *~) out of listings, yet serve
			// them by name.
			m, err := w.c.Get(ctx, path.Join(w.rel, e.rel), false)
			switch {
			case jupyterhub.StatusOf(err) == http.StatusNotFound:
				return false, w.conflict()
			case err != nil:
				return false, w.contentsError(err, path.Join(w.rel, e.rel))
			case m.Type == "directory":
				size = -1
			case m.Size != nil:
				size = *m.Size
			default:
				size = -2
			}
		}
		if (e.dir && size != -1) || (!e.dir && size != e.size) {
			return false, w.conflict()
		}
	}
	return true, nil
}

// errDiffers stops list once the tree cannot be the source's.
var errDiffers = errors.New("the tree differs from the source")

// list records the tree at p (named rel in the record, depth folders below
// the target) as sizes, -1 for folders. The tree is the user's: list stops
// (errDiffers) once it holds more than max entries or goes deeper than
// MaxDepth, which the source's tree does not.
func (w *workspace) list(ctx context.Context, p, rel string, depth, max int, into map[string]int64) error {
	into[rel] = -1
	if len(into) > max || (w.m.MaxDepth > 0 && depth > w.m.MaxDepth) {
		return errDiffers
	}
	m, err := w.c.Get(ctx, p, true)
	if err != nil {
		return w.contentsError(err, p)
	}
	if len(into)+len(m.Content) > max {
		return errDiffers
	}
	for _, child := range m.Content {
		name := path.Join(rel, child.Name)
		if child.Type == "directory" {
			if err := w.list(ctx, path.Join(p, child.Name), name, depth+1, max, into); err != nil {
				return err
			}
		} else if child.Size != nil {
			into[name] = *child.Size
		} else {
			into[name] = -2
		}
	}
	return nil
}

// uploadTree creates the tree under tmp: folders first, then every file.
func (w *workspace) uploadTree(ctx context.Context, job *staging.Job, entries []entry, tmp string) error {
	tree, err := storage.OpenTree(w.m.Storage.SourceRoot(), w.src.Rel)
	if err != nil {
		return sourceError(err, w.src.Rel)
	}
	defer tree.Close()
	for _, e := range entries {
		dst := path.Join(tmp, e.rel)
		if e.dir {
			if err := w.c.Mkdir(ctx, dst); err != nil {
				return w.contentsError(err, dst)
			}
			continue
		}
		if err := w.uploadFile(ctx, job, tree, e.rel, dst); err != nil {
			return err
		}
	}
	return nil
}

// uploadFile streams one source file to dst and checks that the server
// holds all of it.
func (w *workspace) uploadFile(ctx context.Context, job *staging.Job, root *os.Root, rel, dst string) error {
	f, info, err := storage.OpenFile(root, rel)
	if err != nil {
		return sourceError(err, rel)
	}
	defer f.Close()
	var sent int64
	m, err := w.c.Upload(ctx, dst, f, info.Size(), w.m.Jupyter.ChunkSize, func(n int64) {
		job.Add(n - sent)
		sent = n
	})
	if err != nil {
		return w.contentsError(err, dst)
	}
	if m.Size == nil || *m.Size != info.Size() {
		return staging.Errorf(staging.Upstream, "The Jupyter server of %s holds %v bytes of %s after the upload, not %d",
			w.user, sizeText(m.Size), dst, info.Size())
	}
	return nil
}

// sweep removes temporary uploads that an operation which is no longer
// alive left at the workspace root (its function died mid-upload, or the
// server died and the upload could not be deleted then).
func (w *workspace) sweep(ctx context.Context, current string) {
	if w.m.Alive == nil {
		return
	}
	root, err := w.c.Get(ctx, "", true)
	if err != nil {
		return // the upload itself will say what is wrong
	}
	for _, child := range root.Content {
		m := workspaceTemp().FindStringSubmatch(child.Name)
		if m == nil || m[1] == current || w.m.Alive(ctx, m[1]) {
			continue
		}
		w.remove(ctx, child.Name)
		w.logger().InfoContext(ctx, "removed an unfinished upload", "user", w.user, "path", child.Name)
	}
}

// remove deletes a temporary upload, even when the request was cancelled.
func (w *workspace) remove(ctx context.Context, tmp string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := w.c.Delete(ctx, tmp); err != nil && jupyterhub.StatusOf(err) != http.StatusNotFound {
		w.logger().WarnContext(ctx, "remove an unfinished upload", "user", w.user, "path", tmp, "error", err)
	}
}

func (w *workspace) logger() *slog.Logger {
	if w.m.Logger != nil {
		return w.m.Logger
	}
	return slog.Default()
}

func (w *workspace) conflict() error {
	return staging.Errorf(staging.Conflict, "A different file or folder already exists at %s in the Jupyter workspace of %s", w.rel, w.user)
}

// tokens chooses the token for the hub's API (w.token, w.service) and
// reports whether it may also go to the user's server: only a request's
// jupyter_token that the user owns may. A jupyter_token of someone else
// never reaches the user's server: a hub admin's with admin scopes
// (ActsAsAdmin) is replaced by the service token (which then mints one for
// the user's server), anyone else's is refused.
func (w *workspace) tokens(ctx context.Context) (own bool, err error) {
	if w.given == "" {
		w.token, w.service = w.m.Jupyter.ServiceToken, true
		return false, nil
	}
	w.token = w.given
	owner, err := w.m.Jupyter.Hub.Whoami(ctx, w.given)
	if err != nil {
		return false, w.hubError(err)
	}
	if owner.Kind != "service" && owner.Name == w.user {
		return true, nil
	}
	if !owner.ActsAsAdmin() || w.m.Jupyter.ServiceToken == "" {
		return false, staging.Errorf(staging.Forbidden, "jupyter_token belongs to %s, not %s", owner.Who(), w.user)
	}
	w.token, w.service = w.m.Jupyter.ServiceToken, true
	return false, nil
}

// mintedTokens are the tokens of a ServerAccess, its failures (renewals)
// told as the hub's.
type mintedTokens struct {
	a *jupyterhub.ServerAccess
	w *workspace
}

func (t mintedTokens) Token(ctx context.Context) (string, error) {
	tok, err := t.a.Token(ctx)
	if err != nil {
		return "", t.w.mintError(err)
	}
	return tok, nil
}

// mintError turns a failure to mint a token for the user's server into what
// the caller sees.
func (w *workspace) mintError(err error) error {
	var api *jupyterhub.APIError
	switch status := jupyterhub.StatusOf(err); {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return staging.Wrap(staging.Upstream, fmt.Sprintf("JupyterHub refused to make a token for the server of %s "+
			"with the service token (JUPYTERHUB_API_TOKEN): it needs the scope tokens", w.user), err)
	case status == http.StatusBadRequest && errors.As(err, &api):
		return staging.Wrap(staging.Upstream, fmt.Sprintf("JupyterHub refused a token for the server of %s: %s", w.user, api.Message), err)
	}
	return w.hubError(err)
}

// hubError turns a failure of the hub's API into what the caller sees.
// Tokens are never part of it.
func (w *workspace) hubError(err error) error {
	status := jupyterhub.StatusOf(err)
	switch {
	case errors.Is(err, jupyterhub.ErrUnreachable):
		return staging.Wrap(staging.Unavailable, "JupyterHub is unreachable at "+w.m.Jupyter.Hub.URL(), err)
	case errors.Is(err, jupyterhub.ErrTimeout):
		return staging.Wrap(staging.UpstreamTimeout, "JupyterHub did not answer within "+jupyterhub.RequestTimeout.String(), err)
	case errors.Is(err, jupyterhub.ErrSpawnFailed):
		return staging.Wrap(staging.Upstream, fmt.Sprintf("The Jupyter server of %s failed to start", w.user), err)
	case status == http.StatusNotFound:
		return staging.Wrap(staging.NotFound, "JupyterHub user "+w.user+" not found", err)
	case (status == http.StatusUnauthorized || status == http.StatusForbidden) && w.service:
		return staging.Wrap(staging.Upstream, "JupyterHub rejected the service token (JUPYTERHUB_API_TOKEN)", err)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return staging.Wrap(staging.Forbidden, "JupyterHub rejected the token given in jupyter_token for user "+w.user, err)
	case errors.Is(err, context.Canceled):
		return staging.Wrap(staging.Unavailable, "Staging interrupted", err)
	case status == http.StatusServiceUnavailable:
		// The hub is down behind its proxy, or restarting: transient.
		return staging.Wrap(staging.Unavailable, "JupyterHub is unavailable at "+w.m.Jupyter.Hub.URL()+" (HTTP 503)", err)
	case status == http.StatusTooManyRequests:
		// concurrent_spawn_limit and the like: transient.
		return staging.Wrap(staging.TooMany, "JupyterHub is busy (HTTP 429): try again shortly", err)
	case status != 0:
		return staging.Wrap(staging.Upstream, fmt.Sprintf("JupyterHub failed (HTTP %d)", status), err)
	}
	return staging.Wrap(staging.Upstream, "JupyterHub failed", err)
}

// contentsError turns a failure of the user's server into what the caller
// sees.
func (w *workspace) contentsError(err error, p string) error {
	var se *staging.Error
	if errors.As(err, &se) {
		return err // already told (a token that could not be renewed)
	}
	status := jupyterhub.StatusOf(err)
	var api *jupyterhub.APIError
	msg := ""
	if errors.As(err, &api) && api.Message != "" {
		msg = ": " + api.Message
	}
	switch {
	case errors.Is(err, jupyterhub.ErrUnreachable):
		return staging.Wrap(staging.Unavailable, fmt.Sprintf("The Jupyter server of %s is unreachable", w.user), err)
	case errors.Is(err, jupyterhub.ErrTimeout):
		return staging.Wrap(staging.UpstreamTimeout, fmt.Sprintf("The Jupyter server of %s did not answer on %s within %s", w.user, p, jupyterhub.RequestTimeout), err)
	case errors.Is(err, jupyterhub.ErrTooLarge):
		return staging.Wrap(staging.Upstream, fmt.Sprintf("The Jupyter server of %s answered more than %d MiB on %s", w.user, jupyterhub.MaxAnswer>>20, p), err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return staging.Wrap(staging.Unavailable, "Staging interrupted", err)
	case (status == http.StatusUnauthorized || status == http.StatusForbidden) && w.service:
		return staging.Wrap(staging.Upstream, fmt.Sprintf("The Jupyter server of %s rejected the token minted for it with the service token (JUPYTERHUB_API_TOKEN)", w.user), err)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return staging.Wrap(staging.Forbidden, fmt.Sprintf("The Jupyter server of %s refused to write %s with the token given in jupyter_token", w.user, p), err)
	case status >= 300 && status < 400, status == http.StatusMethodNotAllowed, status == http.StatusFailedDependency:
		// The hub answers for a stopped server: a redirect (GET), 405
		// (the methods that write) or 424.
		return staging.Wrap(staging.Unavailable, fmt.Sprintf("The Jupyter server of %s is not running: it was stopped during the staging", w.user), err)
	case status == http.StatusConflict:
		return w.conflict()
	case status == http.StatusInsufficientStorage, status == http.StatusInternalServerError && outOfSpace(msg):
		return staging.Wrap(staging.InsufficientStorage, "No space left in the Jupyter workspace of "+w.user, err)
	case status == http.StatusTooManyRequests:
		return staging.Wrap(staging.TooMany, fmt.Sprintf("The Jupyter server of %s is busy (HTTP 429)%s: try again shortly", w.user, msg), err)
	case status == http.StatusServiceUnavailable:
		return staging.Wrap(staging.Unavailable, fmt.Sprintf("The Jupyter server of %s is unavailable (HTTP 503)%s", w.user, msg), err)
	case status >= 400 && status < 500:
		return staging.Wrap(staging.Rejected, fmt.Sprintf("The Jupyter server of %s refused %s%s", w.user, p, msg), err)
	case status != 0:
		return staging.Wrap(staging.Upstream, fmt.Sprintf("The Jupyter server of %s failed on %s (HTTP %d)%s", w.user, p, status, msg), err)
	}
	return staging.Wrap(staging.Upstream, fmt.Sprintf("Upload of %s to the Jupyter server of %s failed", p, w.user), err)
}

// outOfSpace reports whether a Jupyter server's message tells a full disk
// or quota: it answers them as any failure to save (500), with Python's
// error text.
func outOfSpace(msg string) bool {
	return strings.Contains(msg, "[Errno 28]") || strings.Contains(msg, "[Errno 122]")
}

// hidden reports whether a slash-separated path has a hidden element.
func hidden(p string) bool {
	for _, name := range strings.Split(p, "/") {
		if strings.HasPrefix(name, ".") && name != "." {
			return true
		}
	}
	return false
}

func sizeText(n *int64) string {
	if n == nil {
		return "an unknown number of"
	}
	return fmt.Sprint(*n)
}

// maxUploadEntries bounds the files and folders of one jupyter_copy: the
// tree is listed before anything is uploaded (names Jupyter refuses are
// found first, and a retry compares the workspace with it), and every entry
// is one or more HTTP requests to the user's server.
const maxUploadEntries = 100_000

// entry is a file or folder of a tree to upload, relative to its top.
type entry struct {
	rel  string
	dir  bool
	size int64
}

// listUpload lists a tree to upload, each folder before its content, and the
// bytes of its files; links are followed to files inside the tree only.
func listUpload(ctx context.Context, tree *os.Root, src string, maxDepth int) ([]entry, int64, error) {
	var entries []entry
	var total int64
	add := func(e entry) error {
		if len(entries) == maxUploadEntries {
			return staging.Errorf(staging.Rejected, "jupyter_copy stages at most %d files and folders at once: %s holds more", maxUploadEntries, src)
		}
		entries = append(entries, e)
		total += e.size
		return nil
	}
	err := storage.Walk(ctx, tree, maxDepth, storage.Visitor{
		Folder: func(f *storage.Folder) error { return add(entry{rel: f.Rel, dir: true}) },
		File: func(f *storage.Folder, name string, _ bool) error {
			rel := path.Join(f.Rel, name)
			info, err := f.Stat(name)
			if err != nil {
				return &fs.PathError{Op: "stat", Path: rel, Err: err}
			}
			if !info.Mode().IsRegular() {
				return &fs.PathError{Op: "stat", Path: rel, Err: unsupportedLink(info)}
			}
			return add(entry{rel: rel, size: info.Size()})
		},
	})
	if err != nil {
		return nil, 0, walkError(err, src)
	}
	return entries, total, nil
}
