package main

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// A stage function at MAX_INFLIGHT=2, with two downloads held open (their
// clients read nothing, so the function blocks sending them), answers
// every door 429 with Retry-After and records nothing; its probes and
// reads still answer. Once one download ends, one request runs again, and
// a batch that needs two slots is still refused whole.
func TestFullFunctionAnswers429(t *testing.T) {
	t.Parallel()
	s := startStage(t, map[string]string{"MAX_INFLIGHT": "2"})
	s.write(t, "samples/hello.txt", "hello")
	for _, name := range []string{"big1.bin", "big2.bin"} {
		f, err := os.Create(filepath.Join(s.Source, name))
		must(t, err)
		must(t, f.Truncate(64<<20)) // more than the socket buffers hold
		must(t, f.Close())
	}
	hold := func(name string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(s.URL + "/stage_data?method=direct_download&username=alice&local_path_on_storage=" + name)
		must(t, err)
		id := resp.Header.Get("X-Operation-Id")
		if resp.StatusCode != 200 || id == "" {
			resp.Body.Close()
			t.Fatalf("download answered %d, operation %q", resp.StatusCode, id)
		}
		return resp, id
	}
	first, firstID := hold("big1.bin")
	defer first.Body.Close()
	second, secondID := hold("big2.bin")
	defer second.Body.Close()
	records := s.countOperations(t)
	if records != 2 {
		t.Fatalf("%d records, want the 2 downloads", records)
	}

	item := func(dst string) map[string]any {
		return map[string]any{"data": map[string]string{"local_path_on_storage": "samples/hello.txt", "relative_path": dst}}
	}
	batch := func(dsts ...string) map[string]any {
		var items []map[string]string
		for _, d := range dsts {
			items = append(items, map[string]string{"local_path_on_storage": "samples/hello.txt", "relative_path": d})
		}
		return map[string]any{"data": items}
	}
	stage := s.URL + "/stage_data?method=local_copy&username=alice"
	busy := func(t *testing.T, r *testenv.Response) {
		t.Helper()
		if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "1" ||
			r.Str("detail") != "Too much staging in flight here: try again shortly" {
			t.Fatalf("%d Retry-After %q: %s", r.Status, r.Header.Get("Retry-After"), r.Body)
		}
	}
	for _, door := range []struct {
		name string
		do   func() *testenv.Response
	}{
		{"single", func() *testenv.Response { return testenv.Do(t, "POST", stage, item("one.txt")) }},
		{"async", func() *testenv.Response {
			return testenv.Do(t, "POST", stage, item("async.txt"), "Prefer", "respond-async")
		}},
		{"batch", func() *testenv.Response { return testenv.Do(t, "POST", stage, batch("b1.txt")) }},
		{"download link", func() *testenv.Response {
			return testenv.Do(t, "GET", s.URL+"/stage_data?method=direct_download&username=alice&local_path_on_storage=samples/hello.txt", nil)
		}},
		{"event", func() *testenv.Response {
			return testenv.Do(t, "POST", s.URL+"/", `{"method": "local_copy", "username": "alice", "local_path_on_storage": "samples/hello.txt", "relative_path": "event.txt"}`,
				"ce-specversion", "1.0", "ce-id", "full-1", "ce-source", "/test", "ce-type", "org.skao.staging.request")
		}},
	} {
		t.Run(door.name, func(t *testing.T) { busy(t, door.do()) })
	}
	// The answer is the one openapi.json describes.
	c := loadContract(t, s.URL)
	c.check(t, s.URL, exchange{method: "POST", path: "/stage_data?method=local_copy&username=alice",
		body: `{"data": {"local_path_on_storage": "samples/hello.txt", "relative_path": "contract.txt"}}`, status: 429})
	// Probes and reads are not limited.
	for _, path := range []string{"/healthz", "/readyz", "/operations", "/browse?path=samples", "/config"} {
		if r := testenv.Do(t, "GET", s.URL+path, nil); r.Status != http.StatusOK {
			t.Errorf("GET %s while full: %d %s", path, r.Status, r.Body)
		}
	}
	if n := s.countOperations(t); n != records {
		t.Fatalf("%d records after the refusals, want %d: a refusal was recorded", n, records)
	}

	// One download ends (its client goes away): one slot is free.
	first.Body.Close()
	if op := s.waitOperation(t, firstID); op["status"] != "failed" {
		t.Fatalf("the abandoned download: %v", op)
	}
	busy(t, testenv.Do(t, "POST", stage, batch("b2.txt", "b3.txt")))
	if n := s.countOperations(t); n != records {
		t.Fatalf("%d records after the refused batch, want %d", n, records)
	}
	expect(t, testenv.Do(t, "POST", stage, item("one.txt")), 200, "status", "success")
	expect(t, testenv.Do(t, "POST", stage, batch("b4.txt")), 200, "status", "success")
	if op := s.operation(t, secondID); op["status"] != "running" {
		t.Fatalf("the held download: %v", op)
	}
	second.Body.Close()
	s.waitOperation(t, secondID)
	expect(t, testenv.Do(t, "POST", stage, batch("b5.txt", "b6.txt")), 200, "status", "success")
	if n := s.countOperations(t); n != records+4 {
		t.Fatalf("%d records, want %d", n, records+4)
	}
}
