package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// TestNamesReachTheirPlace stages names that a URL path treats specially
// (query, fragment, escapes, an escaped slash, parameters, spaces, unicode,
// a backslash, a notebook that is not one): each arrives byte for byte
// under its own name inside the target, and nothing lands beside it.
func TestNamesReachTheirPlace(t *testing.T) {
	hub := testenv.Hub(t)
	s := startStack(t, hub, nil, nil)
	user := hub.NewHubUser(t, "names", false)
	hub.StartServer(t, user)
	home := hub.Home(user)

	names := []string{"q?x", "h#x", "p%x", "p%2Fx", "%2e%2e", "a%2F..%2F..%2Fout", "s;x=1", "sp ace", "ünï", `b\x`,
		"not-json.ipynb", "a+b", "x:y"}
	for _, n := range names {
		s.write(t, filepath.Join("odd", n), []byte("content of "+n))
	}
	for _, dst := range []string{"odd-1", "in ?#%/odd;2"} {
		expect(t, s.stage(t, user, "odd", dst, ""), http.StatusOK, "status", "success")
		entries, err := os.ReadDir(filepath.Join(home, dst))
		must(t, err)
		if len(entries) != len(names) {
			t.Fatalf("%s holds %d entries, want %d: %v", dst, len(entries), len(names), entries)
		}
		for _, n := range names {
			if b, err := os.ReadFile(filepath.Join(home, dst, n)); err != nil || string(b) != "content of "+n {
				t.Fatalf("%s/%s holds %q, %v", dst, n, b, err)
			}
		}
		expect(t, s.stage(t, user, "odd", dst, ""), http.StatusOK, "message",
			"Data already available at "+dst+" in the Jupyter workspace of "+user)
	}
	var root []string
	entries, err := os.ReadDir(home)
	must(t, err)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") { // the server's own (.local, .ipython)
			root = append(root, e.Name())
		}
	}
	if len(root) != 2 { // odd-1 and "in ?#%"
		t.Fatalf("workspace root holds %q", root)
	}

	// Jupyter servers leave names matching their hide_globs out of
	// listings (yet serve them by name): a folder holding such names,
	// staged again, is already there.
	for _, n := range []string{"notes.txt~", "lib.so", "__pycache__/m.cpython-311.pyc", "keep.txt"} {
		s.write(t, filepath.Join("globbed", n), []byte("content of "+n))
	}
	expect(t, s.stage(t, user, "globbed", "globbed", ""), http.StatusOK, "status", "success")
	if b, err := os.ReadFile(filepath.Join(home, "globbed/__pycache__/m.cpython-311.pyc")); err != nil || string(b) != "content of __pycache__/m.cpython-311.pyc" {
		t.Fatalf("globbed/__pycache__/m.cpython-311.pyc holds %q, %v", b, err)
	}
	expect(t, s.stage(t, user, "globbed", "globbed", ""), http.StatusOK, "message",
		"Data already available at globbed in the Jupyter workspace of "+user)
	// A different file there, even one the listing leaves out, is still a conflict.
	must(t, os.WriteFile(filepath.Join(home, "globbed/lib.so"), []byte("changed"), 0o644))
	expect(t, s.stage(t, user, "globbed", "globbed", ""), http.StatusConflict, "", "")
}
