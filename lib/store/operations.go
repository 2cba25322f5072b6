package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/doug-martin/goqu/v9"
	"github.com/doug-martin/goqu/v9/exp"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// The operations table. Idempotency and coordination between replicas rest
// on its unique columns: event_key (one operation per delivered event) and
// target_lock (one running operation per user and target); lease_owner says
// which replica may record an unfinished operation's progress and outcome.
// An empty key in Go is NULL in the database, so unset keys never collide.

var _ staging.Store = (*Store)(nil)

const table = "operations"

// columns in the order scanOperation reads them.
var columns = []any{
	"id", "method", "username", "local_path_on_storage", "relative_path",
	"status", "message", "error_reason", "error_kind", "bytes", "bytes_done",
	"created_at", "updated_at", "finished_at", "event_key", "target_lock", "did", "lease_owner",
}

// listColumns are columns as List reads them: the free texts cut short in
// the database (to a few characters more than a listing shows), so that a
// record written before requests had limits, with a path or a reason of
// megabytes, costs a listing no more memory than any other.
var listColumns = func() []any {
	cut := map[string]int{"local_path_on_storage": 4100, "relative_path": 4100, "message": 1100,
		"error_reason": 1100, "did": 400}
	out := make([]any, len(columns))
	for i, c := range columns {
		out[i] = c
		if n, ok := cut[c.(string)]; ok {
			out[i] = goqu.L("SUBSTR(?, 1, "+strconv.Itoa(n)+")", goqu.C(c.(string))).As(c.(string))
		}
	}
	return out
}()

// Conditions written as SQL text: they are those of the embedded SQLite's
// partial indexes (migrations 00007 and 00008), and SQLite uses such an
// index only for a query that states its condition, which a bound value
// (?) does not. On MySQL they are conditions like any other.
var (
	unfinished        = goqu.L("status IN ('pending', 'running')")                                 // not final; operations_status_updated
	indexedDID        = goqu.L("did <> ''")                                                        // operations_did_status
	indexedWaiting    = goqu.L("status = 'pending' AND did <> '' AND local_path_on_storage = ''")  // operations_waiting_username
	indexedDIDHandoff = goqu.L("status = 'pending' AND did <> '' AND local_path_on_storage <> ''") // operations_did_handoffs
)

// Create inserts op; a taken ID, EventKey or TargetLock is ErrDuplicate.
func (s *Store) Create(ctx context.Context, op *staging.Operation) error {
	if !op.Status.Valid() {
		return fmt.Errorf("create operation %s: invalid status %q", op.ID, op.Status)
	}
	q, args, err := s.create.bind(op.ID, op.Method, op.Username, op.LocalPathOnStorage, op.RelativePath,
		string(op.Status), op.Message, op.ErrorReason, string(op.ErrorKind), op.Bytes, op.BytesDone,
		s.timeValue(op.CreatedAt), s.timeValue(op.UpdatedAt), s.timePtrValue(op.FinishedAt),
		nullString(op.EventKey), nullString(op.TargetLock), op.DID, nullString(op.LeaseOwner))
	if err != nil {
		return fmt.Errorf("create operation %s: %w", op.ID, err)
	}
	if _, err := s.exec(ctx, q, args); err != nil {
		return fmt.Errorf("create operation %s: %w", op.ID, err)
	}
	return nil
}

// createSQL is Create's statement, the operation's fields marked in the
// order Create binds them.
func (s *Store) createSQL(mark func(int) any) (string, []any, error) {
	return s.gq.Insert(table).Prepared(true).Rows(goqu.Record{
		"id": mark(0), "method": mark(1), "username": mark(2), "local_path_on_storage": mark(3),
		"relative_path": mark(4), "status": mark(5), "message": mark(6), "error_reason": mark(7),
		"error_kind": mark(8), "bytes": mark(9), "bytes_done": mark(10), "created_at": mark(11),
		"updated_at": mark(12), "finished_at": mark(13), "event_key": mark(14), "target_lock": mark(15),
		"did": mark(16), "lease_owner": mark(17),
	}).ToSQL()
}

// Claim turns a pending operation into a running one holding lock, held by
// owner.
func (s *Store) Claim(ctx context.Context, id, lock, owner string, now time.Time) (bool, error) {
	n, err := s.update(ctx, goqu.Record{
		"status":      string(staging.StatusRunning),
		"target_lock": nullString(lock),
		"lease_owner": nullString(owner),
		"updated_at":  s.timeValue(now),
	}, goqu.C("id").Eq(id), goqu.C("status").Eq(string(staging.StatusPending)))
	if err != nil {
		return false, fmt.Errorf("claim operation %s: %w", id, err)
	}
	return n > 0, nil
}

// Get returns one operation, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*staging.Operation, error) {
	op, err := s.getBy(ctx, "id", id)
	if err != nil {
		return nil, fmt.Errorf("get operation %s: %w", id, err)
	}
	return op, nil
}

// GetByEventKey returns the operation created for an event, or ErrNotFound.
func (s *Store) GetByEventKey(ctx context.Context, key string) (*staging.Operation, error) {
	op, err := s.getBy(ctx, "event_key", key)
	if err != nil {
		return nil, fmt.Errorf("get operation by event key %s: %w", key, err)
	}
	return op, nil
}

// GetByTargetLock returns the running operation holding lock, or ErrNotFound.
func (s *Store) GetByTargetLock(ctx context.Context, lock string) (*staging.Operation, error) {
	op, err := s.getBy(ctx, "target_lock", lock)
	if err != nil {
		return nil, fmt.Errorf("get operation by target lock %s: %w", lock, err)
	}
	return op, nil
}

func (s *Store) getBy(ctx context.Context, column, value string) (*staging.Operation, error) {
	if value == "" { // an unset key is NULL and matches nothing
		return nil, staging.ErrNotFound
	}
	q, args, err := s.gq.From(table).Prepared(true).Select(columns...).
		Where(goqu.C(column).Eq(value)).ToSQL()
	if err != nil {
		return nil, fmt.Errorf("build query: %w", err)
	}
	st, err := s.stmt(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", column, err)
	}
	op, err := scanOperation(st.QueryRowContext(ctx, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, staging.ErrNotFound
	}
	return op, s.classify(err)
}

// Progress records bytes done and refreshes the heartbeat of a running
// operation held by owner.
func (s *Store) Progress(ctx context.Context, id, owner string, bytes, bytesDone int64, now time.Time) error {
	n, err := s.update(ctx, goqu.Record{
		"bytes":      bytes,
		"bytes_done": bytesDone,
		"updated_at": s.timeValue(now),
	}, goqu.C("id").Eq(id), goqu.C("status").Eq(string(staging.StatusRunning)), goqu.C("lease_owner").Eq(owner))
	if err != nil {
		return fmt.Errorf("progress of operation %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("progress of operation %s: %w", id, staging.ErrLeaseLost)
	}
	return nil
}

// Touch refreshes updated_at of the operation id if it is still pending.
func (s *Store) Touch(ctx context.Context, id string, now time.Time) (bool, error) {
	n, err := s.update(ctx, goqu.Record{"updated_at": s.timeValue(now)},
		goqu.C("id").Eq(id), goqu.C("status").Eq(string(staging.StatusPending)))
	if err != nil {
		return false, fmt.Errorf("touch operation %s: %w", id, err)
	}
	return n > 0, nil
}

// Finish writes the outcome of op, if it is unfinished and held by owner,
// and releases its target lock. A nil FinishedAt is set to now;
// op.UpdatedAt becomes FinishedAt and op.TargetLock is cleared, as in the
// row.
func (s *Store) Finish(ctx context.Context, op *staging.Operation, owner string) error {
	if !op.Status.Finished() {
		return fmt.Errorf("finish operation %s: status %q is not final", op.ID, op.Status)
	}
	if op.FinishedAt == nil {
		now := time.Now()
		op.FinishedAt = &now
	}
	finished := s.timeValue(*op.FinishedAt)
	q, args, err := s.finish.bind(string(op.Status), op.Message, op.ErrorReason, string(op.ErrorKind),
		op.Bytes, op.BytesDone, finished, op.LocalPathOnStorage, op.ID, owner)
	if err != nil {
		return fmt.Errorf("finish operation %s: %w", op.ID, err)
	}
	n, err := s.exec(ctx, q, args)
	if err != nil {
		return fmt.Errorf("finish operation %s: %w", op.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("finish operation %s: %w", op.ID, staging.ErrLeaseLost)
	}
	ft := op.FinishedAt.UTC().Truncate(time.Microsecond)
	op.FinishedAt, op.UpdatedAt, op.TargetLock = &ft, ft, ""
	return nil
}

// finishSQL is Finish's statement, marked in the order Finish binds it:
// the outcome, and the operation it may change (unfinished, held by owner).
func (s *Store) finishSQL(mark func(int) any) (string, []any, error) {
	return s.gq.Update(table).Prepared(true).Set(goqu.Record{
		"status":       mark(0),
		"message":      mark(1),
		"error_reason": mark(2),
		"error_kind":   mark(3),
		"bytes":        mark(4),
		"bytes_done":   mark(5),
		"finished_at":  mark(6),
		"updated_at":   mark(6),
		"target_lock":  nil,
		// A request by DID learns its source path only when it runs.
		"local_path_on_storage": mark(7),
	}).Where(goqu.C("id").Eq(mark(8)), unfinished, goqu.C("lease_owner").Eq(mark(9))).ToSQL()
}

// Abandon fails the operation id if it is unfinished, still has status and
// no heartbeat since before, releasing its lock.
func (s *Store) Abandon(ctx context.Context, id string, status staging.Status, before time.Time, kind staging.Kind, reason string) (bool, error) {
	now := s.timeValue(time.Now())
	n, err := s.update(ctx, goqu.Record{
		"status":       string(staging.StatusFailed),
		"error_reason": reason,
		"error_kind":   string(kind),
		"finished_at":  now,
		"updated_at":   now,
		"target_lock":  nil,
		"lease_owner":  nil,
	}, goqu.C("id").Eq(id), goqu.C("status").Eq(string(status)), unfinished, goqu.C("updated_at").Lt(s.timeValue(before)))
	if err != nil {
		return false, fmt.Errorf("abandon operation %s: %w", id, err)
	}
	return n > 0, nil
}

// update sets record on the operations matching where and returns how
// many it changed.
func (s *Store) update(ctx context.Context, record goqu.Record, where ...exp.Expression) (int64, error) {
	q, args, err := s.gq.Update(table).Prepared(true).Set(record).Where(where...).ToSQL()
	if err != nil {
		return 0, fmt.Errorf("build query: %w", err)
	}
	return s.exec(ctx, q, args)
}

// DefaultLimit is how many operations List returns when Filter.Limit is 0.
const DefaultLimit = 100

// List returns up to f.Limit operations matching f, newest first, after
// f.After when it is set: keyset pagination on (created_at, id), which the
// indexes of migration 00005 serve for every filter the API offers (and on
// MySQL 00006's for a user and a status together).
func (s *Store) List(ctx context.Context, f staging.Filter) ([]staging.Operation, error) {
	return s.query(ctx, "list operations", s.listQuery(f))
}

// listQuery is List's query.
func (s *Store) listQuery(f staging.Filter) *goqu.SelectDataset {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	ds := s.gq.From(table).Prepared(true).Select(listColumns...).
		Order(goqu.C("created_at").Desc(), goqu.C("id").Desc()).
		Limit(uint(limit))
	if f.Username != "" {
		ds = ds.Where(goqu.C("username").Eq(f.Username))
	}
	if f.Status != "" {
		ds = ds.Where(goqu.C("status").Eq(string(f.Status)))
	}
	if !f.After.IsZero() {
		// (created_at, id) < (t, id), written so that both databases
		// take it as a range on the index's created_at.
		t := s.timeValue(f.After.CreatedAt)
		ds = ds.Where(goqu.C("created_at").Lte(t), goqu.Or(
			goqu.C("created_at").Lt(t), goqu.C("id").Lt(f.After.ID)))
	}
	return ds
}

// Stale returns up to limit running operations whose heartbeat is older
// than before.
func (s *Store) Stale(ctx context.Context, before time.Time, limit int) ([]staging.Operation, error) {
	return s.query(ctx, "stale operations", s.staleQuery(before, limit))
}

func (s *Store) staleQuery(before time.Time, limit int) *goqu.SelectDataset {
	return s.gq.From(table).Prepared(true).Select(columns...).
		Where(goqu.C("status").Eq(string(staging.StatusRunning)), unfinished, goqu.C("updated_at").Lt(s.timeValue(before))).
		Order(goqu.C("updated_at").Asc(), goqu.C("id").Asc()).Limit(uint(limit))
}

// PendingBefore returns up to limit pending operations of kind not touched
// since before, oldest first. Each kind has its own range of an index, so
// that thousands of requests waiting for their replica cost the lookups of
// hand-offs nothing: hand-offs by path are found through their empty did
// on MySQL; on SQLite, hand-offs by DID through their partial index, the
// others through operations_status_updated; on MySQL, the others through
// operations_status_updated's has_source (migration 00007).
func (s *Store) PendingBefore(ctx context.Context, before time.Time, kind staging.Pending, limit int) ([]staging.Operation, error) {
	return s.query(ctx, "overdue pending operations", s.pendingBeforeQuery(before, kind, limit))
}

func (s *Store) pendingBeforeQuery(before time.Time, kind staging.Pending, limit int) *goqu.SelectDataset {
	// The condition of the index each kind has (unfinished: SQLite's
	// operations_status_updated), and MySQL's has_source.
	where := []goqu.Expression{goqu.C("status").Eq(string(staging.StatusPending)), goqu.C("updated_at").Lt(s.timeValue(before))}
	switch kind {
	case staging.PendingHandoff:
		where = append(where, unfinished, goqu.C("did").Eq(""))
	case staging.PendingDIDHandoff:
		// Without unfinished, SQLite cannot take operations_status_updated
		// and its thousands of waiting requests.
		where = append(where, indexedDIDHandoff)
		if s.dialect == DialectMySQL {
			where = append(where, goqu.C("has_source").Eq(1))
		}
	case staging.PendingWaiting:
		where = append(where, unfinished, goqu.C("did").Neq(""), goqu.C("local_path_on_storage").Eq(""))
		if s.dialect == DialectMySQL {
			where = append(where, goqu.C("has_source").Eq(0))
		}
	}
	return s.gq.From(table).Prepared(true).Select(columns...).Where(where...).
		Order(goqu.C("updated_at").Asc(), goqu.C("id").Asc()).Limit(uint(limit))
}

// PendingByDID returns up to limit operations waiting for did's replica,
// oldest first: pending with no source yet, not the async hand-offs of
// requests whose replica was already here.
func (s *Store) PendingByDID(ctx context.Context, did string, limit int) ([]staging.Operation, error) {
	return s.query(ctx, "pending operations for "+did, s.pendingByDIDQuery(did, limit))
}

func (s *Store) pendingByDIDQuery(did string, limit int) *goqu.SelectDataset {
	return s.gq.From(table).Prepared(true).Select(columns...).
		Where(goqu.C("did").Eq(did), indexedDID, indexedWaiting).
		Order(goqu.C("created_at").Asc(), goqu.C("id").Asc()).Limit(uint(limit))
}

// CountWaiting returns how many requests of username wait for a DID's
// replica, counting no further than limit: the count is over a subquery
// bounded by limit, through one index, so it reads at most about limit
// entries however many requests the user ever made. A pending operation
// whose source is set is not waiting: it is the hand-off of a request by
// DID whose replica was already here (async). SQLite's index (00007) holds
// exactly the waiting ones, and the count reads it alone; MySQL's (00006)
// holds the user's pending ones, and the rows of those naming a DID are
// read to check their source (hand-offs are few: they are picked up).
func (s *Store) CountWaiting(ctx context.Context, username string, limit int) (int, error) {
	q, args, err := s.countWaitingQuery(username, limit).ToSQL()
	if err != nil {
		return 0, fmt.Errorf("count waiting requests of %s: build query: %w", username, err)
	}
	st, err := s.stmt(ctx, q)
	if err != nil {
		return 0, fmt.Errorf("count waiting requests of %s: %w", username, err)
	}
	var n int
	if err := st.QueryRowContext(ctx, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count waiting requests of %s: %w", username, err)
	}
	return n, nil
}

func (s *Store) countWaitingQuery(username string, limit int) *goqu.SelectDataset {
	waiting := s.gq.From(table).Select(goqu.L("1")).
		Where(goqu.C("username").Eq(username), indexedWaiting).
		Limit(uint(max(limit, 0)))
	return s.gq.From(waiting.As("waiting")).Prepared(true).Select(goqu.COUNT(goqu.Star()))
}

// query runs a select of columns and scans the operations.
func (s *Store) query(ctx context.Context, what string, ds *goqu.SelectDataset) ([]staging.Operation, error) {
	q, args, err := ds.ToSQL()
	if err != nil {
		return nil, fmt.Errorf("%s: build query: %w", what, err)
	}
	st, err := s.stmt(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, s.classify(err))
	}
	defer rows.Close()
	ops := []staging.Operation{}
	for rows.Next() {
		op, err := scanOperation(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		ops = append(ops, *op)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return ops, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanOperation(row scanner) (*staging.Operation, error) {
	var (
		op                               staging.Operation
		status, kind                     string
		created, updated, finished       dbTime
		eventKey, targetLock, leaseOwner sql.NullString
	)
	err := row.Scan(&op.ID, &op.Method, &op.Username, &op.LocalPathOnStorage, &op.RelativePath,
		&status, &op.Message, &op.ErrorReason, &kind, &op.Bytes, &op.BytesDone,
		&created, &updated, &finished, &eventKey, &targetLock, &op.DID, &leaseOwner)
	if err != nil {
		return nil, err
	}
	op.Status, op.ErrorKind = staging.Status(status), staging.Kind(kind)
	op.CreatedAt = created.Time
	op.UpdatedAt = updated.Time
	if finished.Valid {
		t := finished.Time
		op.FinishedAt = &t
	}
	op.EventKey, op.TargetLock, op.LeaseOwner = eventKey.String, targetLock.String, leaseOwner.String
	return &op, nil
}
