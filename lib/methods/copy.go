package methods

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// chunk is how much one in-kernel copy call moves before progress is counted
// and cancellation checked.
const chunk = 64 << 20

// copier copies a file or a tree from a source root into a target folder.
type copier struct {
	opts     Options
	uid, gid int
	job      *staging.Job
}

// copyFile copies the regular file src (in srcDir) to the target t: a new
// file in its folder, seen under its name only once complete
// (storage.NewFile); something already there is fs.ErrExist. The source is
// opened without blocking and checked on its handle (storage.OpenFile): a
// FIFO, socket or device is refused, never opened.
func (c *copier) copyFile(ctx context.Context, srcDir *os.Root, src string, t *target, tmp string) error {
	in, info, err := storage.OpenFile(srcDir, src)
	if err != nil {
		return sourceError(err, src)
	}
	defer in.Close()
	c.job.SetTotal(info.Size())
	create := storage.CreateIn
	if c.uid >= 0 {
		create = storage.CreateNamedIn // chowned before it is published
	}
	out, err := create(t.folder, tmp, 0o600)
	if err != nil {
		return targetError(err, t.rel)
	}
	if err := c.fillFile(ctx, out.File, in, info, src); err != nil {
		out.Discard()
		return err
	}
	if err := c.job.Confirm(ctx); err != nil {
		out.Discard()
		return err
	}
	err = out.Publish(t.name)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return targetError(err, t.rel)
	}
	return err
}

// finishFile fills out, a new file, and closes it (fillFile).
func (c *copier) finishFile(ctx context.Context, out, in *os.File, info fs.FileInfo, src string) error {
	err := c.fillFile(ctx, out, in, info, src)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = copyError(cerr, src)
	}
	return err
}

// fillFile fills out, a new file, from in with copy_file_range (io.Copy
// between files), then sets its mode, owner and modification time on the
// handle.
func (c *copier) fillFile(ctx context.Context, out, in *os.File, info fs.FileInfo, src string) error {
	err := c.fill(ctx, out, in)
	if err == nil {
		err = out.Chmod(c.opts.FileMode)
	}
	if err == nil && c.uid >= 0 {
		err = out.Chown(c.uid, c.gid)
	}
	if err == nil {
		err = setModTime(out, info.ModTime())
	}
	if err != nil {
		return copyError(err, src)
	}
	return nil
}

func (c *copier) fill(ctx context.Context, out *os.File, in *os.File) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.CopyN(out, in, chunk)
		c.job.Add(n)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// copyTree copies the folder tree (open as a root; src names it in
// messages) to a new folder dst in dstDir (rel, the target, names it in
// messages: never the temporary name). The walk streams: each folder
// is made when the walk reaches it, its files go through a small queue to
// a bounded pool of workers, and a folder gets its mode, owner and time
// once everything under it is in place. What it holds does not grow with
// the tree: the queue, one open folder per level, and the folders whose
// files are being copied.
func (c *copier) copyTree(ctx context.Context, tree *os.Root, src string, dstDir *os.Root, dst, rel string) error {
	if err := dstDir.Mkdir(dst, 0o700); err != nil {
		return targetError(err, rel)
	}
	top, err := dstDir.OpenFile(dst, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return targetError(err, rel)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once     sync.Once
		firstErr error
	)
	fail := func(err error) {
		once.Do(func() { firstErr = err })
		cancel()
	}
	type file struct {
		in   *storage.Folder
		name string
	}
	files := make(chan file, 4*max(c.opts.Workers, 1))
	var wg sync.WaitGroup
	for range max(c.opts.Workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range files {
				if ctx.Err() == nil {
					if err := c.copyEntry(ctx, f.in, f.name, src); err != nil {
						fail(err)
					}
				}
				f.in.Release()
			}
		}()
	}
	err = storage.Walk(ctx, tree, c.opts.MaxDepth, storage.Visitor{
		Folder: func(f *storage.Folder) error {
			out := top
			if f.Parent != nil {
				var err error
				if out, err = mkdirAt(f.Parent.Value.(*os.File), path.Base(f.Rel), path.Join(dst, f.Rel)); err != nil {
					return targetError(err, f.Rel)
				}
			}
			f.Value = out
			mod := f.Info.ModTime()
			f.Done = func() {
				if ctx.Err() == nil {
					if err := c.finishDir(out, mod); err != nil {
						fail(copyError(err, path.Join(src, f.Rel)))
					}
				}
				out.Close()
			}
			return nil
		},
		File: func(in *storage.Folder, name string, _ bool) error {
			in.Hold()
			select {
			case files <- file{in, name}:
				return nil
			case <-ctx.Done():
				in.Release()
				return ctx.Err()
			}
		},
	})
	if err != nil {
		fail(walkError(err, src))
	}
	close(files)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return nil
}

// copyEntry copies the entry name of the source folder in to the same
// name in the target folder made for it.
func (c *copier) copyEntry(ctx context.Context, in *storage.Folder, name, src string) error {
	r, info, err := in.Open(name)
	if err != nil {
		return walkError(err, src)
	}
	defer r.Close()
	dir := in.Value.(*os.File)
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return targetError(err, path.Join(in.Rel, name))
	}
	return c.finishFile(ctx, os.NewFile(uintptr(fd), name), r, info, path.Join(src, in.Rel, name))
}

// finishDir gives a copied folder its owner, time and mode, the mode last
// since it usually takes the write permission away.
func (c *copier) finishDir(dir *os.File, mod time.Time) error {
	if c.uid >= 0 {
		if err := dir.Chown(c.uid, c.gid); err != nil {
			return err
		}
	}
	if err := setModTime(dir, mod); err != nil {
		return err
	}
	return dir.Chmod(c.opts.DirMode)
}

// mkdirAt makes the folder name in dir and opens it, not following a link.
func mkdirAt(dir *os.File, name, rel string) (*os.File, error) {
	if err := unix.Mkdirat(int(dir.Fd()), name, 0o700); err != nil {
		return nil, &fs.PathError{Op: "mkdir", Path: rel, Err: err}
	}
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: rel, Err: err}
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// setModTime sets f's modification time on its handle, leaving its access
// time (utimensat with no path, as the C library's futimens).
func setModTime(f *os.File, mod time.Time) error {
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(mod.UnixNano())}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, f.Fd(), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return &fs.PathError{Op: "futimens", Path: f.Name(), Err: errno}
	}
	return nil
}

// walkFiles is how many folders a walk of a tree at most maxDepth deep
// holds open at once: one per level and the top.
func walkFiles(maxDepth int) int {
	if maxDepth <= 0 {
		maxDepth = staging.DefaultMaxPathDepth
	}
	return maxDepth + 1
}

// walkError names the source path of a walk's error: err's path is
// relative to the tree src.
func walkError(err error, src string) error {
	var deep *storage.TooDeepError
	if errors.As(err, &deep) {
		return deep.In(src)
	}
	var se *staging.Error
	if errors.As(err, &se) {
		return err
	}
	p := src
	var pe *fs.PathError
	if errors.As(err, &pe) {
		p = path.Join(src, pe.Path)
	}
	if storage.IsEscape(err) {
		// Links in a tree are followed to files inside the tree only: this
		// one leads elsewhere, in the storage or out of it.
		return staging.Wrap(staging.Forbidden, "Source folder holds a link leading outside it: "+p, err)
	}
	return sourceError(err, p)
}

// unsupportedLink is why a link that leads to info cannot be staged.
func unsupportedLink(info fs.FileInfo) error {
	if info.IsDir() {
		return storage.ErrLinkToFolder
	}
	return storage.ErrUnsupported
}

// errDiffer ends a comparison at the first difference.
var errDiffer = errors.New("trees differ")

// sameContent reports whether the target already holds what src holds:
// the same tree of names with equal sizes and modification times (to the
// second, like rsync's quick check); staged copies keep modification times.
// Both trees are walked, not listed whole.
func sameContent(ctx context.Context, srcRoot *os.Root, src string, dstDir *os.Root, dst string, maxDepth int) (bool, error) {
	si, err := srcRoot.Stat(src)
	if err != nil {
		return false, sourceError(err, src)
	}
	di, err := dstDir.Lstat(dst)
	if err != nil {
		return false, targetError(err, dst)
	}
	if si.Mode().IsRegular() {
		return di.Mode().IsRegular() && sameFile(si, di), nil
	}
	if !di.IsDir() {
		return false, nil
	}
	a, err := storage.OpenTree(srcRoot, src)
	if err != nil {
		return false, walkError(err, src)
	}
	defer a.Close()
	b, err := storage.OpenTree(dstDir, dst)
	if err != nil {
		return false, nil // not a folder that can be read: not the same
	}
	defer b.Close()
	var folders, files int64
	err = storage.Walk(ctx, a, maxDepth, storage.Visitor{
		Folder: func(f *storage.Folder) error {
			folders++
			if info, err := b.Lstat(f.Rel); err != nil || !info.IsDir() {
				return errDiffer
			}
			return nil
		},
		File: func(f *storage.Folder, name string, _ bool) error {
			files++
			x, err := f.Stat(name)
			if err != nil {
				return walkError(&fs.PathError{Op: "stat", Path: path.Join(f.Rel, name), Err: err}, src)
			}
			y, err := b.Lstat(path.Join(f.Rel, name))
			if err != nil || !y.Mode().IsRegular() || !sameFile(x, y) {
				return errDiffer
			}
			return nil
		},
	})
	if errors.Is(err, errDiffer) {
		return false, nil
	}
	if err != nil {
		return false, walkError(err, src)
	}
	bf, bfiles, err := storage.Count(ctx, b, maxDepth)
	return err == nil && bf == folders && bfiles == files, nil
}

func sameFile(a, b fs.FileInfo) bool {
	return a.Size() == b.Size() && a.ModTime().Truncate(time.Second).Equal(b.ModTime().Truncate(time.Second))
}

// removeTemp removes a temporary file or tree, making its folders
// writable first so a non-root service can remove what it made.
func removeTemp(dir *os.Root, name string) error {
	if info, err := dir.Lstat(name); err == nil && info.IsDir() {
		if tree, err := storage.OpenTree(dir, name); err == nil {
			storage.Walk(context.Background(), tree, maxTempDepth, storage.Visitor{
				Folder: func(f *storage.Folder) error { f.Dir.Chmod(0o700); return nil },
			})
			tree.Close()
		}
	}
	err := dir.RemoveAll(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove temporary %s: %w", name, err)
	}
	return nil
}

// maxTempDepth bounds the walk that makes a temporary tree removable: as
// deep as any copy can make one.
const maxTempDepth = 2048

// RemoveTemp removes a leftover temporary output in dir (used by the sweep).
func RemoveTemp(dir *os.Root, name string) error {
	if !storage.IsTemp(path.Base(name)) {
		return fmt.Errorf("remove temporary %s: not a temporary name", name)
	}
	return removeTemp(dir, name)
}

func sourceError(err error, p string) error {
	var se *staging.Error
	switch {
	case errors.As(err, &se):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return staging.Wrap(staging.Unavailable, "Staging was cancelled", err)
	case errors.Is(err, storage.ErrLinkToFolder):
		return staging.Wrap(staging.Rejected, "Unsupported link to a directory in the source: "+p, err)
	case errors.Is(err, storage.ErrUnsupported):
		return unsupported(p)
	}
	return storage.SourceError(err, p)
}

func copyError(err error, p string) error {
	var se *staging.Error
	switch {
	case errors.As(err, &se):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return staging.Wrap(staging.Unavailable, "Staging was cancelled", err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return staging.Wrap(staging.InsufficientStorage, "No space left in the user area", err)
	}
	return staging.Wrap(staging.Internal, "Copy failed: "+p, err)
}
