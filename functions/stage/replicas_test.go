package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/events"
)

func TestTwoReplicasShareMariaDB(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{
		"SOURCE_STORAGE_PATH": filepath.Join(dir, "source"),
		"TARGET_STORAGE_PATH": filepath.Join(dir, "areas"),
		"DATABASE_URL":        testenv.MariaDB(t),
	}
	a := startStage(t, env)
	b := startStage(t, env)
	sum := testenv.RandomFile(t, filepath.Join(a.Source, "shared/big.bin"), 64<<20)
	for i := range 50 {
		a.write(t, "shared/tree/f"+string(rune('a'+i%26))+strings.Repeat("x", i/26), strings.Repeat("d", 4096))
	}
	for _, c := range []struct{ name, src, dst string }{{"file", "shared/big.bin", "big.bin"}, {"directory", "shared/tree", "tree"}} {
		t.Run(c.name, func(t *testing.T) {
			const n = 12
			msgs := make([]string, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s := a
					if i%2 == 1 {
						s = b
					}
					r := s.stageOne(t, "local_copy", "alice", c.src, c.dst)
					if r.Status == 200 {
						msgs[i] = r.Str("message")
					} else {
						msgs[i] = string(r.Body)
					}
				}()
			}
			wg.Wait()
			staged, available := 0, 0
			for _, m := range msgs {
				switch m {
				case "Data staged for user alice with method local_copy":
					staged++
				case "Data already available at " + c.dst:
					available++
				default:
					t.Fatalf("unexpected answer %q", m)
				}
			}
			if staged != 1 || available != n-1 {
				t.Fatalf("%d staged, %d already available: want one copy and %d successes", staged, available, n)
			}
			if left := testenv.Temps(a.Target, ".skao-staging-"); len(left) > 0 {
				t.Fatalf("temporary files left: %v", left)
			}
		})
	}
	if testenv.FileSum(t, a.userPath("alice", "big.bin")) != sum {
		t.Fatal("staged file differs from the source")
	}
	r := testenv.Do(t, http.MethodGet, b.URL+"/operations?username=alice&limit=1000", nil)
	ops := r.JSON["operations"].([]any)
	if len(ops) != 24 {
		t.Fatalf("%d operation records, want 24", len(ops))
	}
	for _, op := range ops {
		if op.(map[string]any)["status"] != "success" {
			t.Fatalf("operation %v", op)
		}
	}
}

func TestKilledMidCopyLeavesNothingAndIsSwept(t *testing.T) {
	s := startStage(t, map[string]string{"OPERATION_LEASE": "1s"})
	sum := testenv.RandomFile(t, filepath.Join(s.Source, "huge.bin"), 512<<20)
	target := s.userPath("alice", "in/huge.bin")
	go func() {
		// This request dies with the process.
		body := strings.NewReader(`{"data":{"local_path_on_storage":"huge.bin","relative_path":"in/huge.bin"}}`)
		resp, err := http.Post(s.URL+"/stage_data?method=local_copy&username=alice", "application/json", body)
		if err == nil {
			resp.Body.Close()
		}
	}()
	// The copy is a file without a name (O_TMPFILE) or, where the
	// filesystem cannot make one, under a temporary name.
	testenv.WaitFor(t, 30*time.Second, "the copy to start", func() bool { return len(s.Unpublished(s.Target, ".skao-staging-")) == 1 })
	s.Kill()
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("something is under the target's name after the kill: %v", err)
	}
	t.Logf("the killed copy left %d temporary files (none when it had no name)", len(testenv.Temps(s.Target, ".skao-staging-")))

	s.Restart()
	// The sweep removes the temporary file, then records the operation.
	var op map[string]any
	testenv.WaitFor(t, 20*time.Second, "the sweep to remove any temporary file and record the operation", func() bool {
		r := testenv.Do(t, http.MethodGet, s.URL+"/operations?username=alice", nil)
		op = r.JSON["operations"].([]any)[0].(map[string]any)
		return len(testenv.Temps(s.Target, ".skao-staging-")) == 0 && op["status"] != "running"
	})
	if op["status"] != "failed" || !strings.HasPrefix(op["error_reason"].(string), "Interrupted") {
		t.Fatalf("the killed operation is recorded as %v", op)
	}
	r := s.stageOne(t, "local_copy", "alice", "huge.bin", "in/huge.bin")
	expect(t, r, 200, "message", "Data staged for user alice with method local_copy")
	if testenv.FileSum(t, target) != sum {
		t.Fatal("retried copy differs from the source")
	}
}

func TestSIGTERMFinishesInFlightRequests(t *testing.T) {
	s := startStage(t, nil)
	testenv.RandomFile(t, filepath.Join(s.Source, "big.bin"), 256<<20)
	result := make(chan *testenv.Response, 1)
	go func() { result <- s.stageOne(t, "local_copy", "alice", "big.bin", "big.bin") }()
	testenv.WaitFor(t, 30*time.Second, "the copy to start", func() bool { return len(s.Unpublished(s.Target, ".skao-staging-")) == 1 })
	s.Signal(syscall.SIGTERM)
	r := <-result
	expect(t, r, 200, "message", "Data staged for user alice with method local_copy")
	if err := s.Wait(30 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if _, err := http.Get(s.URL + "/healthz"); err == nil {
		t.Fatal("still accepting connections after draining")
	}
}

// broker is a stand-in for a Knative Broker as seen by its clients: it
// accepts events with 202 and delivers them to the subscriber, retrying
// 5xx a few times.
type broker struct {
	*httptest.Server
	mu         sync.Mutex
	received   []cloudevents.Event
	subscriber string
}

func startBroker(t *testing.T) *broker {
	t.Helper()
	client, err := cloudevents.NewClientHTTP()
	must(t, err)
	b := &broker{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.received = append(b.received, *ev)
		to := b.subscriber
		b.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		go func() {
			for attempt := 0; attempt < 5; attempt++ {
				if res := client.Send(cloudevents.ContextWithTarget(context.Background(), to), *ev); cloudevents.IsACK(res) {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}))
	t.Cleanup(b.Close)
	return b
}

// deliverTo makes url the subscriber of what the broker receives.
func (b *broker) deliverTo(url string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subscriber = url
}

// events returns what the broker received so far.
func (b *broker) events() []cloudevents.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]cloudevents.Event(nil), b.received...)
}

func TestAsyncThroughSink(t *testing.T) {
	b := startBroker(t)
	s := startStage(t, map[string]string{"K_SINK": b.URL})
	b.deliverTo(s.URL + "/")
	s.write(t, "async/data", "through the broker")
	r := s.stageOne(t, "local_copy", "alice", "async/data", "from-broker", "Prefer", "respond-async")
	expect(t, r, 202, "status", "pending")
	op := s.waitOperation(t, r.Str("id"))
	if op["status"] != "success" {
		t.Fatalf("operation %v", op)
	}
	if b, _ := os.ReadFile(s.userPath("alice", "from-broker")); string(b) != "through the broker" {
		t.Fatal("not staged")
	}
	received := b.events()
	if len(received) != 1 || received[0].Type() != events.TypeRequest || received[0].Extensions()[events.ExtMethod] != "local_copy" {
		t.Fatalf("broker received %v", received)
	}
	// A second delivery of the same hand-off changes nothing.
	status, reply, _ := cetest.SendEvent(t, s.URL+"/", received[0], false)
	var data events.ReplyData
	must(t, reply.DataAs(&data))
	if status != 200 || data.ID != r.Str("id") || s.countOperations(t) != 1 {
		t.Fatalf("redelivered hand-off: %d %+v, %d records", status, data, s.countOperations(t))
	}
}

func TestDatabaseLoss(t *testing.T) {
	db := testenv.MariaDBServerFor(t)
	s := startStage(t, map[string]string{"DATABASE_URL": db.Database(t)})
	s.write(t, "f", "x")
	expect(t, s.stageOne(t, "local_copy", "alice", "f", "before"), 200, "status", "success")

	must(t, db.Stop())
	start := time.Now()
	r := s.stageOne(t, "local_copy", "alice", "f", "during")
	expect(t, r, 503, "detail", "Database unavailable")
	if time.Since(start) > 5*time.Second {
		t.Fatalf("503 took %s", time.Since(start))
	}
	if _, err := os.Lstat(s.userPath("alice", "during")); !os.IsNotExist(err) {
		t.Fatal("staged without a record")
	}
	expect(t, testenv.Do(t, http.MethodGet, s.URL+"/readyz", nil), 503, "", "")

	must(t, db.Start())
	testenv.WaitFor(t, 30*time.Second, "readiness after the database returns", func() bool {
		return testenv.Do(t, http.MethodGet, s.URL+"/readyz", nil).Status == 200
	})
	expect(t, s.stageOne(t, "local_copy", "alice", "f", "after"), 200, "status", "success")
}

// A function whose database is away at start does not crash-loop: it
// answers /healthz, says it is not ready, answers requests 503, and
// becomes ready once the database is back.
func TestStartsWithoutItsDatabase(t *testing.T) {
	db := testenv.MariaDBServerFor(t)
	url := db.Database(t)
	must(t, db.Stop())
	dir := t.TempDir()
	src := filepath.Join(dir, "source")
	must(t, os.MkdirAll(src, 0o755))
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644))
	p := testenv.StartFunctionAlive(t, "stage", map[string]string{"SOURCE_STORAGE_PATH": src,
		"TARGET_STORAGE_PATH": filepath.Join(dir, "areas"), "DATABASE_URL": url})
	expect(t, testenv.Do(t, http.MethodGet, p.URL+"/readyz", nil), 503, "detail", "not ready: the database does not answer")
	r := testenv.Do(t, http.MethodPost, p.URL+"/stage_data?method=local_copy&username=alice",
		map[string]any{"data": map[string]string{"local_path_on_storage": "f", "relative_path": "x"}})
	expect(t, r, 503, "detail", "Database unavailable")
	must(t, db.Start())
	testenv.WaitFor(t, 60*time.Second, "readiness once the database is back", func() bool {
		return testenv.Do(t, http.MethodGet, p.URL+"/readyz", nil).Status == 200
	})
	r = testenv.Do(t, http.MethodPost, p.URL+"/stage_data?method=local_copy&username=alice",
		map[string]any{"data": map[string]string{"local_path_on_storage": "f", "relative_path": "x"}})
	expect(t, r, 200, "status", "success")
}
