package methods

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
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

// Traits: a run cut short leaves its temporary copy, which Cleanup removes.
func (LocalCopy) Traits() staging.Traits {
	return staging.Traits{Function: "stage", NeedsTarget: true, TempOutput: true}
}

func (m LocalCopy) Prepare(ctx context.Context, req *staging.Request) (*staging.Plan, error) {
	r, err := resolve(m.Storage, m.Options, req)
	if err != nil {
		return nil, err
	}
	src, rel, uid, gid := r.src, r.rel, r.uid, r.gid
	if !src.Info.Mode().IsRegular() && !src.Info.IsDir() {
		return nil, unsupported(req.Source)
	}
	run := func(ctx context.Context, job *staging.Job) (_ *staging.Result, err error) {
		t, err := openTarget(m.Storage, req.Username, rel)
		if err != nil {
			return nil, err
		}
		defer func() { t.finish(err != nil) }()
		if done, err := m.present(ctx, src, t); done || err != nil {
			return &staging.Result{Message: alreadyAvailable(t.rel)}, err
		}
		c := &copier{opts: m.Options, uid: uid, gid: gid, job: job}
		tmp := storage.TempName(job.Operation.ID)
		if src.Info.IsDir() {
			err = m.copyTree(ctx, c, src, t, tmp)
		} else {
			err = c.copyFile(ctx, m.Storage.SourceRoot(), src.Rel, t, tmp)
		}
		if errors.Is(err, fs.ErrExist) {
			// Someone put something there while we copied.
			if done, perr := m.present(ctx, src, t); done || perr != nil {
				return &staging.Result{Message: alreadyAvailable(t.rel)}, perr
			}
			return nil, conflict(t.rel)
		}
		if err != nil {
			return nil, err
		}
		// A tree's size is known once it is copied: its walk streams.
		_, done := job.Counts()
		job.SetTotal(done)
		return &staging.Result{Message: staged(req.Username, m.Name()), Bytes: done}, nil
	}
	plan := &staging.Plan{Lock: staging.LockKey(req.Username, rel), Run: run}
	if src.Info.IsDir() {
		// The walk holds one folder per level; the queue and the workers
		// hold the folders of the files they carry, each with its copy in
		// the target (4 × workers queued, workers at work); each worker
		// holds the file it reads and the one it writes; and the roots of
		// both trees. The worst case is reserved: usually far fewer.
		w := max(m.Options.Workers, 1)
		plan.Files = 2*(walkFiles(m.Options.MaxDepth)+5*w) + 2*w + 2
	}
	return plan, nil
}

// copyTree opens the source folder, checked to be a folder on its handle,
// copies it to tmp in the target folder and puts it in place; a copy that
// fails or finds the name taken is removed.
func (m LocalCopy) copyTree(ctx context.Context, c *copier, src *storage.Source, t *target, tmp string) error {
	dir, err := t.dir()
	if err != nil {
		return err
	}
	tree, err := storage.OpenTree(m.Storage.SourceRoot(), src.Rel)
	if err != nil {
		return sourceError(err, src.Rel)
	}
	defer tree.Close()
	err = c.copyTree(ctx, tree, src.Rel, dir, tmp, t.rel)
	if err == nil {
		err = c.job.Confirm(ctx)
	}
	if err == nil {
		if err = storage.Place(t.folder, tmp, t.name, true); err != nil && !errors.Is(err, fs.ErrExist) {
			err = targetError(err, t.rel)
		}
	}
	if err != nil {
		removeTemp(dir, tmp)
	}
	return err
}

// present reports whether the target already holds the source's content; a
// different file or link there is a conflict.
func (m LocalCopy) present(ctx context.Context, src *storage.Source, t *target) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(int(t.folder.Fd()), t.name, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.ENOENT) {
		return false, nil
	} else if err != nil {
		return false, targetError(&fs.PathError{Op: "lstat", Path: t.rel, Err: err}, t.rel)
	}
	dir, err := t.dir()
	if err != nil {
		return false, err
	}
	same, err := sameContent(ctx, m.Storage.SourceRoot(), src.Rel, dir, t.name, m.Options.MaxDepth)
	if err != nil {
		return false, err
	}
	if !same {
		return false, conflict(t.rel)
	}
	return true, nil
}

// Cleanup removes the temporary output a dead operation left in its target
// folder, where its record says it is (user area, folder of relative_path,
// temporary name).
func (m LocalCopy) Cleanup(ctx context.Context, op *staging.Operation) error {
	dir, err := m.Storage.TargetRoot().OpenRoot(filepath.Join(op.Username, filepath.Dir(op.RelativePath)))
	if err != nil {
		return nil // no folder, no temporary output
	}
	defer dir.Close()
	name := storage.TempName(op.ID)
	if _, err := dir.Lstat(name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return removeTemp(dir, name)
}
