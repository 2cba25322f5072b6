package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/logging"
)

func TestLogs(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range []struct {
				name string
				run  func(t *testing.T, s *Store)
			}{
				{"RoundTrip", testLogsRoundTrip},
				{"Query", testLogsQuery},
				{"After", testLogsAfter},
				{"IDs", testLogsIDs},
				{"Prune", testLogsPrune},
				{"Unstorable", testLogsUnstorable},
			} {
				t.Run(c.name, func(t *testing.T) { c.run(t, open(t, b.url(t))) })
			}
		})
	}
}

func mustAppend(t *testing.T, s *Store, recs ...logging.Record) {
	t.Helper()
	if err := s.AppendLogs(context.Background(), recs); err != nil {
		t.Fatalf("AppendLogs: %v", err)
	}
}

func mustQuery(t *testing.T, s *Store, q logging.Query) []logging.Record {
	t.Helper()
	recs, err := s.QueryLogs(context.Background(), q)
	if err != nil {
		t.Fatalf("QueryLogs(%+v): %v", q, err)
	}
	return recs
}

func messages(recs []logging.Record) string {
	var m []string
	for _, r := range recs {
		m = append(m, r.Message)
	}
	return strings.Join(m, ",")
}

func testLogsRoundTrip(t *testing.T, s *Store) {
	if id, err := s.LastLogID(context.Background()); err != nil || id != 0 {
		t.Fatalf("LastLogID of an empty store = %d, %v; want 0", id, err)
	}
	in := logging.Record{Time: t0, Level: slog.LevelWarn, Message: "staging finished", Function: "stage",
		Instance: "pod-1/1", Operation: "01a2-op", Username: "alice",
		TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "00f067aa0ba902b7",
		Attrs: logging.Attrs{{Key: "method", Value: "local_copy"}, {Key: "bytes", Value: int64(42)}, {Key: "ok", Value: true},
			{Key: "nested", Value: map[string]any{"a": "b"}}}}
	mustAppend(t, s, in)
	got := mustQuery(t, s, logging.Query{})
	if len(got) != 1 {
		t.Fatalf("got %d records, want 1", len(got))
	}
	r := got[0]
	if r.ID <= 0 || !r.Time.Equal(t0.Truncate(time.Microsecond)) || r.Level != slog.LevelWarn || r.Message != in.Message ||
		r.Function != "stage" || r.Instance != "pod-1/1" || r.Operation != "01a2-op" || r.Username != "alice" ||
		r.TraceID != in.TraceID || r.SpanID != in.SpanID {
		t.Errorf("record = %+v, want %+v with an id", r, in)
	}
	want := `method=local_copy bytes=42 ok=true nested="{\"a\":\"b\"}"`
	if line := r.Text(); !strings.HasSuffix(line, want) {
		t.Errorf("Text() = %q, want it to end with %q", line, want)
	}
	if id, _ := s.LastLogID(context.Background()); id != r.ID {
		t.Errorf("LastLogID = %d, want %d", id, r.ID)
	}
}

func testLogsQuery(t *testing.T, s *Store) {
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	// Inserted out of time order, as replicas' batches arrive.
	mustAppend(t, s,
		logging.Record{Time: at(3), Level: slog.LevelInfo, Message: "c", Function: "stage", Username: "alice", Operation: "op1"},
		logging.Record{Time: at(1), Level: slog.LevelDebug, Message: "a", Function: "stage", Username: "bob"},
	)
	mustAppend(t, s,
		logging.Record{Time: at(2), Level: slog.LevelError, Message: "b", Function: "jupyter", Username: "alice", Operation: "op1"},
		logging.Record{Time: at(4), Level: slog.LevelWarn, Message: "d", Function: "logs"},
	)
	for _, c := range []struct {
		name string
		q    logging.Query
		want string
	}{
		{"all, in time order", logging.Query{}, "a,b,c,d"},
		{"newest limit, oldest first", logging.Query{Limit: 2}, "c,d"},
		{"level minimum", logging.Query{Level: slog.LevelInfo}, "b,c,d"},
		{"level warning", logging.Query{Level: slog.LevelWarn}, "b,d"},
		{"username", logging.Query{Username: "alice"}, "b,c"},
		{"operation", logging.Query{Operation: "op1"}, "b,c"},
		{"function", logging.Query{Function: "stage"}, "a,c"},
		{"since", logging.Query{Since: at(2)}, "b,c,d"},
		{"combined", logging.Query{Username: "alice", Level: slog.LevelError}, "b"},
		{"nothing", logging.Query{Username: "carol"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := messages(mustQuery(t, s, c.q)); got != c.want {
				t.Errorf("messages = %q, want %q", got, c.want)
			}
		})
	}
}

func testLogsAfter(t *testing.T, s *Store) {
	// Later ids with earlier times, as a replica's late batch.
	for i := range 5 {
		mustAppend(t, s, logging.Record{Time: t0.Add(-time.Duration(i) * time.Second), Message: string(rune('a' + i))})
	}
	if got := messages(mustQuery(t, s, logging.Query{})); got != "e,d,c,b,a" {
		t.Fatalf("by time = %q, want e,d,c,b,a", got)
	}
	first, err := s.QueryLogs(context.Background(), logging.Query{Limit: 1, Since: t0})
	if err != nil || len(first) != 1 || first[0].Message != "a" {
		t.Fatalf("first record = %+v, %v", first, err)
	}
	// After pages through ids in order, whatever the times.
	page := mustQuery(t, s, logging.Query{After: first[0].ID, Limit: 2})
	if messages(page) != "b,c" {
		t.Errorf("page after %q = %q, want b,c", "a", messages(page))
	}
	page = mustQuery(t, s, logging.Query{After: page[1].ID, Limit: 2})
	if messages(page) != "d,e" {
		t.Errorf("next page = %q, want d,e", messages(page))
	}
	if page = mustQuery(t, s, logging.Query{After: page[1].ID}); len(page) != 0 {
		t.Errorf("after the last id: %q, want nothing", messages(page))
	}
	// Ascending from the start: the first ids, not the newest times.
	if page = mustQuery(t, s, logging.Query{Ascending: true, Limit: 2}); messages(page) != "a,b" {
		t.Errorf("ascending from the start = %q, want a,b", messages(page))
	}
}

// testLogsIDs: LogIDs names the records QueryLogs returns, in its order,
// and QueryLogs with IDs reads those records, in id order, whatever their
// times, leaving out ids that are not there.
func testLogsIDs(t *testing.T, s *Store) {
	// Later ids with earlier times, as a replica's late batch.
	for i := range 6 {
		user := []string{"alice", "bob"}[i%2]
		mustAppend(t, s, logging.Record{Time: t0.Add(-time.Duration(i) * time.Second), Message: string(rune('a' + i)), Username: user})
	}
	ids := func(recs []logging.Record) []int64 {
		out := []int64{}
		for _, r := range recs {
			out = append(out, r.ID)
		}
		return out
	}
	for _, q := range []logging.Query{{}, {Limit: 2}, {Username: "alice"}, {After: 2, Limit: 3}, {Ascending: true, Limit: 2}} {
		got, err := s.LogIDs(context.Background(), q)
		if want := ids(mustQuery(t, s, q)); err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("LogIDs(%+v) = %v, %v; want %v", q, got, err, want)
		}
	}
	all := mustQuery(t, s, logging.Query{Ascending: true})
	for _, c := range []struct {
		name string
		ids  []int64
		want string
	}{
		{"in id order", []int64{all[4].ID, all[0].ID, all[2].ID}, "a,c,e"},
		{"one", []int64{all[5].ID}, "f"},
		{"some not there", []int64{all[1].ID, all[5].ID + 100}, "b"},
	} {
		if got := messages(mustQuery(t, s, logging.Query{IDs: c.ids, Limit: 1})); got != c.want {
			t.Errorf("%s: IDs %v = %q, want %q", c.name, c.ids, got, c.want)
		}
	}
}

func testLogsPrune(t *testing.T, s *Store) {
	var recs []logging.Record
	for i := range 25 {
		recs = append(recs, logging.Record{Time: t0.Add(time.Duration(i) * time.Hour), Message: "m"})
	}
	mustAppend(t, s, recs...)
	n, err := s.PruneLogs(context.Background(), t0.Add(10*time.Hour))
	if err != nil || n != 10 {
		t.Fatalf("PruneLogs = %d, %v; want 10", n, err)
	}
	left := mustQuery(t, s, logging.Query{})
	if len(left) != 15 || !left[0].Time.Equal(t0.Add(10*time.Hour)) {
		t.Errorf("left %d records from %v, want 15 from %v", len(left), left[0].Time, t0.Add(10*time.Hour))
	}
	if n, err := s.PruneLogs(context.Background(), t0); err != nil || n != 0 {
		t.Errorf("PruneLogs with nothing old = %d, %v", n, err)
	}
}

// testLogsUnstorable: what the database could refuse is made storable, so
// one odd record never costs its whole batch.
func testLogsUnstorable(t *testing.T, s *Store) {
	long := strings.Repeat("é", maxLogMessage)
	mustAppend(t, s,
		logging.Record{Time: t0, Message: "bad \xff utf-8", Function: strings.Repeat("f", 100)},
		logging.Record{Time: t0, Message: long, Attrs: logging.Attrs{{Key: "big", Value: strings.Repeat("x", 2*maxLogAttrs)}}},
	)
	got := mustQuery(t, s, logging.Query{After: -1})
	if len(got) != 2 {
		t.Fatalf("got %d records, want 2", len(got))
	}
	if got[0].Message != "bad \uFFFD utf-8" || len(got[0].Function) != 64 {
		t.Errorf("first record = %q, function of %d bytes", got[0].Message, len(got[0].Function))
	}
	if len(got[1].Message) > maxLogMessage || !strings.HasPrefix(long, got[1].Message) {
		t.Errorf("long message kept %d bytes, want a prefix of at most %d", len(got[1].Message), maxLogMessage)
	}
	if got[1].Attrs.Get("attributes_truncated") == nil {
		t.Errorf("oversized attributes = %v, want a truncation note", got[1].Attrs)
	}
}
