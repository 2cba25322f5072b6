package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// hub is the one poller of a logs function process: while any stream
// follows the log it asks the store for new records every pollEvery, once
// for all of them, and hands each record to every stream whose filter it
// matches. The store sees the same query rate with one viewer or
// thousands; with none, the hub stops.
//
// A stream that cannot keep up (its queue full) is cut off, never waited
// for: its client reconnects with Last-Event-ID and catches up from the
// store.
type hub struct {
	store logging.Store
	max   int // most streams at once

	mu      sync.Mutex
	subs    map[*sub]struct{} // the streams the poller feeds
	open    int               // streams whose handler runs: each holds a slot until it returns
	mine    map[string]int    // open streams by caller
	running bool
	t       *tail // the hub's position; changed only by its goroutine, under mu

	polls atomic.Int64 // store queries made by the poller, for tests
}

// sub is one stream's subscription.
type sub struct {
	who   string        // the caller, "" when callers are not told apart
	q     logging.Query // filters only
	after int64         // records up to this id are the stream's to read itself
	ch    chan *entry
	gone  chan struct{} // closed when the hub cut the stream off
}

// storeWait bounds each of the hub's queries.
var storeWait = 10 * time.Second

// subQueue is how many records may wait for one stream; records are
// shared, so a queue costs a pointer per record.
const subQueue = 1024

func newHub(store logging.Store, max int) *hub {
	return &hub{store: store, max: max, subs: map[*sub]struct{}{}, mine: map[string]int{}}
}

// perCaller is how many streams one caller may hold: a quarter of the
// slots (at least one), so one user cannot take them all.
func (h *hub) perCaller() int { return max(1, h.max/4) }

// errTooManyStreams is the answer beyond the cap.
func errTooManyStreams(max int) error {
	return staging.Errorf(staging.Unavailable, "Too many live log streams (%d); try again later", max)
}

// subscribe registers a stream of caller who ("" for a caller not told
// apart from others, who is not counted), filtered by q, that has read the
// store up to id after, and returns it with the hub's position: every
// record with an id above cursor (and those above floor still settling)
// will come through s.ch; the stream reads (after, cursor] from the store
// itself.
func (h *hub) subscribe(ctx context.Context, who string, q logging.Query, after int64) (s *sub, floor, cursor int64, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open >= h.max {
		return nil, 0, 0, errTooManyStreams(h.max)
	}
	if who != "" && h.mine[who] >= h.perCaller() {
		return nil, 0, 0, staging.Errorf(staging.TooMany, "You have %d live log streams open, the most one user may; close one first", h.mine[who])
	}
	if !h.running {
		// Under the hub's lock: a store that does not answer must not hold
		// every other stream's start and end for longer than the poller's
		// own queries wait.
		qctx, cancel := context.WithTimeout(ctx, storeWait)
		last, err := h.store.LastLogID(qctx)
		cancel()
		if err != nil {
			return nil, 0, 0, staging.StoreFailure(err)
		}
		h.t = &tail{floor: last, cursor: last, sent: map[int64]bool{}}
		h.running = true
		go h.run()
	}
	s = &sub{who: who, q: q, after: after, ch: make(chan *entry, subQueue), gone: make(chan struct{})}
	h.subs[s] = struct{}{}
	h.open++
	if who != "" {
		h.mine[who]++
	}
	return s, h.t.floor, h.t.cursor, nil
}

// unsubscribe removes s and gives its slot back, once its handler returns
// (not when the hub cut it off: its handler may still be writing, so the
// slots bound the streams actually open).
func (h *hub) unsubscribe(s *sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
	h.open--
	if s.who != "" {
		if h.mine[s.who]--; h.mine[s.who] == 0 {
			delete(h.mine, s.who)
		}
	}
}

// streams is how many streams are open now (each holding a slot).
func (h *hub) streams() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.open
}

// run polls until no stream is left.
func (h *hub) run() {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for range tick.C {
		h.mu.Lock()
		if len(h.subs) == 0 {
			h.running = false
			h.mu.Unlock()
			return
		}
		floor := h.t.floor
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), storeWait)
		recs, err := h.fetch(ctx, floor)
		cancel()
		if err != nil {
			slog.Warn("follow logs", "error", err) // the store is back soon; keep the streams
			continue
		}
		h.mu.Lock()
		h.deliver(h.t.accept(recs, time.Now()))
		h.mu.Unlock()
	}
}

// fetch reads every record above floor, page by page.
func (h *hub) fetch(ctx context.Context, floor int64) ([]logging.Record, error) {
	var out []logging.Record
	q := logging.Query{Limit: followBatch, After: floor, Ascending: true}
	for {
		h.polls.Add(1)
		recs, err := h.store.QueryLogs(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
		if len(recs) < q.Limit {
			return out, nil
		}
		q.After = recs[len(recs)-1].ID
	}
}

// deliver hands new records to the streams they match, cutting off a
// stream whose queue is full. Called with mu held.
func (h *hub) deliver(recs []logging.Record) {
	for i := range recs {
		rec := &entry{Record: recs[i]}
		for s := range h.subs {
			if rec.ID <= s.after || !matches(s.q, &rec.Record) {
				continue
			}
			select {
			case s.ch <- rec:
			default:
				delete(h.subs, s)
				close(s.gone)
			}
		}
	}
}

// entry is a record handed to every stream it matches, rendered once for
// all of them in each format.
type entry struct {
	logging.Record
	textOnce, jsonOnce sync.Once
	text, json         string
	jsonErr            error
}

// data is the record as an event's data: its text line, or its JSON.
func (e *entry) data(asJSON bool) (string, error) {
	if asJSON {
		e.jsonOnce.Do(func() {
			b, err := json.Marshal(e.Record)
			e.json, e.jsonErr = string(b), err
		})
		return e.json, e.jsonErr
	}
	e.textOnce.Do(func() { e.text = e.Record.Text() })
	return e.text, nil
}

// matches reports whether rec passes q's filters, as QueryLogs applies them.
func matches(q logging.Query, rec *logging.Record) bool {
	switch {
	case q.Level != nil && rec.Level < q.Level.Level():
		return false
	case q.Username != "" && rec.Username != q.Username:
		return false
	case q.Operation != "" && rec.Operation != q.Operation:
		return false
	case q.Function != "" && rec.Function != q.Function:
		return false
	case !q.Since.IsZero() && rec.Time.Before(q.Since):
		return false
	}
	return true
}

// tail finds records not handed out yet. It re-reads the last settle's
// worth of ids, because a record inserted concurrently may become visible
// after one with a higher id; sent remembers what it already gave out in
// that window.
type tail struct {
	floor, cursor int64 // everything up to floor is settled; cursor is the highest id handed out
	sent          map[int64]bool
	marks         []mark
}

type mark struct {
	at     time.Time
	cursor int64
}

// accept returns the records of recs above floor not handed out yet, in
// the order given, and moves the window on.
func (t *tail) accept(recs []logging.Record, now time.Time) []logging.Record {
	var out []logging.Record
	for _, rec := range recs {
		if !t.sent[rec.ID] && rec.ID > t.floor {
			t.sent[rec.ID] = true
			t.cursor = max(t.cursor, rec.ID)
			out = append(out, rec)
		}
	}
	t.marks = append(t.marks, mark{now, t.cursor})
	for len(t.marks) > 0 && now.Sub(t.marks[0].at) >= settle {
		t.floor = max(t.floor, t.marks[0].cursor)
		t.marks = t.marks[1:]
	}
	for id := range t.sent {
		if id <= t.floor {
			delete(t.sent, id)
		}
	}
	return out
}
