package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// maxBatch is the most items one request may carry.
const maxBatch = 1000

type api struct {
	f        *function.Function
	auth     *auth.Authorizer // AUTH_MODE=jupyterhub; nil allows everyone
	receiver *events.Receiver
	sender   *events.Sender // K_SINK, nil when unset
}

func (a *api) routes() http.Handler {
	m := httpx.NewMux()
	for _, p := range []string{"/stage_data", "/stage-data"} {
		m.Route(http.MethodPost, p, a.stageData)
		m.Route(http.MethodGet, p, a.download)
	}
	m.Route(http.MethodGet, "/config", a.config)
	m.Route(http.MethodGet, "/config/allowed-methods", a.allowedMethods)
	m.Route(http.MethodGet, "/operations", a.listOperations)
	m.Route(http.MethodGet, "/operations/{id}", a.getOperation)
	if a.f.Config.EnableFileCreator {
		m.Route(http.MethodPost, "/create-file", a.createFile)
	}
	m.Route(http.MethodPost, "/", a.receiver.ServeHTTP)
	a.webRoutes(m) // the page at GET /, /browse, /openapi.json, /docs (web.go)
	return m
}

// item is one element of the body's data.
type item struct {
	LocalPathOnStorage *string `json:"local_path_on_storage"`
	RelativePath       *string `json:"relative_path"`
	DID                *string `json:"did"` // a Rucio DID instead of a path
}

// result is one element of a batch answer.
type result struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
	Detail  string `json:"detail,omitempty"`
	ID      string `json:"id,omitempty"`
}

// stageData is POST /stage_data: one item or a batch, now or async.
func (a *api) stageData(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	method, username := q.Get("method"), q.Get("username")
	if method == "" || username == "" {
		httpx.Error(w, staging.Errorf(http.StatusUnprocessableEntity, "Query parameters method and username are required"))
		return
	}
	var body struct {
		Data json.RawMessage `json:"data"`
	}
	if err := httpx.DecodeJSON(w, r, &body); err != nil {
		httpx.Error(w, err)
		return
	}
	items, batch, err := decodeItems(body.Data, method)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	if err := a.auth.Authorize(r.Context(), auth.Token(r, q.Get("jupyter_token")), username); err != nil {
		httpx.Error(w, err)
		return
	}
	reqs := make([]staging.Request, len(items))
	for i, it := range items {
		reqs[i] = staging.Request{Method: method, Username: username, JupyterToken: q.Get("jupyter_token"),
			Source: deref(it.LocalPathOnStorage), Target: deref(it.RelativePath), DID: deref(it.DID),
			NoWait: method == "direct_download", CallerToken: auth.Token(r, "")}
	}
	if err := a.f.Service.Validate(&reqs[0]); err != nil {
		if status, _ := staging.StatusOf(err); status == http.StatusUnprocessableEntity {
			httpx.Error(w, err)
			return
		}
	}
	async := preferAsync(r)
	if method == "direct_download" && (batch || async) {
		httpx.Error(w, staging.Errorf(http.StatusUnprocessableEntity, "direct_download takes one item and answers with its content"))
		return
	}
	switch {
	case method == "direct_download":
		a.serveDownload(w, r, reqs[0])
	case batch:
		a.stageBatch(w, r, reqs, items, async)
	case async:
		out, err := a.submit(r.Context(), reqs[0])
		if err != nil {
			httpx.Error(w, err)
			return
		}
		w.Header().Set("Location", "/operations/"+out.Operation.ID)
		httpx.JSON(w, http.StatusAccepted, map[string]string{"status": "pending", "id": out.Operation.ID})
	default:
		if err := itemError(items[0], method); err != nil {
			httpx.Error(w, err)
			return
		}
		out, err := a.f.Service.Stage(r.Context(), reqs[0])
		if err != nil {
			httpx.Error(w, err)
			return
		}
		if out.Waiting {
			w.Header().Set("Location", "/operations/"+out.Operation.ID)
			httpx.JSON(w, http.StatusAccepted, result{Status: "pending", ID: out.Operation.ID})
			return
		}
		httpx.JSON(w, http.StatusOK, result{Status: "success", Message: out.Operation.Message, ID: out.Operation.ID})
	}
}

// decodeItems reads data: one object, or an array of 1 to maxBatch.
func decodeItems(data json.RawMessage, method string) ([]item, bool, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return nil, false, staging.Errorf(http.StatusUnprocessableEntity, "data is required")
	}
	var items []item
	batch := data[0] == '['
	if batch {
		if err := json.Unmarshal(data, &items); err != nil {
			return nil, false, staging.Wrap(http.StatusUnprocessableEntity, "data must be an object or an array of objects", err)
		}
		if len(items) == 0 || len(items) > maxBatch {
			return nil, false, staging.Errorf(http.StatusUnprocessableEntity, "data must hold 1 to %d items, not %d", maxBatch, len(items))
		}
		return items, true, nil
	}
	var one item
	if err := json.Unmarshal(data, &one); err != nil {
		return nil, false, staging.Wrap(http.StatusUnprocessableEntity, "data must be an object or an array of objects", err)
	}
	if err := itemError(one, method); err != nil {
		return nil, false, err
	}
	return []item{one}, false, nil
}

// itemError reports a missing field of one item (422).
func itemError(it item, method string) error {
	if (it.LocalPathOnStorage == nil || *it.LocalPathOnStorage == "") && (it.DID == nil || *it.DID == "") {
		return staging.Errorf(http.StatusUnprocessableEntity, "data.local_path_on_storage is required")
	}
	if method != "direct_download" && (it.RelativePath == nil || *it.RelativePath == "") {
		return staging.Errorf(http.StatusUnprocessableEntity, "data.relative_path is required")
	}
	return nil
}

// stageBatch stages every item, a few at a time, and answers in order.
func (a *api) stageBatch(w http.ResponseWriter, r *http.Request, reqs []staging.Request, items []item, async bool) {
	results := make([]result, len(reqs))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range reqs {
		if err := itemError(items[i], reqs[i].Method); err != nil {
			_, detail := staging.StatusOf(err)
			results[i] = result{Status: "failed", Detail: detail}
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var out *staging.Outcome
			var err error
			if async {
				out, err = a.submit(r.Context(), reqs[i])
			} else {
				out, err = a.f.Service.Stage(r.Context(), reqs[i])
			}
			res := result{Status: "success"}
			if async || (out != nil && out.Waiting) {
				res.Status = "pending"
			}
			if out != nil && out.Operation != nil {
				res.ID, res.Message = out.Operation.ID, out.Operation.Message
			}
			if err != nil {
				_, detail := staging.StatusOf(err)
				res.Status, res.Detail, res.Message = "failed", detail, ""
			}
			results[i] = res
		}()
	}
	wg.Wait()
	// 200 when all succeeded, 202 when none failed but some wait, 207 else.
	failed, pending := 0, 0
	for _, res := range results {
		switch res.Status {
		case "failed":
			failed++
		case "pending":
			pending++
		}
	}
	status, overall := http.StatusMultiStatus, "partial"
	switch {
	case failed == len(results):
		overall = "failed"
	case failed == 0 && pending > 0:
		status, overall = http.StatusAccepted, "pending"
	case failed == 0:
		status, overall = http.StatusOK, "success"
	}
	httpx.JSON(w, status, map[string]any{"status": overall, "results": results})
}

// submit records an async request and hands it on: as an event to K_SINK
// when a SinkBinding set it, else to this process.
func (a *api) submit(ctx context.Context, req staging.Request) (*staging.Outcome, error) {
	out, err := a.f.Service.Submit(ctx, req)
	if err != nil {
		return out, err
	}
	if out.Waiting {
		return out, nil // a transfer-done event will run it
	}
	req.OperationID = out.Operation.ID
	if a.sender == nil {
		a.f.Service.RunAsync(ctx, req)
		return out, nil
	}
	if err := a.sender.Send(ctx, events.NewRequest(source, out.Operation, req)); err != nil {
		herr := staging.Wrap(http.StatusServiceUnavailable, "Could not hand the request over to K_SINK", err)
		if ferr := a.f.Service.Fail(context.WithoutCancel(ctx), out.Operation, herr); ferr != nil {
			a.f.Logger.Error("record failed hand-over", "operation", out.Operation.ID, "error", ferr)
		}
		return out, herr
	}
	return out, nil
}

// download is GET /stage_data?method=direct_download&username=&local_path_on_storage=,
// so a plain link, curl -O or wget works.
func (a *api) download(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := staging.Request{Method: q.Get("method"), Username: q.Get("username"), Source: q.Get("local_path_on_storage")}
	switch {
	case req.Method == "" || req.Username == "":
		httpx.Error(w, staging.Errorf(http.StatusUnprocessableEntity, "Query parameters method and username are required"))
	case req.Method != "direct_download":
		httpx.Error(w, staging.Errorf(http.StatusUnprocessableEntity, "GET supports method=direct_download only; use POST for %s", req.Method))
	case req.Source == "":
		httpx.Error(w, staging.Errorf(http.StatusUnprocessableEntity, "Query parameter local_path_on_storage is required"))
	default:
		if err := a.auth.Authorize(r.Context(), auth.Token(r, q.Get("jupyter_token")), req.Username); err != nil {
			httpx.Error(w, err)
			return
		}
		a.serveDownload(w, r, req)
	}
}

// serveDownload streams a file (with Range support) or a directory as tar.
// Memory stays flat: files go out with sendfile, tar streams are written as
// they are read.
func (a *api) serveDownload(w http.ResponseWriter, r *http.Request, req staging.Request) {
	out, err := a.f.Service.Stage(r.Context(), req)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	d := out.Download
	h := w.Header()
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": d.Name}))
	h.Set("X-Operation-Id", out.Operation.ID)
	cw := &countingWriter{ResponseWriter: w}
	if d.File != nil {
		defer d.File.Close()
		h.Set("Content-Type", "application/octet-stream")
		http.ServeContent(cw, r, d.Name, d.ModTime, d.File)
		want, _ := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
		var err error
		if r.Method != http.MethodHead && cw.n < want {
			err = errors.New("client went away before the end")
		}
		out.Done(cw.n, err)
		return
	}
	h.Set("Content-Type", "application/x-tar")
	h.Set("Accept-Ranges", "none")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		out.Done(0, nil)
		return
	}
	out.Done(cw.n, d.WriteTo(r.Context(), cw, nil))
}

// countingWriter counts bytes sent and keeps io.ReaderFrom, so sendfile
// still applies.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.ResponseWriter.(io.ReaderFrom)
	if !ok { // a wrapper without sendfile: copy through Write
		return io.Copy(struct{ io.Writer }{c}, r)
	}
	n, err := rf.ReadFrom(r)
	c.n += n
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (a *api) config(w http.ResponseWriter, r *http.Request) {
	c := a.f.Config
	httpx.JSON(w, http.StatusOK, map[string]any{"source_storage_path": c.SourceStoragePath,
		"target_storage_path": c.TargetStoragePath, "allowed_methods": c.AllowedMethods})
}

func (a *api) allowedMethods(w http.ResponseWriter, r *http.Request) {
	httpx.JSON(w, http.StatusOK, map[string]any{"allowed_methods": a.f.Config.AllowedMethods})
}

func (a *api) listOperations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := staging.Filter{Username: q.Get("username"), Status: staging.Status(q.Get("status")), Limit: 100}
	if f.Username != "" && !staging.ValidUsername(f.Username) {
		httpx.Error(w, staging.Errorf(http.StatusUnprocessableEntity, "Invalid username"))
		return
	}
	if f.Status != "" && !f.Status.Valid() {
		httpx.Error(w, staging.Errorf(http.StatusUnprocessableEntity, "status must be pending, running, success or failed"))
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httpx.Error(w, staging.Errorf(http.StatusUnprocessableEntity, "limit must be a number from 1 to 1000"))
			return
		}
		f.Limit = n
	}
	ops, err := a.f.Store.List(r.Context(), f)
	if err != nil {
		httpx.Error(w, staging.Unavailable(err))
		return
	}
	if ops == nil {
		ops = []staging.Operation{}
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"operations": ops})
}

func (a *api) getOperation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	op, err := a.f.Store.Get(r.Context(), id)
	if errors.Is(err, staging.ErrNotFound) {
		httpx.Error(w, staging.Errorf(http.StatusNotFound, "Operation not found: %s", id))
		return
	}
	if err != nil {
		httpx.Error(w, staging.Unavailable(err))
		return
	}
	httpx.JSON(w, http.StatusOK, op)
}

// createFile is the earlier test page's file creator: it writes a new file
// into the source storage (never over an existing one).
func (a *api) createFile(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Filename *string `json:"filename"`
		Content  *string `json:"content"`
	}
	if err := httpx.DecodeJSON(w, r, &body); err != nil {
		httpx.Error(w, err)
		return
	}
	if body.Filename == nil || *body.Filename == "" || body.Content == nil {
		httpx.Error(w, staging.Errorf(http.StatusUnprocessableEntity, "filename and content are required"))
		return
	}
	path, err := writeNewFile(a.f.Storage, *body.Filename, []byte(*body.Content))
	if err != nil {
		httpx.Error(w, err)
		return
	}
	a.f.Logger.Info("file created", "path", path)
	httpx.JSON(w, http.StatusOK, map[string]string{"status": "success", "message": "File created at " + path})
}

func writeNewFile(st *storage.Storage, name string, content []byte) (string, error) {
	rel := name
	if filepath.IsAbs(name) {
		r, err := filepath.Rel(st.SourcePath, filepath.Clean(name))
		if err != nil {
			return "", staging.Errorf(http.StatusForbidden, "Path is outside the source storage: %s", name)
		}
		rel = r
	}
	if !filepath.IsLocal(rel) || strings.ContainsRune(rel, 0) || storage.IsTemp(filepath.Base(rel)) {
		return "", staging.Errorf(http.StatusForbidden, "Path is outside the source storage: %s", name)
	}
	root := st.SourceRoot()
	if dir := filepath.Dir(rel); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return "", fileError(err, name)
		}
	}
	tmp := filepath.Join(filepath.Dir(rel), "."+filepath.Base(rel)+".creating")
	if err := root.WriteFile(tmp, content, 0o644); err != nil {
		return "", fileError(err, name)
	}
	defer root.Remove(tmp)
	if err := root.Link(tmp, rel); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", staging.Errorf(http.StatusConflict, "A file already exists at %s", name)
		}
		return "", fileError(err, name)
	}
	return filepath.Join(st.SourcePath, rel), nil
}

func fileError(err error, name string) error {
	if storage.IsEscape(err) {
		return staging.Wrap(http.StatusForbidden, "Path is outside the source storage: "+name, err)
	}
	if errors.Is(err, os.ErrExist) {
		return staging.Wrap(http.StatusConflict, "A file already exists at "+name, err)
	}
	return staging.Wrap(http.StatusInternalServerError, "Cannot create the file: "+name, err)
}

func preferAsync(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "respond-async") {
				return true
			}
		}
	}
	return false
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
