package store

import (
	"reflect"
	"testing"
	"time"

	"github.com/doug-martin/goqu/v9"
)

// TestTemplates: the statements Create and Finish bind are those goqu
// builds from the same values each time, in both dialects, and a NULL
// (nil) value is passed as an argument, not written into the statement.
func TestTemplates(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 123456000, time.UTC)
	for _, dialect := range []string{DialectSQLite, DialectMySQL} {
		t.Run(dialect, func(t *testing.T) {
			s := &Store{dialect: dialect, gq: goqu.Dialect(dialect)}
			s.create.build, s.finish.build = s.createSQL, s.finishSQL

			values := []any{"01a2-id", "local_copy", "alice", "data/f", "in/f", "running", "msg", "reason",
				"internal", int64(7), int64(3), s.timeValue(now), s.timeValue(now), s.timeValue(now.Add(time.Second)),
				"event-1", "alice/in/f", "scope:name", "replica-1"}
			q, args, err := s.create.bind(values...)
			if err != nil {
				t.Fatal(err)
			}
			wantQ, wantArgs, err := s.gq.Insert(table).Prepared(true).Rows(goqu.Record{
				"id": values[0], "method": values[1], "username": values[2], "local_path_on_storage": values[3],
				"relative_path": values[4], "status": values[5], "message": values[6], "error_reason": values[7],
				"error_kind": values[8], "bytes": values[9], "bytes_done": values[10], "created_at": values[11],
				"updated_at": values[12], "finished_at": values[13], "event_key": values[14], "target_lock": values[15],
				"did": values[16], "lease_owner": values[17],
			}).ToSQL()
			if err != nil {
				t.Fatal(err)
			}
			if q != wantQ || !reflect.DeepEqual(args, wantArgs) {
				t.Fatalf("create:\n%s %v\nwant\n%s %v", q, args, wantQ, wantArgs)
			}

			finished := s.timeValue(now)
			q, args, err = s.finish.bind("success", "done", "", "", int64(7), int64(7), finished, "data/f", "01a2-id", "replica-1")
			if err != nil {
				t.Fatal(err)
			}
			wantQ, wantArgs, err = s.gq.Update(table).Prepared(true).Set(goqu.Record{
				"status": "success", "message": "done", "error_reason": "", "error_kind": "", "bytes": int64(7),
				"bytes_done": int64(7), "finished_at": finished, "updated_at": finished, "target_lock": nil,
				"local_path_on_storage": "data/f",
			}).Where(goqu.C("id").Eq("01a2-id"), unfinished,
				goqu.C("lease_owner").Eq("replica-1")).ToSQL()
			if err != nil {
				t.Fatal(err)
			}
			if q != wantQ || !reflect.DeepEqual(args, wantArgs) {
				t.Fatalf("finish:\n%s %v\nwant\n%s %v", q, args, wantQ, wantArgs)
			}

			values[13], values[14] = nil, nil
			_, args, err = s.create.bind(values...)
			if err != nil {
				t.Fatal(err)
			}
			nils := 0
			for _, a := range args {
				if a == nil {
					nils++
				}
			}
			if len(args) != len(values) || nils != 2 {
				t.Fatalf("create with two NULLs: %d arguments, %d of them nil; want %d and 2", len(args), nils, len(values))
			}
		})
	}
}
