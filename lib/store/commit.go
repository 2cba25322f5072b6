package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Group commit for the embedded SQLite. Its one connection made every
// write a transaction of its own: file locks (fcntl) and WAL frames for
// each statement, about sixty system calls for a staging's Create and
// Finish. Writes now queue to one goroutine that runs whatever is waiting
// in one transaction (at most maxGroup statements), each statement's
// result its own: a statement refused (a taken unique key) is undone
// alone, as in autocommit, and the others commit. A caller's write is
// answered once its transaction committed, as before.

// maxGroup bounds the statements of one transaction.
const maxGroup = 128

// errStoreClosed answers writes after Close.
var errStoreClosed = errors.New("store closed")

type write struct {
	ctx  context.Context
	q    string
	args []any
	done chan writeResult
}

type writeResult struct {
	n   int64
	err error
}

type committer struct {
	s      *Store
	queue  chan *write
	stop   chan struct{}
	closed chan struct{}
	once   sync.Once
}

func newCommitter(s *Store) *committer {
	c := &committer{s: s, queue: make(chan *write, maxGroup), stop: make(chan struct{}), closed: make(chan struct{})}
	go c.run()
	return c
}

// exec runs q in the next group and returns the rows it matched.
func (c *committer) exec(ctx context.Context, q string, args []any) (int64, error) {
	w := &write{ctx: ctx, q: q, args: args, done: make(chan writeResult, 1)}
	select {
	case c.queue <- w:
	case <-c.stop:
		return 0, errStoreClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	// Answered even after ctx ends: the write may have been committed. A
	// write queued as the store closed (select picks at random among
	// ready cases) after run drained the queue is never taken: run's end
	// answers it.
	select {
	case r := <-w.done:
		return r.n, r.err
	case <-c.closed:
		select {
		case r := <-w.done:
			return r.n, r.err
		default:
			return 0, errStoreClosed
		}
	}
}

// close stops the committer once the writes queued are done.
func (c *committer) close() {
	c.once.Do(func() { close(c.stop) })
	<-c.closed
}

func (c *committer) run() {
	defer close(c.closed)
	for {
		var first *write
		select {
		case first = <-c.queue:
		case <-c.stop:
			for {
				select {
				case w := <-c.queue:
					w.done <- writeResult{err: errStoreClosed}
				default:
					return
				}
			}
		}
		group := []*write{first}
		for len(group) < maxGroup {
			select {
			case w := <-c.queue:
				group = append(group, w)
				continue
			default:
			}
			break
		}
		c.commit(group)
	}
}

// commit runs group in one transaction and answers each write.
func (c *committer) commit(group []*write) {
	results := make([]writeResult, len(group))
	var err error
	answer := func(err error) {
		for i, w := range group {
			if err != nil && results[i].err == nil {
				results[i] = writeResult{err: err}
			}
			w.done <- results[i]
		}
	}
	ctx := context.WithoutCancel(group[0].ctx)
	// Statements are prepared first: the one connection is the
	// transaction's once it begins.
	stmts := make([]*sql.Stmt, len(group))
	for i, w := range group {
		if stmts[i], err = c.s.stmt(ctx, w.q); err != nil {
			results[i].err = err
		}
	}
	tx, err := c.s.db.BeginTx(ctx, nil)
	if err != nil {
		answer(err)
		return
	}
	for i, w := range group {
		if results[i].err != nil {
			continue // not prepared
		}
		if err := w.ctx.Err(); err != nil {
			results[i].err = err // given up before it ran: not written
			continue
		}
		n, err := execIn(ctx, tx, stmts[i], w.args)
		if err != nil && !isConstraint(err) {
			// Anything but a refused statement may have ended the
			// transaction: nothing of the group is written.
			tx.Rollback()
			answer(fmt.Errorf("group of %d writes: %w", len(group), err))
			return
		}
		results[i] = writeResult{n: n, err: err}
	}
	if err := tx.Commit(); err != nil {
		for i := range results {
			results[i] = writeResult{}
		}
		answer(fmt.Errorf("commit a group of %d writes: %w", len(group), err))
		return
	}
	answer(nil)
}

func execIn(ctx context.Context, tx *sql.Tx, st *sql.Stmt, args []any) (int64, error) {
	res, err := tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// isConstraint reports a statement SQLite refused for a constraint: it is
// undone alone and the transaction goes on.
func isConstraint(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}
