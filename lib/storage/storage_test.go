package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// fixture is a source and a target storage side by side with a folder
// outside both that links try to reach.
type fixture struct {
	st      *Storage
	base    string // parent of all three
	source  string
	target  string
	outside string
}

// newFixture lays out
//
//	source/file.txt, source/dir/nested.txt, source/dir/deeper/leaf.txt
//	source/inlink -> file.txt                 (inside: accepted)
//	source/dir/up -> ../file.txt              (inside: accepted)
//	source/escape -> ../outside/secret.txt    (outside)
//	source/escapedir -> ../outside            (outside, a folder)
//	source/dir/escape -> ../../outside/secret.txt
//	source/chain1 -> chain2 -> dir/chain3 -> ../../outside
//	source/abs -> <outside>/secret.txt        (absolute, outside)
//	source/absinside -> <source>/file.txt     (absolute, inside)
//	source/loop -> loop, source/dangling -> nothing
//	outside/secret.txt
//	target/mallory -> ../outside              (a user area leaving the target)
func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	base := tb.TempDir()
	fx := &fixture{base: base, source: filepath.Join(base, "source"), target: filepath.Join(base, "target"),
		outside: filepath.Join(base, "outside")}
	for _, d := range []string{fx.source, fx.outside, filepath.Join(fx.source, "dir", "deeper"), fx.target,
		filepath.Join(base, "sourcex")} {
		must(tb, os.MkdirAll(d, 0o755))
	}
	for name, content := range map[string]string{
		"source/file.txt": "file", "source/dir/nested.txt": "nested", "source/dir/deeper/leaf.txt": "leaf",
		"outside/secret.txt": "secret", "sourcex/file.txt": "sibling",
	} {
		must(tb, os.WriteFile(filepath.Join(base, name), []byte(content), 0o644))
	}
	for link, to := range map[string]string{
		"source/inlink":      "file.txt",
		"source/dir/up":      "../file.txt",
		"source/escape":      "../outside/secret.txt",
		"source/escapedir":   "../outside",
		"source/dir/escape":  "../../outside/secret.txt",
		"source/chain1":      "chain2",
		"source/chain2":      "dir/chain3",
		"source/dir/chain3":  "../../outside",
		"source/abs":         filepath.Join(fx.outside, "secret.txt"),
		"source/absinside":   filepath.Join(fx.source, "file.txt"),
		"source/loop":        "loop",
		"source/dangling":    "nothing-here",
		"target/mallory":     "../outside",
		"target/carol":       "/",
		"target/alias-alice": "alice",
	} {
		must(tb, os.Symlink(to, filepath.Join(base, link)))
	}
	st, err := Open(fx.source, fx.target)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { st.Close() })
	fx.st = st
	return fx
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// wantStatus checks that err is a *staging.Error with status (and detail,
// when not empty).
func wantStatus(t *testing.T, err error, status int, detail string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %d %q", status, detail)
	}
	var se *staging.Error
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *staging.Error", err, err)
	}
	got, gotDetail := httpx.Status(err)
	if got != status {
		t.Errorf("status = %d (%q), want %d", got, gotDetail, status)
	}
	if detail != "" && gotDetail != detail {
		t.Errorf("detail = %q, want %q", gotDetail, detail)
	}
}

func TestSource(t *testing.T) {
	fx := newFixture(t)
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		name    string
		path    string
		status  int    // 0: accepted
		rel     string // when accepted
		detail  string // when refused, exact; "" to skip
		content string // when accepted and a file
	}{
		{name: "relative file", path: "file.txt", rel: "file.txt", content: "file"},
		{name: "relative nested", path: "dir/deeper/leaf.txt", rel: "dir/deeper/leaf.txt", content: "leaf"},
		{name: "relative with dot-dot inside", path: "dir/../file.txt", rel: "file.txt", content: "file"},
		{name: "relative with dot and slashes", path: "./dir//nested.txt", rel: "dir/nested.txt", content: "nested"},
		{name: "root itself", path: ".", rel: "."},
		{name: "absolute inside", path: "SRC/dir/nested.txt", rel: "dir/nested.txt", content: "nested"},
		{name: "absolute root", path: "SRC", rel: "."},
		{name: "absolute root trailing slash", path: "SRC/", rel: "."},
		{name: "link inside root", path: "inlink", rel: "inlink", content: "file"},
		{name: "relative link up inside root", path: "dir/up", rel: "dir/up", content: "file"},

		{name: "dot-dot", path: "..", status: 403, detail: "Source path is outside the source storage: .."},
		{name: "dot-dot file", path: "../outside/secret.txt", status: 403},
		{name: "a/../../x", path: "a/../../x", status: 403, detail: "Source path is outside the source storage: a/../../x"},
		{name: "deep dot-dot", path: "dir/deeper/../../../outside", status: 403},
		{name: "absolute outside", path: "OUT/secret.txt", status: 403, detail: "Source path is outside the source storage: OUT/secret.txt"},
		{name: "absolute filesystem root", path: "/", status: 403},
		{name: "absolute etc", path: "/etc/passwd", status: 403},
		{name: "absolute sibling with root as prefix", path: "SRCx/file.txt", status: 403},
		{name: "absolute dot-dot out of root", path: "SRC/../outside/secret.txt", status: 403},
		// A path inside the storage as written, refused for a link on its way:
		// the detail says so, not that the path typed is outside.
		{name: "symlink to outside file", path: "escape", status: 403, detail: "Source path goes through a link leading outside the source storage: escape"},
		{name: "symlink to outside folder", path: "escapedir", status: 403, detail: "Source path goes through a link leading outside the source storage: escapedir"},
		{name: "through symlink to outside folder", path: "escapedir/secret.txt", status: 403, detail: "Source path goes through a link leading outside the source storage: escapedir/secret.txt"},
		{name: "nested symlink to outside", path: "dir/escape", status: 403, detail: "Source path goes through a link leading outside the source storage: dir/escape"},
		{name: "symlink chain escaping", path: "chain1", status: 403},
		{name: "through symlink chain", path: "chain1/secret.txt", status: 403, detail: "Source path goes through a link leading outside the source storage: chain1/secret.txt"},
		{name: "absolute symlink outside", path: "abs", status: 403, detail: "Source path goes through a link leading outside the source storage: abs"},
		// os.Root refuses every absolute link, even one pointing inside.
		{name: "absolute symlink inside", path: "absinside", status: 403, detail: "Source path goes through a link leading outside the source storage: absinside"},
		{name: "absolute path to escaping link", path: "SRC/escape", status: 403, detail: "Source path goes through a link leading outside the source storage: SRC/escape"},

		{name: "NUL byte", path: "file.txt\x00.jpg", status: 422, detail: "Source path contains a NUL byte"},
		{name: "missing", path: "nope/missing.txt", status: 400, detail: "Source path does not exist: nope/missing.txt"},
		{name: "missing absolute", path: "SRC/missing", status: 400},
		{name: "below a file", path: "file.txt/x", status: 400, detail: "Source path does not exist: file.txt/x"},
		{name: "dangling link", path: "dangling", status: 400, detail: "Source path does not exist: dangling"},
		{name: "link loop", path: "loop", status: 400},
		{name: "name too long", path: long, status: 400},
		{name: "empty", path: "", status: 422, detail: "local_path_on_storage is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := strings.NewReplacer("SRC", fx.source, "OUT", fx.outside).Replace(tc.path)
			if strings.HasPrefix(tc.path, "SRCx") {
				p = fx.source + "x" + strings.TrimPrefix(tc.path, "SRCx")
			}
			src, err := fx.st.Source(p)
			if tc.status != 0 {
				if src != nil {
					t.Errorf("Source(%q) returned %+v with its error", p, src)
				}
				tc.detail = strings.NewReplacer("SRC", fx.source, "OUT", fx.outside).Replace(tc.detail)
				wantStatus(t, err, tc.status, tc.detail)
				return
			}
			if err != nil {
				t.Fatalf("Source(%q): %v", p, err)
			}
			if src.Rel != tc.rel {
				t.Errorf("Rel = %q, want %q", src.Rel, tc.rel)
			}
			if want := filepath.Join(fx.source, tc.rel); src.Path != want {
				t.Errorf("Path = %q, want %q", src.Path, want)
			}
			assertInside(t, src.Path, fx.source)
			if tc.content != "" {
				got, err := os.ReadFile(src.Path)
				if err != nil || string(got) != tc.content {
					t.Errorf("content = %q, %v; want %q", got, err, tc.content)
				}
				if !src.Info.Mode().IsRegular() {
					t.Errorf("Info.Mode = %v, want a regular file (links followed)", src.Info.Mode())
				}
			}
		})
	}
}

// assertInside checks that p, symlinks evaluated, is root or below it.
func assertInside(t testing.TB, p, root string) {
	t.Helper()
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		t.Fatalf("EvalSymlinks(%q): %v", root, err)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatalf("EvalSymlinks(%q): %v", p, err)
	}
	rel, err := filepath.Rel(realRoot, real)
	if err != nil || !filepath.IsLocal(rel) {
		t.Fatalf("%q resolves to %q, outside %q", p, real, realRoot)
	}
}

// A source root reached through a symlink accepts absolute paths under
// either spelling and reports them under SOURCE_STORAGE_PATH.
func TestSourceRootThroughSymlink(t *testing.T) {
	fx := newFixture(t)
	link := filepath.Join(fx.base, "source-link")
	must(t, os.Symlink("source", link))
	st, err := Open(link, filepath.Join(fx.base, "target2"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, p := range []string{filepath.Join(link, "dir/nested.txt"), filepath.Join(fx.source, "dir/nested.txt"), "dir/nested.txt"} {
		src, err := st.Source(p)
		if err != nil {
			t.Fatalf("Source(%q): %v", p, err)
		}
		if src.Rel != "dir/nested.txt" || src.Path != filepath.Join(link, "dir/nested.txt") {
			t.Errorf("Source(%q) = Rel %q Path %q", p, src.Rel, src.Path)
		}
	}
	for _, p := range []string{filepath.Join(link, "escape"), filepath.Join(link, "../outside/secret.txt"), fx.outside} {
		_, err := st.Source(p)
		wantStatus(t, err, http.StatusForbidden, "")
	}
}

func TestTargetRel(t *testing.T) {
	id := uuid.Must(uuid.NewV7()).String()
	for _, tc := range []struct {
		name, path string
		status     int
		want       string
	}{
		{name: "file", path: "data.txt", want: "data.txt"},
		{name: "nested", path: "a/b/c.fits", want: "a/b/c.fits"},
		{name: "cleaned", path: "./a//b/../c/", want: "a/c"},
		{name: "dot-dot inside", path: "a/../b", want: "b"},
		{name: "dotfile", path: ".hidden", want: ".hidden"},
		{name: "similar to a temp name", path: ".skao-staging-notanid.tmp", want: ".skao-staging-notanid.tmp"},

		{name: "absolute", path: "/etc/passwd", status: 403},
		{name: "absolute in area", path: "/a/b", status: 403},
		{name: "dot-dot", path: "..", status: 403},
		{name: "dot-dot file", path: "../bob/x", status: 403},
		{name: "a/../../x", path: "a/../../x", status: 403},
		{name: "empty", path: "", status: 422},
		{name: "NUL", path: "a\x00b", status: 422},
		{name: "the area itself", path: ".", status: 400},
		{name: "the area itself via dot-dot", path: "a/..", status: 400},
		{name: "the area itself with slash", path: "./", status: 400},
		{name: "temp name", path: TempName(id), status: 400},
		{name: "temp name nested", path: "a/" + TempName(id), status: 400},
		{name: "inside a temp folder", path: TempName(id) + "/x", status: 400},
		{name: "inside a nested temp folder", path: "a/" + TempName(id) + "/b/x", status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rel, err := TargetRel(tc.path)
			if tc.status != 0 {
				if rel != "" {
					t.Errorf("TargetRel(%q) = %q with its error", tc.path, rel)
				}
				wantStatus(t, err, tc.status, "")
				return
			}
			if err != nil {
				t.Fatalf("TargetRel(%q): %v", tc.path, err)
			}
			if rel != tc.want {
				t.Errorf("TargetRel(%q) = %q, want %q", tc.path, rel, tc.want)
			}
		})
	}
}

func TestUserArea(t *testing.T) {
	fx := newFixture(t)
	area, err := fx.st.UserArea("alice")
	if err != nil {
		t.Fatalf("UserArea(alice): %v", err)
	}
	must(t, area.WriteFile("hello.txt", []byte("hi"), 0o644))
	area.Close()
	if got, err := os.ReadFile(filepath.Join(fx.target, "alice", "hello.txt")); err != nil || string(got) != "hi" {
		t.Fatalf("file written through the area = %q, %v", got, err)
	}
	if got := fx.st.UserAreaPath("alice"); got != filepath.Join(fx.target, "alice") {
		t.Errorf("UserAreaPath = %q", got)
	}
	// Opening again finds the same area.
	area, err = fx.st.UserArea("alice")
	if err != nil {
		t.Fatalf("UserArea(alice) again: %v", err)
	}
	if _, err := area.Stat("hello.txt"); err != nil {
		t.Errorf("second open does not see the file: %v", err)
	}
	// A file written through the area cannot leave it.
	if _, err := area.Create("../escaped.txt"); !IsEscape(err) {
		t.Errorf("Create(../escaped.txt) = %v, want an escape", err)
	}
	area.Close()

	for _, tc := range []struct {
		name, user string
		status     int
	}{
		{"area linked outside the target storage", "mallory", 403},
		{"area linked to the filesystem root", "carol", 403},
		{"dot-dot", "..", 422},
		{"slash", "a/b", 422},
		{"absolute", "/etc", 422},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, err := fx.st.UserArea(tc.user)
			if root != nil {
				root.Close()
			}
			wantStatus(t, err, tc.status, "")
		})
	}
	if _, err := os.Stat(filepath.Join(fx.outside, "secret.txt")); err != nil {
		t.Errorf("outside was disturbed: %v", err)
	}
	if entries, _ := os.ReadDir(fx.outside); len(entries) != 1 {
		t.Errorf("outside holds %d entries, want 1", len(entries))
	}
}

// IsEscape recognises os.Root's unexported escape error by its text. These
// cases pin it against the real errors, so a Go release that changes the
// text (or the error types) fails here rather than turning 403s into 500s.
func TestIsEscapePinned(t *testing.T) {
	fx := newFixture(t)
	r := fx.st.SourceRoot()
	escapes := map[string]func() error{
		"Open ..":         func() error { _, err := r.Open("../outside/secret.txt"); return err },
		"Stat link":       func() error { _, err := r.Stat("escape"); return err },
		"Stat chain":      func() error { _, err := r.Stat("chain1"); return err },
		"Stat absolute":   func() error { _, err := r.Stat("abs"); return err },
		"OpenRoot link":   func() error { _, err := r.OpenRoot("escapedir"); return err },
		"Lstat ..":        func() error { _, err := r.Lstat("../outside"); return err },
		"MkdirAll link":   func() error { return fx.st.TargetRoot().MkdirAll("mallory/sub", 0o755) },
		"Rename ..":       func() error { return r.Rename("file.txt", "../stolen.txt") },
		"Link ..":         func() error { return r.Link("../outside/secret.txt", "copied.txt") },
		"wrapped Open ..": func() error { _, err := r.Open(".."); return fmt.Errorf("context: %w", err) },
	}
	for name, op := range escapes {
		t.Run(name, func(t *testing.T) {
			err := op()
			if err == nil {
				t.Fatal("no error: the operation escaped the root")
			}
			if !IsEscape(err) {
				t.Fatalf("IsEscape(%#v) = false; os.Root's escape error changed: %v", err, err)
			}
			if !strings.Contains(err.Error(), "path escapes from parent") {
				t.Errorf("error text %q no longer says %q", err, "path escapes from parent")
			}
			wantStatus(t, classify(err, "missing", "escape"), http.StatusForbidden, "escape")
		})
	}
	_, notExist := r.Open("missing")
	_, notDir := r.Stat("file.txt/x")
	for name, err := range map[string]error{
		"nil":              nil,
		"not exist":        notExist,
		"not a directory":  notDir,
		"ErrNotExist":      fs.ErrNotExist,
		"PathError EACCES": &fs.PathError{Op: "open", Path: "x", Err: syscall.EACCES},
		"LinkError EXDEV":  &os.LinkError{Op: "rename", Old: "a", New: "b", Err: syscall.EXDEV},
	} {
		t.Run("not "+name, func(t *testing.T) {
			if IsEscape(err) {
				t.Errorf("IsEscape(%v) = true", err)
			}
		})
	}
	if notExist == nil || notDir == nil {
		t.Fatal("the negative cases did not fail as expected")
	}
	wantStatus(t, classify(notExist, "missing", "escape"), http.StatusBadRequest, "missing")
	wantStatus(t, classify(notDir, "missing", "escape"), http.StatusBadRequest, "missing")
	wantStatus(t, classify(&fs.PathError{Op: "open", Path: "x", Err: syscall.EACCES}, "missing", "escape"), http.StatusForbidden, "Permission denied")
	wantStatus(t, classify(&fs.PathError{Op: "open", Path: "x", Err: syscall.EIO}, "missing", "escape"), http.StatusInternalServerError, "Storage error")
}

func TestTempNames(t *testing.T) {
	for range 5 {
		id := uuid.Must(uuid.NewV7()).String()
		name := TempName(id)
		if name != ".skao-staging-"+id+".tmp" {
			t.Errorf("TempName(%q) = %q", id, name)
		}
		if !IsTemp(name) {
			t.Errorf("IsTemp(%q) = false", name)
		}
		if got := TempOperation(name); got != id {
			t.Errorf("TempOperation(%q) = %q, want %q", name, got, id)
		}
	}
	id := uuid.Must(uuid.NewRandom()).String()
	for _, name := range []string{
		"", "data.txt", ".skao-staging-.tmp", ".skao-staging-abc.tmp", "skao-staging-" + id + ".tmp",
		".skao-staging-" + id, ".skao-staging-" + id + ".tmp.bak", "x.skao-staging-" + id + ".tmp",
		".skao-staging-" + strings.ToUpper(id) + ".tmp", "dir/" + TempName(id),
		".skao-staging-" + id + "0.tmp",
	} {
		if IsTemp(name) {
			t.Errorf("IsTemp(%q) = true", name)
		}
		if got := TempOperation(name); got != "" {
			t.Errorf("TempOperation(%q) = %q, want \"\"", name, got)
		}
	}
}

// FuzzSource checks that whatever local_path_on_storage and relative_path a
// client sends, an accepted path stays inside its root and a refused one is
// a client error (never a 5xx, which brokers would retry).
func FuzzSource(f *testing.F) {
	fx := newFixture(f)
	area := filepath.Join(fx.target, "alice")
	for _, d := range []string{"sub/deeper"} {
		must(f, os.MkdirAll(filepath.Join(area, d), 0o755))
	}
	must(f, os.Symlink("sub", filepath.Join(area, "inlink")))
	must(f, os.Symlink("../../outside", filepath.Join(area, "outlink")))
	areaRoot, err := fx.st.UserArea("alice")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { areaRoot.Close() })

	for _, seed := range []string{
		"file.txt", "dir/nested.txt", ".", "..", "a/../../x", "/etc/passwd", fx.source + "/dir",
		fx.source + "/../outside", "escape", "chain1/secret.txt", "inlink", "dir/up", "abs", "loop",
		"x\x00y", "", "sub/deeper/f", "outlink/x", TempName("0190b6a1-7e3c-7b3e-8000-000000000000"),
		"./dir//deeper/../nested.txt",
		// Regressions: the area itself, a temporary folder as a parent, a
		// link loop and an overlong name (once 500s).
		"a/..", "x/" + TempName("0190b6a1-7e3c-7b3e-8000-000000000000") + "/y", "loop/x", strings.Repeat("n", 300),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		src, err := fx.st.Source(p)
		if err == nil {
			if !filepath.IsLocal(src.Rel) {
				t.Fatalf("Source(%q).Rel = %q is not local", p, src.Rel)
			}
			if src.Path != filepath.Join(fx.source, src.Rel) {
				t.Fatalf("Source(%q).Path = %q, Rel %q", p, src.Path, src.Rel)
			}
			assertInside(t, src.Path, fx.source)
		} else {
			clientError(t, "Source", p, err)
		}

		rel, err := TargetRel(p)
		if err != nil {
			clientError(t, "TargetRel", p, err)
			return
		}
		if !filepath.IsLocal(rel) || rel == "." || rel != filepath.Clean(rel) {
			t.Fatalf("TargetRel(%q) = %q: not a clean local path below the area", p, rel)
		}
		for _, part := range strings.Split(rel, "/") {
			if IsTemp(part) {
				t.Fatalf("TargetRel(%q) = %q holds a temporary name", p, rel)
			}
		}
		// Lexically below the area; where its folder exists, through the
		// area's root, it resolves below the area too.
		full := filepath.Join(area, rel)
		if r, err := filepath.Rel(area, full); err != nil || !filepath.IsLocal(r) || r == "." {
			t.Fatalf("TargetRel(%q) = %q leaves the area: %q", p, rel, full)
		}
		if info, err := areaRoot.Stat(filepath.Dir(rel)); err == nil && info.IsDir() {
			assertInside(t, filepath.Join(area, filepath.Dir(rel)), area)
		}
	})
}

func clientError(t *testing.T, fn, p string, err error) {
	t.Helper()
	var se *staging.Error
	if !errors.As(err, &se) {
		t.Fatalf("%s(%q): %v (%T) is not a *staging.Error", fn, p, err, err)
	}
	switch se.Kind {
	case staging.Rejected, staging.Forbidden, staging.Invalid:
	default:
		t.Fatalf("%s(%q): %s %q, want rejected, forbidden or invalid", fn, p, se.Kind, se.Detail)
	}
}
