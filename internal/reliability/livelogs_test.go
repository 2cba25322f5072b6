package reliability

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// TestLiveLogs opens 200 / 2,500 live log streams on one logs function over
// MariaDB while a stage function stages: the store's query rate stays what
// it is with one stream (one poller per process), every stream receives
// every new record of its user, and one stream beyond MAX_LOG_STREAMS is
// refused with 503.
func TestLiveLogs(t *testing.T) {
	streams := size(200, 2500)
	server := testenv.MariaDBServerFor(t)
	s := newSite(t, server.URL())
	stage := s.start(t, map[string]string{"LOGGING_LEVEL": "INFO"})
	logs := testenv.StartFunction(t, "logs", map[string]string{
		"DATABASE_URL": s.DatabaseURL, "HOST": "127.0.0.1", "LOGGING_LEVEL": "WARNING",
		"MAX_LOG_STREAMS": strconv.Itoa(streams),
	})
	src := s.write(t, "live.txt", []byte("live"))
	admin := statusDB(t, server)
	selects := func() int64 {
		var name string
		var n int64
		must(t, admin.QueryRow("SHOW GLOBAL STATUS LIKE 'Com_select'").Scan(&name, &n))
		return n
	}
	streamClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1}}

	// open starts n streams of user's records; each sends the operation
	// ids of the "staging finished" records it receives on got.
	type stream struct{ got chan string }
	open := func(ctx context.Context, n int, user string) []*stream {
		out := make([]*stream, n)
		var wg sync.WaitGroup
		for i := range n {
			out[i] = &stream{got: make(chan string, 1000)}
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, logs.URL+"/logs?follow=true&limit=1&username="+user, nil)
				resp, err := streamClient.Do(req)
				if err != nil {
					close(out[i].got)
					return
				}
				if resp.StatusCode != http.StatusOK {
					resp.Body.Close()
					close(out[i].got)
					return
				}
				go func() {
					defer resp.Body.Close()
					defer close(out[i].got)
					sc := bufio.NewScanner(resp.Body)
					for sc.Scan() {
						line := sc.Text()
						if strings.Contains(line, "staging finished") {
							if _, rest, ok := strings.Cut(line, "operation="); ok {
								id, _, _ := strings.Cut(rest, " ")
								out[i].got <- id
							}
						}
					}
				}()
			}()
		}
		wg.Wait()
		return out
	}
	// load stages for user during d and returns the operation ids.
	load := func(user string, d time.Duration) []string {
		var ids []string
		for i, end := 0, time.Now().Add(d); time.Now().Before(end); i++ {
			a := call(client, "POST", stageURL(stage.URL, "local_copy", user), stageBody(src, fmt.Sprintf("c-%d", i)))
			if a.Status != 200 {
				t.Fatalf("staging: %s", a)
			}
			ids = append(ids, a.str("id"))
			time.Sleep(50 * time.Millisecond)
		}
		return ids
	}
	window := size(3*time.Second, 10*time.Second)
	measure := func(ctx context.Context, n int, user string) (rate float64, ids []string, got []*stream) {
		got = open(ctx, n, user)
		time.Sleep(time.Second) // every stream has started
		before, start := selects(), time.Now()
		ids = load(user, window)
		rate = float64(selects()-before) / time.Since(start).Seconds()
		return rate, ids, got
	}

	ctx, cancel := context.WithCancel(context.Background())
	oneRate, _, _ := measure(ctx, 1, "one")
	cancel()
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	time.Sleep(500 * time.Millisecond) // the first stream is gone
	manyRate, ids, many := measure(ctx, streams, "many")
	// Every stream got every record of its user, once, in order.
	complete, incomplete := 0, 0
	deadline := time.After(30 * time.Second)
	for _, st := range many {
		var recv []string
	collect:
		for len(recv) < len(ids) {
			select {
			case id, ok := <-st.got:
				if !ok {
					break collect
				}
				recv = append(recv, id)
			case <-deadline:
				break collect
			}
		}
		if strings.Join(recv, ",") == strings.Join(ids, ",") {
			complete++
		} else {
			incomplete++
		}
	}
	if incomplete > 0 {
		t.Errorf("%d of %d streams missed or repeated records", incomplete, streams)
	}
	// The store's rate: the stage function's selects plus one poller's,
	// with one stream or thousands.
	if manyRate > oneRate*1.5+4 {
		t.Errorf("store selects: %.1f/s with %d streams, %.1f/s with one", manyRate, streams, oneRate)
	}
	// One more stream than the cap.
	a := call(client, "GET", logs.URL+"/logs?follow=true&username=many", nil)
	if a.Status != http.StatusServiceUnavailable {
		t.Errorf("stream beyond MAX_LOG_STREAMS=%d: %s, want 503", streams, a)
	}
	peak, err := vmHWM(logs.Pid())
	must(t, err)
	record(t,
		fmt.Sprintf("MariaDB selects while a stage function staged %d requests in %s: %.1f/s with 1 live log stream, %.1f/s with %d streams on one logs function",
			len(ids), window, oneRate, manyRate, streams),
		fmt.Sprintf("%d of %d streams received every new record of their user once, in order; a stream beyond MAX_LOG_STREAMS=%d answered %d",
			complete, streams, streams, a.Status),
		fmt.Sprintf("logs function's peak RSS (VmHWM) with %d streams: %.1f MiB", streams, float64(peak)/(1<<20)))
}

// statusDB opens server's database as an operator would, to read its
// counters.
func statusDB(t *testing.T, server *testenv.MariaDBServer) *sql.DB {
	t.Helper()
	u, err := url.Parse(server.URL())
	must(t, err)
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = u.User.Username(), "tcp", u.Host, strings.TrimPrefix(u.Path, "/")
	db, err := sql.Open("mysql", cfg.FormatDSN())
	must(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}
