package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync/atomic"
	"syscall"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// readBatch is how many entries of a folder are read at once: a folder
// of a million files is listed a batch at a time, never held whole.
const readBatch = 256

// OpenTree opens the folder name in root as the top of a tree to walk. It
// is checked to be a folder on its handle before anything else is opened
// (see openDir); the root it returns is that folder.
func OpenTree(root *os.Root, name string) (*os.Root, error) {
	d, err := openDir(root, name)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	tree, err := RootOf(d)
	if errors.Is(err, fs.ErrNotExist) {
		tree, err = root.OpenRoot(name) // no /proc: by name, checked just now
	}
	return tree, err
}

// Folder is an open folder of a tree being walked. It stays open while
// anything holds it: the walk while it lists it, each of its subfolders
// until they are done, and whatever a visitor holds it for (a copy of one
// of its files in another goroutine). When the last hold is released,
// Done runs and the folder is closed.
type Folder struct {
	Dir    *os.File    // the folder, opened without following a link
	Rel    string      // relative to the top of the tree, "." for the top
	Info   fs.FileInfo // of the folder, from its handle
	Parent *Folder     // nil for the top
	// Value is the visitor's own state for this folder.
	Value any
	// Done, set by the visitor, runs once when the folder and everything
	// under it has been visited and released, before it is closed.
	Done func()

	top   *os.Root
	holds atomic.Int64
}

// Hold keeps the folder open until a matching Release.
func (f *Folder) Hold() { f.holds.Add(1) }

// Release ends a hold; the last one runs Done, closes the folder and
// releases its parent.
func (f *Folder) Release() {
	if f.holds.Add(-1) != 0 {
		return
	}
	if f.Done != nil {
		f.Done()
	}
	f.Dir.Close()
	if f.Parent != nil {
		f.Parent.Release()
	}
}

// Open opens the entry name of the folder for reading if it is a regular
// file, as OpenFile does: never blocking, never opening anything else, a
// link followed only inside the tree.
func (f *Folder) Open(name string) (*os.File, fs.FileInfo, error) {
	rel := path.Join(f.Rel, name)
	in, info, err := openFileAt(f.Dir, name, f.top, rel)
	var pe *fs.PathError
	if err != nil && !(errors.As(err, &pe) && pe.Path == rel) {
		// A link followed from here fails on the name it leads to, which
		// is not what the user sees in the tree (and, for an absolute
		// link, a path of the server's): name the entry.
		err = &fs.PathError{Op: "open", Path: rel, Err: err}
	}
	return in, info, err
}

// Stat returns the attributes of the entry name of the folder, a link
// followed inside the tree.
func (f *Folder) Stat(name string) (fs.FileInfo, error) {
	return f.top.Stat(path.Join(f.Rel, name))
}

// Visitor is what a walk calls. Folder is called for each folder before
// its content; File for each entry that is not a folder (a regular file
// or a link, which link says: the visitor opens it with Folder.Open, which
// checks what it is). Either may hold the folder for work done elsewhere.
type Visitor struct {
	Folder func(*Folder) error
	File   func(f *Folder, name string, link bool) error
}

// Walk visits the tree under top depth-first in directory order, a batch
// of entries at a time, so what it holds does not grow with the tree:
// one open folder per level, at most maxDepth levels below the top (a
// deeper tree is refused). FIFOs, sockets and devices are refused
// (ErrUnsupported) from the folder's listing, without being opened, and a
// link to a folder is refused when opened. Walk returns when every folder
// is listed; folders still held by a visitor are closed when released.
func Walk(ctx context.Context, top *os.Root, maxDepth int, v Visitor) error {
	dir, err := top.OpenFile(".", os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("walk: %w", err)
	}
	info, err := dir.Stat()
	if err != nil {
		dir.Close()
		return fmt.Errorf("walk: %w", err)
	}
	if maxDepth <= 0 {
		maxDepth = staging.DefaultMaxPathDepth
	}
	f := &Folder{Dir: dir, Rel: ".", Info: info, top: top}
	f.Hold()
	defer f.Release()
	return walk(ctx, f, 0, maxDepth, v)
}

func walk(ctx context.Context, f *Folder, depth, maxDepth int, v Visitor) error {
	if v.Folder != nil {
		if err := v.Folder(f); err != nil {
			return err
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := f.Dir.ReadDir(readBatch)
		for _, e := range entries {
			if err := visit(ctx, f, e, depth, maxDepth, v); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &fs.PathError{Op: "readdir", Path: f.Rel, Err: err}
		}
	}
}

func visit(ctx context.Context, f *Folder, e fs.DirEntry, depth, maxDepth int, v Visitor) error {
	rel := path.Join(f.Rel, e.Name())
	switch t := e.Type(); {
	case t.IsDir():
		if depth+1 > maxDepth {
			deep := &TooDeepError{Max: maxDepth, Path: rel}
			r := deep.refusal(rel)
			r.Err = deep
			return r
		}
		dir, err := openDirAt(f.Dir, e.Name(), rel)
		if err != nil {
			return err
		}
		info, err := dir.Stat()
		if err != nil {
			dir.Close()
			return &fs.PathError{Op: "stat", Path: rel, Err: err}
		}
		sub := &Folder{Dir: dir, Rel: rel, Info: info, Parent: f, top: f.top}
		f.Hold()
		sub.Hold()
		defer sub.Release()
		return walk(ctx, sub, depth+1, maxDepth, v)
	case t.IsRegular(), t&fs.ModeSymlink != 0:
		if v.File != nil {
			return v.File(f, e.Name(), t&fs.ModeSymlink != 0)
		}
		return nil
	}
	return &fs.PathError{Op: "walk", Path: rel, Err: ErrUnsupported}
}

// TooDeepError is a folder of a walked tree deeper than the walk's limit;
// Path is relative to the tree's top. Walk returns it as the cause of its
// refusal, which names Path relative to the top.
type TooDeepError struct {
	Max  int
	Path string
}

func (e *TooDeepError) Error() string {
	return fmt.Sprintf("more than %d folders deep at %s", e.Max, e.Path)
}

// In is the refusal naming the folder under src, the tree's own path.
func (e *TooDeepError) In(src string) error { return e.refusal(path.Join(src, e.Path)) }

func (e *TooDeepError) refusal(p string) *staging.Error {
	return staging.Errorf(staging.Rejected, "Source tree is more than %d folders deep at %s", e.Max, p)
}

// Count walks the tree under top and returns how many folders (the top
// included) and files it holds.
func Count(ctx context.Context, top *os.Root, maxDepth int) (folders, files int64, err error) {
	err = Walk(ctx, top, maxDepth, Visitor{
		Folder: func(*Folder) error { folders++; return nil },
		File:   func(*Folder, string, bool) error { files++; return nil },
	})
	return folders, files, err
}
