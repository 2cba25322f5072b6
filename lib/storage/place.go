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

// Place moves tmp to name, both single elements of the open folder dir,
// without replacing anything. Where the kernel and filesystem allow it that
// is one rename that fails if the name exists (renameat2 with
// RENAME_NOREPLACE), for files and folders alike. Elsewhere a file is
// hard-linked (which fails if the name exists) and its temporary name
// removed, and a folder renamed (which fails if a non-empty folder or a file
// is there). Something at name is ErrExist.
func Place(dir *os.File, tmp, name string, isDir bool) error {
	fd := int(dir.Fd())
	err := unix.Renameat2(fd, tmp, fd, name, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return ErrExist
	case !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOTSUP):
		return placeError("rename", name, err)
	}
	if !isDir {
		err := unix.Linkat(fd, tmp, fd, name, 0)
		if err == nil {
			if err := unix.Unlinkat(fd, tmp, 0); err != nil {
				return &fs.PathError{Op: "remove", Path: tmp, Err: err}
			}
			return nil
		}
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.EMLINK) {
			return placeError("link", name, err)
		}
		// No hard links on this filesystem: check, then rename.
		var st unix.Stat_t
		if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			return ErrExist
		}
	}
	if err := unix.Renameat(fd, tmp, fd, name); err != nil {
		return placeError("rename", name, err)
	}
	return nil
}

func placeError(op, name string, err error) error {
	if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
		return ErrExist
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}
