package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// inProcessAPI sets env and builds the stage function's handler in this
// process, with authentication off: for tests that reach inside it. The
// function is shut down and closed when the test ends.
func inProcessAPI(tb testing.TB, env map[string]string) (*function.Function, http.Handler) {
	tb.Helper()
	for k, v := range env {
		tb.Setenv(k, v)
	}
	fn, err := function.Setup(context.Background(), "stage", methods.All)
	must(tb, err)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		fn.Service.Shutdown(ctx)
		fn.Store.Close()
		fn.Storage.Close()
	})
	a := &api{f: fn, svc: fn.Service, auth: auth.None{},
		receiver: &events.Receiver{Service: fn.Service, Source: fn.Source, Logger: fn.Logger, Auth: auth.None{}}}
	return fn, a.routes()
}

// stack is one stage function over temporary storage.
type stack struct {
	*testenv.Process
	Source, Target string
}

// startStage starts the stage function over fresh storage; env adds to or
// overrides the defaults (embedded SQLite).
func startStage(t *testing.T, env map[string]string) *stack {
	t.Helper()
	dir := t.TempDir()
	s := &stack{Source: filepath.Join(dir, "source"), Target: filepath.Join(dir, "user_areas")}
	if v := env["SOURCE_STORAGE_PATH"]; v != "" {
		s.Source = v
	}
	if v := env["TARGET_STORAGE_PATH"]; v != "" {
		s.Target = v
	}
	must(t, os.MkdirAll(s.Source, 0o755))
	e := map[string]string{
		"SOURCE_STORAGE_PATH": s.Source,
		"TARGET_STORAGE_PATH": s.Target,
		"DATABASE_URL":        "sqlite://" + filepath.Join(dir, "staging.db"),
		"LOGGING_LEVEL":       "DEBUG",
		"ENABLE_FILE_CREATOR": "true",
	}
	for k, v := range env {
		e[k] = v
	}
	s.Process = testenv.StartFunction(t, "stage", e)
	return s
}

// write makes a source file with content and returns its path relative to
// the source root.
func (s *stack) write(t *testing.T, rel, content string) string {
	t.Helper()
	p := filepath.Join(s.Source, rel)
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), 0o644))
	return rel
}

func (s *stack) userPath(user, rel string) string { return filepath.Join(s.Target, user, rel) }

// stageOne posts one item.
func (s *stack) stageOne(t *testing.T, method, user, src, dst string, header ...string) *testenv.Response {
	t.Helper()
	body := map[string]any{"data": map[string]string{"local_path_on_storage": src, "relative_path": dst}}
	return testenv.Do(t, http.MethodPost, s.URL+"/stage_data?method="+method+"&username="+user, body, header...)
}

// operation fetches one operation record.
func (s *stack) operation(t *testing.T, id string) map[string]any {
	t.Helper()
	r := testenv.Do(t, http.MethodGet, s.URL+"/operations/"+id, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /operations/%s: %d %s", id, r.Status, r.Body)
	}
	return r.JSON
}

// waitOperation polls an operation until it is finished.
func (s *stack) waitOperation(t *testing.T, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		op := s.operation(t, id)
		if st := op["status"]; st == "success" || st == "failed" {
			return op
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("operation %s did not finish", id)
	return nil
}

// countOperations returns how many records the store holds.
func (s *stack) countOperations(t *testing.T) int {
	t.Helper()
	r := testenv.Do(t, http.MethodGet, s.URL+"/operations?limit=1000", nil)
	ops, _ := r.JSON["operations"].([]any)
	return len(ops)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
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

// decodeJSON reads a JSON answer into v, leaving v empty for other bodies.
func decodeJSON(resp *http.Response, v any) {
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		json.NewDecoder(resp.Body).Decode(v)
	}
}
