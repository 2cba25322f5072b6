package telemetry_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
	"github.com/ska-telescope/skao-staging-service/lib/store"
	"github.com/ska-telescope/skao-staging-service/lib/telemetry"
)

// TestEventTraceThroughBroker follows one trace from a sender, through a
// broker that forwards only the event (as a Knative Broker does: a new HTTP
// request, no traceparent header), into the receiving function's pipeline,
// store queries and log records.
func TestEventTraceThroughBroker(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	telemetry.InstallTracerProvider(tp)

	dir := t.TempDir()
	src, dst := filepath.Join(dir, "source"), filepath.Join(dir, "target")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "obs.ms"), []byte("visibilities"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	db, err := store.Open(context.Background(), "sqlite://"+filepath.Join(dir, "staging.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	logs := logging.NewWriter(db, logging.WriterOptions{})
	logger := slog.New(logging.New(os.Stdout, logging.Options{Function: "stage", Store: logs}))
	svc := &staging.Service{Store: telemetry.TraceStore(db, "sqlite"), Logger: logger}
	svc.Register(methods.LocalSymlink{Storage: st})

	mux := httpx.NewMux()
	mux.Route(http.MethodPost, "/", (&events.Receiver{Service: svc, Source: "/test", Logger: logger, Auth: auth.None{}}).ServeHTTP)
	function := httptest.NewServer(telemetry.Handler(mux))
	defer function.Close()

	forward, err := cloudevents.NewClientHTTP(cehttp.WithRoundTripper(http.DefaultTransport))
	if err != nil {
		t.Fatal(err)
	}
	var brokerSawTraceparentHeader bool
	broker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		brokerSawTraceparentHeader = r.Header.Get("traceparent") != ""
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if res := forward.Send(cloudevents.ContextWithTarget(context.Background(), function.URL), *ev); !cloudevents.IsACK(res) {
			http.Error(w, res.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer broker.Close()

	sender, err := events.NewSender(broker.URL, "/test", nil, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	ctx, root := tp.Tracer("test").Start(context.Background(), "client request")
	ev, err := events.NewRequest("/rucio/rse/SITE", &staging.Request{Method: "local_symlink", Username: "alice",
		Source: "obs.ms", Target: "obs.ms"})
	if err != nil {
		t.Fatal(err)
	}
	ev.SetID("42")
	if err := sender.Send(ctx, ev); err != nil {
		t.Fatalf("Send: %v", err)
	}
	root.End()
	if err := logs.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Readlink(filepath.Join(dst, "alice", "obs.ms")); err != nil {
		t.Fatalf("the event was not staged: %v", err)
	}
	if !brokerSawTraceparentHeader {
		t.Errorf("the sender's HTTP request had no traceparent header")
	}

	traceID := root.SpanContext().TraceID()
	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		spans[s.Name()] = s
	}
	var names []string
	for n := range spans {
		names = append(names, n)
	}
	for _, name := range []string{"send org.skao.staging.request", "receive org.skao.staging.request",
		"stage local_symlink", "run local_symlink", "store get by event key", "store create", "store finish"} {
		s, ok := spans[name]
		if !ok {
			t.Errorf("no span %q among %s", name, strings.Join(names, ", "))
			continue
		}
		if s.SpanContext().TraceID() != traceID {
			t.Errorf("span %q is in trace %s, want %s", name, s.SpanContext().TraceID(), traceID)
		}
	}
	send, receive := spans["send org.skao.staging.request"], spans["receive org.skao.staging.request"]
	if send == nil || receive == nil {
		t.FailNow()
	}
	if receive.Parent().SpanID() != send.SpanContext().SpanID() {
		t.Errorf("receive's parent is %s, want the send span %s", receive.Parent().SpanID(), send.SpanContext().SpanID())
	}
	if receive.SpanKind() != trace.SpanKindConsumer || send.SpanKind() != trace.SpanKindProducer {
		t.Errorf("kinds: send %v, receive %v", send.SpanKind(), receive.SpanKind())
	}
	// The broker's hop started a trace of its own; the receive span links to it.
	if links := receive.Links(); len(links) != 1 || links[0].SpanContext.TraceID() == traceID {
		t.Errorf("receive links = %+v, want one link to the broker hop's server span", links)
	}
	if spans["stage local_symlink"].Parent().SpanID() != receive.SpanContext().SpanID() {
		t.Errorf("the pipeline's span is not a child of the receive span")
	}

	records, err := db.QueryLogs(context.Background(), logging.Query{})
	if err != nil {
		t.Fatal(err)
	}
	var finished *logging.Record
	for i := range records {
		if records[i].Message == "staging finished" {
			finished = &records[i]
		}
	}
	if finished == nil || finished.TraceID != traceID.String() || finished.SpanID == "" {
		t.Errorf("log record of the staging = %+v, want trace id %s", finished, traceID)
	}
}
