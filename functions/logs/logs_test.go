package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// cluster is stage and logs functions sharing one MariaDB database and one
// storage, as replicas on Knative do.
type cluster struct {
	db     string // mysql:// URL
	source string
	env    map[string]string
	logs   *testenv.Process
}

func newCluster(t *testing.T, extra ...map[string]string) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{db: testenv.MariaDB(t), source: filepath.Join(dir, "source")}
	if err := os.MkdirAll(c.source, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if err := os.WriteFile(filepath.Join(c.source, fmt.Sprintf("f%d.txt", i)), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.env = map[string]string{
		"SOURCE_STORAGE_PATH": c.source,
		"TARGET_STORAGE_PATH": filepath.Join(dir, "user_areas"),
		"DATABASE_URL":        c.db,
		"LOGGING_LEVEL":       "INFO",
	}
	for _, e := range extra {
		for k, v := range e {
			c.env[k] = v
		}
	}
	c.logs = c.start(t, "logs", nil)
	return c
}

// start runs function name with the cluster's environment plus env.
func (c *cluster) start(t *testing.T, name string, env map[string]string) *testenv.Process {
	t.Helper()
	e := map[string]string{}
	for k, v := range c.env {
		e[k] = v
	}
	for k, v := range env {
		e[k] = v
	}
	return testenv.StartFunction(t, name, e)
}

// stage asks p for a local_copy of f<i>.txt for user and returns the
// operation id; it fails the test unless the answer is 200.
func stage(t *testing.T, client *http.Client, p *testenv.Process, user string, i int, header http.Header) string {
	t.Helper()
	body := fmt.Sprintf(`{"data":{"local_path_on_storage":"f%d.txt","relative_path":"copy-%d-%d.txt"}}`, i%8, i, time.Now().UnixNano())
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/stage_data?method=local_copy&username="+user, strings.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("stage on %s: %v", p.URL, err)
	}
	defer resp.Body.Close()
	var out struct{ ID, Detail string }
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stage on %s: %d %s", p.URL, resp.StatusCode, out.Detail)
	}
	return out.ID
}

// get returns the status and body of GET /logs?query from the logs function.
func (c *cluster) get(t *testing.T, query string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.logs.URL+"/logs?"+query, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /logs?%s: %v", query, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// records returns GET /logs?format=json&query.
func (c *cluster) records(t *testing.T, query string) []logging.Record {
	t.Helper()
	status, body, _ := c.get(t, "format=json&"+query, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /logs?format=json&%s: %d %s", query, status, body)
	}
	var recs []logging.Record
	if err := json.Unmarshal([]byte(body), &recs); err != nil {
		t.Fatalf("GET /logs?format=json&%s: %v\n%s", query, err, body)
	}
	return recs
}

// await polls query until ok accepts its records (the writers flush every
// 100 ms), failing after 10 s.
func (c *cluster) await(t *testing.T, query string, ok func([]logging.Record) bool) []logging.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := c.records(t, query)
		if ok(recs) {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /logs?%s: records never as expected; last:\n%s", query, texts(recs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func texts(recs []logging.Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "%s [%s trace=%s]\n", r.Text(), r.Instance, r.TraceID)
	}
	return b.String()
}

// finished returns the "staging finished" records of operation ids.
func finished(recs []logging.Record, ids ...string) map[string]logging.Record {
	out := map[string]logging.Record{}
	for _, r := range recs {
		if r.Message == "staging finished" && slices.Contains(ids, r.Operation) {
			out[r.Operation] = r
		}
	}
	return out
}

// TestOneLogForAllReplicas: two stage replicas and the logs function on one
// MariaDB; one /logs answer holds both replicas' records, in time order,
// and its filters select what they say.
func TestOneLogForAllReplicas(t *testing.T) {
	c := newCluster(t)
	a, b := c.start(t, "stage", nil), c.start(t, "stage", nil)
	var ids, aliceIDs []string
	for i := range 6 {
		p, user := a, "alice"
		if i%2 == 1 {
			p, user = b, "bob"
		}
		id := stage(t, http.DefaultClient, p, user, i, nil)
		ids = append(ids, id)
		if user == "alice" {
			aliceIDs = append(aliceIDs, id)
		}
	}
	recs := c.await(t, "", func(r []logging.Record) bool { return len(finished(r, ids...)) == len(ids) })

	instances := map[string]bool{}
	for _, r := range finished(recs, ids...) {
		instances[r.Instance] = true
		if r.Function != "stage" || r.Attrs.Get("method") != "local_copy" || r.Attrs.Get("status") != "success" ||
			r.Attrs.Get("bytes") == nil || r.Attrs.Get("duration_ms") == nil || r.Attrs.Get("local_path_on_storage") == nil ||
			r.Attrs.Get("relative_path") == nil || r.Username == "" {
			t.Errorf("staging record lacks what it must say: %s", r.Text())
		}
	}
	if len(instances) != 2 {
		t.Errorf("records come from %d replicas, want 2: %v", len(instances), instances)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Time.Before(recs[i-1].Time) {
			t.Errorf("records out of time order at %d:\n%s", i, texts(recs[i-1:i+1]))
		}
	}

	// The text format: one line per record, oldest first, the earlier
	// service's format.
	status, body, h := c.get(t, "", nil)
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") || len(lines) < len(recs) {
		t.Fatalf("GET /logs: %d %s, %d lines", status, h.Get("Content-Type"), len(lines))
	}
	for _, l := range lines {
		parts := strings.SplitN(l, " - ", 3)
		if _, err := time.Parse(time.RFC3339, parts[0]); err != nil || len(parts) != 3 ||
			!slices.Contains([]string{"DEBUG", "INFO", "WARNING", "ERROR"}, parts[1]) {
			t.Errorf("line not in the format <time> - <LEVEL> - <message>: %q", l)
		}
	}
	if _, body, _ := c.get(t, "", http.Header{"Accept": {"application/json"}}); !strings.HasPrefix(body, "[") {
		t.Errorf("Accept: application/json answered %.80q, want a JSON array", body)
	}

	t.Run("filters", func(t *testing.T) {
		if got := c.records(t, "username=alice"); len(got) == 0 || len(finished(got, aliceIDs...)) != 3 || slices.ContainsFunc(got, func(r logging.Record) bool { return r.Username != "alice" }) {
			t.Errorf("username=alice:\n%s", texts(got))
		}
		if got := c.records(t, "operation="+ids[1]); len(got) == 0 || slices.ContainsFunc(got, func(r logging.Record) bool { return r.Operation != ids[1] }) {
			t.Errorf("operation=%s:\n%s", ids[1], texts(got))
		}
		if got := c.records(t, "function=logs"); len(got) == 0 || slices.ContainsFunc(got, func(r logging.Record) bool { return r.Function != "logs" }) {
			t.Errorf("function=logs:\n%s", texts(got))
		}
		if got := c.records(t, "level=warning"); slices.ContainsFunc(got, func(r logging.Record) bool { return r.Level < logging.LevelWarning }) {
			t.Errorf("level=warning:\n%s", texts(got))
		}
		if got := c.records(t, "limit=2"); len(got) != 2 || got[1].ID != recs[len(recs)-1].ID && got[1].Time.Before(recs[len(recs)-1].Time) {
			t.Errorf("limit=2 gave:\n%s\nwant the newest two", texts(got))
		}
		since := recs[len(recs)/2].Time
		if got := c.records(t, "since="+url.QueryEscape(since.Format(time.RFC3339Nano))); len(got) == 0 || got[0].Time.Before(since) {
			t.Errorf("since=%s:\n%s", since, texts(got))
		}
		for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "after=x", "after=-1", "follow=true&after=1", "level=LOUD", "username=../x", "operation=nope",
			"function=Bad%20Name", "since=yesterday", "format=xml", "follow=maybe"} {
			status, body, _ := c.get(t, bad, nil)
			var d struct{ Detail string }
			if json.Unmarshal([]byte(body), &d); status != http.StatusUnprocessableEntity || d.Detail == "" {
				t.Errorf("GET /logs?%s: %d %s, want 422 with a detail", bad, status, body)
			}
		}
	})
}

// TestFollow: ?follow=true streams a record staged after it started within a
// second, as a server-sent event.
func TestFollow(t *testing.T) {
	c := newCluster(t)
	a := c.start(t, "stage", nil)
	stage(t, http.DefaultClient, a, "before", 0, nil)
	c.await(t, "username=before", func(r []logging.Record) bool { return len(r) > 0 })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.logs.URL+"/logs?follow=true&format=json&username=before", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan logging.Record)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var r logging.Record
				if json.Unmarshal([]byte(data), &r) == nil {
					select {
					case events <- r:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	// First the records already there.
	select {
	case r := <-events:
		if r.Username != "before" {
			t.Fatalf("first event is %s", r.Text())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event for the records already there")
	}
	id := stage(t, http.DefaultClient, a, "before", 1, nil)
	staged := time.Now()
	for {
		select {
		case r := <-events:
			if r.Operation == id && r.Message == "staging finished" {
				if d := time.Since(staged); d > time.Second {
					t.Errorf("the new record came %s after the staging, want within a second", d)
				}
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the new record never came")
		}
	}
}

// TestLevelHidesInfo: a replica at LOGGING_LEVEL=ERROR writes no INFO
// records, to stdout or to the store.
func TestLevelHidesInfo(t *testing.T) {
	c := newCluster(t)
	quiet := c.start(t, "stage", map[string]string{"LOGGING_LEVEL": "ERROR"})
	loud := c.start(t, "stage", nil)
	quietID := stage(t, http.DefaultClient, quiet, "quiet", 0, nil)
	loudID := stage(t, http.DefaultClient, loud, "loud", 1, nil)
	if err := quiet.Stop(10 * time.Second); err != nil { // flushes its writer
		t.Fatalf("stop: %v", err)
	}
	recs := c.await(t, "", func(r []logging.Record) bool { return len(finished(r, loudID)) == 1 })
	if got := finished(recs, quietID); len(got) != 0 {
		t.Errorf("the ERROR-level replica stored an INFO record: %v", got)
	}
	for _, r := range recs {
		if r.Username == "quiet" || r.Operation == quietID {
			t.Errorf("record of the ERROR-level replica: %s", r.Text())
		}
	}
	if strings.Contains(quiet.Logs(), `"level":"INFO"`) {
		t.Errorf("the ERROR-level replica printed INFO records:\n%s", quiet.Logs())
	}
}

// adminDB opens the cluster's database directly, as an operator would.
func adminDB(t *testing.T, mysqlURL string) *sql.DB {
	t.Helper()
	u, err := url.Parse(mysqlURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = u.User.Username(), "tcp", u.Host, strings.TrimPrefix(u.Path, "/")
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestLogStoreAway: when the log table fails (gone) or hangs (locked),
// staging requests still succeed; the records are dropped and counted,
// and logging resumes once the table is back.
func TestLogStoreAway(t *testing.T) {
	c := newCluster(t)
	a := c.start(t, "stage", nil)
	db := adminDB(t, c.db)
	client := &http.Client{Timeout: 20 * time.Second}

	if _, err := db.Exec("RENAME TABLE logs TO logs_away"); err != nil {
		t.Fatal(err)
	}
	var lost []string
	for i := range 5 {
		lost = append(lost, stage(t, client, a, "away", i, nil))
	}
	// The first failed insert is reported at once.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(a.Logs(), "log records dropped"); {
		if time.Now().After(deadline) {
			t.Fatalf("no report of dropped records on stdout:\n%s", a.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Locked: inserts wait, requests must not.
	if _, err := db.Exec("RENAME TABLE logs_away TO logs"); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "LOCK TABLES logs WRITE"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		stage(t, client, a, "locked", i, nil)
	}
	conn.ExecContext(context.Background(), "UNLOCK TABLES")
	conn.Close()

	back := stage(t, client, a, "back", 0, nil)
	c.await(t, "username=back", func(r []logging.Record) bool { return len(finished(r, back)) == 1 })
	if got := finished(c.records(t, "username=away"), lost...); len(got) != 0 {
		t.Errorf("records written while the table was gone: %v", got)
	}
}

// TestLargeAnswersArePaged: records with large attributes, more than one
// answer holds, written out of time order (as replicas' batches are): each
// answer stays within maxAnswer bytes, its Link names the next page, and the
// pages hold every record once, in text and in JSON, from the newest
// records or from an id.
func TestLargeAnswersArePaged(t *testing.T) {
	c := newCluster(t)
	st, err := store.Open(context.Background(), c.db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const n = 300
	big := strings.Repeat("y", 9000)
	base := time.Now().UTC().Add(-time.Hour)
	var batch []logging.Record
	for i := range n {
		// Time order is not id order: the i-th record written is the
		// (i*7 % n)-th in time.
		batch = append(batch, logging.Record{Time: base.Add(time.Duration(i*7%n) * time.Millisecond), Level: slog.LevelInfo,
			Message: fmt.Sprint("r", i), Function: "stage", Username: "pager", Attrs: logging.Attrs{{Key: "blob", Value: big}}})
	}
	if err := st.AppendLogs(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if err := st.AppendLogs(context.Background(), []logging.Record{{Time: base, Level: slog.LevelInfo, Message: "other",
		Function: "stage", Username: "other"}}); err != nil {
		t.Fatal(err)
	}

	// pages follows the Link headers from query and returns the messages
	// of every page, in order, and how many pages there were.
	pages := func(t *testing.T, query string, asJSON bool) ([]string, int) {
		t.Helper()
		var msgs []string
		count := 0
		for path := "/logs?" + query; path != ""; count++ {
			req, _ := http.NewRequest(http.MethodGet, c.logs.URL+path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || len(body) > maxAnswer {
				t.Fatalf("GET %s: %d, %d bytes (at most %d)", path, resp.StatusCode, len(body), maxAnswer)
			}
			if asJSON {
				var recs []logging.Record
				if err := json.Unmarshal(body, &recs); err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				for _, r := range recs {
					msgs = append(msgs, r.Message)
				}
			} else {
				for _, l := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
					if l != "" {
						msgs = append(msgs, strings.SplitN(l, " - ", 3)[2])
					}
				}
			}
			path = ""
			if link := resp.Header.Get("Link"); link != "" {
				next, ok := strings.CutSuffix(link, `>; rel="next"`)
				if !ok || !strings.HasPrefix(next, "</logs?") {
					t.Fatalf("GET %s: Link %q", path, link)
				}
				path = next[1:]
			}
		}
		return msgs, count
	}
	every := func(t *testing.T, msgs []string) {
		t.Helper()
		seen := map[string]int{}
		for _, m := range msgs {
			seen[strings.Fields(m)[0]]++
		}
		for i := range n {
			if got := seen[fmt.Sprint("r", i)]; got != 1 {
				t.Errorf("record r%d in %d pages, want 1", i, got)
			}
		}
		if len(seen) != n {
			t.Errorf("pages hold %d records, want the %d of the user", len(seen), n)
		}
	}
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			msgs, count := pages(t, "username=pager&format="+format, format == "json")
			if count < 3 {
				t.Errorf("%d pages of %d records of 9 KB, want 3 or more", count, n)
			}
			every(t, msgs)
			// From an id, limit records a page.
			msgs, count = pages(t, "username=pager&after=0&limit=50&format="+format, format == "json")
			if count != n/50 { // reading one more, the last page knows it is the last
				t.Errorf("%d pages of 50 of %d records, want %d", count, n, n/50)
			}
			every(t, msgs)
		})
	}
	// An answer that fits is whole, in time order, without a Link.
	status, body, h := c.get(t, "username=other", nil)
	if status != http.StatusOK || h.Get("Link") != "" || !strings.Contains(body, "other") {
		t.Errorf("a small answer: %d, Link %q:\n%s", status, h.Get("Link"), body)
	}
}

// countingStore counts what a store returns: the records and their bytes,
// and the most records one query returned.
type countingStore struct {
	logging.Store
	mu                   sync.Mutex
	records, bytes, most int
}

func (c *countingStore) QueryLogs(ctx context.Context, q logging.Query) ([]logging.Record, error) {
	recs, err := c.Store.QueryLogs(ctx, q)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records += len(recs)
	c.most = max(c.most, len(recs))
	for _, r := range recs {
		c.bytes += len(r.Text())
	}
	return recs, err
}

func (c *countingStore) read() (records, bytes, most int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.records, c.bytes, c.most
}

// TestAnswersReadBounded: however large limit records are, a request holds
// at most an answer's worth and one batch of them: a page that
// limit=1000 records would take past maxAnswer reads the store readChunk
// records at a time and stops once the answer is full, cut as documented
// (the first records in id order, a Link to the rest); a stream's start
// and a resumed stream's catch-up read readChunk at a time. On SQLite and
// MariaDB.
func TestAnswersReadBounded(t *testing.T) {
	defer func(answer int) { maxAnswer = answer }(maxAnswer)
	maxAnswer = 64 << 10 // the records below are 4 KB, so that 1000 are 60 times too many
	const n, size = 1000, 4000
	for _, b := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "logs.db") }},
		{"mariadb", func(t *testing.T) string { return testenv.MariaDB(t) }},
	} {
		t.Run(b.name, func(t *testing.T) {
			st, err := store.Open(context.Background(), b.url(t))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			// Time order is not id order, so that the first records in id
			// order are not the first in time.
			base := time.Now().UTC().Add(-time.Hour)
			blob := strings.Repeat("y", size)
			for i := 0; i < n; i += 100 {
				var batch []logging.Record
				for j := i; j < i+100; j++ {
					batch = append(batch, logging.Record{Time: base.Add(time.Duration(j*7%n) * time.Millisecond), Level: slog.LevelInfo,
						Message: fmt.Sprint("r", j), Function: "stage", Username: "big", Attrs: logging.Attrs{{Key: "blob", Value: blob}}})
				}
				if err := st.AppendLogs(context.Background(), batch); err != nil {
					t.Fatal(err)
				}
			}
			ids, err := st.LogIDs(context.Background(), logging.Query{Username: "big", Ascending: true, Limit: n})
			if err != nil || len(ids) != n {
				t.Fatalf("%d ids, %v", len(ids), err)
			}
			// What readChunk records and a full answer make, twice (the
			// newest in time order, then cut, in id order).
			bound := 2 * (maxAnswer + readChunk*(size+200))

			for _, c := range []struct {
				name   string
				query  string
				header []string
				stream bool
			}{
				{"text page", "username=big&limit=1000", nil, false},
				{"JSON page", "username=big&limit=1000&format=json", nil, false},
				{"stream", "username=big&limit=1000&follow=true", nil, true},
				{"resumed stream", "username=big&follow=true", []string{"Last-Event-ID", "0"}, true},
			} {
				t.Run(c.name, func(t *testing.T) {
					counted := &countingStore{Store: st}
					a := newAPI(counted, auth.None{}, 10)
					srv := httptest.NewServer(a.handler())
					defer srv.Close()
					if c.stream {
						ctx, cancel := context.WithCancel(context.Background())
						defer idle(t, a.hub, cancel)
						s, status := openStream(t, ctx, srv.URL+"/logs?"+c.query, c.header...)
						if status != http.StatusOK {
							t.Fatalf("follow: %d", status)
						}
						got := map[int64]bool{}
						for len(got) < n {
							select {
							case id := <-s.ids:
								got[id] = true
							case <-time.After(10 * time.Second):
								t.Fatalf("the stream gave %d of %d records", len(got), n)
							}
						}
						if _, _, most := counted.read(); most > readChunk {
							t.Errorf("the stream read %d records at once, want at most %d", most, readChunk)
						}
						return
					}
					resp, err := http.Get(srv.URL + "/logs?" + c.query)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					var msgs []string
					if strings.Contains(c.query, "json") {
						var recs []logging.Record
						if err := json.Unmarshal(body, &recs); err != nil {
							t.Fatal(err)
						}
						for _, r := range recs {
							msgs = append(msgs, r.Message)
						}
					} else {
						for _, l := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
							msgs = append(msgs, strings.Fields(strings.SplitN(l, " - ", 3)[2])[0])
						}
					}
					// Cut as documented: within maxAnswer, the first records
					// in id order (r0, r1, ...), a Link above the last.
					if resp.StatusCode != http.StatusOK || len(body) > maxAnswer || len(msgs) < 2 || len(msgs) >= n {
						t.Fatalf("%d, %d bytes, %d records", resp.StatusCode, len(body), len(msgs))
					}
					for i, m := range msgs {
						if m != fmt.Sprint("r", i) {
							t.Fatalf("record %d of the answer is %s, want r%d: the first in id order", i, m, i)
						}
					}
					link := resp.Header.Get("Link")
					next, _ := url.Parse(strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`))
					if next == nil || next.Query().Get("after") != fmt.Sprint(ids[len(msgs)-1]) {
						t.Errorf("Link %q, want one above id %d", link, ids[len(msgs)-1])
					}
					records, bytes, most := counted.read()
					if bytes > bound || most > readChunk {
						t.Errorf("the store returned %d records (%d bytes, %d at once) for an answer of %d records (%d bytes), want at most %d bytes, %d at once",
							records, bytes, most, len(msgs), len(body), bound, readChunk)
					}
				})
			}
		})
	}
}
