package function

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/methods"
)

// setEnv gives the process a fresh database and storage, plus env.
func setEnv(t *testing.T, env map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "source"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{"DATABASE_URL": "sqlite://" + filepath.Join(dir, "staging.db"), "LOG_TO_STORE": "false",
		"SOURCE_STORAGE_PATH": filepath.Join(dir, "source"), "TARGET_STORAGE_PATH": filepath.Join(dir, "areas")}
	for k, v := range env {
		base[k] = v
	}
	for k, v := range base {
		t.Setenv(k, v)
	}
	return dir
}

// A function that does not stage (the logs function) needs no storage.
func TestSetupWithoutStorage(t *testing.T) {
	setEnv(t, map[string]string{"SOURCE_STORAGE_PATH": "", "TARGET_STORAGE_PATH": ""})
	f, err := Setup(context.Background(), "logs", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Store.Close()
	if f.Storage != nil || f.Service != nil {
		t.Fatal("Setup opened storage or a pipeline")
	}
	if _, err := f.setupStaging(methods.All); err == nil || !strings.Contains(err.Error(), "SOURCE_STORAGE_PATH") {
		t.Fatalf("Staging without storage: %v, want an error naming SOURCE_STORAGE_PATH", err)
	}
}

func TestStagingRegistersTheRegistry(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   string
		env  map[string]string
		want string // the methods a request may name, or the error
	}{
		{"stage without the jupyter function", "stage", nil, "local_copy local_symlink direct_download"},
		{"stage with it", "stage", map[string]string{"JUPYTER_FUNCTION_URL": "http://127.0.0.1:9"}, "local_copy local_symlink direct_download jupyter_copy"},
		{"jupyter", "jupyter", nil, "jupyter_copy"},
		{"allowed subset", "stage", map[string]string{"ALLOWED_METHODS": "local_symlink,direct_download"}, "local_symlink direct_download"},
		{"unknown allowed method", "stage", map[string]string{"ALLOWED_METHODS": "local_copy,rsync"}, `ALLOWED_METHODS: unknown method "rsync"`},
		{"no storage", "stage", map[string]string{"TARGET_STORAGE_PATH": ""}, "SOURCE_STORAGE_PATH and TARGET_STORAGE_PATH are required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := setEnv(t, tc.env)
			f, err := Setup(context.Background(), tc.fn, methods.All)
			if err != nil {
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Setup: %v, want %s", err, tc.want)
				}
				// Refused before anything was opened or created.
				if _, err := os.Stat(filepath.Join(dir, "staging.db")); !os.IsNotExist(err) {
					t.Fatalf("the database was created: %v", err)
				}
				return
			}
			defer f.Store.Close()
			defer f.Storage.Close()
			var names []string
			for _, m := range f.Service.Methods() {
				names = append(names, m.Name())
			}
			if got := strings.Join(names, " "); got != tc.want {
				t.Fatalf("methods %q, want %q", got, tc.want)
			}
		})
	}
}

// The pipeline gets the limit of work in flight MAX_INFLIGHT and
// MAX_OPEN_FILES set.
func TestStagingIsLimited(t *testing.T) {
	setEnv(t, map[string]string{"MAX_INFLIGHT": "3", "MAX_OPEN_FILES": "40"})
	f, err := Setup(context.Background(), "stage", methods.All)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Store.Close()
	defer f.Storage.Close()
	if f.Service.MaxInflight != 3 || f.Service.MaxOpenFiles != 40 {
		t.Fatalf("MaxInflight %d, MaxOpenFiles %d; want 3 and 40", f.Service.MaxInflight, f.Service.MaxOpenFiles)
	}
}

// holdGC turns the collector off under a heap bound while a function
// starts, and release puts back what GOGC and GOMEMLIMIT said, whatever
// they said.
func TestHoldGC(t *testing.T) {
	for _, tc := range []struct {
		name      string
		percent   int
		limit     int64
		wantLimit int64
	}{
		{"defaults", 100, math.MaxInt64, startHeapLimit},
		{"GOGC=off", -1, math.MaxInt64, startHeapLimit},
		{"GOMEMLIMIT under the bound", 200, 8 << 20, 8 << 20},
		{"GOMEMLIMIT over the bound", 50, 1 << 30, startHeapLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oldPercent, oldLimit := debug.SetGCPercent(tc.percent), debug.SetMemoryLimit(tc.limit)
			defer func() { debug.SetGCPercent(oldPercent); debug.SetMemoryLimit(oldLimit) }()
			release := holdGC()
			if p := debug.SetGCPercent(-1); p != -1 {
				t.Errorf("while held: GOGC %d, want off", p)
			}
			if l := debug.SetMemoryLimit(-1); l != tc.wantLimit {
				t.Errorf("while held: memory limit %d, want %d", l, tc.wantLimit)
			}
			release()
			if p := debug.SetGCPercent(tc.percent); p != tc.percent {
				t.Errorf("released: GOGC %d, want %d", p, tc.percent)
			}
			if l := debug.SetMemoryLimit(-1); l != tc.limit {
				t.Errorf("released: memory limit %d, want %d", l, tc.limit)
			}
		})
	}
}
