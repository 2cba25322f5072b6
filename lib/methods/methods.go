// Package methods holds the staging methods: local_copy, local_symlink and
// direct_download on the mounted storage, jupyter_copy into a JupyterHub
// workspace. Each is one file; All lists them.
package methods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// Env is what the methods are built with: what this function has set up
// (nil or zero when it has not, e.g. no hub outside the jupyter function).
type Env struct {
	Storage *storage.Storage
	Options Options
	Jupyter Jupyter
	Logger  *slog.Logger
	// Alive reports whether an operation may still be running somewhere.
	Alive func(ctx context.Context, operationID string) bool
}

// All is every staging method, built with env: the one list of methods.
// Each declares its name and traits (which function runs it, whether it
// streams, writes a target, leaves temporary output); a function registers
// them all and runs those that are its own. A new method is one file and
// one line here.
func All(env Env) []staging.Method {
	return []staging.Method{
		LocalCopy{Storage: env.Storage, Options: env.Options},
		LocalSymlink{Storage: env.Storage, Options: env.Options},
		DirectDownload{Storage: env.Storage, MaxDepth: env.Options.MaxDepth},
		JupyterCopy{Storage: env.Storage, Jupyter: env.Jupyter, Logger: env.Logger, Alive: env.Alive, MaxDepth: env.Options.MaxDepth},
	}
}

// Names lists the names of every method, in the order of All.
func Names() []string {
	var names []string
	for _, m := range All(Env{}) {
		names = append(names, m.Name())
	}
	return names
}

// Options are the settings the storage methods share.
type Options struct {
	FileMode          os.FileMode // mode of staged files (STAGED_FILE_MODE)
	DirMode           os.FileMode // mode of staged directories (STAGED_DIR_MODE)
	Owner             Owner       // STAGED_OWNER
	Workers           int         // parallel file copies (COPY_WORKERS)
	SymlinkTargetRoot string      // SYMLINK_TARGET_ROOT
	// MaxDepth bounds how many folders deep a source tree may go
	// (MAX_PATH_DEPTH): a walk holds one open folder per level.
	MaxDepth int
}

// Owner says who owns staged files: the service's own user (the zero
// value), the system user named like the requesting user, or fixed ids.
type Owner struct {
	ByName   bool // STAGED_OWNER=user
	Fixed    bool // STAGED_OWNER=<uid>:<gid>
	UID, GID int
}

// owner resolves the owner for a user: uid and gid, or -1 for "leave as is".
func (o Options) owner(username string) (uid, gid int, err error) {
	switch {
	case o.Owner.ByName:
		u, err := user.Lookup(username)
		if err != nil {
			return -1, -1, staging.Errorf(staging.Rejected,
				"Unknown system user %s: STAGED_OWNER=user needs the user to exist on the storage host", username)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		return uid, gid, nil
	case o.Owner.Fixed:
		return o.Owner.UID, o.Owner.GID, nil
	}
	return -1, -1, nil
}

// request is what the local methods resolve before they run: the source,
// the target inside the user's area, and who will own the result.
type request struct {
	src      *storage.Source
	rel      string
	uid, gid int
}

// resolve checks req's source and target paths and STAGED_OWNER for it.
func resolve(st *storage.Storage, opts Options, req *staging.Request) (*request, error) {
	src, err := st.Source(req.Source)
	if err != nil {
		return nil, err
	}
	rel, err := storage.TargetRel(req.Target)
	if err != nil {
		return nil, err
	}
	uid, gid, err := opts.owner(req.Username)
	if err != nil {
		return nil, err
	}
	return &request{src: src, rel: rel, uid: uid, gid: gid}, nil
}

// target is a resolved place in a user area: the folder and the name
// inside it.
type target struct {
	folder *os.File // the folder, for calls on its handle, held (hold) while the run lasts
	root   *os.Root // the same folder as a root, once dir opened it
	name   string
	rel    string // relative to the user area: messages name it, never the server's paths

	st       *storage.Storage
	username string
	made     []string // folders on the way this run made, relative to the area, outermost first
}

// dir is the target folder as a root of its own, opened through its
// handle on first use.
func (t *target) dir() (*os.Root, error) {
	if t.root == nil {
		root, err := storage.RootOf(t.folder)
		if err != nil {
			return nil, targetError(err, t.rel)
		}
		t.root = root
	}
	return t.root, nil
}

func (t *target) Close() {
	if t.root != nil {
		t.root.Close()
	}
	t.folder.Close()
}

// finish closes the target; after a run that failed it also removes the
// folders the run made on the way that are still empty, so a failure
// leaves nothing new in the user's area.
func (t *target) finish(failed bool) {
	t.Close()
	if failed {
		removeMade(t.st, t.username, t.made)
	}
}

// openTarget resolves rel under the user's area, creating missing folders
// (recorded in made, for finish).
func openTarget(st *storage.Storage, username, rel string) (*target, error) {
	area, err := st.UserArea(username)
	if err != nil {
		return nil, err
	}
	defer area.Close()
	t := &target{name: filepath.Base(rel), rel: rel, st: st, username: username}
	parent := filepath.Dir(rel)
	for attempt := 1; ; attempt++ {
		// The folder usually exists: open it first. If that fails, the
		// missing folders are made, or what is in the way said.
		folder, err := area.OpenFile(parent, os.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			var made []string
			made, err = makeFolders(area, parent)
			t.made = append(t.made, made...)
			if err == nil {
				folder, err = area.OpenFile(parent, os.O_RDONLY|syscall.O_DIRECTORY, 0)
			}
		}
		if err == nil {
			if err = hold(area, parent, folder); err != nil {
				folder.Close()
			}
		}
		if err == nil {
			t.folder = folder
			return t, nil
		}
		// A folder on the way that another run made and removed after it
		// failed, just as this one found it: look again, making it anew.
		if errors.Is(err, fs.ErrNotExist) && attempt < 5 {
			time.Sleep(time.Millisecond)
			continue
		}
		removeMade(st, username, t.made)
		return nil, targetError(err, rel)
	}
}

// makeFolders makes the missing folders of dir in area, as MkdirAll does,
// and returns those it made, outermost first: only they are this run's
// to remove. A folder that exists, made by someone else a moment ago
// included, is not.
func makeFolders(area *os.Root, dir string) ([]string, error) {
	var made []string
	if dir == "." {
		return nil, nil
	}
	p := ""
	for _, name := range strings.Split(dir, string(filepath.Separator)) {
		p = filepath.Join(p, name)
		err := area.Mkdir(p, 0o755)
		if err == nil {
			made = append(made, p)
		} else if !errors.Is(err, fs.ErrExist) {
			return made, err
		}
	}
	return made, nil
}

// errFolderGone is a target folder removed between its opening and its
// hold: looked for again.
var errFolderGone = fmt.Errorf("target folder removed as it was opened: %w", fs.ErrNotExist)

// hold takes a shared lock on the open target folder for the run, so a
// failed run that made it does not remove it while this one writes there
// (removeEmpty needs the lock exclusive; a file being copied is unnamed
// until it is complete, so the folder looks empty meanwhile). The folder
// must then still be the one at its path: one removed before the lock
// was taken is errFolderGone. Where the filesystem has no such locks,
// removeEmpty cannot lock either and removes nothing.
func hold(area *os.Root, parent string, folder *os.File) error {
	if err := unix.Flock(int(folder.Fd()), unix.LOCK_SH|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		return errFolderGone // being removed: look again
	}
	held, err := folder.Stat()
	if err != nil {
		return err
	}
	now, err := area.Stat(parent)
	if err != nil {
		return err
	}
	if !os.SameFile(held, now) {
		return errFolderGone
	}
	return nil
}

// removeMade removes the folders made (outermost first) in the user's area,
// innermost first, while each is empty and no run holds it; it stops at
// the first it leaves.
func removeMade(st *storage.Storage, username string, made []string) {
	if len(made) == 0 {
		return
	}
	area, err := st.TargetRoot().OpenRoot(username)
	if err != nil {
		return
	}
	defer area.Close()
	for i := len(made) - 1; i >= 0; i-- {
		if removeEmpty(area, made[i]) != nil {
			return
		}
	}
}

// removeEmpty removes the folder dir of area if it is empty and no run
// holds it (hold). unlinkat with AT_REMOVEDIR fails on a folder that is not
// empty, so whatever another run put there stays, however late it came.
func removeEmpty(area *os.Root, dir string) error {
	parent, err := area.OpenFile(filepath.Dir(dir), os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer parent.Close()
	name := filepath.Base(dir)
	fd, err := unix.Openat(int(parent.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return &fs.PathError{Op: "flock", Path: dir, Err: err}
	}
	if err := unix.Unlinkat(int(parent.Fd()), name, unix.AT_REMOVEDIR); err != nil {
		return &fs.PathError{Op: "rmdir", Path: dir, Err: err}
	}
	return nil
}

func targetError(err error, rel string) error {
	switch {
	case storage.IsEscape(err):
		return staging.Wrap(staging.Forbidden, "Target path is outside the user area: "+rel, err)
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, fs.ErrExist):
		return staging.Wrap(staging.Conflict, "A file is in the way of the target folder: "+rel, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return staging.Wrap(staging.InsufficientStorage, "No space left in the user area", err)
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENAMETOOLONG):
		// Permanent: a 400, not a 5xx that a broker would redeliver.
		return staging.Wrap(staging.Rejected, "Target path cannot be used (a link loop or a name too long): "+rel, err)
	case errors.Is(err, fs.ErrPermission) && !refusedChown(err):
		// A folder the service may not write, such as one an earlier
		// staging made read-only: the user's to change, a 403, not a 5xx
		// that a broker would redeliver for ever.
		return staging.Wrap(staging.Forbidden, "A folder on the way to the target is not writable: "+rel, err)
	}
	return staging.Wrap(staging.Internal, fmt.Sprintf("Cannot write the target %s", rel), err)
}

// refusedChown reports whether err is a refused change of owner
// (STAGED_OWNER without CAP_CHOWN): the service's set-up, not the target
// folder, so it stays an internal error.
func refusedChown(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && strings.Contains(pe.Op, "chown")
}

func unsupported(p string) error {
	return staging.Errorf(staging.Rejected, "Unsupported source type (not a file or directory): %s", p)
}

func staged(username, method string) string {
	return fmt.Sprintf("Data staged for user %s with method %s", username, method)
}

func alreadyAvailable(rel string) string { return "Data already available at " + rel }

func conflict(rel string) error {
	return staging.Errorf(staging.Conflict, "A different file or link already exists at %s", rel)
}
