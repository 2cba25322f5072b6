package methods

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// A tree deeper than MAX_PATH_DEPTH is refused naming the first folder
// beyond the limit by its path in the source storage, as the request named
// the tree, like every other refusal of something inside a tree.
func TestTooDeepTreeNamedInStorage(t *testing.T) {
	fx := newFixture(t)
	fx.tree(t, "data/run", map[string]string{"a/b/c/d/f": "deep"})
	o := opts()
	o.MaxDepth = 3
	const detail = "Source tree is more than 3 folders deep at data/run/a/b/c/d"
	for _, m := range []staging.Method{LocalCopy{Storage: fx.st, Options: o}, DirectDownload{Storage: fx.st, MaxDepth: 3}} {
		t.Run(m.Name(), func(t *testing.T) {
			_, _, err := stage(context.Background(), t, m, staging.Request{Method: m.Name(), Username: "alice", Source: "data/run", Target: "out/run"})
			wantStatus(t, err, http.StatusBadRequest, detail)
			absent(t, filepath.Join(fx.area("alice"), "out", "run"))
			fx.noTemps(t)
		})
	}
}
