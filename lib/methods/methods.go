// Package methods holds the staging methods that work on mounted storage:
// local_copy, local_symlink and direct_download. Each is one file; a function
// registers the ones it runs with staging.Service.Register.
package methods

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/config"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// Options are the settings the storage methods share.
type Options struct {
	FileMode          os.FileMode  // mode of staged files (STAGED_FILE_MODE)
	DirMode           os.FileMode  // mode of staged directories (STAGED_DIR_MODE)
	Owner             config.Owner // STAGED_OWNER
	Workers           int          // parallel file copies (COPY_WORKERS)
	SymlinkTargetRoot string       // SYMLINK_TARGET_ROOT
}

// OptionsFrom takes the methods' options from the configuration.
func OptionsFrom(c *config.Config) Options {
	return Options{FileMode: c.StagedFileMode, DirMode: c.StagedDirMode, Owner: c.StagedOwner,
		Workers: c.CopyWorkers, SymlinkTargetRoot: c.SymlinkTargetRoot}
}

// owner resolves STAGED_OWNER for a user: uid and gid, or -1 for "leave as is".
func (o Options) owner(username string) (uid, gid int, err error) {
	switch o.Owner.Mode {
	case "user":
		u, err := user.Lookup(username)
		if err != nil {
			return -1, -1, staging.Errorf(http.StatusBadRequest,
				"Unknown system user %s: STAGED_OWNER=user needs the user to exist on the storage host", username)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		return uid, gid, nil
	case "ids":
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

// target is a resolved place in a user area: the folder (opened as a root
// of its own) and the name inside it.
type target struct {
	dir  *os.Root
	name string
	rel  string // relative to the user area
	path string // absolute, for messages
}

func (t *target) Close() { t.dir.Close() }

// openTarget resolves rel under the user's area, creating missing folders.
func openTarget(st *storage.Storage, username, rel string) (*target, error) {
	area, err := st.UserArea(username)
	if err != nil {
		return nil, err
	}
	defer area.Close()
	// The folder usually exists: open it first. If that fails, MkdirAll
	// creates it, or says what is in the way.
	parent := filepath.Dir(rel)
	dir, err := area.OpenRoot(parent)
	if err != nil {
		if err := area.MkdirAll(parent, 0o755); err != nil {
			return nil, targetError(err, rel)
		}
		dir, err = area.OpenRoot(parent)
	}
	if err != nil {
		return nil, targetError(err, rel)
	}
	return &target{dir: dir, name: filepath.Base(rel), rel: rel,
		path: filepath.Join(st.UserAreaPath(username), rel)}, nil
}

func targetError(err error, rel string) error {
	switch {
	case storage.IsEscape(err):
		return staging.Wrap(http.StatusForbidden, "Target path is outside the user area: "+rel, err)
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, fs.ErrExist):
		return staging.Wrap(http.StatusConflict, "A file is in the way of the target folder: "+rel, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return staging.Wrap(http.StatusInsufficientStorage, "No space left in the user area", err)
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENAMETOOLONG):
		// Permanent: a 400, not a 5xx that a broker would redeliver.
		return staging.Wrap(http.StatusBadRequest, "Target path cannot be used (a link loop or a name too long): "+rel, err)
	}
	return staging.Wrap(http.StatusInternalServerError, fmt.Sprintf("Cannot write the target %s", rel), err)
}

func staged(username, method string) string {
	return fmt.Sprintf("Data staged for user %s with method %s", username, method)
}

func alreadyAvailable(path string) string { return "Data already available at " + path }

func conflict(path string) error {
	return staging.Errorf(http.StatusConflict, "A different file or link already exists at %s", path)
}
