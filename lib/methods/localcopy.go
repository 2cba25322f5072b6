package methods

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"syscall"

	"golang.org/x/sys/unix"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// LocalCopy copies a file or directory from the source storage into the
// user's area. The copy is made under a temporary name in the target folder
// and put in place in one step, so nobody sees a partial copy.
type LocalCopy struct {
	Storage *storage.Storage
	Options Options
}

func (LocalCopy) Name() string { return "local_copy" }

func (m LocalCopy) Prepare(ctx context.Context, req *staging.Request) (*staging.Plan, error) {
	r, err := resolve(m.Storage, m.Options, req)
	if err != nil {
		return nil, err
	}
	src, rel, uid, gid := r.src, r.rel, r.uid, r.gid
	if !src.Info.Mode().IsRegular() && !src.Info.IsDir() {
		return nil, staging.Errorf(http.StatusBadRequest, "Unsupported source type (not a file or directory): %s", req.Source)
	}
	run := func(ctx context.Context, job *staging.Job) (*staging.Result, error) {
		t, err := openTarget(m.Storage, req.Username, rel)
		if err != nil {
			return nil, err
		}
		defer t.Close()
		if done, err := m.present(src, t); done || err != nil {
			return &staging.Result{Message: alreadyAvailable(t.path)}, err
		}
		c := &copier{opts: m.Options, uid: uid, gid: gid, job: job}
		tmp := storage.TempName(job.Operation.ID)
		if src.Info.IsDir() {
			err = c.copyTree(ctx, m.Storage.SourceRoot(), src.Rel, t.dir, tmp)
		} else {
			job.SetTotal(src.Info.Size())
			err = c.copyFile(ctx, m.Storage.SourceRoot(), src.Rel, t.dir, tmp)
		}
		if err == nil {
			err = m.place(t, tmp, src.Info.IsDir())
		}
		if err != nil {
			removeTemp(t.dir, tmp)
			if errors.Is(err, fs.ErrExist) {
				// Someone put something there while we copied.
				if done, perr := m.present(src, t); done || perr != nil {
					return &staging.Result{Message: alreadyAvailable(t.path)}, perr
				}
				return nil, conflict(t.path)
			}
			return nil, err
		}
		total, _ := job.Counts()
		return &staging.Result{Message: staged(req.Username, m.Name()), Bytes: total}, nil
	}
	return &staging.Plan{Lock: staging.LockKey(req.Username, rel), Source: src.Path, Run: run}, nil
}

// present reports whether the target already holds the source's content; a
// different file or link there is a conflict.
func (m LocalCopy) present(src *storage.Source, t *target) (bool, error) {
	if _, err := t.dir.Lstat(t.name); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, targetError(err, t.rel)
	}
	same, err := sameContent(m.Storage.SourceRoot(), src.Rel, t.dir, t.name)
	if err != nil {
		return false, err
	}
	if !same {
		return false, conflict(t.path)
	}
	return true, nil
}

// place moves the finished temporary output to its name without replacing
// anything. Where the kernel and filesystem allow it that is one rename that
// fails if the name exists (renameat2 with RENAME_NOREPLACE), for files and
// folders alike. Elsewhere a file is hard-linked (which fails if the name
// exists) and its temporary name removed, and a folder renamed (which fails
// if a non-empty folder or a file is there).
func (m LocalCopy) place(t *target, tmp string, dir bool) error {
	// Both names are single elements of the folder opened through the user's
	// root, so nothing here can leave it.
	if d, err := t.dir.Open("."); err == nil {
		fd := int(d.Fd())
		err = unix.Renameat2(fd, tmp, fd, t.name, unix.RENAME_NOREPLACE)
		d.Close()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EEXIST):
			return fs.ErrExist
		case !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOTSUP):
			return placeError(err, t.rel)
		}
	}
	if !dir {
		err := t.dir.Link(tmp, t.name)
		if err == nil {
			return t.dir.Remove(tmp)
		}
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.EMLINK) {
			return placeError(err, t.rel)
		}
		// No hard links on this filesystem: check, then rename.
		if _, err := t.dir.Lstat(t.name); err == nil {
			return fs.ErrExist
		}
	}
	if err := t.dir.Rename(tmp, t.name); err != nil {
		return placeError(err, t.rel)
	}
	return nil
}

func placeError(err error, rel string) error {
	if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
		return fs.ErrExist
	}
	return targetError(err, rel)
}
