package methods

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

func TestLocalSymlink(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "data/obs.fits", "observation")
	fx.tree(t, "data/run", map[string]string{"a": "a", "sub/b": "b"})
	// Unusual modes, so any change would show.
	must(t, os.Chmod(filepath.Join(fx.source, "data/obs.fits"), 0o604))
	must(t, os.Chmod(filepath.Join(fx.source, "data/run"), 0o751))
	before := map[string]os.FileInfo{}
	for _, p := range []string{"data/obs.fits", "data/run", "data/run/a", "data"} {
		info, err := os.Lstat(filepath.Join(fx.source, p))
		must(t, err)
		before[p] = info
	}

	for _, tc := range []struct {
		name, source, target, root, link string
	}{
		{"file", "data/obs.fits", "links/obs.fits", "", filepath.Join(fx.source, "data/obs.fits")},
		{"folder", "data/run", "links/run", "", filepath.Join(fx.source, "data/run")},
		{"absolute source", filepath.Join(fx.source, "data/obs.fits"), "abs.fits", "", filepath.Join(fx.source, "data/obs.fits")},
		{"unclean source", "./data//run/../obs.fits", "unclean.fits", "", filepath.Join(fx.source, "data/obs.fits")},
		{"symlink target root", "data/obs.fits", "pods/obs.fits", "/mnt/source", "/mnt/source/data/obs.fits"},
		{"symlink target root, folder", "data/run", "pods/run", "/mnt/source/", "/mnt/source/data/run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts()
			o.SymlinkTargetRoot = tc.root
			m := LocalSymlink{Storage: fx.st, Options: o}
			req := staging.Request{Method: "local_symlink", Username: "alice", Source: tc.source, Target: tc.target}
			plan, err := m.Prepare(context.Background(), &req)
			if err != nil {
				t.Fatal(err)
			}
			if plan.Lock != staging.LockKey("alice", tc.target) {
				t.Errorf("Lock = %q, want LockKey(alice, %s)", plan.Lock, tc.target)
			}
			res, err := plan.Run(context.Background(), newJob(&req))
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.Message != "Data staged for user alice with method local_symlink" {
				t.Errorf("Message = %q", res.Message)
			}
			dst := filepath.Join(fx.area("alice"), tc.target)
			info, err := os.Lstat(dst)
			if err != nil || info.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("%s: %v, %v; want a symlink", dst, info, err)
			}
			if got, _ := os.Readlink(dst); got != tc.link {
				t.Errorf("link = %q, want %q", got, tc.link)
			}
			if tc.root == "" {
				// The link works from where this process sees the source.
				if _, err := os.Stat(dst); err != nil {
					t.Errorf("link does not resolve: %v", err)
				}
			}

			// The same again: already there.
			res, _, err = stage(context.Background(), t, m, req)
			if err != nil {
				t.Fatalf("second staging: %v", err)
			}
			if want := "Data already available at " + fx.inArea("alice", dst); res.Message != want {
				t.Errorf("Message = %q, want %q", res.Message, want)
			}
		})
	}

	// The source is never changed: mode, owner, times.
	for p, b := range before {
		a, err := os.Lstat(filepath.Join(fx.source, p))
		must(t, err)
		if a.Mode() != b.Mode() || !a.ModTime().Equal(b.ModTime()) || a.Size() != b.Size() {
			t.Errorf("source %s changed: %v %v -> %v %v", p, b.Mode(), b.ModTime(), a.Mode(), a.ModTime())
		}
	}
	fx.noTemps(t)
}

// Something else at the target is a conflict and is left as it is.
func TestLocalSymlinkConflict(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	fx.file(t, "g.txt", "content")
	area := fx.area("alice")
	must(t, os.MkdirAll(area, 0o755))
	for _, tc := range []struct {
		name  string
		setup func(p string)
	}{
		{"link elsewhere", func(p string) { must(t, os.Symlink(filepath.Join(fx.source, "g.txt"), p)) }},
		{"relative link to the same file", func(p string) { must(t, os.Symlink("../../source/f.txt", p)) }},
		{"dangling link", func(p string) { must(t, os.Symlink("/nowhere", p)) }},
		{"regular file", func(p string) { must(t, os.WriteFile(p, []byte("content"), 0o644)) }},
		{"folder", func(p string) { must(t, os.Mkdir(p, 0o755)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(area, tc.name)
			tc.setup(p)
			before, _ := os.Lstat(p)
			link, _ := os.Readlink(p)
			_, _, err := stage(context.Background(), t, LocalSymlink{Storage: fx.st, Options: opts()},
				staging.Request{Method: "local_symlink", Username: "alice", Source: "f.txt", Target: tc.name})
			wantStatus(t, err, http.StatusConflict, "A different file or link already exists at "+fx.inArea("alice", p))
			after, err := os.Lstat(p)
			if err != nil || after.Mode() != before.Mode() {
				t.Errorf("target changed: %v -> %v (%v)", before.Mode(), after, err)
			}
			if l, _ := os.Readlink(p); l != link {
				t.Errorf("link changed from %q to %q", link, l)
			}
		})
	}
}
