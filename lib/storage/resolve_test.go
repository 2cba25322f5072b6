package storage

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

func TestResolve(t *testing.T) {
	const linkOut = "Source path goes through a link leading outside the source storage: "
	dir := t.TempDir()
	src := filepath.Join(dir, "source")
	for _, d := range []string{"public/obs", "private/secret"} {
		must(t, os.MkdirAll(filepath.Join(src, d), 0o755))
	}
	must(t, os.WriteFile(filepath.Join(src, "private/secret/data"), []byte("x"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "public/obs/file"), []byte("x"), 0o644))
	links := map[string]string{
		"public/to-private":     "../private/secret",           // a link inside the storage, to elsewhere
		"public/to-file":        "obs/file",                    // a link to a file beside it
		"public/chain":          "to-private",                  // a link to a link
		"public/out":            "../../outside",               // leads out
		"public/abs":            filepath.Join(src, "private"), // absolute
		"public/loop":           "loop",
		"public/obs/up-and-out": "../../..",
	}
	for link, to := range links {
		must(t, os.Symlink(to, filepath.Join(src, link)))
	}
	st, err := Open(src, filepath.Join(dir, "areas"))
	must(t, err)
	defer st.Close()
	for _, tc := range []struct {
		path  string
		real  string
		isDir bool
		kind  staging.Kind
		// detail, when set: a path inside the storage as written that a
		// link leads out of is refused for that link, not as outside.
		detail string
	}{
		{path: "", kind: staging.Invalid},
		{path: ".", real: ".", isDir: true},
		{path: "public/obs/file", real: "public/obs/file"},
		{path: filepath.Join(src, "public/obs"), real: "public/obs", isDir: true},
		{path: "public/to-private/data", real: "private/secret/data"},
		{path: "public/to-private", real: "private/secret", isDir: true},
		{path: "public/chain/data", real: "private/secret/data"},
		{path: "public/to-file", real: "public/obs/file"},
		{path: "public/obs/../to-file", real: "public/obs/file"},
		{path: "public/out", kind: staging.Forbidden, detail: linkOut + "public/out"},
		{path: "public/out/x", kind: staging.Forbidden, detail: linkOut + "public/out/x"},
		{path: "public/abs", kind: staging.Forbidden, detail: linkOut + "public/abs"},
		{path: "public/obs/up-and-out", kind: staging.Forbidden, detail: linkOut + "public/obs/up-and-out"},
		{path: "public/loop", kind: staging.Rejected},
		{path: "public/missing", kind: staging.Rejected},
		{path: "../x", kind: staging.Forbidden, detail: "Source path is outside the source storage: ../x"},
	} {
		real, isDir, err := st.Resolve(tc.path)
		if tc.kind != "" {
			if k, detail := staging.KindOf(err); err == nil || k != tc.kind || tc.detail != "" && detail != tc.detail {
				t.Errorf("Resolve(%q) = %q, %v; want %s %q", tc.path, real, err, tc.kind, tc.detail)
			}
			continue
		}
		if err != nil || real != tc.real || isDir != tc.isDir {
			t.Errorf("Resolve(%q) = %q %v %v; want %q %v", tc.path, real, isDir, err, tc.real, tc.isDir)
		}
	}
}
