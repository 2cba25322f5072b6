package storage

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
)

// browseFixture is a source storage with files, folders and links of every
// kind, and a secret beside it that no listing may show.
func browseFixture(t *testing.T) *Storage {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "source")
	files := map[string]string{
		"obs/b.txt":        "bb",
		"obs/a.txt":        "a",
		"obs/sub/deep.txt": "deep",
		"top.txt":          "top",
	}
	for name, content := range files {
		p := filepath.Join(src, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(content), 0o644))
	}
	must(t, os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("secret"), 0o600))
	must(t, os.Symlink("a.txt", filepath.Join(src, "obs/link-in")))
	must(t, os.Symlink("../../secret.txt", filepath.Join(src, "obs/link-out")))
	must(t, os.Symlink("nowhere", filepath.Join(src, "obs/link-broken")))
	must(t, os.Symlink("..", filepath.Join(src, "obs/link-up"))) // the root: inside, so a folder
	must(t, os.Symlink("..", filepath.Join(src, "escape")))
	must(t, os.Mkdir(filepath.Join(src, "obs", TempName("0d0f6b2e-4a8c-4a51-9f55-2a8b1d3c9e10")), 0o755))
	mtime := time.Date(2025, 1, 31, 12, 0, 0, 0, time.UTC)
	must(t, os.Chtimes(filepath.Join(src, "obs/a.txt"), mtime, mtime))
	st, err := Open(src, filepath.Join(dir, "user_areas"))
	must(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func TestList(t *testing.T) {
	st := browseFixture(t)
	tests := []struct {
		path    string
		status  int    // 0: listed
		names   string // "name:type" joined by spaces
		relPath string
		detail  string // when refused and set, exact
	}{
		{path: "", names: "obs:directory top.txt:file", relPath: ""},
		{path: ".", names: "obs:directory top.txt:file", relPath: ""},
		{path: "obs", names: "a.txt:file b.txt:file link-in:file link-up:directory sub:directory", relPath: "obs"},
		{path: "obs/", names: "a.txt:file b.txt:file link-in:file link-up:directory sub:directory", relPath: "obs"},
		{path: "obs/sub/..", names: "a.txt:file b.txt:file link-in:file link-up:directory sub:directory", relPath: "obs"},
		{path: st.SourcePath + "/obs/sub", names: "deep.txt:file", relPath: "obs/sub"},
		{path: "obs/link-up", names: "obs:directory top.txt:file", relPath: "obs/link-up"},
		{path: "missing", status: http.StatusBadRequest},
		{path: "top.txt", status: http.StatusBadRequest},
		{path: "obs/link-broken", status: http.StatusBadRequest},
		{path: "..", status: http.StatusForbidden},
		{path: "obs/../../", status: http.StatusForbidden},
		{path: "/etc", status: http.StatusForbidden},
		{path: "escape", status: http.StatusForbidden, detail: "Source path goes through a link leading outside the source storage: escape"},
		{path: "obs/link-out", status: http.StatusForbidden, detail: "Source path goes through a link leading outside the source storage: obs/link-out"},
		{path: "../obs", status: http.StatusForbidden, detail: "Source path is outside the source storage: ../obs"},
		{path: "obs\x00", status: http.StatusUnprocessableEntity},
		{path: strings.Repeat("a/", 2100), status: http.StatusUnprocessableEntity},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.40q", tt.path), func(t *testing.T) {
			l, err := st.List(tt.path, 1000, nil)
			if tt.status != 0 {
				status, detail := httpx.Status(err)
				if status != tt.status || detail == "" || tt.detail != "" && detail != tt.detail {
					t.Fatalf("got %d %q (listing %+v), want %d with a detail %q", status, detail, l, tt.status, tt.detail)
				}
				return
			}
			must(t, err)
			var got []string
			for _, e := range l.Entries {
				got = append(got, e.Name+":"+e.Type)
			}
			if strings.Join(got, " ") != tt.names || l.Path != tt.relPath || l.Truncated {
				t.Fatalf("listing %q path %q truncated %v, want %q path %q", got, l.Path, l.Truncated, tt.names, tt.relPath)
			}
		})
	}

	t.Run("sizes and times", func(t *testing.T) {
		l, err := st.List("obs", 1000, nil)
		must(t, err)
		a, sub := l.Entries[0], l.Entries[4]
		if a.Size != 1 || !a.Modified.Equal(time.Date(2025, 1, 31, 12, 0, 0, 0, time.UTC)) || a.Modified.Location() != time.UTC {
			t.Fatalf("a.txt: %+v", a)
		}
		if sub.Name != "sub" || sub.Size != 0 || sub.Modified.IsZero() {
			t.Fatalf("sub: %+v", sub)
		}
	})
}

// TestListBounded lists a directory larger than the limit: the answer
// holds the first names in order and says it is truncated.
func TestListBounded(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "source")
	must(t, os.MkdirAll(filepath.Join(src, "many"), 0o755))
	const n, limit = 257, 10
	for i := n - 1; i >= 0; i-- {
		must(t, os.WriteFile(filepath.Join(src, "many", fmt.Sprintf("f%04d", i)), nil, 0o644))
	}
	// A link leading out sorts first; it is left out and the next name takes its place.
	must(t, os.Symlink("/etc/passwd", filepath.Join(src, "many", "a-out")))
	st, err := Open(src, filepath.Join(dir, "user_areas"))
	must(t, err)
	defer st.Close()

	for _, tt := range []struct {
		limit     int
		first     string
		count     int
		truncated bool
	}{
		{limit: limit, first: "f0000", count: limit, truncated: true},
		{limit: n + 1, first: "f0000", count: n, truncated: false},
		{limit: n + 5, first: "f0000", count: n, truncated: false},
	} {
		l, err := st.List("many", tt.limit, nil)
		must(t, err)
		if len(l.Entries) != tt.count || l.Entries[0].Name != tt.first || l.Truncated != tt.truncated {
			t.Fatalf("limit %d: %d entries from %q, truncated %v; want %d from %q, truncated %v",
				tt.limit, len(l.Entries), l.Entries[0].Name, l.Truncated, tt.count, tt.first, tt.truncated)
		}
		for i := 1; i < len(l.Entries); i++ {
			if l.Entries[i-1].Name >= l.Entries[i].Name {
				t.Fatalf("not sorted at %d: %q, %q", i, l.Entries[i-1].Name, l.Entries[i].Name)
			}
		}
	}
}

// What keep leaves out does not count against the limit: a caller who may
// see only some entries of a large folder sees the first limit of those,
// however many others sort before them.
func TestListKeepsBeforeTheLimit(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "source")
	must(t, os.MkdirAll(filepath.Join(src, "many"), 0o755))
	for i := range 300 {
		must(t, os.WriteFile(filepath.Join(src, "many", fmt.Sprintf("f%04d", i)), nil, 0o644))
	}
	st, err := Open(src, filepath.Join(dir, "user_areas"))
	must(t, err)
	defer st.Close()
	var asked []string
	mine := func(rel string, isDir bool) bool {
		asked = append(asked, rel)
		return rel >= "many/f0250" && !isDir
	}
	l, err := st.List("many", 10, mine)
	must(t, err)
	var names []string
	for _, e := range l.Entries {
		names = append(names, e.Name)
	}
	if len(names) != 10 || names[0] != "f0250" || names[9] != "f0259" || !l.Truncated {
		t.Fatalf("entries %v, truncated %v; want f0250 to f0259, truncated", names, l.Truncated)
	}
	if len(asked) != 300 || asked[0][:5] != "many/" {
		t.Fatalf("keep asked %d times, first %q; want once per entry, by its path in the storage", len(asked), asked[0])
	}
	if l, err := st.List("many", 100, mine); err != nil || len(l.Entries) != 50 || l.Truncated {
		t.Fatalf("all of them: %d entries, truncated %v, %v", len(l.Entries), l.Truncated, err)
	}
}
