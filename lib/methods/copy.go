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

// copyFile copies src (in srcDir) to a new file dst (in dstDir) with
// copy_file_range (io.Copy between files), then sets mode, owner and times.
func (c *copier) copyFile(ctx context.Context, srcDir *os.Root, src string, dstDir *os.Root, dst string) error {
	in, err := srcDir.Open(src)
	if err != nil {
		return sourceError(err, src)
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return sourceError(err, src)
	}
	if !info.Mode().IsRegular() {
		return unsupported(src)
	}
	out, err := dstDir.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return targetError(err, dst)
	}
	err = c.fill(ctx, out, in)
	if err == nil {
		err = out.Chmod(c.opts.FileMode)
	}
	if err == nil && c.uid >= 0 {
		err = out.Chown(c.uid, c.gid)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = dstDir.Chtimes(dst, time.Time{}, info.ModTime())
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

type entry struct {
	rel  string
	dir  bool
	size int64
	mod  time.Time
}

// copyTree copies the directory src (in srcRoot) to a new directory dst (in
// dstDir): folders first, files by a bounded pool of workers, then folder
// modes and times from the deepest up.
func (c *copier) copyTree(ctx context.Context, srcRoot *os.Root, src string, dstDir *os.Root, dst string) error {
	tree, err := srcRoot.OpenRoot(src)
	if err != nil {
		return sourceError(err, src)
	}
	defer tree.Close()
	entries, total, err := walk(tree, src)
	if err != nil {
		return err
	}
	c.job.SetTotal(total)
	if err := dstDir.Mkdir(dst, 0o700); err != nil {
		return targetError(err, dst)
	}
	out, err := dstDir.OpenRoot(dst)
	if err != nil {
		return targetError(err, dst)
	}
	defer out.Close()
	for _, e := range entries[1:] {
		if e.dir {
			if err := out.Mkdir(e.rel, 0o700); err != nil {
				return targetError(err, e.rel)
			}
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	files := make(chan entry)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range max(c.opts.Workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range files {
				if err := c.copyFile(ctx, tree, e.rel, out, e.rel); err != nil {
					once.Do(func() { firstErr = err; cancel() })
				}
			}
		}()
	}
feed:
	for _, e := range entries {
		if !e.dir {
			select {
			case files <- e:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(files)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return copyError(err, src)
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if !e.dir {
			continue
		}
		if c.uid >= 0 {
			if err := out.Lchown(e.rel, c.uid, c.gid); err != nil {
				return copyError(err, e.rel)
			}
		}
		if err := out.Chtimes(e.rel, time.Time{}, e.mod); err != nil {
			return copyError(err, e.rel)
		}
		if err := out.Chmod(e.rel, c.opts.DirMode); err != nil {
			return copyError(err, e.rel)
		}
	}
	return nil
}

// walk lists a tree, the root first and every folder before its content. A
// symlink is followed only to a regular file inside the source root.
func walk(tree *os.Root, src string) ([]entry, int64, error) {
	var entries []entry
	var total int64
	err := fs.WalkDir(tree.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return sourceError(err, path.Join(src, p))
		}
		info, err := d.Info()
		if err != nil {
			return sourceError(err, path.Join(src, p))
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			if info, err = tree.Stat(p); err != nil {
				return sourceError(err, path.Join(src, p))
			}
			if !info.Mode().IsRegular() {
				return staging.Errorf(staging.Rejected, "Unsupported link to a directory in the source: %s", path.Join(src, p))
			}
		}
		switch {
		case info.IsDir():
			entries = append(entries, entry{rel: p, dir: true, mod: info.ModTime()})
		case info.Mode().IsRegular():
			entries = append(entries, entry{rel: p, size: info.Size(), mod: info.ModTime()})
			total += info.Size()
		default:
			return unsupported(path.Join(src, p))
		}
		return nil
	})
	return entries, total, err
}

// sameContent reports whether the target already holds what src holds:
// the same tree of names with equal sizes and modification times (to the
// second, like rsync's quick check); staged copies keep modification times.
func sameContent(srcRoot *os.Root, src string, dstDir *os.Root, dst string) (bool, error) {
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
	a, err := srcRoot.OpenRoot(src)
	if err != nil {
		return false, sourceError(err, src)
	}
	defer a.Close()
	b, err := dstDir.OpenRoot(dst)
	if err != nil {
		return false, targetError(err, dst)
	}
	defer b.Close()
	ea, _, err := walk(a, src)
	if err != nil {
		return false, err
	}
	eb, _, err := walk(b, dst)
	if err != nil || len(ea) != len(eb) {
		return false, nil
	}
	for i := range ea {
		x, y := ea[i], eb[i]
		if x.rel != y.rel || x.dir != y.dir || (!x.dir && (x.size != y.size || !x.mod.Truncate(time.Second).Equal(y.mod.Truncate(time.Second)))) {
			return false, nil
		}
	}
	return true, nil
}

func sameFile(a, b fs.FileInfo) bool {
	return a.Size() == b.Size() && a.ModTime().Truncate(time.Second).Equal(b.ModTime().Truncate(time.Second))
}

// removeTemp removes a temporary file or tree, making read-only folders
// writable first so a non-root service can remove what it made.
func removeTemp(dir *os.Root, name string) error {
	if info, err := dir.Lstat(name); err == nil && info.IsDir() {
		if sub, err := dir.OpenRoot(name); err == nil {
			fs.WalkDir(sub.FS(), ".", func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					sub.Chmod(p, 0o700)
				}
				return nil
			})
			sub.Close()
		}
	}
	err := dir.RemoveAll(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove temporary %s: %w", name, err)
	}
	return nil
}

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
	case storage.IsEscape(err):
		return staging.Wrap(staging.Forbidden, "Source path is outside the source storage: "+p, err)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENAMETOOLONG):
		return staging.Wrap(staging.Rejected, "Source path does not exist: "+p, err)
	case errors.Is(err, fs.ErrPermission):
		return staging.Wrap(staging.Forbidden, "Permission denied reading the source: "+p, err)
	}
	return staging.Wrap(staging.Internal, "Cannot read the source: "+p, err)
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
