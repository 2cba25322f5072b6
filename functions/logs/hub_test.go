package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/store"
)

// memLogs is a logging.Store in memory that counts its queries.
type memLogs struct {
	mu      sync.Mutex
	recs    []logging.Record
	queries atomic.Int64
}

func (m *memLogs) add(user, msg string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := int64(len(m.recs) + 1)
	m.recs = append(m.recs, logging.Record{ID: id, Time: time.Now().UTC(), Level: slog.LevelInfo,
		Message: msg, Function: "stage", Username: user})
	return id
}

func (m *memLogs) AppendLogs(ctx context.Context, records []logging.Record) error { return nil }

func (m *memLogs) QueryLogs(ctx context.Context, q logging.Query) ([]logging.Record, error) {
	m.queries.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []logging.Record
	for i := range m.recs {
		r := m.recs[i]
		if r.ID > q.After && matches(q, &r) && (q.IDs == nil || slices.Contains(q.IDs, r.ID)) {
			out = append(out, r)
		}
	}
	if q.IDs != nil {
		return out, nil
	}
	if q.After > 0 || q.Ascending {
		return out[:min(len(out), q.Limit)], nil
	}
	return out[max(0, len(out)-q.Limit):], nil
}

func (m *memLogs) LogIDs(ctx context.Context, q logging.Query) ([]int64, error) {
	recs, err := m.QueryLogs(ctx, q)
	var ids []int64
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	return ids, err
}

func (m *memLogs) LastLogID(ctx context.Context) (int64, error) {
	m.queries.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.recs)), nil
}

func (m *memLogs) PruneLogs(ctx context.Context, before time.Time) (int64, error) { return 0, nil }

// stream is one follower of /logs.
type stream struct {
	resp *http.Response
	ids  chan int64
	err  error // why the body ended, once ids is closed
}

func openStream(t *testing.T, ctx context.Context, url string, header ...string) (*stream, int) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, resp.StatusCode
	}
	s := &stream{resp: resp, ids: make(chan int64, 10_000)}
	go func() {
		defer close(s.ids)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				s.ids <- n
			}
		}
		s.err = sc.Err()
	}()
	return s, http.StatusOK
}

// await collects ids until it has want (in order) or fails after 5 s.
func (s *stream) await(t *testing.T, want []int64) {
	t.Helper()
	var got []int64
	timeout := time.After(5 * time.Second)
	for len(got) < len(want) {
		select {
		case id, ok := <-s.ids:
			if !ok {
				t.Fatalf("stream ended after %v, want %v", got, want)
			}
			got = append(got, id)
		case <-timeout:
			t.Fatalf("stream gave %v, want %v", got, want)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("stream gave %v, want %v", got, want)
	}
}

// TestOnePollerForAllStreams: hundreds of streams cost the store the
// queries of one; each stream gets the records its filter matches, once;
// beyond the cap a stream is refused with 503; with no stream left the
// poller stops.
func TestOnePollerForAllStreams(t *testing.T) {
	store := &memLogs{}
	store.add("alice", "before")
	const streams, cap = 300, 302
	a := newAPI(store, auth.None{}, cap)
	srv := httptest.NewServer(a.handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var all []*stream
	for i := range streams {
		user := []string{"alice", "bob"}[i%2]
		s, status := openStream(t, ctx, srv.URL+"/logs?follow=true&username="+user)
		if status != http.StatusOK {
			t.Fatalf("stream %d: %d", i, status)
		}
		all = append(all, s)
	}
	// Every alice stream starts with the record already there.
	for i, s := range all {
		if i%2 == 0 {
			s.await(t, []int64{1})
		}
	}
	before := store.queries.Load()
	start := time.Now()
	var alice, bob []int64
	for i := range 20 {
		alice = append(alice, store.add("alice", fmt.Sprint("a", i)))
		bob = append(bob, store.add("bob", fmt.Sprint("b", i)))
		time.Sleep(50 * time.Millisecond)
	}
	for i, s := range all {
		if i%2 == 0 {
			s.await(t, alice)
		} else {
			s.await(t, bob)
		}
	}
	took := time.Since(start)
	queries := store.queries.Load() - before
	// One query per poll, whatever the number of streams.
	if most := int64(took/pollEvery) + 2; queries > most {
		t.Errorf("%d streams made %d store queries in %s, want at most %d (one per poll)", streams, queries, took, most)
	}
	t.Logf("%d streams, %d store queries in %s", streams, queries, took.Round(time.Millisecond))

	// The cap.
	extra := []*stream{}
	for range cap - streams {
		s, status := openStream(t, ctx, srv.URL+"/logs?follow=true")
		if status != http.StatusOK {
			t.Fatalf("stream below the cap: %d", status)
		}
		extra = append(extra, s)
	}
	if _, status := openStream(t, ctx, srv.URL+"/logs?follow=true"); status != http.StatusServiceUnavailable {
		t.Errorf("stream beyond the cap: %d, want 503", status)
	}
	// A plain read is not a stream.
	if resp, err := http.Get(srv.URL + "/logs?limit=1"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("plain read at the cap: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A stream resuming with Last-Event-ID gets what came after it.
	cancel()
	for _, s := range append(all, extra...) {
		for range s.ids {
		}
	}
	waitFor(t, func() bool { return a.hub.streams() == 0 })
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	s, status := openStream(t, ctx2, srv.URL+"/logs?follow=true&username=alice", "Last-Event-ID", strconv.FormatInt(alice[9], 10))
	if status != http.StatusOK {
		t.Fatalf("resume: %d", status)
	}
	s.await(t, alice[10:])
	next := store.add("alice", "after")
	s.await(t, []int64{next})
	cancel2()
	for range s.ids {
	}
	// With nobody following, the store is left alone.
	waitFor(t, func() bool { return a.hub.streams() == 0 })
	time.Sleep(2 * pollEvery)
	idle := store.queries.Load()
	time.Sleep(4 * pollEvery)
	if n := store.queries.Load() - idle; n != 0 {
		t.Errorf("%d store queries with no stream", n)
	}
}

// TestSlowStreamIsCutOff: a stream whose client does not read is cut off
// once its queue is full; the others go on.
func TestSlowStreamIsCutOff(t *testing.T) {
	store := &memLogs{}
	defer func(every time.Duration) { pollEvery = every }(pollEvery)
	pollEvery = 20 * time.Millisecond
	h := newHub(store, 10)
	slow, _, _, err := h.subscribe(context.Background(), "", logging.Query{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	fast, _, _, _ := h.subscribe(context.Background(), "", logging.Query{}, 0)
	got := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range fast.ch {
			if got++; got == subQueue+100 {
				return
			}
		}
	}()
	// A hundred records a poll: the reading stream keeps up.
	for i := range subQueue + 100 {
		store.add("u", fmt.Sprint(i))
		if i%100 == 99 {
			time.Sleep(2 * pollEvery)
		}
	}
	select {
	case <-slow.gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow stream was not cut off")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("the reading stream got %d records", got)
	}
	h.unsubscribe(fast)
}

// TestNonReadingStreamIsLetGo: a client that opens a stream and never
// reads holds its slot as long as its handler runs, even once the hub cut
// it off (so MAX_LOG_STREAMS bounds the streams really open), and no
// longer than writeTimeout after its last write began: then the handler
// ends, the connection is closed and the slot is free.
func TestNonReadingStreamIsLetGo(t *testing.T) {
	defer func(every, write time.Duration) { pollEvery, writeTimeout = every, write }(pollEvery, writeTimeout)
	pollEvery, writeTimeout = 20*time.Millisecond, 3*time.Second
	store := &memLogs{}
	a := newAPI(store, auth.None{}, 1)
	srv := httptest.NewServer(a.handler())
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /logs?follow=true HTTP/1.1\r\nHost: logs\r\n\r\n")
	waitFor(t, func() bool { return a.hub.streams() == 1 })
	// More than the socket's buffers and the stream's queue hold: the
	// handler blocks in a write and the hub cuts the stream off.
	big := strings.Repeat("x", 16<<10)
	for range 2 * subQueue {
		store.add("u", big)
	}
	waitFor(t, func() bool {
		a.hub.mu.Lock()
		defer a.hub.mu.Unlock()
		return len(a.hub.subs) == 0
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer idle(t, a.hub, cancel) // before the globals are restored
	if _, status := openStream(t, ctx, srv.URL+"/logs?follow=true"); status != http.StatusServiceUnavailable {
		t.Fatalf("a stream while the cut-off one still writes: %d, want 503", status)
	}
	// The blocked write times out: the slot comes back and the server
	// closes the connection (the client reads what was sent, then EOF).
	waitFor(t, func() bool { return a.hub.streams() == 0 })
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection stayed open (%d bytes read): %v", n, err)
	}
	s, status := openStream(t, ctx, srv.URL+"/logs?follow=true&limit=1")
	if status != http.StatusOK {
		t.Fatalf("a stream once the slot is free: %d", status)
	}
	s.await(t, []int64{int64(2 * subQueue)})
}

// TestStreamLifetime: after maxStreamLife the server ends a stream
// cleanly, giving the client the newest id it covered even when no event
// carried it; the client resumes from there and misses nothing.
func TestStreamLifetime(t *testing.T) {
	defer func(every, life time.Duration) { pollEvery, maxStreamLife = every, life }(pollEvery, maxStreamLife)
	pollEvery, maxStreamLife = 20*time.Millisecond, 300*time.Millisecond
	store := &memLogs{}
	mine := store.add("alice", "a0")
	theirs := store.add("bob", "b0")
	a := newAPI(store, auth.None{}, 10)
	srv := httptest.NewServer(a.handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer idle(t, a.hub, cancel) // before the globals are restored

	start := time.Now()
	s, status := openStream(t, ctx, srv.URL+"/logs?follow=true&username=alice")
	if status != http.StatusOK {
		t.Fatalf("follow: %d", status)
	}
	// The record there, then, when the stream ends, the id it covered
	// (bob's record, which the stream does not show).
	var got []int64
	for id := range s.ids {
		got = append(got, id)
	}
	if s.err != nil || !slices.Equal(got, []int64{mine, theirs}) {
		t.Fatalf("stream gave %v and ended with %v, want %v and a clean end", got, s.err, []int64{mine, theirs})
	}
	if took := time.Since(start); took < maxStreamLife {
		t.Errorf("the stream ended after %s, before its lifetime %s", took, maxStreamLife)
	}
	waitFor(t, func() bool { return a.hub.streams() == 0 })

	// Resuming from it gives what came since, once.
	maxStreamLife = time.Minute
	next := store.add("alice", "a1")
	store.add("bob", "b1")
	s, status = openStream(t, ctx, srv.URL+"/logs?follow=true&username=alice", "Last-Event-ID", strconv.FormatInt(got[len(got)-1], 10))
	if status != http.StatusOK {
		t.Fatalf("resume: %d", status)
	}
	s.await(t, []int64{next})
	last := store.add("alice", "a2")
	s.await(t, []int64{last})
}

// TestResumedStreamLifetime: a stream resuming far behind ends after
// maxStreamLife too, in the middle of its catch-up, with the last id it
// covered; resuming from there gives the rest, once.
func TestResumedStreamLifetime(t *testing.T) {
	defer func(every, life time.Duration) { pollEvery, maxStreamLife = every, life }(pollEvery, maxStreamLife)
	pollEvery, maxStreamLife = 20*time.Millisecond, time.Nanosecond // over before the catch-up's first batch is sent
	store := &memLogs{}
	var all []int64
	for i := range 5 * readChunk {
		all = append(all, store.add("alice", fmt.Sprint("a", i)))
	}
	a := newAPI(store, auth.None{}, 10)
	srv := httptest.NewServer(a.handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer idle(t, a.hub, cancel) // before the globals are restored

	s, status := openStream(t, ctx, srv.URL+"/logs?follow=true&username=alice", "Last-Event-ID", "0")
	if status != http.StatusOK {
		t.Fatalf("resume: %d", status)
	}
	var got []int64
	for id := range s.ids {
		got = append(got, id)
	}
	if s.err != nil || len(got) == 0 || len(got) >= len(all) || !slices.Equal(got, all[:len(got)]) {
		t.Fatalf("the stream gave %d of %d records (ending with %v), want the first ones and a clean end before the rest", len(got), len(all), s.err)
	}
	maxStreamLife = time.Minute
	s, status = openStream(t, ctx, srv.URL+"/logs?follow=true&username=alice", "Last-Event-ID", strconv.FormatInt(got[len(got)-1], 10))
	if status != http.StatusOK {
		t.Fatalf("resume again: %d", status)
	}
	s.await(t, all[len(got):])
}

// byToken is an Authenticator whose tokens are user names.
type byToken struct{}

func (byToken) Caller(_ context.Context, token string) (staging.Caller, error) {
	return staging.Caller{Name: token}, nil
}

// TestStreamsPerCaller: one user holds at most a quarter of the slots
// (429 beyond); others still get theirs, and a closed stream gives its
// slot back to its user.
func TestStreamsPerCaller(t *testing.T) {
	a := newAPI(&memLogs{}, byToken{}, 8)
	srv := httptest.NewServer(a.handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	follow := func(ctx context.Context, user string) (*stream, int) {
		return openStream(t, ctx, srv.URL+"/logs?follow=true", "Authorization", "token "+user)
	}
	first, cancelFirst := context.WithCancel(ctx)
	var mine []*stream
	for i := range 2 {
		c := ctx
		if i == 0 {
			c = first
		}
		s, status := follow(c, "alice")
		if status != http.StatusOK {
			t.Fatalf("alice's stream %d: %d", i+1, status)
		}
		mine = append(mine, s)
	}
	if _, status := follow(ctx, "alice"); status != http.StatusTooManyRequests {
		t.Fatalf("alice's third stream: %d, want 429", status)
	}
	if _, status := follow(ctx, "bob"); status != http.StatusOK {
		t.Fatalf("bob's stream beside alice's: %d", status)
	}
	cancelFirst()
	for range mine[0].ids {
	}
	waitFor(t, func() bool { return a.hub.streams() == 2 })
	if _, status := follow(ctx, "alice"); status != http.StatusOK {
		t.Fatalf("alice's stream once one closed: %d", status)
	}
}

// idle cancels the test's streams and waits until h's poller has stopped,
// so that the test may restore the globals the streams and the poller read.
func idle(t *testing.T, h *hub, cancel context.CancelFunc) {
	cancel()
	waitFor(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.open == 0 && !h.running
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
	}
}

// TestShutdownEndsStreams: on SIGTERM a logs function ends its open
// streams at once, each with the last id it covered (here a record the
// stream does not show), so that their clients resume elsewhere; the
// process then exits without waiting for the streams' life to end.
func TestShutdownEndsStreams(t *testing.T) {
	db := "sqlite://" + filepath.Join(t.TempDir(), "logs.db")
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	err = st.AppendLogs(context.Background(), []logging.Record{{Time: now, Level: slog.LevelInfo, Message: "a0", Function: "stage", Username: "alice"},
		{Time: now, Level: slog.LevelInfo, Message: "b0", Function: "stage", Username: "bob"}})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.StartFunction(t, "logs", map[string]string{"DATABASE_URL": db, "LOG_TO_STORE": "false"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, status := openStream(t, ctx, p.URL+"/logs?follow=true&username=alice")
	if status != http.StatusOK {
		t.Fatalf("follow: %d", status)
	}
	s.await(t, []int64{1})

	p.Signal(syscall.SIGTERM)
	var got []int64
	timeout := time.After(10 * time.Second)
	for open := true; open; {
		select {
		case id, ok := <-s.ids:
			if open = ok; ok {
				got = append(got, id)
			}
		case <-timeout:
			t.Fatalf("the stream is still open 10 s after SIGTERM (gave %v)", got)
		}
	}
	if s.err != nil || !slices.Equal(got, []int64{2}) {
		t.Errorf("the stream ended with %v and ids %v, want a clean end with the id it covered, [2]", s.err, got)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Errorf("after SIGTERM: %v", err)
	}
}

// stuckLogs is a store that never answers LastLogID until asked to stop.
type stuckLogs struct{ *memLogs }

func (stuckLogs) LastLogID(ctx context.Context) (int64, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// A store that does not answer the first stream's start fails that start
// (503) within storeWait, instead of holding the hub's lock, and every
// other stream's start and end, for as long as it does not answer.
func TestHubStartBoundedWhenTheStoreHangs(t *testing.T) {
	defer func(w time.Duration) { storeWait = w }(storeWait)
	storeWait = 50 * time.Millisecond
	h := newHub(stuckLogs{&memLogs{}}, 10)
	done := make(chan error, 1)
	go func() {
		_, _, _, err := h.subscribe(context.Background(), "alice", logging.Query{}, 0)
		done <- err
	}()
	select {
	case err := <-done:
		if k, _ := staging.KindOf(err); k != staging.Unavailable {
			t.Fatalf("subscribe: %v, want unavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscribe still waits for a store that does not answer")
	}
	if n := h.streams(); n != 0 {
		t.Fatalf("%d streams held after a failed start", n)
	}
}
