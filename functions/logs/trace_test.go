package main

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
)

// collector is an OTLP/HTTP trace receiver: it decodes the protobuf the
// functions' exporters send, as an OpenTelemetry Collector would.
type collector struct {
	*httptest.Server
	mu    sync.Mutex
	spans []span
}

// span is a received span with the service that sent it.
type span struct {
	service, instance, name, traceID string
}

func newCollector(t *testing.T) *collector {
	c := &collector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &req)
		}
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || err != nil {
			http.Error(w, "not an OTLP/HTTP trace export", http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		for _, rs := range req.ResourceSpans {
			attrs := map[string]string{}
			for _, kv := range rs.Resource.GetAttributes() {
				attrs[kv.Key] = kv.Value.GetStringValue()
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					c.spans = append(c.spans, span{attrs["service.name"], attrs["service.instance.id"], s.Name, hex.EncodeToString(s.TraceId)})
				}
			}
		}
		c.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(c.Close)
	return c
}

// await waits until the spans of trace include one from each want
// "service/instance" and returns them.
func (c *collector) await(t *testing.T, trace string, want ...string) []span {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c.mu.Lock()
		var got []span
		seen := map[string]bool{}
		for _, s := range c.spans {
			if s.traceID == trace {
				got = append(got, s)
				seen[s.service+"/"+s.instance] = true
			}
		}
		c.mu.Unlock()
		missing := false
		for _, w := range want {
			missing = missing || !seen[w]
		}
		if !missing {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s: spans from %v, want %v: %+v", trace, seen, want, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTraceAcrossFunctions: a trace id sent in with a request shows on the
// spans every function involved exports over OTLP, and in their log
// records: the stage function, the replica it hands an async request to by
// CloudEvent (K_SINK), and the jupyter function it hands jupyter_copy to.
func TestTraceAcrossFunctions(t *testing.T) {
	c := newCluster(t)
	col := newCollector(t)
	otel := func(instance string) map[string]string {
		return map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL,
			"OTEL_METRICS_EXPORTER":       "none",
			"OTEL_BSP_SCHEDULE_DELAY":     "50",
			"OTEL_RESOURCE_ATTRIBUTES":    "service.instance.id=" + instance,
		}
	}
	worker := c.start(t, "stage", otel("worker"))
	env := otel("front")
	env["K_SINK"] = worker.URL
	var jupyter *testenv.Process
	if _, err := os.Stat(filepath.Join(testenv.RepoRoot(), "functions", "jupyter", "main.go")); err == nil {
		jupyter = c.start(t, "jupyter", otel("jupyter"))
		env["JUPYTER_FUNCTION_URL"] = jupyter.URL
	}
	front := c.start(t, "stage", env)

	t.Run("async hand-off by CloudEvent", func(t *testing.T) {
		const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
		req, _ := http.NewRequest(http.MethodPost, front.URL+"/stage_data?method=local_copy&username=traced",
			strings.NewReader(`{"data":{"local_path_on_storage":"f1.txt","relative_path":"traced.txt"}}`))
		req.Header.Set("traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
		req.Header.Set("Prefer", "respond-async")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("async staging: %d", resp.StatusCode)
		}
		wanted := []string{"front: POST /stage_data", "front: send org.skao.staging.request",
			"worker: receive org.skao.staging.request", "worker: stage local_copy", "worker: run local_copy", "worker: store finish"}
		// Each function exports its spans in batches as they end: the
		// front's server span ends after its answer, maybe after the
		// worker's spans are in.
		var names map[string]bool
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			names = map[string]bool{}
			for _, s := range col.await(t, trace, "skao-staging-stage/front", "skao-staging-stage/worker") {
				names[s.instance+": "+s.name] = true
			}
			if !slices.ContainsFunc(wanted, func(w string) bool { return !names[w] }) || time.Now().After(deadline) {
				break
			}
		}
		for _, want := range wanted {
			if !names[want] {
				t.Errorf("no span %q in the trace: %v", want, names)
			}
		}
		recs := c.await(t, "username=traced", func(r []logging.Record) bool {
			for _, rec := range r {
				if rec.Message == "staging finished" {
					return true
				}
			}
			return false
		})
		for _, r := range recs {
			if r.Message == "staging finished" && (r.TraceID != trace || r.SpanID == "") {
				t.Errorf("the worker's record is not in the trace: %s trace=%q", r.Text(), r.TraceID)
			}
		}
	})

	t.Run("jupyter_copy hand-off", func(t *testing.T) {
		if jupyter == nil {
			t.Skip("functions/jupyter does not exist in this tree")
		}
		const trace = "0af7651916cd43dd8448eb211c80319c"
		req, _ := http.NewRequest(http.MethodPost, front.URL+"/stage_data?method=jupyter_copy&username=jtraced",
			strings.NewReader(`{"data":{"local_path_on_storage":"f2.txt","relative_path":"j.txt"}}`))
		req.Header.Set("traceparent", "00-"+trace+"-b7ad6b7169203331-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // no JupyterHub here: the answer is an error, the trace is what counts
		col.await(t, trace, "skao-staging-stage/front", "skao-staging-jupyter/jupyter")
		recs := c.await(t, "function=jupyter&username=jtraced", func(r []logging.Record) bool { return len(r) > 0 })
		for _, r := range recs {
			if r.TraceID != trace {
				t.Errorf("the jupyter function's record is not in the trace: %s trace=%q", r.Text(), r.TraceID)
			}
		}
	})
}
