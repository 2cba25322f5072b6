package reliability

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
)

// TestJupyterHubDiesMidUpload stops the whole JupyterHub (hub, proxy and
// the user's server) while a jupyter_copy uploads a large file: the
// operation fails with a clear reason, nothing appears under the target's
// name, and once the hub is back a retry puts the right content there.
func TestJupyterHubDiesMidUpload(t *testing.T) {
	hub := testenv.HubFor(t)
	s := newSite(t, "")
	jupyter := testenv.StartFunction(t, "jupyter", map[string]string{
		"SOURCE_STORAGE_PATH": s.Source, "TARGET_STORAGE_PATH": s.Target, "DATABASE_URL": s.DatabaseURL,
		"HOST": "127.0.0.1", "JUPYTERHUB_URL": hub.URL, "JUPYTERHUB_API_TOKEN": hub.Token,
		// Progress is recorded every lease/5: a short lease shows the
		// upload running early, so the hub is stopped well before its end.
		"OPERATION_LEASE": "1s",
	})
	p := s.start(t, map[string]string{"JUPYTERHUB_URL": hub.URL, "JUPYTER_FUNCTION_URL": jupyter.URL, "OPERATION_LEASE": "1s"})
	user := hub.NewHubUser(t, "dying", false)
	hub.StartServer(t, user)
	bytes := size[int64](128<<20, 1<<30)
	sum := testenv.RandomFile(t, filepath.Join(s.Source, "big.bin"), bytes)
	target := filepath.Join(hub.Home(user), "big.bin")

	r := call(client, http.MethodPost, stageURL(p.URL, "jupyter_copy", user), stageBody("big.bin", "big.bin"), "Prefer", "respond-async")
	if r.Status != http.StatusAccepted {
		t.Fatalf("async jupyter_copy: %v", r)
	}
	id := r.str("id")
	op := func() map[string]any { return call(client, http.MethodGet, p.URL+"/operations/"+id, nil).JSON }
	finished := func(o map[string]any) bool { return o["status"] == "success" || o["status"] == "failed" }
	var before map[string]any
	testenv.WaitFor(t, 60*time.Second, "the upload to start", func() bool {
		before = op()
		d, _ := before["bytes_done"].(float64)
		return d > 0 || finished(before)
	})
	if finished(before) {
		t.Fatalf("the upload ended before the hub could be stopped: %v", before)
	}
	killed := time.Now()
	hub.Stop()
	var after map[string]any
	testenv.WaitFor(t, 60*time.Second, "the operation to fail", func() bool { after = op(); return finished(after) })
	failedIn := time.Since(killed)
	if after["status"] != "failed" || after["error_reason"] == "" {
		t.Fatalf("after the hub died the operation is %v", after)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("something is under the target's name after the failed upload: %v", err)
	}
	_, tmpErr := os.Lstat(filepath.Join(hub.Home(user), methods.WorkspaceTempName(id)))
	leftover := tmpErr == nil

	must(t, hub.Start())
	hub.StartServer(t, user)
	retry := call(client, http.MethodPost, stageURL(p.URL, "jupyter_copy", user), stageBody("big.bin", "big.bin"))
	if retry.Status != 200 || retry.str("status") != "success" {
		t.Fatalf("retry once the hub is back: %v", retry)
	}
	if testenv.FileSum(t, target) != sum {
		t.Fatal("the retried upload differs from the source")
	}
	// The dead upload's temporary file could not be removed while the hub
	// was down; the next upload into the workspace removes it.
	_, tmpErr = os.Lstat(filepath.Join(hub.Home(user), methods.WorkspaceTempName(id)))
	stillThere := tmpErr == nil
	if stillThere {
		t.Fatalf("the dead upload's temporary file %s is still in the workspace after the retry", methods.WorkspaceTempName(id))
	}
	done, _ := before["bytes_done"].(float64)
	record(t, fmt.Sprintf("hub, proxy and user server stopped %d MiB into a %d MiB upload: operation failed after %s with %q; nothing under the target's name; retry after the hub returned staged the right sha256; the dead upload's temporary file %s in the workspace root (left: %v after the failure, %v after the retry)",
		int64(done)>>20, bytes>>20, ms(failedIn), after["error_reason"], map[bool]string{true: "stays", false: "is gone"}[stillThere], leftover, stillThere))
}
