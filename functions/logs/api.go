package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Limits of the limit parameter. An answer learns the ids of the newest
// limit records in one query and reads the records readChunk at a time:
// when they were read in one query, 10,000 records of 9 KiB made a logs
// function of 23 MB take 513 MB, and 1000 of 60 KB one of 20 MB take
// 119 MB. Paging with after reads on.
const (
	defaultLimit = 1000
	maxLimit     = 1000
)

// An answer that is not a stream holds at most maxAnswer bytes (at least
// one record, however large: a record is at most 80 KiB, its message 16 KiB
// and its attributes 64 KiB, lib/store). Answers and streams read the store
// readChunk records at a time and a page stops once maxAnswer is reached,
// so a request holds at most maxAnswer and readChunk records, whatever
// its limit.
var (
	maxAnswer = 1 << 20
	readChunk = 100
)

// Following: how often the process's poller asks the store for new
// records (once for every stream), how long a record may take to become
// visible after a later id did (concurrent MySQL inserts may commit out of
// id order), how often an idle stream gets a comment so proxies keep it
// open, how long one write to a stream may take (twice keepAlive) before
// the stream is ended: a client that stops reading holds its connection and
// slot no longer than that, and how long a stream lasts at most: then the
// server ends it cleanly and the client resumes with Last-Event-ID, so no
// client holds a slot for ever, and the server ends a stream before
// Knative's request timeout (600 s, config/knative/logs.yaml) would cut it.
var (
	pollEvery     = 250 * time.Millisecond
	settle        = time.Second
	keepAlive     = 15 * time.Second
	writeTimeout  = 30 * time.Second
	maxStreamLife = 5 * time.Minute
	followBatch   = 1000
)

// functionName is what a function's name looks like, compiled when first
// needed, not at every start.
var functionName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z][a-z0-9-]{0,63}$`) })

type api struct {
	store    logging.Store
	auth     auth.Authenticator
	hub      *hub
	stopping chan struct{} // closed when the process stops: streams end
	stopOnce sync.Once
}

// newAPI serves GET /logs (handler) over store to the callers authn
// establishes, with at most maxStreams live streams at once.
func newAPI(store logging.Store, authn auth.Authenticator, maxStreams int) *api {
	return &api{store: store, auth: authn, hub: newHub(store, maxStreams), stopping: make(chan struct{})}
}

// stop ends every stream, open or still starting, as the end of its life
// does: its client resumes with its last id, from another replica, and
// the process's drain does not wait for it.
func (a *api) stop() { a.stopOnce.Do(func() { close(a.stopping) }) }

// over reports whether a stream must end now: its life is over, or the
// process stops.
func (a *api) over(life *time.Timer) bool {
	select {
	case <-life.C:
		return true
	case <-a.stopping:
		return true
	default:
		return false
	}
}

func (a *api) handler() http.Handler {
	m := httpx.NewMux()
	m.Route(http.MethodGet, "/logs", a.logs)
	return m
}

// request is a parsed GET /logs.
type request struct {
	query  logging.Query
	after  int64 // -1 without after
	json   bool
	follow bool
}

// parse reads the query string; bad values are 422 with a detail.
func parse(r *http.Request) (*request, error) {
	q := r.URL.Query()
	req := &request{query: logging.Query{Limit: defaultLimit}, after: -1}
	bad := func(format string, args ...any) error {
		return staging.Errorf(staging.Invalid, format, args...)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return nil, bad("limit must be a number from 1 to %d", maxLimit)
		}
		req.query.Limit = n
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, bad("after must be a record id")
		}
		req.after = n
	}
	if v := q.Get("level"); v != "" {
		l, err := logging.ParseLevel(v)
		if err != nil {
			return nil, bad("level: %v", err)
		}
		req.query.Level = l
	}
	if v := q.Get("username"); v != "" {
		if !staging.ValidUsername(v) {
			return nil, bad("Invalid username")
		}
		req.query.Username = v
	}
	if v := q.Get("operation"); v != "" {
		if _, err := uuid.Parse(v); err != nil {
			return nil, bad("operation must be an operation id")
		}
		req.query.Operation = v
	}
	if v := q.Get("function"); v != "" {
		if !functionName().MatchString(v) {
			return nil, bad("function must be a function's name, such as stage")
		}
		req.query.Function = v
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, bad("since must be an RFC 3339 time, such as 2025-01-31T12:00:00Z")
		}
		// An offset can carry a four-digit year past 9999 (or before
		// the year 1) in UTC, which no database holds.
		if u := t.UTC(); u.Year() < 1 || u.Year() > 9999 {
			return nil, bad("since must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z in UTC")
		}
		req.query.Since = t
	}
	switch f := q.Get("format"); f {
	case "json":
		req.json = true
	case "text":
	case "":
		req.json = acceptsJSON(r)
	default:
		return nil, bad("format must be text or json")
	}
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, bad("follow must be true or false")
		}
		req.follow = b
	}
	if req.follow && req.after >= 0 {
		return nil, bad("after pages an answer; a stream resumes with Last-Event-ID")
	}
	return req, nil
}

// acceptsJSON reports whether the Accept header asks for JSON.
func acceptsJSON(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			if t, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && t == "application/json" {
				return true
			}
		}
	}
	return false
}

// logs is GET /logs: the newest records, oldest first, a page of them, or
// a live stream.
// Reads are scoped like writes: a caller sees the records about
// themselves, an admin everyone's. The caller is established first, so
// that one who is not learns nothing but 401, not even which parameters
// are bad.
func (a *api) logs(w http.ResponseWriter, r *http.Request) {
	caller, err := a.auth.Caller(r.Context(), auth.Token(r, ""))
	if err == nil && caller.Anonymous() {
		err = staging.Errorf(staging.Unauthenticated, "Authentication is required")
	}
	if err != nil {
		httpx.Error(w, err)
		return
	}
	req, err := parse(r)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	if !caller.Admin {
		if req.query.Username == "" {
			req.query.Username = caller.Name
		}
		if err := staging.AuthorizeRead(caller, req.query.Username); err != nil {
			httpx.Error(w, err)
			return
		}
		if err := staging.ReadableName(req.query.Username); err != nil {
			httpx.Error(w, err)
			return
		}
	}
	if req.follow {
		// Each user holds a bounded share of the streams; without
		// authentication (AUTH_MODE=none) callers are not told apart.
		who := caller.Name
		if _, anonymous := a.auth.(auth.None); anonymous {
			who = ""
		}
		a.follow(w, r, req, who)
		return
	}
	a.page(w, r, req)
}

// page answers one page of records that is not a stream: the newest limit
// records, oldest first, or, with after, the first limit records above
// that id in id order, read from the store readChunk at a time (the newest
// through their ids, read first). An answer holds at most maxAnswer bytes
// (at least one record): when the records do not fit, or limit records
// above after were answered, the answer holds the first of them in id
// order and its Link header names the next page, the same request with
// after set to the last id answered; the pages then hold every record
// once, up to the newest. Reading stops once the answer is full.
func (a *api) page(w http.ResponseWriter, r *http.Request, req *request) {
	ctx := r.Context()
	var (
		body  bytes.Buffer
		count int   // records in body
		last  int64 // the last one's id
		more  bool  // records follow the last one
	)
	start := func() {
		body.Reset()
		count = 0
		if req.json {
			body.WriteByte('[')
		}
	}
	// add renders rec into the answer, unless it would make it too large.
	add := func(rec *logging.Record) (bool, error) {
		var b []byte
		if req.json {
			var err error
			if b, err = json.Marshal(rec); err != nil {
				return false, err
			}
		} else {
			b = []byte(rec.Text())
		}
		if count > 0 && body.Len()+len(b)+3 > maxAnswer { // with a comma or newline, and "]\n"
			return false, nil
		}
		if req.json && count > 0 {
			body.WriteByte(',')
		}
		body.Write(b)
		if !req.json {
			body.WriteByte('\n')
		}
		count, last = count+1, rec.ID
		return true, nil
	}
	// fill adds recs in order while they fit and the answer holds fewer
	// than limit records; cut reports that some were left out.
	fill := func(recs []logging.Record) (cut bool, err error) {
		for i := range recs {
			if count == req.query.Limit {
				return true, nil
			}
			ok, err := add(&recs[i])
			if err != nil {
				return false, staging.Wrap(staging.Internal, "Cannot render log records", err)
			}
			if !ok {
				return true, nil
			}
		}
		return false, nil
	}
	// fillIDs fills the answer with the records of ids in that order,
	// reading them readChunk at a time and no further than what fits.
	fillIDs := func(ids []int64) (cut bool, err error) {
		for len(ids) > 0 {
			chunk := ids[:min(len(ids), readChunk)]
			ids = ids[len(chunk):]
			recs, err := a.readIDs(ctx, chunk)
			if err != nil {
				return false, err
			}
			if cut, err := fill(recs); cut || err != nil {
				return cut, err
			}
		}
		return false, nil
	}
	start()
	var err error
	if req.after < 0 {
		var ids []int64
		if ids, err = a.store.LogIDs(ctx, req.query); err != nil {
			httpx.Error(w, staging.StoreFailure(err))
			return
		}
		if more, err = fillIDs(ids); more && err == nil {
			// Cut: in id order, so that the next page (above the last id)
			// holds the rest.
			slices.Sort(ids)
			start()
			_, err = fillIDs(ids)
		}
	} else {
		q := req.query
		q.After, q.Ascending = req.after, true
		for {
			q.Limit = min(req.query.Limit-count+1, readChunk) // one more tells whether more follow
			recs, qerr := a.store.QueryLogs(ctx, q)
			if qerr != nil {
				err = staging.StoreFailure(qerr)
				break
			}
			if more, err = fill(recs); more || err != nil || len(recs) < q.Limit {
				break
			}
			q.After = recs[len(recs)-1].ID
		}
	}
	if err != nil {
		httpx.Error(w, err)
		return
	}
	h := w.Header()
	if req.json {
		body.WriteString("]\n")
		h.Set("Content-Type", "application/json")
	} else {
		h.Set("Content-Type", "text/plain; charset=utf-8")
	}
	if more {
		next := r.URL.Query()
		next.Set("after", strconv.FormatInt(last, 10))
		h.Set("Link", fmt.Sprintf("<%s?%s>; rel=\"next\"", r.URL.Path, next.Encode()))
	}
	h.Set("Content-Length", strconv.Itoa(body.Len()))
	w.WriteHeader(http.StatusOK)
	w.Write(body.Bytes())
}

// readIDs reads the records of ids (from LogIDs) in the order of ids,
// leaving out any deleted since (pruned).
func (a *api) readIDs(ctx context.Context, ids []int64) ([]logging.Record, error) {
	recs, err := a.store.QueryLogs(ctx, logging.Query{IDs: ids})
	if err != nil {
		return nil, staging.StoreFailure(err)
	}
	at := make(map[int64]int, len(ids))
	for i, id := range ids {
		at[id] = i
	}
	slices.SortFunc(recs, func(x, y logging.Record) int { return cmp.Compare(at[x.ID], at[y.ID]) })
	return recs, nil
}

// follow streams the newest records, then every new one, as server-sent
// events (id = record id, data = the text line or the JSON record) until the
// client leaves. A client reconnecting with Last-Event-ID resumes after it.
// New records come from the process's one poller (hub); the stream itself
// reads the store only when it starts. Every write has writeTimeout to
// complete: a client that stops reading is let go, its connection closed
// and its slot given back. After maxStreamLife the stream ends cleanly,
// even in the middle of a resumed stream's catch-up, its last id the
// newest it covered (sent without data when the client has no such event),
// for the client to resume from; so it does when the process stops.
func (a *api) follow(w http.ResponseWriter, r *http.Request, req *request, who string) {
	ctx := r.Context()
	life := time.NewTimer(maxStreamLife)
	defer life.Stop()
	rc := http.NewResponseController(w)
	// deadline gives the next write (or flush) writeTimeout to complete.
	deadline := func() error { return rc.SetWriteDeadline(time.Now().Add(writeTimeout)) }
	if err := deadline(); err != nil {
		httpx.Error(w, staging.Errorf(staging.Internal, "streaming is not supported here"))
		return
	}
	resume := int64(-1)
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			httpx.Error(w, staging.Errorf(staging.Invalid, "Last-Event-ID must be a record id"))
			return
		}
		resume = n
	}
	filters := req.query
	filters.Limit, filters.After = 0, 0
	s, floor, cursor, err := a.hub.subscribe(ctx, who, filters, max(resume, 0))
	if err != nil {
		httpx.Error(w, err)
		return
	}
	defer a.hub.unsubscribe(s)
	// after: what the stream has covered; caught: ids it read itself that
	// the hub may still hand out (those above the hub's settled floor).
	after, caught := resume, map[int64]bool{}
	var first []int64 // the newest records' ids, read readChunk at a time
	if resume < 0 {
		if first, err = a.store.LogIDs(ctx, req.query); err != nil {
			httpx.Error(w, staging.StoreFailure(err))
			return
		}
		after = cursor
		for _, id := range first {
			after = max(after, id)
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies must not hold events back
	w.WriteHeader(http.StatusOK)
	// sent: the last id the client holds (its Last-Event-ID).
	sent := resume
	send := func(rec *entry) error {
		data, err := rec.data(req.json)
		if err != nil {
			return err
		}
		if err := deadline(); err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "id: %d\ndata: %s\n\n", rec.ID, data)
		sent = rec.ID
		return err
	}
	flush := func() error {
		if err := deadline(); err != nil {
			return err
		}
		return rc.Flush()
	}
	// end ends the stream cleanly, giving the client covered, the newest
	// id the stream covered (without data when no event carried it), to
	// resume from.
	end := func(covered int64) {
		if covered > sent && deadline() == nil {
			fmt.Fprintf(w, "id: %d\n\n", covered)
		}
		flush()
	}
	for len(first) > 0 {
		chunk := first[:min(len(first), readChunk)]
		first = first[len(chunk):]
		recs, err := a.readIDs(ctx, chunk)
		if err != nil {
			return // the client reconnects
		}
		for i := range recs {
			if send(&entry{Record: recs[i]}) != nil {
				return
			}
		}
	}
	// A resumed stream reads what the hub handed out before it joined,
	// however much that is: its life, or the process stopping, ends the
	// catch-up too.
	if after < cursor {
		q := filters
		q.Limit, q.After, q.Ascending = readChunk, after, true
		for {
			recs, err := a.store.QueryLogs(ctx, q)
			if err != nil {
				return // the client reconnects with its Last-Event-ID
			}
			for i := range recs {
				if send(&entry{Record: recs[i]}) != nil {
					return
				}
				if recs[i].ID > floor {
					caught[recs[i].ID] = true
				}
			}
			if len(recs) < q.Limit || recs[len(recs)-1].ID >= cursor {
				break
			}
			q.After = recs[len(recs)-1].ID
			if a.over(life) {
				end(q.After)
				return
			}
		}
	}
	if flush() != nil {
		return
	}

	idle := time.NewTicker(keepAlive)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.gone:
			return // too slow: the client reconnects and catches up
		case <-life.C:
			// Long enough: the client resumes from the newest id covered.
			end(max(after, sent))
			return
		case <-a.stopping:
			// The process stops: the client resumes elsewhere.
			end(max(after, sent))
			return
		case <-idle.C:
			if deadline() != nil {
				return
			}
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case rec := <-s.ch:
			for more := true; more; {
				if rec.ID > after && !caught[rec.ID] {
					if send(rec) != nil {
						return
					}
				}
				select {
				case rec = <-s.ch:
				default:
					more = false
				}
			}
		}
		if flush() != nil {
			return
		}
		idle.Reset(keepAlive)
	}
}
