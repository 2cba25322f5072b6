package main

import (
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// stack is a jupyter function and a stage function handing jupyter_copy to
// it, over shared storage and one database, against a hub.
type stack struct {
	Hub     *testenv.JupyterHub
	Jupyter *testenv.Process
	Stage   *testenv.Process
	Source  string
}

// startStack starts both functions against hub; env adds to or overrides
// both functions' environment (jupyterEnv only the jupyter function's).
func startStack(t *testing.T, hub *testenv.JupyterHub, env, jupyterEnv map[string]string) *stack {
	t.Helper()
	dir := t.TempDir()
	s := &stack{Hub: hub, Source: filepath.Join(dir, "source")}
	must(t, os.MkdirAll(s.Source, 0o755))
	common := map[string]string{
		"SOURCE_STORAGE_PATH": s.Source,
		"TARGET_STORAGE_PATH": filepath.Join(dir, "user_areas"),
		"DATABASE_URL":        "sqlite://" + filepath.Join(dir, "staging.db"),
		"LOGGING_LEVEL":       "DEBUG",
		"JUPYTERHUB_URL":      hub.URL,
	}
	for k, v := range env {
		common[k] = v
	}
	je := map[string]string{"JUPYTERHUB_API_TOKEN": hub.StagingToken}
	for k, v := range common {
		je[k] = v
	}
	for k, v := range jupyterEnv {
		je[k] = v
	}
	s.Jupyter = testenv.StartFunction(t, "jupyter", je)
	se := map[string]string{"JUPYTER_FUNCTION_URL": s.Jupyter.URL}
	for k, v := range common {
		se[k] = v
	}
	s.Stage = testenv.StartFunction(t, "stage", se)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hub logs (end):\n%s", tailText(hub.Logs(), 4000))
		}
	})
	return s
}

// write makes a source file and returns its path relative to the source.
func (s *stack) write(t *testing.T, rel string, content []byte) string {
	t.Helper()
	p := filepath.Join(s.Source, rel)
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, content, 0o644))
	return rel
}

// writeRandom makes a source file of n random bytes, written in pieces.
func (s *stack) writeRandom(t *testing.T, rel string, n int64) string {
	t.Helper()
	p := filepath.Join(s.Source, rel)
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	f, err := os.Create(p)
	must(t, err)
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)})
	_, err = io.CopyN(f, rng, n)
	must(t, err)
	return rel
}

// stage posts one jupyter_copy to the stage function's /stage_data; query
// adds parameters (e.g. "&jupyter_token=...").
func (s *stack) stage(t *testing.T, user, src, dst, query string, header ...string) *testenv.Response {
	t.Helper()
	body := map[string]any{"data": map[string]string{"local_path_on_storage": src, "relative_path": dst}}
	return testenv.Do(t, http.MethodPost, s.Stage.URL+"/stage_data?method=jupyter_copy&username="+user+query, body, header...)
}

func expect(t *testing.T, r *testenv.Response, status int, field, want string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if field != "" && r.Str(field) != want {
		t.Fatalf("%s = %q, want %q (body %s)", field, r.Str(field), want, r.Body)
	}
}

// operation fetches one operation record through the stage function.
func (s *stack) operation(t *testing.T, id string) map[string]any {
	t.Helper()
	r := testenv.Do(t, http.MethodGet, s.Stage.URL+"/operations/"+id, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /operations/%s: %d %s", id, r.Status, r.Body)
	}
	return r.JSON
}

// waitOperation polls an operation until cond holds for it.
func (s *stack) waitOperation(t *testing.T, id string, cond func(op map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if op := s.operation(t, id); cond(op) {
			return op
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("operation %s: condition not met after 2 minutes: %v", id, s.operation(t, id))
	return nil
}

func finished(op map[string]any) bool { return op["status"] == "success" || op["status"] == "failed" }

// countOperations returns how many records the shared store holds for user.
func (s *stack) countOperations(t *testing.T, user string) int {
	t.Helper()
	r := testenv.Do(t, http.MethodGet, s.Stage.URL+"/operations?limit=1000&username="+user, nil)
	ops, _ := r.JSON["operations"].([]any)
	return len(ops)
}

// peakRSS is a process's peak resident memory (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	must(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			must(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

func tailText(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
