package storage

import (
	"errors"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrExist is returned by Place when something is already at the name.
var ErrExist = fs.ErrExist

// Place moves tmp to name, both single elements of dir, without replacing
// anything. Where the kernel and filesystem allow it that is one rename that
// fails if the name exists (renameat2 with RENAME_NOREPLACE), for files and
// folders alike. Elsewhere a file is hard-linked (which fails if the name
// exists) and its temporary name removed, and a folder renamed (which fails
// if a non-empty folder or a file is there). Something at name is ErrExist.
func Place(dir *os.Root, tmp, name string, isDir bool) error {
	if d, err := dir.Open("."); err == nil {
		fd := int(d.Fd())
		err = unix.Renameat2(fd, tmp, fd, name, unix.RENAME_NOREPLACE)
		d.Close()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EEXIST):
			return ErrExist
		case !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOTSUP):
			return placeError(err)
		}
	}
	if !isDir {
		err := dir.Link(tmp, name)
		if err == nil {
			return dir.Remove(tmp)
		}
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.EMLINK) {
			return placeError(err)
		}
		// No hard links on this filesystem: check, then rename.
		if _, err := dir.Lstat(name); err == nil {
			return ErrExist
		}
	}
	if err := dir.Rename(tmp, name); err != nil {
		return placeError(err)
	}
	return nil
}

func placeError(err error) error {
	if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
		return ErrExist
	}
	return err
}
