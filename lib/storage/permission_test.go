package storage

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// A source folder or file the service may not read is refused with 403
// "Permission denied reading the source", by the listing (GET /browse) as
// by resolving it for staging: the site's permissions, not a missing path.
// Run as an unprivileged uid: as root, permission bits stop nothing.
func TestSourcePermissionDenied(t *testing.T) {
	if !testenv.AsNobody(t) {
		return
	}
	fx := newFixture(t)
	locked := filepath.Join(fx.source, "locked")
	must(t, os.Mkdir(locked, 0o755))
	must(t, os.WriteFile(filepath.Join(locked, "x.txt"), []byte("x"), 0o644))
	must(t, os.Chmod(locked, 0))
	t.Cleanup(func() { os.Chmod(locked, 0o755) }) // so TempDir can remove it
	must(t, os.WriteFile(filepath.Join(fx.source, "unreadable.txt"), []byte("x"), 0))

	for _, tc := range []struct {
		name string
		call func(p string) error
		path string
	}{
		{"list a folder it may not read", func(p string) error { _, err := fx.st.List(p, 10, nil); return err }, "locked"},
		{"list through a folder it may not enter", func(p string) error { _, err := fx.st.List(p, 10, nil); return err }, "locked/x.txt"},
		{"source through a folder it may not enter", func(p string) error { _, err := fx.st.Source(p); return err }, "locked/x.txt"},
		{"resolve through a folder it may not enter", func(p string) error { _, _, err := fx.st.Resolve(p); return err }, "locked/x.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(tc.path), http.StatusForbidden, "Permission denied reading the source: "+tc.path)
		})
	}
	// The folder itself resolves (its name can be seen), so staging finds
	// out only when it reads it: the methods refuse it with the same text.
	if _, err := fx.st.Source("locked"); err != nil {
		t.Errorf("Source(locked): %v", err)
	}
	// A file it may not read is still a file: listing it is 400, not a folder.
	_, err := fx.st.List("unreadable.txt", 10, nil)
	wantStatus(t, err, http.StatusBadRequest, "Not a directory: unreadable.txt")
}
