package storage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// CreateFile never replaces, truncates or follows anything: not a file at
// the name, not a link there (to inside or outside), not a planted file or
// link under any temporary name it could have used.
func TestCreateFile(t *testing.T) {
	dir := t.TempDir()
	src, outside := filepath.Join(dir, "source"), filepath.Join(dir, "outside")
	for _, d := range []string{src, outside, filepath.Join(src, "sub")} {
		must(t, os.MkdirAll(d, 0o755))
	}
	write := func(p, content string) { must(t, os.WriteFile(p, []byte(content), 0o644)) }
	write(filepath.Join(outside, "victim"), "victim")
	write(filepath.Join(src, "kept.txt"), "kept")
	write(filepath.Join(src, ".new.txt.creating"), "planted") // the earlier fixed temporary name
	must(t, os.Symlink(filepath.Join(outside, "victim"), filepath.Join(src, ".linked.txt.creating")))
	must(t, os.Symlink(filepath.Join(outside, "victim"), filepath.Join(src, "link-out")))
	must(t, os.Symlink("kept.txt", filepath.Join(src, "link-in")))
	must(t, os.Symlink(outside, filepath.Join(src, "dir-out")))
	st, err := Open(src, filepath.Join(dir, "areas"))
	must(t, err)
	defer st.Close()

	for _, tc := range []struct {
		name, file string
		kind       staging.Kind // "": created
		rel        string
	}{
		{name: "new file", file: "new.txt", rel: "new.txt"},
		{name: "new file beside a planted link", file: "linked.txt", rel: "linked.txt"},
		{name: "new folders", file: "made/by/page.txt", rel: "made/by/page.txt"},
		{name: "absolute inside", file: filepath.Join(src, "sub/abs.txt"), rel: "sub/abs.txt"},
		{name: "existing file", file: "kept.txt", kind: staging.Conflict},
		{name: "link leading out", file: "link-out", kind: staging.Conflict},
		{name: "link inside", file: "link-in", kind: staging.Conflict},
		{name: "through a link leading out", file: "dir-out/x.txt", kind: staging.Forbidden},
		{name: "dot-dot", file: "../escape.txt", kind: staging.Forbidden},
		{name: "absolute outside", file: filepath.Join(outside, "x.txt"), kind: staging.Forbidden},
		{name: "temporary name", file: TempName("0190b6a1-7e3c-7b3e-8000-000000000000"), kind: staging.Forbidden},
		{name: "below a file", file: "kept.txt/x", kind: staging.Conflict},
		{name: "NUL", file: "a\x00b", kind: staging.Invalid},
		{name: "too long", file: strings.Repeat("a/", 2100) + "x", kind: staging.Invalid},
		{name: "name too long", file: strings.Repeat("a", 300), kind: staging.Invalid},
		{name: "name too long in a new folder", file: "newdir/" + strings.Repeat("a", 300), kind: staging.Invalid},
		{name: "folder name too long", file: strings.Repeat("a", 300) + "/x", kind: staging.Invalid},
		{name: "not UTF-8", file: "\xff.txt", kind: staging.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rel, err := st.CreateFile(tc.file, []byte("content of "+tc.name))
			if tc.kind != "" {
				kind, detail := staging.KindOf(err)
				if err == nil || kind != tc.kind || detail == "" || (strings.Contains(detail, dir) && !strings.Contains(tc.file, dir)) {
					t.Fatalf("CreateFile(%q) = %q, %v; want %s with a detail naming no server path", tc.file, rel, err, tc.kind)
				}
				return
			}
			if err != nil || rel != tc.rel {
				t.Fatalf("CreateFile(%q) = %q, %v; want %q", tc.file, rel, err, tc.rel)
			}
			if b, _ := os.ReadFile(filepath.Join(src, rel)); string(b) != "content of "+tc.name {
				t.Fatalf("%s holds %q", rel, b)
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(src, "newdir")); !os.IsNotExist(err) {
		t.Errorf("a refused name left its folder behind: %v", err)
	}
	for p, want := range map[string]string{
		filepath.Join(outside, "victim"):           "victim",
		filepath.Join(src, "kept.txt"):             "kept",
		filepath.Join(src, ".new.txt.creating"):    "planted",
		filepath.Join(src, ".linked.txt.creating"): "victim",
	} {
		if b, err := os.ReadFile(p); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q untouched", p, b, err, want)
		}
	}
	// No temporary file is left behind, after successes or refusals.
	must(t, filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err == nil && IsTemp(d.Name()) {
			t.Errorf("temporary file left: %s", p)
		}
		return err
	}))
}

// A source storage reached through a link takes absolute names under the
// path it leads to, as staging requests do.
func TestCreateFileUnderTheRealSourcePath(t *testing.T) {
	dir := t.TempDir()
	real, link := filepath.Join(dir, "real"), filepath.Join(dir, "link")
	must(t, os.MkdirAll(real, 0o755))
	must(t, os.Symlink(real, link))
	st, err := Open(link, filepath.Join(dir, "areas"))
	must(t, err)
	defer st.Close()
	for _, name := range []string{filepath.Join(link, "via-link.txt"), filepath.Join(real, "via-real.txt")} {
		rel, err := st.CreateFile(name, []byte("x"))
		if err != nil || rel != filepath.Base(name) {
			t.Errorf("CreateFile(%q) = %q, %v", name, rel, err)
		}
	}
}

// Storage roots of which one holds the other are refused at start, the
// link to one included: staging from the user areas, or into the source,
// would let users read or write each other's data.
func TestOpenRefusesNestedRoots(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "data", "areas"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "source"), 0o755))
	must(t, os.Symlink(filepath.Join(dir, "data"), filepath.Join(dir, "data-link")))
	for _, tc := range []struct {
		name, source, target string
		ok                   bool
	}{
		{"apart", "source", "areas", true},
		{"siblings with a common prefix", "source", "source-areas", true},
		{"areas in the source", "data", "data/areas", false},
		{"areas in the source, through a link", "data-link", "data/areas", false},
		{"source in the areas", "data/areas", "data", false},
		{"the same", "source", "source", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Open(filepath.Join(dir, tc.source), filepath.Join(dir, tc.target))
			if st != nil {
				st.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("Open(%s, %s): %v, want ok %v", tc.source, tc.target, err, tc.ok)
			}
		})
	}
}
