// Package store keeps staging operations in one SQL table, "operations":
// MySQL/MariaDB when several replicas share state, or an embedded SQLite file
// for a single node. Open picks the database from a URL and migrates its
// schema (goose, one migration directory per dialect); every query is built
// with goqu as a parameterised statement.
//
// Idempotency and coordination between replicas rest on two unique columns:
// event_key (one operation per delivered event) and target_lock (one running
// operation per user and target). An empty key in Go is NULL in the database,
// so unset keys never collide. Times are stored in UTC with microseconds.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/doug-martin/goqu/v9"
	"github.com/go-sql-driver/mysql"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	staging "github.com/ska-telescope/skao-staging-service/lib"
)

// Store is a staging.Store over database/sql. It is safe for concurrent use.
type Store struct {
	db      *sql.DB
	dialect string
	gq      goqu.DialectWrapper
	stmts   sync.Map // query text -> *sql.Stmt, prepared once
}

// stmt returns the prepared statement for q. goqu builds the same text for
// the same query shape, so the handful of shapes the store uses are each
// prepared once instead of on every call.
func (s *Store) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(q); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(q, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

var _ staging.Store = (*Store)(nil)

const table = "operations"

// columns in the order scanOperation reads them.
var columns = []any{
	"id", "method", "username", "local_path_on_storage", "relative_path",
	"status", "message", "error_reason", "code", "bytes", "bytes_done",
	"created_at", "updated_at", "finished_at", "event_key", "target_lock", "did",
}

// Dialect returns "mysql" or "sqlite3".
func (s *Store) Dialect() string { return s.dialect }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping %s database: %w", s.dialect, err)
	}
	return nil
}

// Close closes the prepared statements and the database.
func (s *Store) Close() error {
	s.stmts.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
	return s.db.Close()
}

// Create inserts op; a taken ID, EventKey or TargetLock is ErrDuplicate.
func (s *Store) Create(ctx context.Context, op *staging.Operation) error {
	if !op.Status.Valid() {
		return fmt.Errorf("create operation %s: invalid status %q", op.ID, op.Status)
	}
	q, args, err := s.gq.Insert(table).Prepared(true).Rows(goqu.Record{
		"id":                    op.ID,
		"method":                op.Method,
		"username":              op.Username,
		"local_path_on_storage": op.LocalPathOnStorage,
		"relative_path":         op.RelativePath,
		"status":                string(op.Status),
		"message":               op.Message,
		"error_reason":          op.ErrorReason,
		"code":                  op.Code,
		"bytes":                 op.Bytes,
		"bytes_done":            op.BytesDone,
		"created_at":            s.timeValue(op.CreatedAt),
		"updated_at":            s.timeValue(op.UpdatedAt),
		"finished_at":           s.timePtrValue(op.FinishedAt),
		"event_key":             nullString(op.EventKey),
		"target_lock":           nullString(op.TargetLock),
		"did":                   op.DID,
	}).ToSQL()
	if err != nil {
		return fmt.Errorf("create operation %s: build query: %w", op.ID, err)
	}
	if _, err := s.exec(ctx, q, args); err != nil {
		return fmt.Errorf("create operation %s: %w", op.ID, err)
	}
	return nil
}

// Claim turns a pending operation into a running one holding lock.
func (s *Store) Claim(ctx context.Context, id, lock string, now time.Time) (bool, error) {
	q, args, err := s.gq.Update(table).Prepared(true).Set(goqu.Record{
		"status":      string(staging.StatusRunning),
		"target_lock": nullString(lock),
		"updated_at":  s.timeValue(now),
	}).Where(
		goqu.C("id").Eq(id),
		goqu.C("status").Eq(string(staging.StatusPending)),
	).ToSQL()
	if err != nil {
		return false, fmt.Errorf("claim operation %s: build query: %w", id, err)
	}
	n, err := s.exec(ctx, q, args)
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
	return op, err
}

// Progress records bytes done and refreshes the heartbeat.
func (s *Store) Progress(ctx context.Context, id string, bytes, bytesDone int64, now time.Time) error {
	q, args, err := s.gq.Update(table).Prepared(true).Set(goqu.Record{
		"bytes":      bytes,
		"bytes_done": bytesDone,
		"updated_at": s.timeValue(now),
	}).Where(goqu.C("id").Eq(id)).ToSQL()
	if err != nil {
		return fmt.Errorf("progress of operation %s: build query: %w", id, err)
	}
	n, err := s.exec(ctx, q, args)
	if err != nil {
		return fmt.Errorf("progress of operation %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("progress of operation %s: %w", id, staging.ErrNotFound)
	}
	return nil
}

// Finish writes the outcome of op and releases its target lock. A nil
// FinishedAt is set to now; op.UpdatedAt becomes FinishedAt and op.TargetLock
// is cleared, as in the row.
func (s *Store) Finish(ctx context.Context, op *staging.Operation) error {
	if !op.Status.Finished() {
		return fmt.Errorf("finish operation %s: status %q is not final", op.ID, op.Status)
	}
	if op.FinishedAt == nil {
		now := time.Now()
		op.FinishedAt = &now
	}
	finished := s.timeValue(*op.FinishedAt)
	q, args, err := s.gq.Update(table).Prepared(true).Set(goqu.Record{
		"status":       string(op.Status),
		"message":      op.Message,
		"error_reason": op.ErrorReason,
		"code":         op.Code,
		"bytes":        op.Bytes,
		"bytes_done":   op.BytesDone,
		"finished_at":  finished,
		"updated_at":   finished,
		"target_lock":  nil,
		// A request by DID learns its source path only when it runs.
		"local_path_on_storage": op.LocalPathOnStorage,
	}).Where(goqu.C("id").Eq(op.ID)).ToSQL()
	if err != nil {
		return fmt.Errorf("finish operation %s: build query: %w", op.ID, err)
	}
	n, err := s.exec(ctx, q, args)
	if err != nil {
		return fmt.Errorf("finish operation %s: %w", op.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("finish operation %s: %w", op.ID, staging.ErrNotFound)
	}
	ft := op.FinishedAt.UTC().Truncate(time.Microsecond)
	op.FinishedAt, op.UpdatedAt, op.TargetLock = &ft, ft, ""
	return nil
}

// Abandon fails running operations whose heartbeat is older than before
// (only operation id unless id is ""), releasing their locks. Pending
// operations wait for their hand-off and are left alone.
func (s *Store) Abandon(ctx context.Context, id string, before time.Time, reason string) (int64, error) {
	now := s.timeValue(time.Now())
	where := []goqu.Expression{
		goqu.C("status").Eq(string(staging.StatusRunning)),
		goqu.C("updated_at").Lt(s.timeValue(before)),
	}
	if id != "" {
		where = append(where, goqu.C("id").Eq(id))
	}
	q, args, err := s.gq.Update(table).Prepared(true).Set(goqu.Record{
		"status":       string(staging.StatusFailed),
		"error_reason": reason,
		"code":         http.StatusInternalServerError,
		"finished_at":  now,
		"updated_at":   now,
		"target_lock":  nil,
	}).Where(where...).ToSQL()
	if err != nil {
		return 0, fmt.Errorf("abandon operations: build query: %w", err)
	}
	n, err := s.exec(ctx, q, args)
	if err != nil {
		return 0, fmt.Errorf("abandon operations: %w", err)
	}
	return n, nil
}

// DefaultLimit is how many operations List returns when Filter.Limit is 0.
const DefaultLimit = 100

// List returns operations matching f, newest first.
func (s *Store) List(ctx context.Context, f staging.Filter) ([]staging.Operation, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	ds := s.gq.From(table).Prepared(true).Select(columns...).
		Order(goqu.C("created_at").Desc(), goqu.C("id").Desc()).
		Limit(uint(limit))
	if f.Username != "" {
		ds = ds.Where(goqu.C("username").Eq(f.Username))
	}
	if f.Status != "" {
		ds = ds.Where(goqu.C("status").Eq(string(f.Status)))
	}
	return s.query(ctx, "list operations", ds)
}

// Stale returns the running operations whose heartbeat is older than before.
func (s *Store) Stale(ctx context.Context, before time.Time) ([]staging.Operation, error) {
	ds := s.gq.From(table).Prepared(true).Select(columns...).
		Where(goqu.C("status").Eq(string(staging.StatusRunning)), goqu.C("updated_at").Lt(s.timeValue(before))).
		Order(goqu.C("updated_at").Asc(), goqu.C("id").Asc())
	return s.query(ctx, "stale operations", ds)
}

// PendingByDID returns the operations waiting for did's replica, oldest first.
func (s *Store) PendingByDID(ctx context.Context, did string) ([]staging.Operation, error) {
	ds := s.gq.From(table).Prepared(true).Select(columns...).
		Where(goqu.C("did").Eq(did), goqu.C("status").Eq(string(staging.StatusPending))).
		Order(goqu.C("created_at").Asc(), goqu.C("id").Asc())
	return s.query(ctx, "pending operations for "+did, ds)
}

// PendingBefore returns the operations waiting for a DID's replica since
// before a time, oldest first.
func (s *Store) PendingBefore(ctx context.Context, before time.Time) ([]staging.Operation, error) {
	ds := s.gq.From(table).Prepared(true).Select(columns...).
		Where(goqu.C("status").Eq(string(staging.StatusPending)), goqu.C("did").Neq(""),
			goqu.C("created_at").Lt(s.timeValue(before))).
		Order(goqu.C("created_at").Asc(), goqu.C("id").Asc())
	return s.query(ctx, "expired pending operations", ds)
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
		return nil, fmt.Errorf("%s: %w", what, err)
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

// exec runs a statement and returns the rows it matched.
func (s *Store) exec(ctx context.Context, q string, args []any) (int64, error) {
	for attempt := 1; ; attempt++ {
		st, err := s.stmt(ctx, q)
		if err != nil {
			return 0, s.classify(err)
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			// InnoDB may pick one of several statements inserting the same
			// unique key at once as a deadlock victim: nothing was written,
			// and the statement can simply run again.
			if isRetryable(err) && attempt < 5 && ctx.Err() == nil {
				time.Sleep(time.Duration(attempt*attempt) * time.Millisecond)
				continue
			}
			return 0, s.classify(err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("rows affected: %w", err)
		}
		return n, nil
	}
}

// isRetryable reports a MySQL deadlock (1213) or lock wait timeout (1205).
func isRetryable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// classify makes a unique-key violation match staging.ErrDuplicate while
// keeping the driver's error.
func (s *Store) classify(err error) error {
	if isDuplicate(err) {
		return fmt.Errorf("%w: %w", staging.ErrDuplicate, err)
	}
	return err
}

func isDuplicate(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1062 // ER_DUP_ENTRY
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

type scanner interface{ Scan(dest ...any) error }

func scanOperation(row scanner) (*staging.Operation, error) {
	var (
		op                         staging.Operation
		status                     string
		created, updated, finished dbTime
		eventKey, targetLock       sql.NullString
	)
	err := row.Scan(&op.ID, &op.Method, &op.Username, &op.LocalPathOnStorage, &op.RelativePath,
		&status, &op.Message, &op.ErrorReason, &op.Code, &op.Bytes, &op.BytesDone,
		&created, &updated, &finished, &eventKey, &targetLock, &op.DID)
	if err != nil {
		return nil, err
	}
	op.Status = staging.Status(status)
	op.CreatedAt = created.Time
	op.UpdatedAt = updated.Time
	if finished.Valid {
		t := finished.Time
		op.FinishedAt = &t
	}
	op.EventKey = eventKey.String
	op.TargetLock = targetLock.String
	return &op, nil
}

// sqliteTime is how SQLite stores times: fixed width, UTC, microseconds, so
// that string order is time order.
const sqliteTime = "2006-01-02T15:04:05.000000Z"

// timeValue is t as the database stores it: UTC truncated to microseconds,
// as a time.Time for MySQL (DATETIME(6)) or a sqliteTime string for SQLite.
func (s *Store) timeValue(t time.Time) any {
	t = t.UTC().Truncate(time.Microsecond)
	if s.dialect == DialectSQLite {
		return t.Format(sqliteTime)
	}
	return t
}

func (s *Store) timePtrValue(t *time.Time) any {
	if t == nil {
		return nil
	}
	return s.timeValue(*t)
}

// dbTime scans a time stored by timeValue, or NULL.
type dbTime struct {
	Time  time.Time
	Valid bool
}

func (d *dbTime) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*d = dbTime{}
		return nil
	case time.Time:
		*d = dbTime{Time: x.UTC(), Valid: true}
		return nil
	case string:
		return d.parse(x)
	case []byte:
		return d.parse(string(x))
	}
	return fmt.Errorf("scan time: unsupported type %T", v)
}

func (d *dbTime) parse(s string) error {
	t, err := time.Parse(sqliteTime, s)
	if err != nil {
		return fmt.Errorf("scan time: %w", err)
	}
	*d = dbTime{Time: t.UTC(), Valid: true}
	return nil
}

// nullString maps "" to NULL, so unset unique keys never collide.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
