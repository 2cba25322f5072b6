package methods

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// A link that leads out is refused (403) by every method, never followed,
// and the refusal says so and names the path as the user sees it: a source
// named inside the storage is not "outside" because of a link on its way,
// and a link inside a staged tree is named by its own path in the tree,
// never by where it leads (for an absolute link, a path of the server's).
func TestLinkLeadingOut(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "f.txt", "content")
	must(t, os.Symlink("../outside/secret.txt", filepath.Join(fx.source, "escape")))
	must(t, os.Symlink("../outside", filepath.Join(fx.source, "escapedir")))
	fx.tree(t, "out", map[string]string{"a.txt": "a"})
	must(t, os.Symlink("../../outside/secret.txt", filepath.Join(fx.source, "out", "secret")))
	// Links in a tree are followed to files inside the tree only.
	fx.tree(t, "side", map[string]string{"a.txt": "a"})
	must(t, os.Symlink("../f.txt", filepath.Join(fx.source, "side", "f.txt")))
	fx.tree(t, "abs", map[string]string{"a.txt": "a"})
	must(t, os.Symlink(filepath.Join(fx.source, "abs", "a.txt"), filepath.Join(fx.source, "abs", "again")))

	const source = "Source path goes through a link leading outside the source storage: "
	const tree = "Source folder holds a link leading outside it: "
	copier, linker, downloader := LocalCopy{Storage: fx.st, Options: opts()}, LocalSymlink{Storage: fx.st, Options: opts()}, DirectDownload{Storage: fx.st}
	for _, tc := range []struct {
		name   string
		m      staging.Method
		source string
		detail string
	}{
		{"copy a link out", copier, "escape", source + "escape"},
		{"copy through a link out", copier, "escapedir/secret.txt", source + "escapedir/secret.txt"},
		{"link a link out", linker, "escape", source + "escape"},
		{"download a link out", downloader, "escape", source + "escape"},
		{"copy a tree with a link out", copier, "out", tree + "out/secret"},
		{"copy a tree with a link beside it", copier, "side", tree + "side/f.txt"},
		{"copy a tree with an absolute link", copier, "abs", tree + "abs/again"},
		{"download a tree with a link out", downloader, "out", tree + "out/secret"},
		{"download a tree with a link beside it", downloader, "side", tree + "side/f.txt"},
		{"download a tree with an absolute link", downloader, "abs", tree + "abs/again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := stage(context.Background(), t, tc.m,
				staging.Request{Method: tc.m.Name(), Username: "alice", Source: tc.source, Target: "x/" + tc.name})
			wantStatus(t, err, http.StatusForbidden, tc.detail)
			absent(t, filepath.Join(fx.area("alice"), "x", tc.name))
			fx.noTemps(t)
		})
	}
	// jupyter_copy lists a tree before it uploads anything.
	for dir, link := range map[string]string{"out": "out/secret", "side": "side/f.txt", "abs": "abs/again"} {
		top, err := storage.OpenTree(fx.st.SourceRoot(), dir)
		must(t, err)
		_, _, err = listUpload(context.Background(), top, dir, 0)
		top.Close()
		wantStatus(t, err, http.StatusForbidden, tree+link)
	}
}
