package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/store"
)

// callerAs establishes the same caller for every request.
type callerAs staging.Caller

func (c callerAs) Caller(context.Context, string) (staging.Caller, error) {
	return staging.Caller(c), nil
}

// TestLogReadsTheStoreCanAnswer: a since that an offset carries past the
// year 9999 (or before the year 1) in UTC is 422 naming since: MariaDB's
// driver refused it (503 "Database unavailable") and SQLite answered every
// record. A caller whose token names "alice " is refused: MariaDB compared
// it equal to alice and answered her records.
func TestLogReadsTheStoreCanAnswer(t *testing.T) {
	for _, b := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return "sqlite://" + t.TempDir() + "/logs.db" }},
		{"mariadb", func(t *testing.T) string { return testenv.MariaDB(t) }},
	} {
		t.Run(b.name, func(t *testing.T) {
			st, err := store.Open(context.Background(), b.url(t))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if err := st.AppendLogs(context.Background(), []logging.Record{{Time: time.Now(), Level: slog.LevelInfo,
				Message: "alice's secret", Function: "stage", Instance: "i", Username: "alice"}}); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name   string
				caller staging.Caller
				query  string
				status int
			}{
				{"since past 9999 in UTC", staging.Caller{Name: "admin", Admin: true}, "since=" + url.QueryEscape("9999-12-31T23:00:00-05:00"), 422},
				{"since before the year 1 in UTC", staging.Caller{Name: "admin", Admin: true}, "since=" + url.QueryEscape("0000-01-01T00:00:00+01:00"), 422},
				{"since at the last second", staging.Caller{Name: "admin", Admin: true}, "since=9999-12-31T23:59:59Z", 200},
				{"caller alice with a space", staging.Caller{Name: "alice "}, "", 403},
				{"caller alice with a space, following", staging.Caller{Name: "alice "}, "follow=true", 403},
				{"caller not UTF-8", staging.Caller{Name: "al\xffice"}, "", 403},
				{"alice herself", staging.Caller{Name: "alice"}, "", 200},
			} {
				t.Run(c.name, func(t *testing.T) {
					a := newAPI(st, callerAs(c.caller), 10)
					srv := httptest.NewServer(a.handler())
					defer srv.Close()
					// A stream answered 200 never ends: the timeout fails it.
					client := &http.Client{Timeout: 5 * time.Second}
					resp, err := client.Get(srv.URL + "/logs?" + c.query)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != c.status {
						t.Fatalf("%d %s, want %d", resp.StatusCode, body, c.status)
					}
				})
			}
		})
	}
}
