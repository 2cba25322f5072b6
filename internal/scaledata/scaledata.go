// Package scaledata fills a MySQL/MariaDB store with what a site holds after
// years: millions of operation records over many users and tens of millions
// of log records, with realistic distributions (a few users do most of the
// staging, most operations succeed, errors are rare, requests wait for
// Rucio). Rows are generated as they are streamed to the server with
// LOAD DATA LOCAL INFILE, into tables whose secondary indexes are dropped
// first and rebuilt afterwards from their own definitions (sorted index
// builds), so the schema ends as the migrations made it.
package scaledata

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Spec says what to generate.
type Spec struct {
	Operations int           // operation records
	Logs       int           // log records
	Users      int           // distinct users
	Waiting    int           // of the operations, requests waiting for a DID's replica
	Span       time.Duration // operations are created over this long before Now
	LogSpan    time.Duration // log records are written over this long before Now
	Now        time.Time
	Seed       uint64
}

// Full is the store of issue 15: 10 million operations over 100,000 users,
// 50 million log records over a week and two hours (a week is
// LOG_RETENTION's default: pruning finds two hours of records), 10,000
// requests waiting for Rucio.
func Full(now time.Time) Spec {
	return Spec{Operations: 10_000_000, Logs: 50_000_000, Users: 100_000, Waiting: 10_000,
		Span: 3 * 365 * 24 * time.Hour, LogSpan: 170 * time.Hour, Now: now, Seed: 15}
}

// Scaled is s with every count multiplied by f (users and waiting requests
// at least 10).
func (s Spec) Scaled(f float64) Spec {
	s.Operations = int(float64(s.Operations) * f)
	s.Logs = int(float64(s.Logs) * f)
	s.Users = max(10, int(float64(s.Users)*f))
	s.Waiting = max(10, int(float64(s.Waiting)*f))
	return s
}

// User is the name of user i (0 is the most active).
func User(i int) string { return fmt.Sprintf("user%06d", i) }

// HeavyUser is the most active user; MedianUser one with a few dozen
// operations.
func (s Spec) HeavyUser() string { return User(0) }

// WaitingDID is the DID the i-th waiting request waits for.
func WaitingDID(i int) string { return fmt.Sprintf("user.%s:obs-%07d.ms", User(i%97), i) }

// Progress hears what the loader is doing.
type Progress func(format string, args ...any)

// Load fills the operations and logs tables of db (migrated and empty)
// per spec, reporting progress. db must allow LOAD DATA LOCAL INFILE
// (the server's local_infile on).
func Load(ctx context.Context, db *sql.DB, spec Spec, progress Progress) error {
	for _, table := range []string{"operations", "logs"} {
		indexes, err := secondaryIndexes(ctx, db, table)
		if err != nil {
			return err
		}
		for _, ix := range indexes {
			if _, err := db.ExecContext(ctx, "ALTER TABLE `"+table+"` DROP INDEX `"+ix.name+"`"); err != nil {
				return fmt.Errorf("drop index %s: %w", ix.name, err)
			}
		}
		n := spec.Operations
		gen := spec.operations
		if table == "logs" {
			n, gen = spec.Logs, spec.logs
		}
		start := time.Now()
		if err := loadTable(ctx, db, table, n, gen, progress); err != nil {
			return err
		}
		progress("%s: %d rows loaded in %s (%.0f rows/s)", table, n, time.Since(start).Round(time.Second),
			float64(n)/time.Since(start).Seconds())
		if len(indexes) > 0 {
			start = time.Now()
			var adds []string
			for _, ix := range indexes {
				adds = append(adds, ix.add())
			}
			progress("%s: building %d indexes", table, len(indexes))
			if _, err := db.ExecContext(ctx, "ALTER TABLE `"+table+"` "+strings.Join(adds, ", ")); err != nil {
				return fmt.Errorf("rebuild the indexes of %s: %w", table, err)
			}
			progress("%s: indexes built in %s", table, time.Since(start).Round(time.Second))
		}
		if _, err := db.ExecContext(ctx, "ANALYZE TABLE `"+table+"`"); err != nil {
			return fmt.Errorf("analyze %s: %w", table, err)
		}
	}
	return nil
}

type index struct {
	name    string
	unique  bool
	columns []string // with their prefix length, if any
}

func (ix index) add() string {
	kind := "INDEX"
	if ix.unique {
		kind = "UNIQUE INDEX"
	}
	return fmt.Sprintf("ADD %s `%s` (%s)", kind, ix.name, strings.Join(ix.columns, ", "))
}

// secondaryIndexes reads the definitions of table's indexes but its primary key.
func secondaryIndexes(ctx context.Context, db *sql.DB, table string) ([]index, error) {
	rows, err := db.QueryContext(ctx, `SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME <> 'PRIMARY' ORDER BY INDEX_NAME, SEQ_IN_INDEX`, table)
	if err != nil {
		return nil, fmt.Errorf("indexes of %s: %w", table, err)
	}
	defer rows.Close()
	var out []index
	for rows.Next() {
		var name, column string
		var nonUnique int
		var sub sql.NullInt64
		if err := rows.Scan(&name, &nonUnique, &column, &sub); err != nil {
			return nil, err
		}
		col := "`" + column + "`"
		if sub.Valid {
			col += "(" + strconv.FormatInt(sub.Int64, 10) + ")"
		}
		if len(out) == 0 || out[len(out)-1].name != name {
			out = append(out, index{name: name, unique: nonUnique == 0})
		}
		out[len(out)-1].columns = append(out[len(out)-1].columns, col)
	}
	return out, rows.Err()
}

// generator writes row i of a table as one tab-separated line.
type generator func(w *bufio.Writer, i int, r *rand.Rand)

var handlerSeq atomic.Int64

// loadTable streams n generated rows into table with LOAD DATA LOCAL INFILE,
// in chunks of a million rows (one statement each).
func loadTable(ctx context.Context, db *sql.DB, table string, n int, gen generator, progress Progress) error {
	const chunk = 1_000_000
	columns := opColumns
	if table == "logs" {
		columns = logColumns
	}
	start := time.Now()
	for from := 0; from < n; from += chunk {
		to := min(from+chunk, n)
		name := fmt.Sprintf("scale-%s-%d", table, handlerSeq.Add(1))
		mysql.RegisterReaderHandler(name, func() io.Reader {
			pr, pw := io.Pipe()
			go func() {
				w := bufio.NewWriterSize(pw, 1<<20)
				for i := from; i < to; i++ {
					gen(w, i, rand.New(rand.NewPCG(uint64(i), 0x5ca1e)))
				}
				pw.CloseWithError(w.Flush())
			}()
			return pr
		})
		_, err := db.ExecContext(ctx, "LOAD DATA LOCAL INFILE 'Reader::"+name+"' INTO TABLE `"+table+"` CHARACTER SET utf8mb4 ("+columns+")")
		mysql.DeregisterReaderHandler(name)
		if err != nil {
			return fmt.Errorf("load %s rows %d to %d: %w", table, from, to, err)
		}
		el := time.Since(start)
		progress("%s: %d of %d rows (%.0f%%), %.0f rows/s, %s left", table, to, n, 100*float64(to)/float64(n),
			float64(to)/el.Seconds(), (time.Duration(float64(el) * float64(n-to) / float64(to))).Round(time.Second))
	}
	return nil
}

const (
	opColumns  = "id, method, username, local_path_on_storage, relative_path, status, message, error_reason, bytes, bytes_done, created_at, updated_at, finished_at, event_key, target_lock, did, lease_owner, error_kind"
	logColumns = "`time`, `level`, `message`, `function`, `instance`, `operation_id`, `username`, `trace_id`, `span_id`, `attributes`"
)

// userOf draws a user: a Zipf distribution, so the first users stage far
// more than most.
func (s Spec) userOf(r *rand.Rand) int {
	// Inverse of a continuous Zipf-like (power law) CDF, exponent ~1.1.
	u := r.Float64()
	x := math.Pow(float64(s.Users)+1, u) - 1
	return min(int(x), s.Users-1)
}

// opTime is when operation i was created: evenly over Span, in order.
func (s Spec) opTime(i int) time.Time {
	step := s.Span / time.Duration(max(s.Operations, 1))
	return s.Now.Add(-s.Span + time.Duration(i)*step).UTC().Truncate(time.Microsecond)
}

// uuid7 is a UUIDv7 for t with random bits from r.
func uuid7(t time.Time, r *rand.Rand) string {
	var b [16]byte
	ms := uint64(t.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	binary.BigEndian.PutUint64(b[8:], r.Uint64())
	rnd := r.Uint32()
	b[6], b[7] = 0x70|byte(rnd>>8)&0x0f, byte(rnd)
	b[8] = 0x80 | b[8]&0x3f
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

const mysqlTime = "2006-01-02 15:04:05.000000"

var (
	methods = []string{"local_copy", "local_copy", "local_copy", "local_copy", "local_copy", "local_copy",
		"local_symlink", "local_symlink", "direct_download", "jupyter_copy"}
	failures = []struct{ kind, reason string }{
		{"rejected", "Source path does not exist: %s"},
		{"forbidden", "Path leads outside the storage: %s"},
		{"conflict", "A different file is already at %s"},
		{"unavailable", "Interrupted: the function stopped before the staging finished"},
		{"insufficient_storage", "No space left in the user area"},
	}
)

// tsv escapes s for LOAD DATA's default format.
func tsv(w *bufio.Writer, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\t':
			w.WriteString(`\t`)
		case '\n':
			w.WriteString(`\n`)
		case '\\':
			w.WriteString(`\\`)
		default:
			w.WriteByte(c)
		}
	}
}

// operations writes operation i: the last Waiting ones are requests waiting
// for their DID's replica, a handful running, the rest finished, most of
// them successfully.
func (s Spec) operations(w *bufio.Writer, i int, r *rand.Rand) {
	created := s.opTime(i)
	id := uuid7(created, r)
	user := User(s.userOf(r))
	method := methods[r.IntN(len(methods))]
	obs := fmt.Sprintf("obs-%07d", r.IntN(2_000_000))
	source := fmt.Sprintf("rse/skao/%02x/%02x/%s/vis-%03d.ms", r.IntN(256), r.IntN(256), obs, r.IntN(1000))
	target := fmt.Sprintf("projects/p%03d/%s", r.IntN(300), obs)
	if method == "direct_download" {
		target = ""
	}
	size := int64(math.Exp(r.NormFloat64()*2.5 + 16)) // median ~9 MB, some of terabytes
	status, message, reason, kind, did, lease := "success", "", "", "", "", user+"-host/1/0a0b0c"
	finished := created.Add(time.Duration(r.IntN(60_000)) * time.Millisecond)
	updated := finished
	done := size
	waiting := i >= s.Operations-s.Waiting
	switch {
	case waiting:
		status, source, did, lease, done = "pending", "", WaitingDID(s.Operations-1-i), "", 0
	case i >= s.Operations-s.Waiting-5:
		status, done = "running", size/2
		updated = s.Now
	case r.IntN(100) < 6:
		f := failures[r.IntN(len(failures))]
		status, kind, done = "failed", f.kind, 0
		reason = f.reason
		if strings.Contains(reason, "%s") {
			reason = fmt.Sprintf(reason, source)
		}
	default:
		message = "Data staged for user " + user + " with method " + method
	}
	eventKey := `\N`
	if r.IntN(10) < 3 {
		sum := sha256.Sum256([]byte(id))
		eventKey = hex.EncodeToString(sum[:])
	}
	tsv(w, id)
	for _, v := range []string{method, user, source, target, status, message, reason} {
		w.WriteByte('\t')
		tsv(w, v)
	}
	fmt.Fprintf(w, "\t%d\t%d\t%s\t%s\t", size, done, created.Format(mysqlTime), updated.Format(mysqlTime))
	if status == "pending" || status == "running" {
		w.WriteString(`\N`)
	} else {
		w.WriteString(finished.Format(mysqlTime))
	}
	w.WriteString("\t" + eventKey + "\t")
	if status == "running" {
		sum := sha256.Sum256([]byte(user + "/" + target + id))
		w.WriteString(hex.EncodeToString(sum[:]))
	} else {
		w.WriteString(`\N`)
	}
	w.WriteByte('\t')
	tsv(w, did)
	w.WriteByte('\t')
	if lease == "" {
		w.WriteString(`\N`)
	} else {
		tsv(w, lease)
	}
	w.WriteByte('\t')
	tsv(w, kind)
	w.WriteByte('\n')
}

// Levels and functions of log records, by share: ERROR records and the
// logs function's own are rare, as the viewer's filters find them.
func logLevel(r *rand.Rand) int {
	switch x := r.IntN(10_000); {
	case x < 10:
		return 8 // ERROR, 0.1%
	case x < 500:
		return 4 // WARNING
	case x < 3500:
		return -4 // DEBUG
	}
	return 0 // INFO
}

func logFunction(r *rand.Rand) string {
	switch x := r.IntN(10_000); {
	case x < 1:
		return "logs" // 0.01%
	case x < 1000:
		return "jupyter"
	}
	return "stage"
}

var logMessages = map[int][]string{
	-4: {"request", "lease refreshed", "store query"},
	0:  {"staging finished", "staging refused", "staging waits for replica", "pruned log records"},
	4:  {"staging failed", "record progress", "follow logs"},
	8:  {"internal error", "outcome never recorded", "record refusal"},
}

// logs writes log record i: evenly over LogSpan, in time order.
func (s Spec) logs(w *bufio.Writer, i int, r *rand.Rand) {
	step := s.LogSpan / time.Duration(max(s.Logs, 1))
	t := s.Now.Add(-s.LogSpan + time.Duration(i)*step).UTC()
	level := logLevel(r)
	msgs := logMessages[level]
	msg := msgs[r.IntN(len(msgs))]
	fn := logFunction(r)
	user, op := "", ""
	if r.IntN(10) < 8 {
		user = User(s.userOf(r))
	}
	if r.IntN(10) < 7 {
		op = uuid7(t.Add(-time.Duration(r.IntN(60_000))*time.Millisecond), r)
	}
	var trace, span [16]byte
	binary.BigEndian.PutUint64(trace[:], r.Uint64())
	binary.BigEndian.PutUint64(trace[8:], r.Uint64())
	binary.BigEndian.PutUint64(span[:], r.Uint64())
	attrs := fmt.Sprintf(`{"method":"local_copy","local_path_on_storage":"rse/skao/%02x/obs-%07d/vis.ms","relative_path":"projects/p%03d/obs","status":"success","bytes":%d,"duration_ms":%d,"error_reason":""}`,
		r.IntN(256), r.IntN(2_000_000), r.IntN(300), r.IntN(1<<30), r.IntN(5000))
	if msg == "request" || msg == "lease refreshed" || msg == "store query" {
		attrs = fmt.Sprintf(`{"path":"/stage_data","status":200,"ms":%d}`, r.IntN(200))
	}
	fmt.Fprintf(w, "%s\t%d\t%s\t%s\tstage-7d9f8c-%05d/%d\t%s\t%s\t%s\t%s\t",
		t.Format(mysqlTime), level, msg, fn, r.IntN(20), 1+r.IntN(5), op, user,
		hex.EncodeToString(trace[:]), hex.EncodeToString(span[:8]))
	tsv(w, attrs)
	w.WriteByte('\n')
}
