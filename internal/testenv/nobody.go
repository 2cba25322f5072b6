package testenv

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// asNobodyEnv marks the copy of a test binary that AsNobody runs.
const asNobodyEnv = "SKAO_TEST_AS_NOBODY"

// nobody is the uid and gid AsNobody runs a test as.
const nobody = 65534

// AsNobody makes the calling test run as uid and gid 65534, where
// permission bits apply (root passes them all). Run as root, it runs the
// test again in a copy of the test binary as that user (the binary's own
// folder is root's alone), fails t if that run fails, and returns false:
// the caller then returns. In that copy, or as any user but root, it
// returns true and the test goes on.
func AsNobody(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		return true
	}
	if os.Getenv(asNobodyEnv) != "" {
		t.Fatal("still root in the copy meant to run as nobody")
	}
	dir, err := os.MkdirTemp("", "nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := errors.Join(os.Chown(dir, nobody, nobody), os.Chmod(dir, 0o755)); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "nobody.test")
	if err := copyExecutable(bin); err != nil {
		t.Fatal(err)
	}
	name := t.Name()
	cmd := exec.Command(bin, "-test.run=^"+regexp.QuoteMeta(name)+"$", "-test.count=1", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), asNobodyEnv+"=1", "TMPDIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	output, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(output), "--- PASS: "+name) {
		t.Fatalf("%s as uid %d: %v\n%s", name, nobody, err, output)
	}
	t.Logf("%s as uid %d:\n%s", name, nobody, output)
	return false
}

// copyExecutable copies the running test binary to bin.
func copyExecutable(bin string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}
