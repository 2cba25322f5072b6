package methods

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Only regular files and folders are staged, by every method: a FIFO, a
// socket, a device or a link to one is refused 400 at once, and so is a
// tree holding one by every method but local_symlink (which links a folder
// without reading it); nothing appears in the user's area.
func TestSpecialFilesRefused(t *testing.T) {
	fx := newFixture(t)
	src := func(p string) string { return filepath.Join(fx.source, p) }
	must(t, syscall.Mkfifo(src("fifo"), 0o644))
	l, err := net.Listen("unix", src("sock"))
	must(t, err)
	defer l.Close()
	must(t, os.Symlink("fifo", src("fifolink")))
	fx.tree(t, "treefifo", map[string]string{"a/ok": "ok"})
	must(t, syscall.Mkfifo(src("treefifo/a/pipe"), 0o644))
	fx.tree(t, "treelink", map[string]string{"ok": "ok"})
	must(t, os.Symlink("../fifo", src("treelink/pipe"))) // leads out of the tree
	fx.tree(t, "treeinlink", map[string]string{"ok": "ok"})
	must(t, syscall.Mkfifo(src("treeinlink/p"), 0o644))
	must(t, os.Symlink("p", src("treeinlink/plink")))
	sources := map[string]string{
		"fifo":     "Unsupported source type (not a file or directory): fifo",
		"sock":     "Unsupported source type (not a file or directory): sock",
		"fifolink": "Unsupported source type (not a file or directory): fifolink",
		"treefifo": "Unsupported source type (not a file or directory): treefifo/a/pipe",
	}
	if os.Geteuid() == 0 {
		must(t, syscall.Mknod(src("dev"), syscall.S_IFCHR|0o666, 1<<8|3))
		sources["dev"] = "Unsupported source type (not a file or directory): dev"
	}
	o := opts()
	o.MaxDepth = 8
	ms := []staging.Method{LocalCopy{Storage: fx.st, Options: o}, LocalSymlink{Storage: fx.st, Options: o},
		DirectDownload{Storage: fx.st, MaxDepth: 8}}
	for _, m := range ms {
		for source, detail := range sources {
			if m.Name() == "local_symlink" && source == "treefifo" {
				continue // a link to a folder is made without reading it
			}
			t.Run(m.Name()+"/"+source, func(t *testing.T) {
				testenv.NoHang(t, "staging "+source, func() {
					_, _, err := stage(context.Background(), t, m, staging.Request{Method: m.Name(), Username: "alice", Source: source, Target: "out/" + source})
					wantStatus(t, err, http.StatusBadRequest, detail)
				})
				absent(t, filepath.Join(fx.area("alice"), "out", source))
				fx.noTemps(t)
			})
		}
	}
	// In a tree, a link is followed to a file inside the tree only: one
	// that leads out of it is refused, one to a FIFO inside is refused.
	for _, m := range []staging.Method{ms[0], ms[2]} {
		for source, status := range map[string]int{"treelink": http.StatusForbidden, "treeinlink": http.StatusBadRequest} {
			t.Run(m.Name()+"/"+source, func(t *testing.T) {
				testenv.NoHang(t, "staging "+source, func() {
					_, _, err := stage(context.Background(), t, m, staging.Request{Method: m.Name(), Username: "alice", Source: source, Target: source})
					wantStatus(t, err, status, "")
				})
				absent(t, filepath.Join(fx.area("alice"), source))
				fx.noTemps(t)
			})
		}
	}
}

// A file swapped for a FIFO after the source was checked is refused when
// it is opened, without waiting: for a single file and inside a tree.
func TestSwappedForFIFO(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "one", "one")
	fx.tree(t, "tree", map[string]string{"a/f": "f", "a/g": "g"})
	o := opts()
	o.MaxDepth = 8
	for _, c := range []struct{ source, swap string }{{"one", "one"}, {"tree", "tree/a/g"}} {
		for _, m := range []staging.Method{LocalCopy{Storage: fx.st, Options: o}, DirectDownload{Storage: fx.st, MaxDepth: 8}} {
			t.Run(m.Name()+"/"+c.source, func(t *testing.T) {
				req := staging.Request{Method: m.Name(), Username: "alice", Source: c.source, Target: c.source}
				plan, err := m.Prepare(context.Background(), &req)
				must(t, err)
				p := filepath.Join(fx.source, c.swap)
				must(t, os.Remove(p))
				must(t, syscall.Mkfifo(p, 0o644))
				defer func() { os.Remove(p); must(t, os.WriteFile(p, []byte("g"), 0o644)) }()
				testenv.NoHang(t, "staging the swapped "+c.swap, func() {
					res, err := plan.Run(context.Background(), newJob(&req))
					if err == nil && res.Download != nil && res.Download.WriteTo != nil {
						err = res.Download.WriteTo(context.Background(), io.Discard)
					}
					wantStatus(t, err, http.StatusBadRequest, "Unsupported source type (not a file or directory): "+c.swap)
				})
				absent(t, filepath.Join(fx.area("alice"), c.source))
				fx.noTemps(t)
			})
		}
	}
}
