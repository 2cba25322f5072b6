package store

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// TestRefusedValues: a value the database refuses as data (too long for
// its column, not text of its character set, NULL where it may not be) is
// a *staging.Refusal matching staging.ErrRefused, naming the column, and
// not a failure of the database, which the service answered 503 (try
// again) for ever. Admission keeps requests within the columns; these are
// the values that would still reach the store.
func TestRefusedValues(t *testing.T) {
	cases := []struct {
		name    string
		dialect string // "" for both
		write   func(ctx context.Context, s *Store) error
		column  string
	}{
		{"method too long", DialectMySQL, func(ctx context.Context, s *Store) error {
			op := newOp("alice", t0)
			op.Method = strings.Repeat("m", 65)
			return s.Create(ctx, op)
		}, "method"},
		{"username not UTF-8", DialectMySQL, func(ctx context.Context, s *Store) error {
			return s.Create(ctx, newOp("al\xffice", t0))
		}, "username"},
		{"path too long", DialectMySQL, func(ctx context.Context, s *Store) error {
			op := newOp("alice", t0)
			op.LocalPathOnStorage = strings.Repeat("p", 4097)
			return s.Create(ctx, op)
		}, "local_path_on_storage"},
		{"DID too long", DialectMySQL, func(ctx context.Context, s *Store) error {
			op := newOp("alice", t0)
			op.DID = "s:" + strings.Repeat("d", 299)
			return s.Create(ctx, op)
		}, "did"},
		{"reason not UTF-8 at finish", DialectMySQL, func(ctx context.Context, s *Store) error {
			op := newOp("alice", t0)
			op.Status, op.LeaseOwner = staging.StatusRunning, "me"
			if err := s.Create(ctx, op); err != nil {
				return err
			}
			op.Status, op.ErrorReason = staging.StatusFailed, "Cannot copy dir/\xff"
			return s.Finish(ctx, op, "me")
		}, "error_reason"},
		{"NULL where none may be", "", func(ctx context.Context, s *Store) error {
			_, err := s.exec(ctx, "INSERT INTO operations (id, method, username, local_path_on_storage, relative_path, status, "+
				"message, error_reason, created_at, updated_at) VALUES ('x', NULL, 'u', '', '', 'pending', '', '', ?, ?)",
				[]any{s.timeValue(t0), s.timeValue(t0)})
			return err
		}, "method"},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := open(t, b.url(t))
			for _, c := range cases {
				if c.dialect != "" && c.dialect != s.Dialect() {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					err := c.write(context.Background(), s)
					var r *staging.Refusal
					if !errors.Is(err, staging.ErrRefused) || !errors.As(err, &r) {
						t.Fatalf("got %v, want a refusal (staging.ErrRefused)", err)
					}
					if r.Column != c.column || r.Reason == "" {
						t.Errorf("refusal names column %q (%q), want %q with a reason", r.Column, r.Reason, c.column)
					}
					if k, detail := staging.KindOf(staging.StoreFailure(err)); k != staging.Invalid || !strings.Contains(detail, c.column) {
						t.Errorf("answered as %s %q, want invalid naming %s", k, detail, c.column)
					}
				})
			}
		})
	}
}

// TestStrictWhateverTheServer: on a server whose own sql_mode is not
// strict, a value too long for its column is refused all the same, not
// stored cut short (it was: a 65-byte method was kept as its first 64);
// and a URL asking for another connection character set or sql_mode is
// refused before anything is written.
func TestStrictWhateverTheServer(t *testing.T) {
	srv := testenv.MariaDBServerFor(t)
	admin := mysql.NewConfig()
	admin.User, admin.Net, admin.Addr = "root", "tcp", "127.0.0.1:"+strconv.Itoa(srv.Port())
	db, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("SET GLOBAL sql_mode = ''"); err != nil {
		t.Fatal(err)
	}
	s := open(t, srv.Database(t))
	op := newOp("alice", t0)
	op.Method = strings.Repeat("m", 65)
	err = s.Create(context.Background(), op)
	if !errors.Is(err, staging.ErrRefused) {
		got, gerr := s.Get(context.Background(), op.ID)
		if gerr == nil {
			t.Fatalf("Create: %v; the row holds a method of %d bytes, want the value refused", err, len(got.Method))
		}
		t.Fatalf("Create: %v, want a refusal", err)
	}

	for _, query := range []string{"charset=latin1", "collation=latin1_swedish_ci", "sql_mode=%27%27", "SQL_MODE=%27%27", "Sql_Mode=ANSI", "CHARSET=latin1"} {
		if _, err := New("mysql://root@127.0.0.1:" + strconv.Itoa(srv.Port()) + "/test?" + query); err == nil {
			t.Errorf("New with %s: accepted", query)
		}
	}
	if _, err := New("mysql://root@127.0.0.1:" + strconv.Itoa(srv.Port()) + "/test?charset=utf8mb4"); err != nil {
		t.Errorf("New with charset=utf8mb4: %v", err)
	}
}

// TestLogValuesOutsideColumns: a log record's level below what its column
// holds is stored at the lowest level, not refused with its whole batch;
// a since beyond the times a column holds (an offset can carry a year
// past 9999 into UTC) selects what it means, nothing, where the driver
// refused it (MariaDB) or a five-digit year sorted first (SQLite: every
// record).
func TestLogValuesOutsideColumns(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t, b.url(t))
			now := time.Now()
			err := s.AppendLogs(ctx, []logging.Record{
				{Time: now, Level: -40000, Message: "very low", Function: "stage", Instance: "i"},
				{Time: now, Level: slog.LevelInfo, Message: "ordinary", Function: "stage", Instance: "i"},
			})
			if err != nil {
				t.Fatalf("AppendLogs: %v", err)
			}
			for _, c := range []struct {
				name  string
				since time.Time
				want  int
			}{
				{"after the year 9999", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), 0},
				{"before the year 1", time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), 2},
				{"an hour ago", now.Add(-time.Hour), 2},
			} {
				t.Run(c.name, func(t *testing.T) {
					recs, err := s.QueryLogs(ctx, logging.Query{Since: c.since})
					if err != nil || len(recs) != c.want {
						t.Fatalf("QueryLogs since %v: %d records, %v; want %d", c.since, len(recs), err, c.want)
					}
				})
			}
		})
	}
}
