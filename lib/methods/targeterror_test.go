package methods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// A permission error on the target side is the user's folder, not a fault
// of the service: a 403 that is not transient (a broker would redeliver an
// internal error for ever). A refused change of owner stays internal: it
// is the service's set-up (STAGED_OWNER without CAP_CHOWN).
func TestTargetErrorPermission(t *testing.T) {
	const notWritable = "A folder on the way to the target is not writable: obs/extra"
	for _, tc := range []struct {
		name   string
		err    error
		kind   staging.Kind
		detail string
	}{
		{"fs.ErrPermission", fs.ErrPermission, staging.Forbidden, notWritable},
		{"mkdirat EACCES", &fs.PathError{Op: "mkdirat", Path: "obs/extra", Err: syscall.EACCES}, staging.Forbidden, notWritable},
		{"openat EACCES", &fs.PathError{Op: "openat", Path: "obs/extra", Err: syscall.EACCES}, staging.Forbidden, notWritable},
		{"symlinkat EPERM", &fs.PathError{Op: "symlinkat", Path: "obs/extra", Err: syscall.EPERM}, staging.Forbidden, notWritable},
		{"renameat EACCES", &os.LinkError{Op: "renameat", Old: ".tmp", New: "extra", Err: syscall.EACCES}, staging.Forbidden, notWritable},
		{"wrapped errno", fmt.Errorf("publish: %w", syscall.EACCES), staging.Forbidden, notWritable},
		{"lchownat EPERM", &fs.PathError{Op: "lchownat", Path: "extra", Err: syscall.EPERM}, staging.Internal, "Cannot write the target obs/extra"},
		{"EIO", &fs.PathError{Op: "openat", Path: "extra", Err: syscall.EIO}, staging.Internal, "Cannot write the target obs/extra"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := targetError(tc.err, "obs/extra")
			kind, detail := staging.KindOf(err)
			if kind != tc.kind || detail != tc.detail {
				t.Errorf("targetError(%v) = %s %q, want %s %q", tc.err, kind, detail, tc.kind, tc.detail)
			}
			if tc.kind == staging.Forbidden && staging.Transient(err) {
				t.Errorf("targetError(%v) is transient: a broker would redeliver it for ever", tc.err)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("targetError(%v) lost its cause", tc.err)
			}
		})
	}
}

// Staging into a folder an earlier staging made read-only (e.g. obs/extra
// where obs is the staged 0500 folder), by any method that writes there,
// is a 403 that says so, leaves nothing behind and is not transient. Run
// as an unprivileged uid: as root, permission bits stop nothing.
func TestTargetNotWritable(t *testing.T) {
	if !testenv.AsNobody(t) {
		return
	}
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	fx.tree(t, "tree", map[string]string{"a.txt": "a", "sub/b.txt": "b"})
	o := opts()
	o.MaxDepth = 8
	copier, linker := LocalCopy{Storage: fx.st, Options: o}, LocalSymlink{Storage: fx.st, Options: o}
	_, _, err := stage(context.Background(), t, copier, staging.Request{Method: "local_copy", Username: "alice", Source: "tree", Target: "obs"})
	must(t, err)
	obs := filepath.Join(fx.area("alice"), "obs")
	if p := perm(t, obs); p&0o222 != 0 {
		t.Fatalf("the staged folder is %v, want it read-only", p)
	}
	for _, tc := range []struct {
		name   string
		m      staging.Method
		source string
		target string
	}{
		{"a file into it", copier, "f.txt", "obs/extra"},
		{"a file into a new folder in it", copier, "f.txt", "obs/new/extra"},
		{"a file into a staged folder in it", copier, "f.txt", "obs/sub/extra"},
		{"a folder into it", copier, "tree", "obs/extra"},
		{"a link into it", linker, "f.txt", "obs/extra"},
		{"a link to a folder into it", linker, "tree", "obs/new/extra"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := stage(context.Background(), t, tc.m, staging.Request{Method: tc.m.Name(), Username: "alice", Source: tc.source, Target: tc.target})
			wantStatus(t, err, http.StatusForbidden, "A folder on the way to the target is not writable: "+tc.target)
			if kind, _ := staging.KindOf(err); kind != staging.Forbidden || staging.Transient(err) {
				t.Errorf("kind %s, transient %v: want forbidden, not transient", kind, staging.Transient(err))
			}
			absent(t, filepath.Join(fx.area("alice"), tc.target))
			fx.noTemps(t)
		})
	}
	absent(t, filepath.Join(obs, "new"))
}
