package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/doug-martin/goqu/v9"
	"github.com/doug-martin/goqu/v9/exp"

	"github.com/ska-telescope/skao-staging-service/lib/logging"
)

var _ logging.Store = (*Store)(nil)

const logTable = "logs"

// logColumns in the order scanLog reads them.
var logColumns = []any{"id", "time", "level", "message", "function", "instance",
	"operation_id", "username", "trace_id", "span_id", "attributes"}

// Limits that keep every record insertable: a record the database refused
// would take its whole batch with it.
const (
	maxLogMessage = 16 << 10
	maxLogAttrs   = 64 << 10
	logChunk      = 1000 // rows per INSERT, well under both databases' placeholder limits
	pruneChunk    = 100  // ids per DELETE: a few milliseconds of work each (500 made staging's p99 a third higher)
	// prunePause is how long pruning rests after a chunk, as a multiple
	// of the time the chunk took: pruning then takes at most a tenth of
	// the database's time, and staging beside it keeps its latency.
	prunePause = 9
)

// logInsertColumns is the column order of logArgs.
var logInsertColumns = []any{"time", "level", "message", "function", "instance",
	"operation_id", "username", "trace_id", "span_id", "attributes"}

// logArgs are r's values in logInsertColumns order. Levels above ERROR
// are stored as ERROR, the highest level the service names; levels below
// what the column holds (SMALLINT) as its lowest, so that no record is
// refused and takes its batch with it.
func (s *Store) logArgs(r logging.Record) []any {
	return []any{s.timeValue(r.Time), int(max(min(r.Level, slog.LevelError), math.MinInt16)), clip(r.Message, maxLogMessage), clip(r.Function, 64),
		clip(r.Instance, 255), clip(r.Operation, 64), clip(r.Username, 255), clip(r.TraceID, 32),
		clip(r.SpanID, 16), attrsText(r.Attrs)}
}

// AppendLogs inserts records. SQLite takes them in one transaction through
// one prepared single-row statement (cheap in process); MySQL a thousand rows
// per statement (one round trip each).
func (s *Store) AppendLogs(ctx context.Context, records []logging.Record) error {
	if len(records) == 0 {
		return nil
	}
	if s.dialect == DialectSQLite {
		return s.appendLogsInTx(ctx, records)
	}
	for start := 0; start < len(records); start += logChunk {
		chunk := records[start:min(start+logChunk, len(records))]
		rows := make([][]any, len(chunk))
		for i, r := range chunk {
			rows[i] = s.logArgs(r)
		}
		q, args, err := s.gq.Insert(logTable).Prepared(true).Cols(logInsertColumns...).Vals(rows...).ToSQL()
		if err != nil {
			return fmt.Errorf("append %d log records: build query: %w", len(chunk), err)
		}
		if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("append %d log records: %w", len(chunk), s.classify(err))
		}
	}
	return nil
}

func (s *Store) appendLogsInTx(ctx context.Context, records []logging.Record) error {
	placeholders := make(goqu.Vals, len(logInsertColumns))
	q, _, err := s.gq.Insert(logTable).Prepared(true).Cols(logInsertColumns...).Vals(placeholders).ToSQL()
	if err != nil {
		return fmt.Errorf("append %d log records: build query: %w", len(records), err)
	}
	st, err := s.stmt(ctx, q)
	if err != nil {
		return fmt.Errorf("append %d log records: %w", len(records), err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append %d log records: %w", len(records), err)
	}
	defer tx.Rollback()
	insert := tx.StmtContext(ctx, st)
	for _, r := range records {
		if _, err := insert.ExecContext(ctx, s.logArgs(r)...); err != nil {
			return fmt.Errorf("append %d log records: %w", len(records), s.classify(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append %d log records: %w", len(records), err)
	}
	return nil
}

// QueryLogs returns the records matching q, oldest first: the newest
// q.Limit of them by time, or, when q.After or q.Ascending is set, the
// first q.Limit after that id in id order, so a follower pages through
// every new record; with q.IDs, those records in id order.
func (s *Store) QueryLogs(ctx context.Context, q logging.Query) ([]logging.Record, error) {
	ds, ascending := s.logsQuery(q)
	query, args, err := ds.ToSQL()
	if err != nil {
		return nil, fmt.Errorf("query logs: build query: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query logs: %w", s.classify(err))
	}
	defer rows.Close()
	out := []logging.Record{}
	for rows.Next() {
		r, err := scanLog(rows)
		if err != nil {
			return nil, fmt.Errorf("query logs: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query logs: %w", err)
	}
	if !ascending {
		slices.Reverse(out)
	}
	return out, nil
}

// LogIDs returns the ids of the records QueryLogs(q) returns, in the same
// order, most often from an index alone (the id ends every index): a
// reader learns which records an answer holds before it reads them.
func (s *Store) LogIDs(ctx context.Context, q logging.Query) ([]int64, error) {
	ds, ascending := s.logsQuery(q)
	query, args, err := ds.Select("id").ToSQL()
	if err != nil {
		return nil, fmt.Errorf("query log ids: build query: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query log ids: %w", err)
	}
	defer rows.Close()
	ids := []int64{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("query log ids: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query log ids: %w", err)
	}
	if !ascending {
		slices.Reverse(ids)
	}
	return ids, nil
}

// logsQuery is QueryLogs's query, and whether it reads in id order.
func (s *Store) logsQuery(q logging.Query) (*goqu.SelectDataset, bool) {
	limit := q.Limit
	if limit <= 0 {
		limit = 1000
	}
	var where []exp.Expression
	if len(q.IDs) > 0 {
		where = append(where, goqu.C("id").In(q.IDs))
		limit = len(q.IDs)
	}
	switch {
	case q.Level == nil:
	case q.Level.Level() >= slog.LevelError:
		// Levels are stored up to ERROR (logArgs), so at least ERROR is
		// exactly ERROR: one value of the (level, time) index, which then
		// gives the order, however many such records there are.
		where = append(where, goqu.C("level").Eq(int(slog.LevelError)))
	default:
		where = append(where, goqu.C("level").Gte(int(q.Level.Level())))
	}
	for col, v := range map[string]string{"username": q.Username, "operation_id": q.Operation, "function": q.Function} {
		if v != "" {
			where = append(where, goqu.C(col).Eq(v))
		}
	}
	if !q.Since.IsZero() {
		where = append(where, goqu.C("time").Gte(s.timeValue(clampTime(q.Since))))
	}
	ds := s.gq.From(logTable).Prepared(true).Select(logColumns...).Where(where...).Limit(uint(limit))
	ascending := q.After > 0 || q.Ascending || len(q.IDs) > 0
	if ascending {
		ds = ds.Where(goqu.C("id").Gt(q.After)).Order(goqu.C("id").Asc())
	} else {
		ds = ds.Order(goqu.C("time").Desc(), goqu.C("id").Desc())
	}
	return ds, ascending
}

// LastLogID returns the highest log id, 0 when there is none.
func (s *Store) LastLogID(ctx context.Context) (int64, error) {
	q, args, err := s.gq.From(logTable).Prepared(true).Select(goqu.COALESCE(goqu.MAX("id"), 0)).ToSQL()
	if err != nil {
		return 0, fmt.Errorf("last log id: build query: %w", err)
	}
	var id int64
	if err := s.db.QueryRowContext(ctx, q, args...).Scan(&id); err != nil {
		return 0, fmt.Errorf("last log id: %w", err)
	}
	return id, nil
}

// PruneLogs deletes records older than before, a few hundred ids at a
// time, resting after each chunk nine times as long as it took: no
// statement holds locks for long, and the database keeps most of its time
// for staging (at 50 million records, deleting 10,000 ids per statement
// without rest made staging's p99 41 times what it was).
func (s *Store) PruneLogs(ctx context.Context, before time.Time) (int64, error) {
	old := goqu.C("time").Lt(s.timeValue(before))
	// From the first id to that of the newest old record: two index
	// dives, not a scan of the old records. An old record with a later id
	// (a late batch) is left for the next pruning.
	first, _, err := s.gq.From(logTable).Select(goqu.MIN("id")).ToSQL()
	if err != nil {
		return 0, fmt.Errorf("prune logs: build query: %w", err)
	}
	last, args, err := s.gq.From(logTable).Prepared(true).Select("id").Where(old).
		Order(goqu.C("time").Desc(), goqu.C("id").Desc()).Limit(1).ToSQL()
	if err != nil {
		return 0, fmt.Errorf("prune logs: build query: %w", err)
	}
	var lo, hi sql.NullInt64
	if err := s.db.QueryRowContext(ctx, first).Scan(&lo); err != nil {
		return 0, fmt.Errorf("prune logs: %w", err)
	}
	if err := s.db.QueryRowContext(ctx, last, args...).Scan(&hi); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("prune logs: %w", err)
	}
	lo.Valid = lo.Valid && hi.Valid
	var total int64
	for start := lo.Int64; lo.Valid && start <= hi.Int64; start += pruneChunk {
		q, args, err := s.gq.Delete(logTable).Prepared(true).Where(old,
			goqu.C("id").Gte(start), goqu.C("id").Lt(start+pruneChunk)).ToSQL()
		if err != nil {
			return total, fmt.Errorf("prune logs: build query: %w", err)
		}
		began := time.Now()
		n, err := s.exec(ctx, q, args)
		if err != nil {
			return total, fmt.Errorf("prune logs: %w", err)
		}
		total += n
		if start+pruneChunk <= hi.Int64 {
			select {
			case <-ctx.Done():
				return total, fmt.Errorf("prune logs: %w", ctx.Err())
			case <-time.After(prunePause * time.Since(began)):
			}
		}
	}
	return total, nil
}

func scanLog(row scanner) (logging.Record, error) {
	var (
		r     logging.Record
		t     dbTime
		level int
		attrs string
	)
	if err := row.Scan(&r.ID, &t, &level, &r.Message, &r.Function, &r.Instance,
		&r.Operation, &r.Username, &r.TraceID, &r.SpanID, &attrs); err != nil {
		return r, err
	}
	r.Time, r.Level = t.Time, slog.Level(level)
	if err := json.Unmarshal([]byte(attrs), &r.Attrs); err != nil {
		r.Attrs = logging.Attrs{{Key: "attributes", Value: attrs}}
	}
	return r, nil
}

// attrsText is attrs as a JSON object, or a note with its beginning when it
// is too long to keep.
func attrsText(attrs logging.Attrs) string {
	b, err := json.Marshal(attrs)
	if err != nil {
		b, _ = json.Marshal(logging.Attrs{{Key: "attributes_error", Value: err.Error()}})
	}
	if len(b) > maxLogAttrs {
		b, _ = json.Marshal(logging.Attrs{{Key: "attributes_truncated", Value: clip(string(b), maxLogAttrs/2)}})
	}
	return string(b)
}

// clip makes s valid UTF-8 (MySQL refuses anything else) of at most n bytes.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
