package reliability

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// full reports whether the scenarios run at full size (make reliability).
func full() bool { return os.Getenv("RELIABILITY") == "full" }

// size picks the fast or the full value of a scenario's parameter.
func size[T any](fast, fullSize T) T {
	if full() {
		return fullSize
	}
	return fast
}

// site is storage shared by one or more stage function processes.
type site struct {
	Source, Target, Outside string
	DatabaseURL             string
	procs                   []*testenv.Process
}

// newSite lays out source, target and a folder outside both under a fresh
// directory; databaseURL "" means an embedded SQLite file.
func newSite(t *testing.T, databaseURL string) *site {
	t.Helper()
	dir := t.TempDir()
	s := &site{Source: filepath.Join(dir, "source"), Target: filepath.Join(dir, "areas"),
		Outside: filepath.Join(dir, "outside"), DatabaseURL: databaseURL}
	if s.DatabaseURL == "" {
		s.DatabaseURL = "sqlite://" + filepath.Join(dir, "staging.db")
	}
	for _, d := range []string{s.Source, s.Target, s.Outside} {
		must(t, os.MkdirAll(d, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(s.Outside, "secret"), []byte("secret-content"), 0o600))
	return s
}

// start runs one more stage function over the site; env adds to or
// overrides the defaults.
func (s *site) start(t *testing.T, env map[string]string) *testenv.Process {
	t.Helper()
	e := map[string]string{
		"SOURCE_STORAGE_PATH": s.Source,
		"TARGET_STORAGE_PATH": s.Target,
		"DATABASE_URL":        s.DatabaseURL,
		"HOST":                "127.0.0.1",
		// Under load the log is mostly one line per request; warnings and
		// errors are what these tests look at when they fail.
		"LOGGING_LEVEL": "WARNING",
	}
	for k, v := range env {
		e[k] = v
	}
	p := testenv.StartFunction(t, "stage", e)
	s.procs = append(s.procs, p)
	return p
}

// write makes a source file and returns its path relative to the source.
func (s *site) write(t testing.TB, rel string, content []byte) string {
	t.Helper()
	p := filepath.Join(s.Source, rel)
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, content, 0o644))
	return rel
}

func (s *site) userPath(user, rel string) string { return filepath.Join(s.Target, user, rel) }

// operations reads every operation record straight from the store.
func (s *site) operations(t *testing.T) []staging.Operation {
	t.Helper()
	db, err := store.Open(context.Background(), s.DatabaseURL)
	must(t, err)
	defer db.Close()
	ops, err := db.List(context.Background(), staging.Filter{Limit: 1 << 30})
	must(t, err)
	return ops
}

// snapshot maps every path under root to its type, mode, size and content
// (or link target), to show that nothing there changed.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return nil
		}
		v := fmt.Sprint(info.Mode(), " ", info.Size())
		switch {
		case info.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			v += fmt.Sprintf(" %x", sha256.Sum256(b))
		case info.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		out[strings.TrimPrefix(p, root)] = v
		return nil
	})
	return out
}

func sameSnapshot(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed at %q: %q, was %q", what, k, after[k], v)
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s gained %q (%s)", what, k, v)
		}
	}
}

// randomBytes returns n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// answer is one HTTP answer, decoded when it is JSON.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
	Took   time.Duration
	Err    error // transport error: no answer at all
}

func (a *answer) str(key string) string {
	v, _ := a.JSON[key].(string)
	return v
}

func (a *answer) String() string {
	if a.Err != nil {
		return "error: " + a.Err.Error()
	}
	return fmt.Sprintf("%d %s", a.Status, bytes.TrimSpace(a.Body))
}

// client is an HTTP client with enough keep-alive connections for the
// load tests' concurrency.
var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 0}}

// call sends one request and reads the whole answer; it never fails the
// test, so callers running in goroutines can judge the answer.
func call(c *http.Client, method, url string, body any, header ...string) *answer {
	rd, err := testenv.Body(body)
	if err != nil {
		return &answer{Err: err}
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return &answer{Err: err}
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return &answer{Err: err, Took: time.Since(start)}
	}
	defer resp.Body.Close()
	a := &answer{Status: resp.StatusCode, Header: resp.Header}
	a.Body, a.Err = io.ReadAll(resp.Body)
	a.Took = time.Since(start)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		json.Unmarshal(a.Body, &a.JSON)
	}
	return a
}

// stageBody is the body of POST /stage_data for one item.
func stageBody(src, dst string) map[string]any {
	return map[string]any{"data": map[string]string{"local_path_on_storage": src, "relative_path": dst}}
}

func stageURL(base, method, user string) string {
	return base + "/stage_data?method=" + method + "&username=" + user
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// latencies summarises request durations.
type latencies []time.Duration

func (l latencies) percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(p/100*float64(len(s)) + 0.5)
	return s[min(max(i-1, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// results collects the figures of this run for RELIABILITY_RESULTS.
var results = struct {
	sync.Mutex
	started  time.Time
	sections map[string][]string
}{started: time.Now().UTC(), sections: map[string][]string{}}

// record adds a test's figures and rewrites the results file, so it holds
// every figure measured so far in this run.
func record(t *testing.T, lines ...string) {
	t.Helper()
	for _, l := range lines {
		t.Log(l)
	}
	path := os.Getenv("RELIABILITY_RESULTS")
	if path == "" {
		return
	}
	results.Lock()
	defer results.Unlock()
	results.sections[t.Name()] = append(results.sections[t.Name()], lines...)
	names := make([]string, 0, len(results.sections))
	for n := range results.sections {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Figures of the last reliability run\n\nRun of %s (%s mode), %s, %s/%s, %d CPUs, host %s.\n",
		results.started.Format(time.RFC3339), size("fast", "full"), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), host)
	for _, n := range names {
		fmt.Fprintf(&b, "\n## %s\n\n", n)
		for _, l := range results.sections[n] {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Errorf("write results: %v", err)
	}
}
