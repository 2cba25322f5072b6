package testenv

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// A tree has the shape and content it says, and RemoveTree removes it,
// read-only folders included.
func TestTreeShape(t *testing.T) {
	m := NewTree(1_000_000, 100)
	if got := m.Name(999_999); got != "d099/d099/f099" {
		t.Errorf("last of a million: %s", got)
	}
	if got := m.Folders(); got != 10_100 {
		t.Errorf("folders of a million files: %d, want 100 + 100 × 100", got)
	}
	if c := m.Content(m.Name(5)); len(c) != 100 || !bytes.HasPrefix(c, []byte("d000/d000/f005\n")) {
		t.Errorf("content %q", c)
	}

	dir := t.TempDir()
	small := NewTree(2_345, 40)
	var mu sync.Mutex
	last := 0
	if err := small.Write(dir, 4, func(done int) { mu.Lock(); last = max(last, done); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	files, folders := 0, 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		if d.IsDir() {
			folders++
			return nil
		}
		files++
		rel, _ := filepath.Rel(dir, p)
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, small.Content(rel)) {
			t.Errorf("%s holds %q (%v)", rel, b, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != small.Files || folders != small.Folders() || last != small.Files {
		t.Errorf("%d files and %d folders written (progress %d), want %d and %d", files, folders, last, small.Files, small.Folders())
	}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(filepath.Join(dir, "d000/d001"), 0o550))
	must(os.Chmod(filepath.Join(dir, "d000"), 0o550))
	must(RemoveTree(dir, 3))
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("after RemoveTree: %v", err)
	}
}
