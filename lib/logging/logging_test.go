package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/store"
)

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

func TestText(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  logging.Record
		want string
	}{
		{"plain", logging.Record{Time: t0, Level: slog.LevelInfo, Message: "listening"},
			"2026-03-14T15:09:26.535897Z - INFO - listening"},
		{"warning by its old name", logging.Record{Time: t0, Level: slog.LevelWarn, Message: "slow", Function: "stage"},
			"2026-03-14T15:09:26.535897Z - WARNING - slow function=stage"},
		{"attributes in order, quoted when needed", logging.Record{Time: t0.In(time.FixedZone("X", 3600)), Level: slog.LevelError,
			Message: "staging finished", Function: "stage", Attrs: logging.Attrs{
				{Key: "status", Value: "failed"}, {Key: "bytes", Value: json.Number("0")},
				{Key: "error_reason", Value: `No space "left"`}, {Key: "empty", Value: ""}, {Key: "nil", Value: nil}}},
			`2026-03-14T15:09:26.535897Z - ERROR - staging finished function=stage status=failed bytes=0 error_reason="No space \"left\"" empty="" nil=null`},
		{"a message stays on its line", logging.Record{Time: t0, Level: slog.LevelDebug - 2, Message: "two\nlines"},
			`2026-03-14T15:09:26.535897Z - DEBUG - two\nlines`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.rec.Text(); got != c.want {
				t.Errorf("Text() =\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

func TestLevels(t *testing.T) {
	for _, c := range []struct {
		in    string
		level slog.Level
		name  string
		bad   bool
	}{
		{in: "debug", level: slog.LevelDebug, name: "DEBUG"},
		{in: "INFO", level: slog.LevelInfo, name: "INFO"},
		{in: "Warning", level: slog.LevelWarn, name: "WARNING"},
		{in: "WARN", level: slog.LevelWarn, name: "WARNING"},
		{in: "ERROR", level: slog.LevelError, name: "ERROR"},
		{in: "critical", level: slog.LevelError, name: "ERROR"},
		{in: "verbose", bad: true},
		{in: "", bad: true},
	} {
		l, err := logging.ParseLevel(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("ParseLevel(%q) = %v, want an error", c.in, l)
			}
			continue
		}
		if err != nil || l != c.level || logging.LevelName(l) != c.name {
			t.Errorf("ParseLevel(%q) = %v (%s), %v; want %v (%s)", c.in, l, logging.LevelName(l), err, c.level, c.name)
		}
	}
}

func TestRecordJSON(t *testing.T) {
	in := logging.Record{ID: 7, Time: t0, Level: slog.LevelWarn, Message: "m", Function: "stage", Instance: "h/1",
		TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		Attrs:   logging.Attrs{{Key: "z", Value: "last?"}, {Key: "a", Value: json.Number("1")}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":7,"time":"2026-03-14T15:09:26.535897Z","level":"WARNING","message":"m","function":"stage","instance":"h/1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","attributes":{"z":"last?","a":1}}`
	if string(b) != want {
		t.Errorf("JSON =\n%s\nwant\n%s", b, want)
	}
	var out logging.Record
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Level != in.Level || out.Attrs[0].Key != "z" || out.Attrs[1].Value != json.Number("1") || !out.Time.Equal(t0) {
		t.Errorf("round trip = %+v, want %+v", out, in)
	}
}

// openStore is a real embedded store in a temporary directory.
func openStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "logs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func all(t *testing.T, s logging.Store) []logging.Record {
	t.Helper()
	recs, err := s.QueryLogs(context.Background(), logging.Query{Limit: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestHandler(t *testing.T) {
	db := openStore(t)
	w := logging.NewWriter(db, logging.WriterOptions{})
	var stdout bytes.Buffer
	log := slog.New(logging.New(&stdout, logging.Options{Level: slog.LevelInfo, Function: "stage", Instance: "pod/1", Store: w}))

	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled}))

	log.Debug("hidden below INFO")
	log.With("operation", "op-1").WarnContext(ctx, "staging finished", "username", "alice", "bytes", 42,
		"took", 1500*time.Millisecond, "error", errors.New("boom"), slog.Group("copy", "files", 3))
	log.WithGroup("req").Info("grouped", "path", "/x")
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("stdout has %d lines, want 2:\n%s", len(lines), stdout.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("stdout is not JSON: %v", err)
	}
	for k, v := range map[string]any{"level": "WARNING", "msg": "staging finished", "function": "stage",
		"operation": "op-1", "username": "alice", "trace_id": traceID.String(), "span_id": spanID.String()} {
		if first[k] != v {
			t.Errorf("stdout %s = %v, want %v", k, first[k], v)
		}
	}

	recs := all(t, db)
	if len(recs) != 2 {
		t.Fatalf("store has %d records, want 2: %+v", len(recs), recs)
	}
	r := recs[0]
	if r.Level != slog.LevelWarn || r.Function != "stage" || r.Instance != "pod/1" || r.Operation != "op-1" ||
		r.Username != "alice" || r.TraceID != traceID.String() || r.SpanID != spanID.String() {
		t.Errorf("stored record = %+v", r)
	}
	wantText := "staging finished function=stage operation=op-1 username=alice bytes=42 took=1.5s error=boom copy.files=3"
	if !strings.HasSuffix(r.Text(), wantText) {
		t.Errorf("stored record as text = %q, want it to end with %q", r.Text(), wantText)
	}
	if got := recs[1].Text(); !strings.HasSuffix(got, "grouped function=stage req.path=/x") {
		t.Errorf("grouped record as text = %q", got)
	}
}

func TestWriterBatches(t *testing.T) {
	db := openStore(t)
	w := logging.NewWriter(db, logging.WriterOptions{Batch: 100})
	for i := range 1234 {
		w.Add(logging.Record{Time: t0.Add(time.Duration(i) * time.Microsecond), Message: "m"})
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(all(t, db)); n != 1234 || w.Dropped() != 0 {
		t.Errorf("stored %d records, dropped %d; want 1234 and 0", n, w.Dropped())
	}
	w.Add(logging.Record{Time: t0, Message: "after close"})
	if w.Dropped() != 1 {
		t.Errorf("a record after Close: dropped %d, want 1", w.Dropped())
	}
}

// TestWriterDropsWhenStoreFails: a failing store costs records, counted and
// reported on stdout, never an error to the caller.
func TestWriterDropsWhenStoreFails(t *testing.T) {
	db := openStore(t)
	db.Close() // every insert fails from now on
	var stdout syncBuffer
	w := logging.NewWriter(db, logging.WriterOptions{Interval: time.Millisecond,
		Stdout: slog.New(logging.New(&stdout, logging.Options{Function: "stage"}))})
	for range 10 {
		w.Add(logging.Record{Time: t0, Message: "lost"})
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w.Dropped() != 10 {
		t.Errorf("dropped %d, want 10", w.Dropped())
	}
	var report map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		t.Fatalf("report %q: %v", stdout.String(), err)
	}
	if report["level"] != "WARNING" || report["dropped"] != float64(10) || !strings.Contains(report["error"].(string), "closed") {
		t.Errorf("report = %v", report)
	}
}

// gatedStore holds every insert of a real store until open is closed: a
// store that stopped answering.
type gatedStore struct {
	logging.Store
	open chan struct{}
}

func (g gatedStore) AppendLogs(ctx context.Context, recs []logging.Record) error {
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Store.AppendLogs(ctx, recs)
}

// TestWriterNeverBlocks: with the store stuck, Add still returns at once;
// what does not fit in the queue is dropped and counted, and nothing is lost
// without being counted.
func TestWriterNeverBlocks(t *testing.T) {
	db := openStore(t)
	gate := gatedStore{Store: db, open: make(chan struct{})}
	w := logging.NewWriter(gate, logging.WriterOptions{Capacity: 50, Batch: 10, Interval: time.Millisecond, Timeout: time.Minute})
	const n = 10_000
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n / 4 {
				w.Add(logging.Record{Time: t0, Message: "m", Attrs: logging.Attrs{{Key: "g", Value: g}, {Key: "i", Value: i}}})
			}
		}()
	}
	wg.Wait() // would hang here if Add waited for the store
	if w.Dropped() < n-50-10 {
		t.Errorf("dropped %d of %d with a queue of 50, want at least %d", w.Dropped(), n, n-60)
	}
	close(gate.open)
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if stored := int64(len(all(t, db))); stored+w.Dropped() != n {
		t.Errorf("stored %d + dropped %d != %d added", stored, w.Dropped(), n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }
