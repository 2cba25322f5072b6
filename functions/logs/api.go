package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Limits of the limit parameter.
const (
	defaultLimit = 1000
	maxLimit     = 10_000
)

// Following: how often the store is asked for new records, how long a
// record may take to become visible after a later id did (concurrent MySQL
// inserts may commit out of id order), and how often an idle stream gets a
// comment so proxies keep it open.
var (
	pollEvery   = 250 * time.Millisecond
	settle      = time.Second
	keepAlive   = 15 * time.Second
	followBatch = 1000
)

var functionName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,63}$`)

type api struct{ store logging.Store }

func routes(store logging.Store) http.Handler {
	a := &api{store: store}
	m := httpx.NewMux()
	m.Route(http.MethodGet, "/logs", a.logs)
	return m
}

// request is a parsed GET /logs.
type request struct {
	query  logging.Query
	json   bool
	follow bool
}

// parse reads the query string; bad values are 422 with a detail.
func parse(r *http.Request) (*request, error) {
	q := r.URL.Query()
	req := &request{query: logging.Query{Limit: defaultLimit}}
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
		if !functionName.MatchString(v) {
			return nil, bad("function must be a function's name, such as stage")
		}
		req.query.Function = v
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, bad("since must be an RFC 3339 time, such as 2025-01-31T12:00:00Z")
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

// logs is GET /logs: the newest records, oldest first, or a live stream.
func (a *api) logs(w http.ResponseWriter, r *http.Request) {
	req, err := parse(r)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	if req.follow {
		a.follow(w, r, req)
		return
	}
	records, err := a.store.QueryLogs(r.Context(), req.query)
	if err != nil {
		httpx.Error(w, staging.DatabaseUnavailable(err))
		return
	}
	if req.json {
		httpx.JSON(w, http.StatusOK, records)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	var b strings.Builder
	for _, rec := range records {
		b.WriteString(rec.Text())
		b.WriteByte('\n')
	}
	w.Write([]byte(b.String()))
}

// follow streams the newest records, then every new one, as server-sent
// events (id = record id, data = the text line or the JSON record) until the
// client leaves. A client reconnecting with Last-Event-ID resumes after it.
func (a *api) follow(w http.ResponseWriter, r *http.Request, req *request) {
	ctx := r.Context()
	flusher, ok := w.(http.Flusher)
	if !ok {
		httpx.Error(w, staging.Errorf(staging.Internal, "streaming is not supported here"))
		return
	}
	var cursor int64
	var first []logging.Record
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			httpx.Error(w, staging.Errorf(staging.Invalid, "Last-Event-ID must be a record id"))
			return
		}
		cursor = n
	} else {
		last, err := a.store.LastLogID(ctx)
		if err == nil {
			first, err = a.store.QueryLogs(ctx, req.query)
		}
		if err != nil {
			httpx.Error(w, staging.DatabaseUnavailable(err))
			return
		}
		cursor = last
		for _, rec := range first {
			cursor = max(cursor, rec.ID)
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies must not hold events back
	w.WriteHeader(http.StatusOK)
	send := func(rec logging.Record) error {
		data := rec.Text()
		if req.json {
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			data = string(b)
		}
		_, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", rec.ID, data)
		return err
	}
	for _, rec := range first {
		if send(rec) != nil {
			return
		}
	}
	flusher.Flush()

	t := &tail{floor: cursor, cursor: cursor, sent: map[int64]bool{}}
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	idle := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
		}
		recs, err := t.next(ctx, a.store, req.query)
		if err != nil {
			if ctx.Err() == nil {
				slog.WarnContext(ctx, "follow logs", "error", err) // the store is back soon; keep the stream
			}
			continue
		}
		for _, rec := range recs {
			if send(rec) != nil {
				return
			}
		}
		if len(recs) > 0 {
			idle = time.Now()
		} else if time.Since(idle) >= keepAlive {
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			idle = time.Now()
		}
		flusher.Flush()
	}
}

// tail finds records not sent yet. It re-reads the last settle's worth of
// ids, because a record inserted concurrently may become visible after one
// with a higher id; sent remembers what it already gave out in that window.
type tail struct {
	floor, cursor int64 // everything up to floor is settled; cursor is the highest id sent
	sent          map[int64]bool
	marks         []mark
}

type mark struct {
	at     time.Time
	cursor int64
}

// next returns the matching records above floor not sent yet, in id order.
func (t *tail) next(ctx context.Context, store logging.Store, q logging.Query) ([]logging.Record, error) {
	var out []logging.Record
	q.Limit, q.After = followBatch, t.floor
	for {
		recs, err := store.QueryLogs(ctx, q)
		if err != nil {
			return out, err
		}
		for _, rec := range recs {
			if !t.sent[rec.ID] && rec.ID > t.floor {
				t.sent[rec.ID] = true
				t.cursor = max(t.cursor, rec.ID)
				out = append(out, rec)
			}
		}
		if len(recs) < q.Limit {
			break
		}
		q.After = recs[len(recs)-1].ID
	}
	now := time.Now()
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
	return out, nil
}
