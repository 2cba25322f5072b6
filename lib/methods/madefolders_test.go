package methods

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// A local_copy that fails leaves nothing new in the user's area: the
// folders it made on the way to its target are removed, innermost first,
// while they are empty; folders that were there before stay.
func TestLocalCopyFailureRemovesMadeFolders(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	fx.tree(t, "fifodir", map[string]string{"a.txt": "a", "sub/b.txt": "b"})
	must(t, syscall.Mkfifo(filepath.Join(fx.source, "fifodir", "sub", "pipe"), 0o644))
	fx.tree(t, "escdir", map[string]string{"a.txt": "a"})
	must(t, os.Symlink("../../outside/secret.txt", filepath.Join(fx.source, "escdir", "secret")))
	area := fx.area("alice")
	must(t, os.MkdirAll(filepath.Join(area, "kept", "inner"), 0o755))
	m := LocalCopy{Storage: fx.st, Options: opts()}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, tc := range []struct {
		name   string
		ctx    context.Context
		source string
		target string
		status int
		gone   string // the outermost folder the run made, removed
		kept   string // a folder that was there before, kept ("" for none)
	}{
		{"a file cut short", cancelled, "f.txt", "new/a/b/f.txt", http.StatusServiceUnavailable, "new", ""},
		{"a tree holding a FIFO", context.Background(), "fifodir", "new/a/fifodir", http.StatusBadRequest, "new", ""},
		{"a tree holding a link out", context.Background(), "escdir", "new/escdir", http.StatusForbidden, "new", ""},
		{"a tree cut short", cancelled, "fifodir", "new/fifodir", http.StatusServiceUnavailable, "new", ""},
		{"into a folder that was there", context.Background(), "fifodir", "kept/inner/new/deeper/fifodir", http.StatusBadRequest, "kept/inner/new", "kept/inner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := stage(tc.ctx, t, m, staging.Request{Method: "local_copy", Username: "alice", Source: tc.source, Target: tc.target})
			wantStatus(t, err, tc.status, "")
			absent(t, filepath.Join(area, tc.gone))
			if tc.kept != "" {
				if info, err := os.Stat(filepath.Join(area, tc.kept)); err != nil || !info.IsDir() {
					t.Errorf("%s, there before, is gone: %v", tc.kept, err)
				}
			}
			fx.noTemps(t)
		})
	}
	// The same requests succeed afterwards, making the folders again.
	_, _, err := stage(context.Background(), t, m, staging.Request{Method: "local_copy", Username: "alice", Source: "f.txt", Target: "new/a/b/f.txt"})
	must(t, err)
}

// A failed run removes only folders that are empty and that no other run
// holds: another run writing into a folder the failed one made (its copy
// unnamed until complete, so the folder looks empty) keeps it, and so does
// anything another run put there.
func TestRemoveMadeFoldersSparesOthers(t *testing.T) {
	fx := newFixture(t)
	area := fx.area("alice")

	// Two runs into the same new folder: the first made it.
	first, err := openTarget(fx.st, "alice", "shared/deep/x")
	must(t, err)
	if len(first.made) != 2 {
		t.Fatalf("made %q, want shared and shared/deep", first.made)
	}
	second, err := openTarget(fx.st, "alice", "shared/deep/y")
	must(t, err)
	if len(second.made) != 0 {
		t.Fatalf("the second run made %q, want nothing: the folders were there", second.made)
	}
	first.finish(true)
	if _, err := os.Stat(filepath.Join(area, "shared", "deep")); err != nil {
		t.Fatalf("a folder another run holds was removed: %v", err)
	}
	second.finish(true)
	if _, err := os.Stat(filepath.Join(area, "shared", "deep")); err != nil {
		t.Fatalf("a folder the run did not make was removed: %v", err)
	}

	// A folder the failed run made that another run filled stays.
	made, err := openTarget(fx.st, "alice", "filled/sub/x")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(area, "filled", "other.txt"), []byte("other"), 0o644))
	made.finish(true)
	absent(t, filepath.Join(area, "filled", "sub"))
	if b, err := os.ReadFile(filepath.Join(area, "filled", "other.txt")); err != nil || string(b) != "other" {
		t.Fatalf("another run's file: %q, %v", b, err)
	}

	// A folder removed as another run opened it is not held: that run
	// looks again, and makes it anew.
	must(t, os.Mkdir(filepath.Join(area, "raced"), 0o755))
	root, err := fx.st.TargetRoot().OpenRoot("alice")
	must(t, err)
	defer root.Close()
	opened, err := root.OpenFile("raced", os.O_RDONLY|syscall.O_DIRECTORY, 0)
	must(t, err)
	defer opened.Close()
	must(t, os.Remove(filepath.Join(area, "raced")))
	if err := hold(root, "raced", opened); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("hold of a removed folder = %v, want fs.ErrNotExist", err)
	}
	gone, err := openTarget(fx.st, "alice", "gone/x")
	must(t, err)
	gone.finish(true)
	absent(t, filepath.Join(area, "gone"))
	again, err := openTarget(fx.st, "alice", "gone/x")
	must(t, err)
	if len(again.made) != 1 {
		t.Errorf("made %q, want gone", again.made)
	}
	again.finish(false)
	if _, err := os.Stat(filepath.Join(area, "gone")); err != nil {
		t.Fatalf("a successful run's folder was removed: %v", err)
	}
}
