package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrUnsupported is what opening a source that is neither a regular file
// nor a folder returns: a FIFO, a socket, a device, or a link to a folder
// where a file is wanted. Such things are never staged.
var ErrUnsupported = errors.New("not a regular file or a folder")

// ErrLinkToFolder is ErrUnsupported for a link, where a file is wanted,
// that leads to a folder: a tree's links are followed to files only.
var ErrLinkToFolder = fmt.Errorf("a link to a folder: %w", ErrUnsupported)

// maxLinks bounds the links one open follows, as the kernel does (ELOOP
// after 40).
const maxLinks = 40

// OpenFile opens name in root for reading, only if it is a regular file,
// and returns it with its attributes read from the open handle.
//
// Nothing blocks and no device is ever opened: name is first opened with
// O_PATH, which opens nothing but the name (a FIFO does not wait for a
// writer, a device's driver is not called), its type is checked on that
// handle, and only a regular file is then opened for reading through the
// handle itself (/proc/self/fd), so what is read is what was checked. A
// link is followed inside root, one step at a time, each step opened the
// same way; a link to a folder is ErrLinkToFolder.
func OpenFile(root *os.Root, name string) (*os.File, fs.FileInfo, error) {
	return openFile(root, name, 0)
}

func openFile(root *os.Root, name string, links int) (*os.File, fs.FileInfo, error) {
	for ; ; links++ {
		p, err := root.OpenFile(name, unix.O_PATH, 0)
		if err != nil {
			return nil, nil, err
		}
		f, info, target, err := upgrade(p, links > 0)
		if target == "" {
			return f, info, err
		}
		if links == maxLinks {
			return nil, nil, &fs.PathError{Op: "open", Path: name, Err: syscall.ELOOP}
		}
		name = linkTarget(name, target)
	}
}

// openFileAt is OpenFile for name, a single element, in the open folder
// dir; a link there is followed inside top, where rel names it.
func openFileAt(dir *os.File, name string, top *os.Root, rel string) (*os.File, fs.FileInfo, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, &fs.PathError{Op: "open", Path: rel, Err: err}
	}
	f, info, target, err := upgrade(os.NewFile(uintptr(fd), rel), false)
	if target == "" {
		return f, info, err
	}
	return openFile(top, linkTarget(rel, target), 1)
}

// linkTarget is where a link at name leading to target leads, as a name
// for os.Root to resolve: not cleaned, so ".." is taken after the links
// before it are followed, as the kernel takes it. An absolute target is
// left as it is, for os.Root to refuse.
func linkTarget(name, target string) string {
	if filepath.IsAbs(target) {
		return target
	}
	return filepath.Dir(name) + "/" + target
}

// upgrade turns p, an O_PATH handle, into a handle open for reading if it
// names a regular file. If it names a link, it returns where the link
// leads instead; viaLink says p was reached through a link.
func upgrade(p *os.File, viaLink bool) (f *os.File, info fs.FileInfo, target string, err error) {
	defer p.Close()
	if info, err = p.Stat(); err != nil {
		return nil, nil, "", err
	}
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		buf := make([]byte, 4096)
		n, err := unix.Readlinkat(int(p.Fd()), "", buf)
		if err != nil {
			return nil, nil, "", &fs.PathError{Op: "readlink", Path: p.Name(), Err: err}
		}
		return nil, nil, string(buf[:n]), nil
	case info.IsDir() && viaLink:
		return nil, info, "", ErrLinkToFolder
	case !info.Mode().IsRegular():
		return nil, info, "", ErrUnsupported
	}
	// unix.Open and os.NewFile, not os.OpenFile: a regular file gains
	// nothing from Go's poller, and os.OpenFile would try to add it (four
	// fcntl calls and an epoll_ctl per file).
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(p.Fd())), unix.O_RDONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ENOENT) {
		// No /proc: the file cannot be opened through the handle checked.
		return nil, nil, "", fmt.Errorf("open %s for reading: /proc is not mounted: %w", p.Name(), errors.ErrUnsupported)
	}
	if err != nil {
		return nil, nil, "", &fs.PathError{Op: "open", Path: p.Name(), Err: err}
	}
	return os.NewFile(uintptr(fd), p.Name()), info, "", nil
}

// openDir opens name in root as a folder. It opens nothing else: the kernel
// refuses anything that is not a folder before opening it (O_DIRECTORY),
// so a FIFO or a device there is ErrUnsupported, not a hang or a device
// opened. A link is followed inside root.
func openDir(root *os.Root, name string) (*os.File, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if errors.Is(err, syscall.ENOTDIR) {
		if info, serr := root.Lstat(name); serr == nil && !info.IsDir() && info.Mode()&fs.ModeSymlink == 0 {
			return nil, ErrUnsupported
		}
	}
	return f, err
}

// openDirAt opens name, a single element of dir, as a folder, not
// following a link.
func openDirAt(dir *os.File, name, rel string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ELOOP) {
			err = ErrUnsupported
		}
		return nil, &fs.PathError{Op: "open", Path: rel, Err: err}
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// RootOf opens the folder dir, already open and checked, as an os.Root,
// through its own handle, so the root is the folder that was checked.
func RootOf(dir *os.File) (*os.Root, error) {
	return os.OpenRoot("/proc/self/fd/" + strconv.Itoa(int(dir.Fd())))
}
