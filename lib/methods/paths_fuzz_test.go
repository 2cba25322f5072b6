package methods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// FuzzStagePaths carries storage.FuzzSource's lexical checks through to the
// file system: it stages arbitrary local_path_on_storage / relative_path
// pairs with local_copy and local_symlink over storage where links lead out
// of both roots, and checks that a refusal is a client error, that nothing
// outside the user's area changes, and that whatever was made lies inside
// it under a clean name, with no temporary output left behind.
func FuzzStagePaths(f *testing.F) {
	base := f.TempDir()
	source, target, outside := filepath.Join(base, "source"), filepath.Join(base, "target"), filepath.Join(base, "outside")
	area := filepath.Join(target, "alice")
	check := func(err error) {
		if err != nil {
			f.Fatal(err)
		}
	}
	for _, d := range []string{source + "/dir/deeper", area + "/sub", outside} {
		check(os.MkdirAll(d, 0o755))
	}
	for name, content := range map[string]string{"source/file.txt": "file", "source/dir/n.txt": "n",
		"source/dir/deeper/leaf": "leaf", "outside/secret.txt": "secret"} {
		check(os.WriteFile(filepath.Join(base, name), []byte(content), 0o644))
	}
	for link, to := range map[string]string{"source/escape": "../outside/secret.txt", "source/escapedir": "../outside",
		"source/inlink": "file.txt", "source/abs": filepath.Join(outside, "secret.txt"), "source/loop": "loop",
		"target/alice/out": "../../outside", "target/alice/in": "sub", "target/alice/abs": outside,
		"target/alice/loop": "loop"} {
		check(os.Symlink(to, filepath.Join(base, link)))
	}
	st, err := storage.Open(source, target)
	check(err)
	f.Cleanup(func() { st.Close() })
	o := Options{FileMode: 0o644, DirMode: 0o755, Workers: 2}
	copyM, linkM := LocalCopy{Storage: st, Options: o}, LocalSymlink{Storage: st, Options: o}
	outsideBefore, sourceBefore := listTree(f, outside), listTree(f, source)

	for _, seed := range [][2]string{{"file.txt", "a"}, {"dir", "b/c"}, {"escape", "x"}, {"escapedir/secret.txt", "x"},
		{"inlink", "out/x"}, {"file.txt", "in/../out/x"}, {"file.txt", "abs/x"}, {"file.txt", "loop/x"}, {"abs", "y"},
		{"../outside/secret.txt", "z"}, {"/etc/passwd", "z"}, {"file.txt", "/tmp/x"}, {"file.txt", "a\x00b"},
		{"file.txt", "\u2025/x"}, {"file.txt", "%2e%2e/x"}, {"file.txt", strings.Repeat("n", 256)},
		{"file.txt", ".skao-staging-0190b6a1-7e3c-7b3e-8000-000000000000.tmp"}, {"dir", "sub"}, {".", "all"}} {
		f.Add(seed[0], seed[1], false)
		f.Add(seed[0], seed[1], true)
	}
	f.Fuzz(func(t *testing.T, src, dst string, symlink bool) {
		var m staging.Method = copyM
		if symlink {
			m = linkM
		}
		if src == "." || strings.Trim(filepath.Clean(src), "/") == strings.Trim(source, "/") {
			return // the whole source into the area is allowed and only slow
		}
		req := staging.Request{Method: m.Name(), Username: "alice", Source: src, Target: dst}
		plan, err := m.Prepare(context.Background(), &req)
		if err == nil {
			job := &staging.Job{Operation: &staging.Operation{ID: uuid.Must(uuid.NewV7()).String()}, Request: &req}
			_, err = plan.Run(context.Background(), job)
		}
		if err != nil {
			var se *staging.Error
			if !errors.As(err, &se) || se.Detail == "" {
				t.Fatalf("%q -> %q: %v (%T) is not a *staging.Error", src, dst, err, err)
			}
			switch se.Kind {
			case staging.Rejected, staging.Forbidden, staging.Conflict, staging.Invalid:
			default:
				t.Fatalf("%q -> %q: %s %q, want a client error", src, dst, se.Kind, se.Detail)
			}
		} else {
			// What was made is a clean name inside the area, reached
			// without leaving it.
			rel := filepath.Clean(dst)
			if !filepath.IsLocal(rel) {
				t.Fatalf("%q -> %q staged outside the area", src, dst)
			}
			real, err := filepath.EvalSymlinks(filepath.Join(area, filepath.Dir(rel)))
			if err != nil {
				t.Fatal(err)
			}
			if r, err := filepath.Rel(area, real); err != nil || !filepath.IsLocal(r) && r != "." {
				t.Fatalf("%q -> %q staged in %s, outside the area", src, dst, real)
			}
		}
		if got := listTree(t, outside); !sameTree(got, outsideBefore) {
			t.Fatalf("%q -> %q changed what lies outside the roots: %v", src, dst, got)
		}
		if got := listTree(t, source); !sameTree(got, sourceBefore) {
			t.Fatalf("%q -> %q changed the source: %v", src, dst, got)
		}
		filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
			if err == nil && storage.IsTemp(d.Name()) {
				t.Fatalf("temporary output left: %s", p)
			}
			return nil
		})
	})
}

// listTree maps every path under root to its type, size and mode.
func listTree(tb testing.TB, root string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			if info, err := d.Info(); err == nil {
				out[p] = fmt.Sprint(info.Mode(), " ", info.Size())
			}
		}
		return nil
	})
	return out
}

func sameTree(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
