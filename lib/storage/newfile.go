package storage

import (
	"errors"
	"io/fs"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// A NewFile is a regular file being written in a folder, seen by nobody
// under its final name until Publish puts it there.
//
// Where the filesystem makes unnamed files (O_TMPFILE: ext4, XFS, Btrfs,
// tmpfs) it has no name at all until then: a failure or a crash leaves
// nothing behind, and publishing is one link that fails if the name is
// taken. Creating it does not lock the folder either, so concurrent
// copies into one folder wait on each other only for that link.
// Elsewhere it is created exclusively under a temporary name, never
// following a link, and put in place as Place does.
type NewFile struct {
	*os.File
	dir *os.File // the folder, owned by the caller
	tmp string   // the temporary name; "" for an unnamed file
}

// CreateIn creates a new file in the open folder dir, open for writing,
// with mode perm. tmp is its name where unnamed files cannot be made.
func CreateIn(dir *os.File, tmp string, perm fs.FileMode) (*NewFile, error) {
	// unix.Openat and os.NewFile, not os.OpenFile: a regular file gains
	// nothing from Go's poller (four fcntl calls and an epoll_ctl).
	fd, err := unix.Openat(int(dir.Fd()), ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err == nil {
		return &NewFile{File: os.NewFile(uintptr(fd), dir.Name()), dir: dir}, nil
	}
	if !noTmpfile(err) {
		return nil, &fs.PathError{Op: "create", Path: dir.Name(), Err: err}
	}
	return CreateNamedIn(dir, tmp, perm)
}

// CreateNamedIn is CreateIn under the temporary name tmp always: for a
// file given to another owner before it is published, which the kernel
// may refuse to link (fs.protected_hardlinks lets a process link only
// files it owns or may write).
func CreateNamedIn(dir *os.File, tmp string, perm fs.FileMode) (*NewFile, error) {
	fd, err := unix.Openat(int(dir.Fd()), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: tmp, Err: err}
	}
	return &NewFile{File: os.NewFile(uintptr(fd), tmp), dir: dir, tmp: tmp}, nil
}

// noTmpfile reports an O_TMPFILE refused because the kernel or the
// filesystem cannot make unnamed files (open(2)).
func noTmpfile(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL)
}

// Publish closes the file and gives it name in its folder, replacing
// nothing: something already at name is ErrExist and the file is
// discarded. Any other failure discards it too.
func (f *NewFile) Publish(name string) error {
	if f.tmp != "" {
		err := f.Close()
		if err == nil {
			err = Place(f.dir, f.tmp, name, false)
		}
		if err != nil {
			unix.Unlinkat(int(f.dir.Fd()), f.tmp, 0)
		}
		return err
	}
	// An unnamed file is linked through its own handle: linkat with
	// AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, /proc/self/fd does not.
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), int(f.dir.Fd()), name, unix.AT_SYMLINK_FOLLOW)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return ErrExist
	}
	return &fs.PathError{Op: "link", Path: name, Err: err}
}

// Discard closes the file and removes its temporary name, if it has one.
func (f *NewFile) Discard() {
	f.Close()
	if f.tmp != "" {
		unix.Unlinkat(int(f.dir.Fd()), f.tmp, 0)
	}
}
