package methods

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// fixture is a source storage, a target storage and a folder outside both.
type fixture struct {
	base, source, target, outside string
	st                            *storage.Storage
}

// Times given to source files and folders, so kept times are recognisable.
var (
	fileTime = time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	dirTime  = time.Date(2020, 1, 2, 3, 4, 5, 987654321, time.UTC)
)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	fx := &fixture{base: base, source: filepath.Join(base, "source"), target: filepath.Join(base, "target"),
		outside: filepath.Join(base, "outside")}
	for _, d := range []string{fx.source, fx.target, fx.outside} {
		must(t, os.MkdirAll(d, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(fx.outside, "secret.txt"), []byte("secret"), 0o644))
	st, err := storage.Open(fx.source, fx.target)
	if err != nil {
		t.Fatal(err)
	}
	fx.st = st
	t.Cleanup(func() {
		st.Close()
		// Staged folders are read-only; let TempDir's cleanup remove them
		// even when the tests do not run as root.
		filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	return fx
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// file writes a source file with fileTime as its modification time.
func (fx *fixture) file(t *testing.T, rel, content string) {
	t.Helper()
	p := filepath.Join(fx.source, rel)
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), 0o644))
	must(t, os.Chtimes(p, fileTime, fileTime))
}

// tree writes source files under dir (relative names to contents) and then
// gives every folder under dir, dir included, dirTime.
func (fx *fixture) tree(t *testing.T, dir string, files map[string]string, emptyDirs ...string) {
	t.Helper()
	for rel, content := range files {
		fx.file(t, filepath.Join(dir, rel), content)
	}
	for _, d := range emptyDirs {
		must(t, os.MkdirAll(filepath.Join(fx.source, dir, d), 0o755))
	}
	root := filepath.Join(fx.source, dir)
	var dirs []string
	must(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return err
	}))
	for i := len(dirs) - 1; i >= 0; i-- {
		must(t, os.Chtimes(dirs[i], dirTime, dirTime))
	}
}

// area is the absolute path of a user's area.
func (fx *fixture) area(user string) string { return filepath.Join(fx.target, user) }

// inArea is p relative to the user's area, as answers name targets: never
// by the server's absolute paths.
func (fx *fixture) inArea(user, p string) string {
	rel, err := filepath.Rel(fx.area(user), p)
	if err != nil || !filepath.IsLocal(rel) {
		panic("not in the area: " + p)
	}
	return rel
}

func opts() Options {
	return Options{FileMode: 0o400, DirMode: 0o500, Workers: 4}
}

func newJob(req *staging.Request) *staging.Job {
	return &staging.Job{Operation: &staging.Operation{ID: uuid.Must(uuid.NewV7()).String()}, Request: req}
}

// stage prepares and runs req with m, as the pipeline would minus the store.
func stage(ctx context.Context, t *testing.T, m staging.Method, req staging.Request) (*staging.Result, *staging.Job, error) {
	t.Helper()
	plan, err := m.Prepare(ctx, &req)
	if err != nil {
		return nil, nil, err
	}
	job := newJob(&req)
	res, err := plan.Run(ctx, job)
	if err == nil && res == nil {
		t.Fatal("Run returned neither a result nor an error")
	}
	return res, job, err
}

// wantStatus checks that err is a *staging.Error with status and, when
// detail is not empty, that detail.
func wantStatus(t *testing.T, err error, status int, detail string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %d %s", status, detail)
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

// noTemps fails if a temporary output is left anywhere in the fixture.
func (fx *fixture) noTemps(t *testing.T) {
	t.Helper()
	filepath.WalkDir(fx.base, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".skao-staging-") {
			t.Errorf("temporary output left behind: %s", p)
		}
		return nil
	})
}

// absent fails if p exists (as anything, a dangling link included).
func absent(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists (%v), want nothing there", p, err)
	}
}

func perm(t *testing.T, p string) fs.FileMode {
	t.Helper()
	info, err := os.Lstat(p)
	must(t, err)
	return info.Mode().Perm()
}

func owner(t *testing.T, p string) (uid, gid uint32) {
	t.Helper()
	info, err := os.Lstat(p)
	must(t, err)
	st := info.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

func mtime(t *testing.T, p string) time.Time {
	t.Helper()
	info, err := os.Lstat(p)
	must(t, err)
	return info.ModTime()
}

// node is what compareTrees sees of one entry.
type node struct {
	dir     bool
	content string
	size    int64
	mod     time.Time
	perm    fs.FileMode
}

func snapshot(t *testing.T, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	must(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n := node{dir: d.IsDir(), mod: info.ModTime(), perm: info.Mode().Perm(), size: info.Size()}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.content = string(b)
		} else if !d.IsDir() {
			return fmt.Errorf("%s: unexpected %v", p, info.Mode())
		}
		out[rel] = n
		return nil
	}))
	return out
}

func keys(m map[string]node) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

func TestLocalCopyFile(t *testing.T) {
	fx := newFixture(t)
	content := strings.Repeat("0123456789abcdef", 4096) + "tail"
	fx.file(t, "data/obs.fits", content)
	m := LocalCopy{Storage: fx.st, Options: opts()}
	req := staging.Request{Method: "local_copy", Username: "alice", Source: "data/obs.fits", Target: "in/obs.fits"}

	plan, err := m.Prepare(context.Background(), &req)
	if err != nil {
		t.Fatal(err)
	}
	if want := staging.LockKey("alice", "in/obs.fits"); plan.Lock != want {
		t.Errorf("Lock = %q, want LockKey(alice, in/obs.fits)", plan.Lock)
	}
	job := newJob(&req)
	res, err := plan.Run(context.Background(), job)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Message != "Data staged for user alice with method local_copy" {
		t.Errorf("Message = %q", res.Message)
	}
	if res.Bytes != int64(len(content)) || res.Download != nil {
		t.Errorf("Bytes = %d (want %d), Download = %v", res.Bytes, len(content), res.Download)
	}
	if total, done := job.Counts(); total != int64(len(content)) || done != int64(len(content)) {
		t.Errorf("Counts = %d, %d, want %d both", total, done, len(content))
	}
	dst := filepath.Join(fx.area("alice"), "in/obs.fits")
	got, err := os.ReadFile(dst)
	if err != nil || string(got) != content {
		t.Fatalf("staged content differs (%d bytes, %v)", len(got), err)
	}
	if p := perm(t, dst); p != 0o400 {
		t.Errorf("mode = %o, want 400", p)
	}
	if mt := mtime(t, dst); !mt.Equal(fileTime) {
		t.Errorf("mtime = %v, want %v", mt, fileTime)
	}
	if info, _ := os.Lstat(dst); info.Sys().(*syscall.Stat_t).Nlink != 1 {
		t.Errorf("staged file has %d links, want 1 (the temporary name removed)", info.Sys().(*syscall.Stat_t).Nlink)
	}
	// The source is not touched.
	if p := perm(t, filepath.Join(fx.source, "data/obs.fits")); p != 0o644 {
		t.Errorf("source mode changed to %o", p)
	}
	fx.noTemps(t)

	// The same again: already there.
	res, _, err = stage(context.Background(), t, m, req)
	if err != nil {
		t.Fatalf("second staging: %v", err)
	}
	if want := "Data already available at " + fx.inArea("alice", dst); res.Message != want {
		t.Errorf("Message = %q, want %q", res.Message, want)
	}
	// Through an absolute source path, and a target spelled differently.
	req.Source, req.Target = filepath.Join(fx.source, "data/obs.fits"), "./in//obs.fits"
	res, _, err = stage(context.Background(), t, m, req)
	if err != nil || res.Message != "Data already available at "+fx.inArea("alice", dst) {
		t.Errorf("absolute source, unclean target: %v, %+v", err, res)
	}
	fx.noTemps(t)
}

func TestLocalCopyTree(t *testing.T) {
	fx := newFixture(t)
	files := map[string]string{
		"a.txt":                 "alpha",
		"b.bin":                 strings.Repeat("b", 100_000),
		"sub/c.txt":             "charlie",
		"sub/zero":              "",
		"sub/deeper/d.txt":      "delta",
		"sub/deeper/e.txt":      strings.Repeat("e", 4097),
		"other/f.txt":           "foxtrot",
		"other/deep/er/est/g.x": "golf",
	}
	fx.tree(t, "obs/run1", files, "empty", "sub/empty")
	var total int64
	for _, c := range files {
		total += int64(len(c))
	}
	m := LocalCopy{Storage: fx.st, Options: opts()}
	req := staging.Request{Method: "local_copy", Username: "alice", Source: "obs/run1", Target: "copies/run1"}
	res, job, err := stage(context.Background(), t, m, req)
	if err != nil {
		t.Fatalf("stage: %v", err)
	}
	if res.Message != "Data staged for user alice with method local_copy" || res.Bytes != total {
		t.Errorf("Result = %+v, want %d bytes", res, total)
	}
	if jt, jd := job.Counts(); jt != total || jd != total {
		t.Errorf("Counts = %d, %d, want %d", jt, jd, total)
	}
	dst := filepath.Join(fx.area("alice"), "copies/run1")
	src := snapshot(t, filepath.Join(fx.source, "obs/run1"))
	got := snapshot(t, dst)
	if !equalStrings(keys(got), keys(src)) {
		t.Fatalf("staged tree %q, want %q", keys(got), keys(src))
	}
	for rel, s := range src {
		g := got[rel]
		if g.dir != s.dir || g.content != s.content || g.size != s.size {
			t.Errorf("%s: staged %+v, source %+v", rel, g, s)
		}
		if !g.mod.Equal(s.mod) {
			t.Errorf("%s: mtime %v, want %v", rel, g.mod, s.mod)
		}
		wantPerm := fs.FileMode(0o400)
		if s.dir {
			wantPerm = 0o500
		}
		if g.perm != wantPerm {
			t.Errorf("%s: mode %o, want %o", rel, g.perm, wantPerm)
		}
	}
	if !got["."].mod.Equal(dirTime) || !got["sub/deeper"].mod.Equal(dirTime) {
		t.Errorf("folder times not kept: %v, %v", got["."].mod, got["sub/deeper"].mod)
	}
	fx.noTemps(t)

	res, _, err = stage(context.Background(), t, m, req)
	if err != nil {
		t.Fatalf("second staging: %v", err)
	}
	if want := "Data already available at " + fx.inArea("alice", dst); res.Message != want {
		t.Errorf("Message = %q, want %q", res.Message, want)
	}

	// A source that changed since is a different tree: a conflict, and the
	// staged copy is left as it was.
	fx.file(t, "obs/run1/sub/new.txt", "new")
	_, _, err = stage(context.Background(), t, m, req)
	wantStatus(t, err, http.StatusConflict, "A different file or link already exists at "+fx.inArea("alice", dst))
	absent(t, filepath.Join(dst, "sub/new.txt"))
	fx.noTemps(t)
}

// What is already at the target decides between "already available" and a
// conflict; a conflict leaves it untouched.
func TestLocalCopyExistingTarget(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	fx.tree(t, "dir", map[string]string{"x": "x"})
	area := fx.area("alice")
	must(t, os.MkdirAll(filepath.Join(area, "sub"), 0o755))
	same := func(p string) {
		must(t, os.WriteFile(p, []byte("content"), 0o644))
		must(t, os.Chtimes(p, fileTime, fileTime))
	}
	for _, tc := range []struct {
		name   string
		source string
		setup  func(p string) // makes what is at area/<target> beforehand
		status int            // 0: already available
	}{
		{"same file", "f.txt", same, 0},
		{"same file, other mode", "f.txt", func(p string) { same(p); os.Chmod(p, 0o666) }, 0},
		{"different content, same size", "f.txt", func(p string) {
			must(t, os.WriteFile(p, []byte("CONTENT"), 0o644))
			must(t, os.Chtimes(p, time.Now(), time.Now()))
		}, http.StatusConflict},
		{"different size", "f.txt", func(p string) { must(t, os.WriteFile(p, []byte("other"), 0o644)) }, http.StatusConflict},
		{"symlink to outside", "f.txt", func(p string) { must(t, os.Symlink(filepath.Join(fx.outside, "secret.txt"), p)) }, http.StatusConflict},
		{"symlink to the source itself", "f.txt", func(p string) { must(t, os.Symlink(filepath.Join(fx.source, "f.txt"), p)) }, http.StatusConflict},
		{"symlink to an identical file", "f.txt", func(p string) {
			same(p + ".real")
			must(t, os.Symlink(filepath.Base(p)+".real", p))
		}, http.StatusConflict},
		{"dangling symlink", "f.txt", func(p string) { must(t, os.Symlink("nowhere", p)) }, http.StatusConflict},
		{"folder at a file's target", "f.txt", func(p string) { must(t, os.Mkdir(p, 0o755)) }, http.StatusConflict},
		{"file at a folder's target", "dir", func(p string) { same(p) }, http.StatusConflict},
		{"empty folder at a folder's target", "dir", func(p string) { must(t, os.Mkdir(p, 0o755)) }, http.StatusConflict},
		{"symlink to a folder at a folder's target", "dir", func(p string) { must(t, os.Symlink(filepath.Join(fx.source, "dir"), p)) }, http.StatusConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := "sub/" + strings.ReplaceAll(tc.name, " ", "_")
			p := filepath.Join(area, target)
			tc.setup(p)
			before, _ := os.Lstat(p)
			link, _ := os.Readlink(p)
			res, _, err := stage(context.Background(), t, LocalCopy{Storage: fx.st, Options: opts()},
				staging.Request{Method: "local_copy", Username: "alice", Source: tc.source, Target: target})
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("stage: %v", err)
				}
				if want := "Data already available at " + fx.inArea("alice", p); res.Message != want {
					t.Errorf("Message = %q, want %q", res.Message, want)
				}
			} else {
				wantStatus(t, err, tc.status, "A different file or link already exists at "+fx.inArea("alice", p))
			}
			after, err := os.Lstat(p)
			if err != nil || after.Mode() != before.Mode() || after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
				t.Errorf("what was at the target changed: %v -> %v (%v)", before, after, err)
			}
			if l, _ := os.Readlink(p); l != link {
				t.Errorf("link changed from %q to %q", link, l)
			}
			fx.noTemps(t)
		})
	}
	if b, _ := os.ReadFile(filepath.Join(fx.outside, "secret.txt")); string(b) != "secret" {
		t.Errorf("outside file changed: %q", b)
	}
}

// A target folder reached through a symlink that leaves the user area is
// refused, by both writing methods, and nothing is written there.
func TestTargetParentEscapes(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	fx.tree(t, "dir", map[string]string{"x": "x"})
	area := fx.area("alice")
	must(t, os.MkdirAll(filepath.Join(fx.target, "bob"), 0o755))
	must(t, os.MkdirAll(area, 0o755))
	must(t, os.Symlink("../../outside", filepath.Join(area, "out")))
	must(t, os.Symlink(fx.outside, filepath.Join(area, "absout")))
	must(t, os.Symlink("../bob", filepath.Join(area, "bob")))
	must(t, os.MkdirAll(filepath.Join(area, "real"), 0o755))
	must(t, os.Symlink("../out", filepath.Join(area, "real", "chain")))
	for _, m := range []staging.Method{LocalCopy{Storage: fx.st, Options: opts()}, LocalSymlink{Storage: fx.st, Options: opts()}} {
		for _, source := range []string{"f.txt", "dir"} {
			for _, target := range []string{"out/x", "out/new/x", "absout/x", "bob/x", "real/chain/x", "real/chain/deeper/x"} {
				t.Run(m.Name()+"/"+source+"/"+target, func(t *testing.T) {
					_, _, err := stage(context.Background(), t, m,
						staging.Request{Method: m.Name(), Username: "alice", Source: source, Target: target})
					wantStatus(t, err, http.StatusForbidden, "Target path is outside the user area: "+target)
				})
			}
		}
	}
	entries, _ := os.ReadDir(fx.outside)
	if len(entries) != 1 {
		t.Errorf("outside holds %d entries, want only secret.txt", len(entries))
	}
	if entries, _ := os.ReadDir(filepath.Join(fx.target, "bob")); len(entries) != 0 {
		t.Errorf("bob's area holds %d entries, want none", len(entries))
	}
	fx.noTemps(t)
}

// A user area that is itself a link out of the target storage is refused.
func TestUserAreaLinkedOutside(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	must(t, os.Symlink("../outside", filepath.Join(fx.target, "mallory")))
	for _, m := range []staging.Method{LocalCopy{Storage: fx.st, Options: opts()}, LocalSymlink{Storage: fx.st, Options: opts()}} {
		_, _, err := stage(context.Background(), t, m, staging.Request{Method: m.Name(), Username: "mallory", Source: "f.txt", Target: "x"})
		wantStatus(t, err, http.StatusForbidden, "User area is outside the target storage")
	}
	absent(t, filepath.Join(fx.outside, "x"))
}

// Paths a request may not use are refused by Prepare, before anything is
// written.
func TestPrepareRefuses(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	must(t, syscall.Mkfifo(filepath.Join(fx.source, "fifo"), 0o644))
	must(t, os.Symlink("../outside/secret.txt", filepath.Join(fx.source, "escape")))
	id := uuid.Must(uuid.NewV7()).String()
	for _, tc := range []struct {
		name, source, target string
		status               int
		detail               string
	}{
		{"missing source", "nope.txt", "x", 400, "Source path does not exist: nope.txt"},
		{"source outside", "../outside/secret.txt", "x", 403, ""},
		{"source link outside", "escape", "x", 403, "Source path goes through a link leading outside the source storage: escape"},
		{"source absolute outside", filepath.Join(fx.outside, "secret.txt"), "x", 403, ""},
		{"source NUL", "f\x00.txt", "x", 422, ""},
		{"empty source", "", "x", 422, ""},
		{"target absolute", "f.txt", "/tmp/x", 403, ""},
		{"target dot-dot", "f.txt", "../bob/x", 403, ""},
		{"target empty", "f.txt", "", 422, ""},
		{"target area itself", "f.txt", ".", 400, ""},
		{"target temp name", "f.txt", storage.TempName(id), 400, ""},
		{"target in a temp folder", "f.txt", storage.TempName(id) + "/x", 400, ""},
	} {
		for _, m := range []staging.Method{LocalCopy{Storage: fx.st, Options: opts()}, LocalSymlink{Storage: fx.st, Options: opts()}} {
			t.Run(m.Name()+"/"+tc.name, func(t *testing.T) {
				plan, err := m.Prepare(context.Background(), &staging.Request{Method: m.Name(), Username: "alice", Source: tc.source, Target: tc.target})
				if plan != nil {
					t.Errorf("Prepare returned a plan with its error")
				}
				wantStatus(t, err, tc.status, tc.detail)
			})
		}
	}
	_, err := LocalCopy{Storage: fx.st, Options: opts()}.Prepare(context.Background(),
		&staging.Request{Method: "local_copy", Username: "alice", Source: "fifo", Target: "x"})
	wantStatus(t, err, http.StatusBadRequest, "Unsupported source type (not a file or directory): fifo")
	absent(t, fx.area("alice"))
}

// Targets that cannot be written are refused by Run with a client error,
// never a 5xx a broker would retry, and leave no temporary output.
func TestLocalCopyTargetErrors(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	area := fx.area("alice")
	must(t, os.MkdirAll(area, 0o755))
	must(t, os.WriteFile(filepath.Join(area, "plain"), []byte("x"), 0o644))
	must(t, os.Symlink("loop", filepath.Join(area, "loop")))
	long := strings.Repeat("n", 300)
	for _, tc := range []struct {
		name, target string
		status       int
		detail       string
	}{
		{"file in the way of the folder", "plain/x", http.StatusConflict, "A file is in the way of the target folder: plain/x"},
		{"file in the way deeper", "plain/a/b", http.StatusConflict, ""},
		{"link loop as the folder", "loop/x", http.StatusBadRequest, ""},
		{"name too long", long, http.StatusBadRequest, ""},
		{"folder name too long", long + "/x", http.StatusBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := stage(context.Background(), t, LocalCopy{Storage: fx.st, Options: opts()},
				staging.Request{Method: "local_copy", Username: "alice", Source: "f.txt", Target: tc.target})
			wantStatus(t, err, tc.status, tc.detail)
			fx.noTemps(t)
		})
	}
}

// A source tree holding what cannot be copied is refused before anything is
// written.
func TestLocalCopyTreeRefused(t *testing.T) {
	fx := newFixture(t)
	fx.tree(t, "linkdir", map[string]string{"a.txt": "a", "sub/b.txt": "b"})
	must(t, os.Symlink("sub", filepath.Join(fx.source, "linkdir", "dirlink")))
	fx.tree(t, "fifodir", map[string]string{"a.txt": "a"})
	must(t, syscall.Mkfifo(filepath.Join(fx.source, "fifodir", "pipe"), 0o644))
	fx.tree(t, "escdir", map[string]string{"a.txt": "a"})
	must(t, os.Symlink("../../outside/secret.txt", filepath.Join(fx.source, "escdir", "secret")))
	fx.tree(t, "loopdir", map[string]string{"a.txt": "a"})
	must(t, os.Symlink("loop", filepath.Join(fx.source, "loopdir", "loop")))
	fx.tree(t, "filelink", map[string]string{"a.txt": "a"})
	must(t, os.Symlink("a.txt", filepath.Join(fx.source, "filelink", "b.txt")))
	for _, tc := range []struct {
		source string
		status int
		detail string
	}{
		{"linkdir", http.StatusBadRequest, "Unsupported link to a directory in the source: linkdir/dirlink"},
		{"fifodir", http.StatusBadRequest, "Unsupported source type (not a file or directory): fifodir/pipe"},
		{"escdir", http.StatusForbidden, ""},
		{"loopdir", http.StatusBadRequest, ""},
	} {
		t.Run(tc.source, func(t *testing.T) {
			_, _, err := stage(context.Background(), t, LocalCopy{Storage: fx.st, Options: opts()},
				staging.Request{Method: "local_copy", Username: "alice", Source: tc.source, Target: "out/" + tc.source})
			wantStatus(t, err, tc.status, tc.detail)
			absent(t, filepath.Join(fx.area("alice"), "out", tc.source))
			fx.noTemps(t)
		})
	}
	// A link to a file inside the tree is copied as the file it names.
	_, _, err := stage(context.Background(), t, LocalCopy{Storage: fx.st, Options: opts()},
		staging.Request{Method: "local_copy", Username: "alice", Source: "filelink", Target: "filelink"})
	if err != nil {
		t.Fatalf("tree with a link to a file: %v", err)
	}
	p := filepath.Join(fx.area("alice"), "filelink", "b.txt")
	if info, err := os.Lstat(p); err != nil || !info.Mode().IsRegular() {
		t.Fatalf("%s: %v, %v; want a regular file", p, info, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "a" {
		t.Errorf("%s = %q, want %q", p, b, "a")
	}
}

// A cancelled staging is a 503, leaves neither target nor temporary output,
// and can be run again afterwards.
func TestLocalCopyCancelled(t *testing.T) {
	fx := newFixture(t)
	files := map[string]string{}
	for i := range 1500 {
		files[fmt.Sprintf("d%02d/f%04d.dat", i%20, i)] = strings.Repeat(string(rune('a'+i%26)), 4096)
	}
	fx.tree(t, "big", files)
	fx.tree(t, "small", map[string]string{"a": "a", "b": "b", "c/d": "d", "c/e": "e", "f": "f", "g": "g"})
	fx.file(t, "one.txt", "one")
	o := opts()
	o.Workers = 2
	m := LocalCopy{Storage: fx.st, Options: o}

	t.Run("mid-copy", func(t *testing.T) {
		req := staging.Request{Method: "local_copy", Username: "alice", Source: "big", Target: "big"}
		plan, err := m.Prepare(context.Background(), &req)
		if err != nil {
			t.Fatal(err)
		}
		job := newJob(&req)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			for {
				if _, done := job.Counts(); done > 0 {
					cancel()
					return
				}
				if ctx.Err() != nil {
					return
				}
				time.Sleep(50 * time.Microsecond)
			}
		}()
		_, err = plan.Run(ctx, job)
		wantStatus(t, err, http.StatusServiceUnavailable, "Staging was cancelled")
		if _, done := job.Counts(); done <= 0 || done >= 1500*4096 {
			t.Errorf("cancelled after %d of %d bytes: not mid-copy", done, 1500*4096)
		}
		absent(t, filepath.Join(fx.area("alice"), "big"))
		fx.noTemps(t)
	})
	// Cancelled before it starts: every time a 503, whichever of the feeder
	// and the workers sees the cancellation first.
	for _, source := range []string{"small", "one.txt"} {
		t.Run("before/"+source, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			for range 40 {
				_, _, err := stage(ctx, t, m, staging.Request{Method: "local_copy", Username: "alice", Source: source, Target: source})
				wantStatus(t, err, http.StatusServiceUnavailable, "Staging was cancelled")
				if t.Failed() {
					break
				}
			}
			absent(t, filepath.Join(fx.area("alice"), source))
			fx.noTemps(t)
		})
	}
	t.Run("again", func(t *testing.T) {
		res, _, err := stage(context.Background(), t, m, staging.Request{Method: "local_copy", Username: "alice", Source: "big", Target: "big"})
		if err != nil || !strings.HasPrefix(res.Message, "Data staged") {
			t.Fatalf("staging after a cancelled one: %v, %+v", err, res)
		}
		if n := len(snapshot(t, filepath.Join(fx.area("alice"), "big"))); n != 1500+20+1 {
			t.Errorf("staged tree has %d entries, want %d", n, 1521)
		}
		fx.noTemps(t)
	})
}

func TestStagedOwnerIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test changes owners and must run as root")
	}
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	fx.tree(t, "dir", map[string]string{"a": "a", "sub/b": "b"}, "empty")
	o := opts()
	o.Owner = Owner{Fixed: true, UID: 1234, GID: 2345}
	for _, m := range []staging.Method{LocalCopy{Storage: fx.st, Options: o}, LocalSymlink{Storage: fx.st, Options: o}} {
		for _, source := range []string{"f.txt", "dir"} {
			target := m.Name() + "/" + source
			if _, _, err := stage(context.Background(), t, m, staging.Request{Method: m.Name(), Username: "alice", Source: source, Target: target}); err != nil {
				t.Fatalf("%s %s: %v", m.Name(), source, err)
			}
			root := filepath.Join(fx.area("alice"), target)
			var n int
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				must(t, err)
				n++
				if uid, gid := owner(t, p); uid != 1234 || gid != 2345 {
					t.Errorf("%s: owner %d:%d, want 1234:2345", p, uid, gid)
				}
				return nil
			})
			if want := map[string]int{"local_copy/f.txt": 1, "local_copy/dir": 5, "local_symlink/f.txt": 1, "local_symlink/dir": 1}[target]; n != want {
				t.Errorf("%s: checked %d entries, want %d", target, n, want)
			}
		}
	}
	// Sources keep their owner.
	for _, p := range []string{"f.txt", "dir", "dir/a"} {
		if uid, gid := owner(t, filepath.Join(fx.source, p)); uid != 0 || gid != 0 {
			t.Errorf("source %s: owner changed to %d:%d", p, uid, gid)
		}
	}
	// The folders made for the target are the service's.
	if uid, _ := owner(t, filepath.Join(fx.area("alice"), "local_copy")); uid != 0 {
		t.Errorf("intermediate folder owned by %d", uid)
	}
	fx.noTemps(t)
}

func TestStagedOwnerUser(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	o := opts()
	o.Owner = Owner{ByName: true}
	for _, m := range []staging.Method{LocalCopy{Storage: fx.st, Options: o}, LocalSymlink{Storage: fx.st, Options: o}} {
		_, err := m.Prepare(context.Background(), &staging.Request{Method: m.Name(), Username: "no-such-user-4f2a", Source: "f.txt", Target: "x"})
		wantStatus(t, err, http.StatusBadRequest,
			"Unknown system user no-such-user-4f2a: STAGED_OWNER=user needs the user to exist on the storage host")
		// A user that exists gets the files.
		if _, _, err := stage(context.Background(), t, m, staging.Request{Method: m.Name(), Username: "nobody", Source: "f.txt", Target: m.Name()}); err != nil {
			t.Fatalf("%s for nobody: %v", m.Name(), err)
		}
		if uid, gid := owner(t, filepath.Join(fx.area("nobody"), m.Name())); uid != 65534 || gid != 65534 {
			t.Errorf("%s: owner %d:%d, want nobody (65534:65534)", m.Name(), uid, gid)
		}
	}
	absent(t, fx.area("no-such-user-4f2a"))
}

// Eight copies of the same plan for the same target, as eight operations
// would run without the store's lock: all succeed, one stages, the others
// find it already there, and only the one target is left.
func TestLocalCopyConcurrentSameTarget(t *testing.T) {
	fx := newFixture(t)
	content := strings.Repeat("concurrent ", 50_000)
	fx.file(t, "big.dat", content)
	fx.tree(t, "tree", map[string]string{"a": content, "b/c": "c", "b/d": content[:1000]})
	for _, tc := range []struct{ source, target string }{{"big.dat", "shared1/big.dat"}, {"tree", "shared2/tree"}} {
		t.Run(tc.source, func(t *testing.T) {
			req := staging.Request{Method: "local_copy", Username: "alice", Source: tc.source, Target: tc.target}
			plan, err := LocalCopy{Storage: fx.st, Options: opts()}.Prepare(context.Background(), &req)
			if err != nil {
				t.Fatal(err)
			}
			const n = 8
			var (
				wg      sync.WaitGroup
				start   = make(chan struct{})
				results = make([]*staging.Result, n)
				errs    = make([]error, n)
			)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := req
					<-start
					results[i], errs[i] = plan.Run(context.Background(), newJob(&r))
				}()
			}
			close(start)
			wg.Wait()
			dst := filepath.Join(fx.area("alice"), tc.target)
			staged := 0
			for i := range n {
				if errs[i] != nil {
					t.Errorf("run %d: %v", i, errs[i])
					continue
				}
				switch results[i].Message {
				case "Data staged for user alice with method local_copy":
					staged++
				case "Data already available at " + fx.inArea("alice", dst):
				default:
					t.Errorf("run %d: message %q", i, results[i].Message)
				}
			}
			if staged != 1 {
				t.Errorf("%d runs staged, want exactly 1", staged)
			}
			entries, err := os.ReadDir(filepath.Dir(dst))
			must(t, err)
			if len(entries) != 1 || entries[0].Name() != filepath.Base(dst) {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("target folder holds %q, want only %s", names, filepath.Base(dst))
			}
			if got, want := snapshot(t, dst), snapshot(t, filepath.Join(fx.source, tc.source)); !equalStrings(keys(got), keys(want)) {
				t.Errorf("staged %q, want %q", keys(got), keys(want))
			} else {
				for k := range want {
					if got[k].content != want[k].content {
						t.Errorf("%s: content differs", k)
					}
				}
			}
			fx.noTemps(t)
		})
	}
}

func equalStrings(a, b []string) bool {
	return len(a) == len(b) && strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

func TestRemoveTemp(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()
	id := uuid.Must(uuid.NewV7()).String()
	tmp := storage.TempName(id)
	// A read-only temporary tree, as a copy leaves it once finished.
	must(t, os.MkdirAll(filepath.Join(dir, tmp, "a", "b"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, tmp, "a", "b", "f"), []byte("f"), 0o400))
	for _, p := range []string{"a/b", "a", "."} {
		must(t, os.Chmod(filepath.Join(dir, tmp, p), 0o500))
	}
	must(t, os.WriteFile(filepath.Join(dir, "keep.txt"), []byte("keep"), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	otherTmp := storage.TempName(uuid.Must(uuid.NewV7()).String())
	must(t, os.WriteFile(filepath.Join(dir, "sub", otherTmp), []byte("t"), 0o400))

	for _, name := range []string{"keep.txt", "sub", ".", "", ".skao-staging-x.tmp", tmp + "/a", "../" + filepath.Base(dir)} {
		if err := RemoveTemp(root, name); err == nil || !strings.Contains(err.Error(), "not a temporary name") {
			t.Errorf("RemoveTemp(%q) = %v, want a refusal", name, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "keep.txt")); err != nil || string(b) != "keep" {
		t.Fatalf("keep.txt: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, tmp, "a", "b", "f")); err != nil {
		t.Fatalf("a refused removal touched the temporary tree: %v", err)
	}
	must(t, RemoveTemp(root, tmp))
	absent(t, filepath.Join(dir, tmp))
	must(t, RemoveTemp(root, "sub/"+otherTmp))
	absent(t, filepath.Join(dir, "sub", otherTmp))
	// Already gone is fine.
	must(t, RemoveTemp(root, tmp))
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("%d entries left, want keep.txt and sub", len(entries))
	}
	var buf bytes.Buffer
	for _, e := range entries {
		buf.WriteString(e.Name() + " ")
	}
	if buf.String() != "keep.txt sub " {
		t.Errorf("left %q", buf.String())
	}
}
