package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doug-martin/goqu/v9"

	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// TestQueryPlans asks each database how it runs every query the API's
// listings make, on tables filled with a few tens of thousands of rows
// distributed as at a site (a few users stage most, errors and the logs
// function's records are rare), and checks that each uses the index made
// for it and, where the index gives the order, sorts nothing: an index
// that goes unused, or a listing that reads a whole table, fails here
// before it fails at a site with millions of rows.
func TestQueryPlans(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := open(t, b.url(t))
			fillForPlans(t, s)
			cursor := staging.Cursor{CreatedAt: t0.Add(-time.Hour), ID: "01900000-0000-7000-8000-000000000000"}
			ops := []struct {
				name, index string // index: one of these, separated by |
				sorted      bool   // the index gives the order: no sort step
				ds          *goqu.SelectDataset
			}{
				{"operations of a user", "operations_username_created", true, s.listQuery(staging.Filter{Username: "u001", Limit: 101})},
				{"operations of a user, deep page", "operations_username_created", true, s.listQuery(staging.Filter{Username: "u000", Limit: 101, After: cursor})},
				{"operations of a user by status", "operations_username_status_created|operations_username_created|operations_status_created", true, s.listQuery(staging.Filter{Username: "u001", Status: staging.StatusFailed, Limit: 101})},
				{"operations, unfiltered", "operations_created", true, s.listQuery(staging.Filter{Limit: 101})},
				{"operations, unfiltered, deep page", "operations_created", true, s.listQuery(staging.Filter{Limit: 101, After: cursor})},
				{"operations by status", "operations_status_created", true, s.listQuery(staging.Filter{Status: staging.StatusFailed, Limit: 101})},
				{"operations by status, deep page", "operations_status_created", true, s.listQuery(staging.Filter{Status: staging.StatusSuccess, Limit: 101, After: cursor})},
				{"requests waiting for a DID", "operations_did_status", false, s.pendingByDIDQuery("user.u001:obs-1.ms", 1000)},
				// MAX_WAITING_PER_USER: bounded, from the index alone, for the user who made most requests.
				{"requests of a user waiting for a DID", "operations_username_status_created|operations_waiting_username", true, s.countWaitingQuery("u000", 1000)},
				// The sweeps, among many finished operations: a range of the
				// unfinished ones (ties of updated_at are sorted by id).
				// MariaDB may take the few pending hand-offs by did = ''.
				{"running operations past their lease", "operations_status_updated", false, s.staleQuery(t0, 100)},
				{"requests waiting for a DID past PENDING_TTL", "operations_status_updated", false, s.pendingBeforeQuery(t0, staging.PendingWaiting, 100)},
				{"hand-offs not picked up", "operations_status_updated|operations_did_status", false, s.pendingBeforeQuery(t0, staging.PendingHandoff, 100)},
				{"hand-offs by DID not picked up", "operations_status_updated|operations_did_handoffs", false, s.pendingBeforeQuery(t0, staging.PendingDIDHandoff, 100)},
			}
			logs := []struct {
				name, index string
				sorted      bool
				q           logging.Query
			}{
				{"newest log records", "logs_time", true, logging.Query{Limit: 200}},
				{"log records of a user", "logs_username_time", true, logging.Query{Username: "u001", Limit: 100}},
				{"log records of an operation", "logs_operation", false, logging.Query{Operation: "op-00042", Limit: 1000}},
				{"ERROR log records (rare)", "logs_level_time", true, logging.Query{Level: slog.LevelError, Limit: 1000}},
				{"log records of a rare function", "logs_function_time", true, logging.Query{Function: "logs", Limit: 1000}},
				// Paging with after and a resumed stream's catch-up read in
				// id order: the index gives it, neither a sort of the
				// user's (or operation's) whole history nor a scan of
				// everyone's records above the id.
				{"log records of a user after an id", "logs_username", true, logging.Query{Username: "u001", After: 30_000, Limit: 100}},
				{"log records of a user, resumed", "logs_username", true, logging.Query{Username: "u001", Ascending: true, Limit: 100}},
				{"log records of an operation after an id", "logs_operation", true, logging.Query{Operation: "op-00042", After: 100, Limit: 100}},
				{"log records of an operation, resumed", "logs_operation", true, logging.Query{Operation: "op-00042", Ascending: true, Limit: 100}},
			}
			for _, c := range ops {
				checkPlan(t, s, c.name, c.index, c.sorted, c.ds)
			}
			// The sweep's lookup of lost hand-offs by DID reads the ten
			// hand-offs, not the thousand waiting requests: SQLite's
			// partial index holds only them, MariaDB's range is theirs.
			if s.dialect == DialectSQLite {
				checkPlan(t, s, "hand-offs by DID, only them", "operations_did_handoffs", false, s.pendingBeforeQuery(t0, staging.PendingDIDHandoff, 100))
			} else if n := estimatedRows(t, s, s.pendingBeforeQuery(t0, staging.PendingDIDHandoff, 100)); n > 100 {
				t.Errorf("hand-offs by DID: MariaDB expects to read %d rows, more than the hand-offs", n)
			}
			for _, c := range logs {
				ds, ascending := s.logsQuery(c.q)
				checkPlan(t, s, c.name, c.index, c.sorted, ds)
				if !ascending {
					// The newest records' ids alone (LogIDs), which
					// /logs reads before the records.
					checkPlan(t, s, c.name+", ids", c.index, c.sorted, ds.Select("id"))
				}
			}
		})
	}
}

// checkPlan explains ds and checks it uses index, without a sort step when
// sorted.
func checkPlan(t *testing.T, s *Store, name, index string, sorted bool, ds *goqu.SelectDataset) {
	t.Helper()
	q, args, err := ds.ToSQL()
	if err != nil {
		t.Fatal(err)
	}
	plan, keys, sorts := explain(t, s, q, args)
	used := false
	for _, ix := range strings.Split(index, "|") {
		used = used || keys[ix]
	}
	if !used {
		t.Errorf("%s: does not use %s\n%s\nplan:\n%s", name, index, q, plan)
	}
	if sorted && sorts {
		t.Errorf("%s: sorts although %s gives the order\n%s\nplan:\n%s", name, index, q, plan)
	}
}

// estimatedRows is the rows MariaDB's plan for ds expects to read.
func estimatedRows(t *testing.T, s *Store, ds *goqu.SelectDataset) int {
	t.Helper()
	q, args, err := ds.ToSQL()
	if err != nil {
		t.Fatal(err)
	}
	plan, _, _ := explain(t, s, q, args)
	n, found := 0, false
	for _, field := range strings.Fields(plan) {
		if v, ok := strings.CutPrefix(field, "rows="); ok {
			r, _ := strconv.Atoi(v)
			n, found = n+r, true
		}
	}
	if !found {
		t.Fatalf("EXPLAIN %s: no rows column\n%s", q, plan)
	}
	return n
}

// explain returns the plan as text, the indexes it uses and whether it
// sorts.
func explain(t *testing.T, s *Store, q string, args []any) (string, map[string]bool, bool) {
	t.Helper()
	ctx := context.Background()
	keys := map[string]bool{}
	var text strings.Builder
	sorts := false
	if s.dialect == DialectSQLite {
		rows, err := s.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			text.WriteString(detail + "\n")
			if _, rest, ok := strings.Cut(detail, " INDEX "); ok {
				name, _, _ := strings.Cut(rest, " ")
				keys[name] = true
			}
			if strings.Contains(detail, "TEMP B-TREE") {
				sorts = true
			}
		}
		return text.String(), keys, sorts
	}
	rows, err := s.db.QueryContext(ctx, "EXPLAIN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for i, c := range cols {
			fmt.Fprintf(&text, "%s=%s ", c, vals[i].String)
			switch c {
			case "key":
				keys[vals[i].String] = true
			case "Extra":
				sorts = sorts || strings.Contains(vals[i].String, "filesort")
			}
		}
		text.WriteString("\n")
	}
	return text.String(), keys, sorts
}

// fillForPlans writes 30,000 operations of 300 users (the first few doing
// most) and 60,000 log records (0.1% ERROR, 0.05% from the logs function),
// then has the database gather its statistics.
func fillForPlans(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	user := func() string { return fmt.Sprintf("u%03d", int(min(299, 1/(r.Float64()+0.0034)-1))) }
	var rows []goqu.Record
	flush := func(table string) {
		if len(rows) == 0 {
			return
		}
		q, args, err := s.gq.Insert(table).Prepared(true).Rows(rows).ToSQL()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
		rows = rows[:0]
	}
	for i := range 30_000 {
		created := t0.Add(time.Duration(i-30_000) * time.Minute)
		status, did, source := staging.StatusSuccess, "", "rse/obs/vis.ms"
		switch {
		case i%50 == 0:
			status = staging.StatusFailed
		case i >= 29_000:
			// A thousand requests waiting for their DID's replica, and
			// among them a few async ones whose replica was here, their
			// hand-offs not picked up yet.
			status, did = staging.StatusPending, fmt.Sprintf("user.u001:obs-%d.ms", i)
			if i%100 != 1 {
				source = ""
			}
		}
		rows = append(rows, goqu.Record{"id": fmt.Sprintf("%08x-0000-7000-8000-%012x", i, i), "method": "local_copy",
			"username": user(), "local_path_on_storage": source, "relative_path": "p/obs", "status": string(status),
			"message": "", "error_reason": "", "error_kind": "", "bytes": 1, "bytes_done": 1,
			"created_at": s.timeValue(created), "updated_at": s.timeValue(created), "did": did})
		if len(rows) == 500 {
			flush(table)
		}
	}
	flush(table)
	var recs []logging.Record
	for i := range 60_000 {
		level, fn := slog.LevelInfo, "stage"
		if i%1000 == 7 {
			level = slog.LevelError
		}
		if i%2000 == 11 {
			fn = "logs"
		}
		recs = append(recs, logging.Record{Time: t0.Add(time.Duration(i-60_000) * time.Second), Level: level,
			Message: "staging finished", Function: fn, Instance: "i", Operation: fmt.Sprintf("op-%05d", i/3),
			Username: user(), Attrs: logging.Attrs{{Key: "status", Value: "success"}}})
	}
	if err := s.AppendLogs(ctx, recs); err != nil {
		t.Fatal(err)
	}
	for _, tb := range []string{"operations", "logs"} {
		if _, err := s.db.ExecContext(ctx, "ANALYZE "+map[bool]string{true: "", false: "TABLE "}[s.dialect == DialectSQLite]+tb); err != nil {
			t.Fatal(err)
		}
	}
}
