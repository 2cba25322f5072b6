package storage

import (
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// asNobodyEnv marks the copy of the test binary that runs as nobody.
const asNobodyEnv = "SKAO_STORAGE_TEST_AS_NOBODY"

// runAsNobody runs the test named name again in a copy of this test binary
// as uid and gid 65534, where permission bits apply (root passes them),
// and fails t if it fails. It is for tests run as root.
func runAsNobody(t *testing.T, name string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "storage-nobody-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chown(dir, 65534, 65534))
	must(t, os.Chmod(dir, 0o755))
	// The test binary's own folder is root's alone: run a copy.
	self, err := os.Executable()
	must(t, err)
	in, err := os.Open(self)
	must(t, err)
	defer in.Close()
	bin := filepath.Join(dir, "storage.test")
	out, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	must(t, err)
	_, err = io.Copy(out, in)
	must(t, errors.Join(err, out.Close()))
	cmd := exec.Command(bin, "-test.run=^"+name+"$", "-test.count=1", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), asNobodyEnv+"=1", "TMPDIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	output, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(output), "--- PASS: "+name) {
		t.Fatalf("%s as uid 65534: %v\n%s", name, err, output)
	}
	t.Logf("%s as uid 65534:\n%s", name, output)
}

// A source folder or file the service may not read is refused with 403
// "Permission denied reading the source", by the listing (GET /browse) as
// by resolving it for staging: the site's permissions, not a missing path.
// Run as an unprivileged uid: as root, permission bits stop nothing.
func TestSourcePermissionDenied(t *testing.T) {
	if os.Getenv(asNobodyEnv) == "" && os.Geteuid() == 0 {
		runAsNobody(t, "TestSourcePermissionDenied")
		return
	}
	if os.Geteuid() == 0 {
		t.Fatal("running as root, where permission bits stop nothing")
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
