package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// special lays out, in dir: a FIFO, a socket, a character device (as root:
// the same device as /dev/null), links to each, a link to a folder, a
// regular file and a link to it. It returns the names of the specials.
func special(t *testing.T, dir string) []string {
	t.Helper()
	must(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	l, err := net.Listen("unix", filepath.Join(dir, "sock"))
	must(t, err)
	t.Cleanup(func() { l.Close() })
	names := []string{"fifo", "sock", "fifolink", "socklink"}
	if os.Geteuid() == 0 {
		must(t, syscall.Mknod(filepath.Join(dir, "chardev"), syscall.S_IFCHR|0o666, 1<<8|3))
		must(t, os.Symlink("chardev", filepath.Join(dir, "devlink")))
		names = append(names, "chardev", "devlink")
	} else {
		t.Log("not root: no device node to test")
	}
	must(t, os.Symlink("fifo", filepath.Join(dir, "fifolink")))
	must(t, os.Symlink("sock", filepath.Join(dir, "socklink")))
	must(t, os.WriteFile(filepath.Join(dir, "file"), []byte("content"), 0o644))
	must(t, os.Symlink("file", filepath.Join(dir, "filelink")))
	must(t, os.Mkdir(filepath.Join(dir, "folder"), 0o755))
	must(t, os.Symlink("folder", filepath.Join(dir, "folderlink")))
	return names
}

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	specials := special(t, dir)
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()

	for _, name := range specials {
		testenv.NoHang(t, "OpenFile("+name+")", func() {
			f, _, err := OpenFile(root, name)
			if !errors.Is(err, ErrUnsupported) {
				t.Errorf("OpenFile(%s) = %v, %v; want ErrUnsupported", name, f, err)
			}
		})
	}
	for _, name := range []string{"file", "filelink"} {
		f, info, err := OpenFile(root, name)
		if err != nil {
			t.Fatalf("OpenFile(%s): %v", name, err)
		}
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil || string(b) != "content" || info.Size() != 7 || !info.Mode().IsRegular() {
			t.Errorf("OpenFile(%s) read %q, %v, size %d", name, b, err, info.Size())
		}
	}
	if _, _, err := OpenFile(root, "folder"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("OpenFile(folder) = %v, want ErrUnsupported", err)
	}
	if _, _, err := OpenFile(root, "folderlink"); !errors.Is(err, ErrLinkToFolder) {
		t.Errorf("OpenFile(folderlink) = %v, want ErrLinkToFolder", err)
	}
	if _, _, err := OpenFile(root, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFile(missing) = %v, want ErrNotExist", err)
	}

	for _, name := range specials {
		testenv.NoHang(t, "openDir("+name+")", func() {
			if _, err := openDir(root, name); err == nil {
				t.Errorf("openDir(%s) opened it", name)
			}
		})
		testenv.NoHang(t, "OpenTree("+name+")", func() {
			if _, err := OpenTree(root, name); err == nil {
				t.Errorf("OpenTree(%s) opened it", name)
			}
		})
	}
	for _, name := range []string{"folder", "folderlink"} {
		tree, err := OpenTree(root, name)
		if err != nil {
			t.Fatalf("OpenTree(%s): %v", name, err)
		}
		tree.Close()
	}
}

// Source refuses what is not a file or a folder, links to them included:
// every method resolves its source through it before anything is opened.
func TestSourceSpecial(t *testing.T) {
	fx := newFixture(t)
	for _, name := range special(t, fx.source) {
		testenv.NoHang(t, "Source("+name+")", func() {
			_, err := fx.st.Source(name)
			wantStatus(t, err, http.StatusBadRequest, "Unsupported source type (not a file or directory): "+name)
		})
	}
}

// tree makes files under dir, "a/b/c" meaning folders a, a/b and a file c.
func tree(t *testing.T, dir string, files ...string) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, f)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(f), 0o644))
	}
}

func TestWalk(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for i := range 3 {
		for j := range 2 {
			for k := range readBatch + 3 { // more than one batch per folder
				files = append(files, fmt.Sprintf("d%d/e%d/f%d", i, j, k))
			}
		}
	}
	tree(t, dir, files...)
	must(t, os.Mkdir(filepath.Join(dir, "empty"), 0o755))
	must(t, os.Symlink("d0/e0/f0", filepath.Join(dir, "link")))
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()

	var mu sync.Mutex
	var seen, folders, done []string
	var held []*Folder
	err = Walk(context.Background(), root, 8, Visitor{
		Folder: func(f *Folder) error {
			if f.Parent != nil && !slices.Contains(folders, f.Parent.Rel) {
				t.Errorf("%s visited before its parent", f.Rel)
			}
			folders = append(folders, f.Rel)
			f.Done = func() {
				mu.Lock()
				defer mu.Unlock()
				done = append(done, f.Rel)
			}
			return nil
		},
		File: func(f *Folder, name string, link bool) error {
			rel := filepath.Join(f.Rel, name)
			if link != (rel == "link") {
				t.Errorf("%s: link = %v", rel, link)
			}
			seen = append(seen, rel)
			if len(held) < 3 {
				f.Hold() // as a copy does for work in another goroutine
				held = append(held, f)
			}
			return nil
		},
	})
	must(t, err)
	want := append(slices.Clone(files), "link")
	slices.Sort(want)
	slices.Sort(seen)
	if !slices.Equal(seen, want) {
		t.Errorf("walk saw %d files, want %d", len(seen), len(want))
	}
	if len(folders) != 1+3+6+1 {
		t.Errorf("folders = %v", folders)
	}
	// The folders held stay open; everything else is done.
	if len(done) != len(folders)-3 {
		t.Errorf("done before releases: %v", done)
	}
	for _, f := range held {
		if _, _, err := f.Open("f0"); err != nil && f.Rel != "." {
			t.Errorf("held folder %s closed: %v", f.Rel, err)
		}
		f.Release()
	}
	if len(done) != len(folders) || done[len(done)-1] != "." {
		t.Errorf("done after releases = %v, want every folder, the top last", done)
	}
	idx := func(rel string) int { return slices.Index(done, rel) }
	for _, rel := range folders {
		if parent := filepath.Dir(rel); rel != "." && idx(parent) < idx(rel) {
			t.Errorf("%s done before its folder %s", parent, rel)
		}
	}
}

func TestWalkRefuses(t *testing.T) {
	t.Run("special", func(t *testing.T) {
		dir := t.TempDir()
		tree(t, dir, "a/ok")
		must(t, syscall.Mkfifo(filepath.Join(dir, "a", "fifo"), 0o644))
		root, err := os.OpenRoot(dir)
		must(t, err)
		defer root.Close()
		testenv.NoHang(t, "Walk", func() {
			_, _, err := Count(context.Background(), root, 8)
			var pe *fs.PathError
			if !errors.Is(err, ErrUnsupported) || !errors.As(err, &pe) || pe.Path != "a/fifo" {
				t.Errorf("Walk = %v, want ErrUnsupported at a/fifo", err)
			}
		})
	})
	t.Run("depth", func(t *testing.T) {
		dir := t.TempDir()
		tree(t, dir, "1/2/3/4/f")
		root, err := os.OpenRoot(dir)
		must(t, err)
		defer root.Close()
		if _, files, err := Count(context.Background(), root, 4); err != nil || files != 1 {
			t.Errorf("4 deep with limit 4: %d files, %v", files, err)
		}
		_, _, err = Count(context.Background(), root, 3)
		wantStatus(t, err, http.StatusBadRequest, "Source tree is more than 3 folders deep at 1/2/3/4")
	})
	t.Run("link to folder", func(t *testing.T) {
		dir := t.TempDir()
		tree(t, dir, "a/f")
		must(t, os.Symlink("a", filepath.Join(dir, "b")))
		root, err := os.OpenRoot(dir)
		must(t, err)
		defer root.Close()
		err = Walk(context.Background(), root, 8, Visitor{File: func(f *Folder, name string, link bool) error {
			in, _, err := f.Open(name)
			if err == nil {
				in.Close()
			}
			return err
		}})
		if !errors.Is(err, ErrLinkToFolder) {
			t.Errorf("Walk = %v, want ErrLinkToFolder", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		dir := t.TempDir()
		tree(t, dir, "a/f")
		root, err := os.OpenRoot(dir)
		must(t, err)
		defer root.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := Count(ctx, root, 8); !errors.Is(err, context.Canceled) {
			t.Errorf("Count = %v, want context.Canceled", err)
		}
	})
}

// A file swapped for a FIFO after the walk listed it is refused when it is
// opened, without waiting for a writer.
func TestFolderOpenSwapped(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir, "a/f")
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()
	err = Walk(context.Background(), root, 8, Visitor{File: func(f *Folder, name string, link bool) error {
		p := filepath.Join(dir, f.Rel, name)
		must(t, os.Remove(p))
		must(t, syscall.Mkfifo(p, 0o644))
		var err error
		testenv.NoHang(t, "Folder.Open of a swapped FIFO", func() {
			var in *os.File
			if in, _, err = f.Open(name); err == nil {
				in.Close()
			}
		})
		return err
	}})
	var pe *fs.PathError
	if !errors.Is(err, ErrUnsupported) || !errors.As(err, &pe) || pe.Path != "a/f" {
		t.Errorf("Walk = %v, want ErrUnsupported at a/f", err)
	}
}

// Links are followed as os.Root follows them: inside the root only.
func TestOpenFileLinks(t *testing.T) {
	fx := newFixture(t)
	root := fx.st.SourceRoot()
	for name, want := range map[string]string{"inlink": "file", "dir/up": "file"} {
		f, _, err := OpenFile(root, name)
		if err != nil {
			t.Fatalf("OpenFile(%s): %v", name, err)
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if string(b) != want {
			t.Errorf("OpenFile(%s) read %q, want %q", name, b, want)
		}
	}
	for _, name := range []string{"escape", "dir/escape", "chain1", "abs", "absinside"} {
		if f, _, err := OpenFile(root, name); err == nil || !IsEscape(err) {
			if f != nil {
				f.Close()
			}
			t.Errorf("OpenFile(%s) = %v, want an escape refused", name, err)
		}
	}
	if _, _, err := OpenFile(root, "loop"); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("OpenFile(loop) = %v, want ELOOP", err)
	}
	if _, _, err := OpenFile(root, "dangling"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFile(dangling) = %v, want ErrNotExist", err)
	}
}
