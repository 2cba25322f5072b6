package methods

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// LocalSymlink puts a symlink to the source in the user's area. It never
// touches the source itself: not its mode, not its owner.
type LocalSymlink struct {
	Storage *storage.Storage
	Options Options
}

func (LocalSymlink) Name() string { return "local_symlink" }

func (LocalSymlink) Traits() staging.Traits {
	return staging.Traits{Function: "stage", NeedsTarget: true}
}

func (m LocalSymlink) Prepare(ctx context.Context, req *staging.Request) (*staging.Plan, error) {
	r, err := resolve(m.Storage, m.Options, req)
	if err != nil {
		return nil, err
	}
	src, rel, uid, gid := r.src, r.rel, r.uid, r.gid
	// The link points where pods see the source, which SYMLINK_TARGET_ROOT
	// names when it is mounted elsewhere than in this function.
	root := m.Storage.SourcePath
	if m.Options.SymlinkTargetRoot != "" {
		root = m.Options.SymlinkTargetRoot
	}
	link := filepath.Join(root, src.Rel)
	run := func(ctx context.Context, job *staging.Job) (_ *staging.Result, err error) {
		t, err := openTarget(m.Storage, req.Username, rel)
		if err != nil {
			return nil, err
		}
		defer func() { t.finish(err != nil) }()
		dir, err := t.dir()
		if err != nil {
			return nil, err
		}
		for attempt := 0; ; attempt++ {
			if existing, err := dir.Readlink(t.name); err == nil {
				if existing == link {
					return &staging.Result{Message: alreadyAvailable(t.rel)}, nil
				}
				return nil, conflict(t.rel)
			} else if _, lerr := dir.Lstat(t.name); lerr == nil {
				return nil, conflict(t.rel)
			}
			if err := job.Confirm(ctx); err != nil {
				return nil, err
			}
			err := dir.Symlink(link, t.name)
			if errors.Is(err, fs.ErrExist) && attempt == 0 {
				continue // made by someone else just now: look again
			}
			if err != nil {
				return nil, targetError(err, t.rel)
			}
			break
		}
		if uid >= 0 {
			if err := dir.Lchown(t.name, uid, gid); err != nil {
				dir.Remove(t.name)
				return nil, targetError(err, t.rel)
			}
		}
		return &staging.Result{Message: staged(req.Username, m.Name())}, nil
	}
	return &staging.Plan{Lock: staging.LockKey(req.Username, rel), Run: run}, nil
}
