package staging

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/codes"
)

// An operation runs under its replica's lease: while it runs the replica
// refreshes the record's heartbeat every fifth of OPERATION_LEASE, and only
// the replica holding it may record progress and the outcome. A record
// without a heartbeat for a lease is taken for dead by any replica: what it
// left is cleaned up and it is failed as interrupted. A replica that finds
// its lease lost stops, and says so, rather than write over the record.
//
// While the store is away nobody's heartbeat gets through, so for a lease
// after a replica last saw the store fail it takes nobody for dead: the
// holders that are alive refresh their records, or record their outcomes,
// first. A replica cut off from the store alone is taken for dead by the
// others all the same; so a run shows its output under the user's name
// only while its last heartbeat is recent (Job.Confirm), and the others
// fail an operation before they remove what it left.

func (s *Service) lease() time.Duration {
	if s.Lease > 0 {
		return s.Lease
	}
	return 15 * time.Second
}

// storeFailed notes that the store failed just now.
func (s *Service) storeFailed() { s.storeFailure.Store(time.Now().UnixNano()) }

// quiet reports whether the store failed less than a lease ago.
func (s *Service) quiet() bool {
	last := s.storeFailure.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < s.lease()
}

func (s *Service) handoffTimeout() time.Duration {
	if s.HandoffTimeout > 0 {
		return s.HandoffTimeout
	}
	return 15 * time.Minute
}

// instance is the name this replica holds leases under.
func (s *Service) instance() string {
	s.once.Do(func() {
		if s.Instance == "" {
			host, _ := os.Hostname()
			b := make([]byte, 6)
			rand.Read(b)
			s.Instance = fmt.Sprintf("%.40s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
		}
	})
	return s.Instance
}

// run is an operation running under this replica's lease.
type run struct {
	s       *Service
	op      *Operation
	req     *Request
	job     *Job
	start   time.Time
	ctx     context.Context // of the request: its trace, for the final log record and metrics
	cancel  context.CancelFunc
	stopped chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	lost    atomic.Bool  // the lease was found lost
	beat    atomic.Int64 // when the last heartbeat that got through was written (Unix ns)
	slot    *slot        // of the work in flight, let go when the run stops
}

// run carries out plan for op, which this replica holds, in sl, which it
// takes over. A download's outcome keeps the lease and the slot until the
// door has streamed it (Outcome.Done).
func (s *Service) run(ctx context.Context, m Method, op *Operation, req *Request, plan *Plan, start time.Time, sl *slot) (*Outcome, error) {
	runCtx, cancel := context.WithCancel(ctx)
	r := &run{s: s, op: op, req: req, job: &Job{Operation: op, Request: req}, start: start, ctx: ctx,
		cancel: cancel, stopped: make(chan struct{}), slot: sl.pass()}
	r.beat.Store(op.UpdatedAt.UnixNano()) // recorded running just now
	r.job.confirm = r.confirm
	r.heartbeat()
	running(ctx, m.Name())
	spanCtx, span := tracer.Start(runCtx, "run "+req.Method)
	res, err := plan.Run(spanCtx, r.job)
	if err != nil {
		_, detail := KindOf(err)
		span.SetStatus(codes.Error, detail)
	}
	span.End()
	if err == nil && res.Download != nil {
		return &Outcome{Operation: op, Download: res.Download, run: r}, nil
	}
	return r.finish(res, err)
}

// heartbeat refreshes the lease and records progress until the run stops.
// A lost lease cancels the run: someone else now owns the operation.
func (r *run) heartbeat() {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(r.s.lease() / 5)
		defer t.Stop()
		for {
			select {
			case <-r.stopped:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), r.s.lease()/5)
			err := r.refresh(ctx)
			cancel()
			if errors.Is(err, ErrLeaseLost) {
				r.s.logger().ErrorContext(r.ctx, "lease lost: the operation was taken over; stopping", "operation", r.op.ID)
				r.cancel()
				return
			}
			if err != nil {
				r.s.logger().WarnContext(r.ctx, "record progress", "operation", r.op.ID, "error", err)
			}
		}
	}()
}

// refresh records progress, which renews the lease, and notes when.
func (r *run) refresh(ctx context.Context) error {
	now := time.Now().UTC()
	total, done := r.job.Counts()
	err := r.s.Store.Progress(ctx, r.op.ID, r.s.instance(), total, done, now)
	switch {
	case err == nil:
		r.beat.Store(now.UnixNano())
	case errors.Is(err, ErrLeaseLost):
		r.lost.Store(true)
	default:
		r.s.storeFailed()
	}
	return err
}

// confirm is Job.Confirm for this run. Nobody takes the operation for dead
// until a lease after its last heartbeat; within half of that, showing the
// output is safe without asking the store. Later, the lease is renewed
// first, waiting while the store is away.
func (r *run) confirm(ctx context.Context) error {
	wait := 10 * time.Millisecond
	for time.Since(time.Unix(0, r.beat.Load())) >= r.s.lease()/2 {
		pctx, cancel := context.WithTimeout(ctx, r.s.lease()/5)
		err := r.refresh(pctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrLeaseLost):
			return Errorf(Unavailable, "Operation %s was taken over before it finished", r.op.ID)
		}
		select {
		case <-ctx.Done():
			return Wrap(Unavailable, "Staging was cancelled", ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, r.s.lease()/5)
	}
	return nil
}

// stop ends the heartbeat and the run's context.
func (r *run) stop() {
	r.once.Do(func() { close(r.stopped) })
	r.wg.Wait()
	r.cancel()
}

// Add records n more bytes sent by the door while it streams a download.
func (o *Outcome) Add(n int64) {
	if o.run != nil {
		o.run.job.Add(n)
	}
}

// Done finishes a download's operation once the door has streamed it (and
// closed its file): sent bytes, and err when the stream broke off (a
// staging *Error when the door refused it). Its slot of the work in
// flight is given back.
func (o *Outcome) Done(sent int64, err error) error {
	r := o.run
	if r == nil {
		return nil
	}
	o.run = nil
	r.job.done.Store(sent)
	if o.Download.Size >= 0 {
		r.job.total.Store(o.Download.Size)
	} else if err == nil {
		r.job.total.Store(sent)
	}
	var known *Error
	if err != nil && !errors.As(err, &known) {
		err = Wrap(Canceled, "Download interrupted", err)
	}
	_, ferr := r.finish(&Result{Message: "Data downloaded by user " + r.op.Username}, err)
	return ferr
}

// finish records the outcome of the run, conditionally: only while this
// replica still holds the operation. A store failure is retried, then
// left to finish in the background: the work is done and its record must
// say so.
func (r *run) finish(res *Result, runErr error) (*Outcome, error) {
	r.stop()
	// The work is over, its files closed: only its record is left to write.
	r.slot.release()
	s, op, ctx := r.s, r.op, r.ctx
	now := time.Now().UTC()
	op.FinishedAt, op.UpdatedAt = &now, now
	op.Bytes, op.BytesDone = r.job.Counts()
	if op.LocalPathOnStorage == "" {
		op.LocalPathOnStorage = r.req.Source
	}
	if runErr != nil {
		s.logCause(ctx, op.ID, runErr)
		op.Status = StatusFailed
		kind, detail := KindOf(runErr)
		op.ErrorKind, op.ErrorReason = kind, truncate(detail)
	} else {
		op.Status, op.Message = StatusSuccess, truncate(res.Message)
		if res.Bytes > 0 {
			op.Bytes, op.BytesDone = res.Bytes, res.Bytes
		}
	}
	err := s.record(ctx, op)
	if errors.Is(err, ErrRefused) {
		// Not an outage: the same outcome would be refused again. Its
		// texts are what a run makes up (the request's values were stored
		// when it began), so the outcome is recorded without them.
		s.logger().ErrorContext(ctx, "outcome refused by the database: recorded without its texts",
			"operation", op.ID, "status", op.Status, "error", err)
		op.Message, op.ErrorReason = "", ""
		if op.Status == StatusFailed {
			op.ErrorReason = refusedReason
		}
		err = s.record(ctx, op)
	}
	took := time.Since(r.start)
	s.logger().InfoContext(ctx, "staging finished", "operation", op.ID, "method", op.Method, "username", op.Username,
		"local_path_on_storage", op.LocalPathOnStorage, "relative_path", op.RelativePath,
		"status", op.Status, "bytes", op.Bytes, "duration_ms", took.Milliseconds(),
		"error_reason", op.ErrorReason)
	stopped(ctx, op.Method)
	recordOutcome(ctx, op.Method, string(op.Status), op.Bytes, took)
	switch {
	case errors.Is(err, ErrLeaseLost) || (err == nil && r.lost.Load()):
		s.logger().ErrorContext(ctx, "outcome not recorded: the operation was taken over before it finished",
			"operation", op.ID, "status", op.Status)
		current, gerr := s.Store.Get(context.WithoutCancel(ctx), op.ID)
		if gerr == nil {
			op = current
		}
		return &Outcome{Operation: op}, Errorf(Unavailable,
			"Operation %s was taken over before it finished: its record stands as %s; try again", op.ID, op.Status)
	case errors.Is(err, ErrRefused):
		return &Outcome{Operation: op}, Wrap(Internal, "The outcome could not be recorded: the database refused it", err)
	case err != nil:
		s.finishLater(*op)
		return &Outcome{Operation: op}, StoreFailure(fmt.Errorf("record outcome of %s: %w", op.ID, err))
	case runErr != nil:
		return &Outcome{Operation: op}, runErr
	}
	return &Outcome{Operation: op}, nil
}

// record writes op's outcome, retrying a failing store briefly.
func (s *Service) record(ctx context.Context, op *Operation) error {
	var err error
	for attempt := range 5 {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		err = s.Store.Finish(fctx, op, s.instance())
		cancel()
		if err == nil || errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrRefused) {
			return err // a refused value is refused again: no outage to wait out
		}
		s.storeFailed()
		// Never longer apart than a heartbeat: once the store is back, the
		// outcome is recorded before anyone takes the operation for dead.
		time.Sleep(min(time.Duration(attempt+1)*50*time.Millisecond, s.lease()/5))
	}
	return err
}

// finishLater keeps trying, in the background, to record an outcome the
// store could not take, for 10 minutes or until Shutdown's deadline. Once
// the database is back the record says what happened, rather than being
// swept as interrupted.
func (s *Service) finishLater(op Operation) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		// Often enough to record it within a lease of the store's return,
		// before anyone takes the operation for dead.
		most := min(5*time.Second, s.lease()/5)
		for wait, deadline := min(100*time.Millisecond, most), time.Now().Add(10*time.Minute); time.Now().Before(deadline); wait = min(wait*2, most) {
			time.Sleep(wait)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := s.Store.Finish(ctx, &op, s.instance())
			cancel()
			switch {
			case err == nil:
				s.logger().Info("outcome recorded after the store came back", "operation", op.ID, "status", op.Status)
				return
			case errors.Is(err, ErrLeaseLost):
				s.logger().Error("outcome not recorded: the operation was taken over meanwhile", "operation", op.ID, "status", op.Status)
				return
			}
		}
		s.logger().Error("outcome never recorded", "operation", op.ID, "status", op.Status)
	}()
}

const (
	refusedReason = "The reason of the failure could not be recorded (the database refused it): the service's log has it"
	interrupted   = "Interrupted: the function stopped before the staging finished"
	lost          = "Lost: the request was handed on but never picked up"
	sweepBatch    = 1000 // operations one sweep takes of each sort
)

// overdue reports whether an unfinished op is taken for dead: running
// without a heartbeat for a lease, or handed on and never picked up.
func (s *Service) overdue(op *Operation) bool {
	switch {
	case s.quiet():
		return false
	case op.Status == StatusRunning:
		return op.UpdatedAt.Before(time.Now().Add(-s.lease()))
	case op.Status == StatusPending && !op.WaitsForReplica():
		return op.UpdatedAt.Before(time.Now().Add(-s.handoffTimeout()))
	}
	return false
}

// abandon records op, taken for dead, as failed, unless it has shown life
// since, and then removes what it left behind. Failing it first means that
// its replica, should it be alive after all (cut off from the store), finds
// its lease lost before it could show its output, and removes its own; and
// that nothing is removed under a run that did show life.
func (s *Service) abandon(ctx context.Context, op *Operation) (bool, error) {
	if op.Status == StatusPending {
		return s.Store.Abandon(ctx, op.ID, StatusPending, time.Now().Add(-s.handoffTimeout()), Unavailable, lost)
	}
	done, err := s.Store.Abandon(ctx, op.ID, StatusRunning, time.Now().Add(-s.lease()), Unavailable, interrupted)
	if !done || err != nil {
		return done, err
	}
	if m, err := s.lookup(op.Method); err == nil {
		if c, ok := m.(Cleaner); ok && s.local(m) {
			if err := c.Cleanup(ctx, op); err != nil {
				s.logger().WarnContext(ctx, "remove what an interrupted operation left", "operation", op.ID, "error", err)
			}
		}
	}
	return true, nil
}

// didHandoffSweep is how often Sweep looks for lost hand-offs of requests
// by DID: they are rare, and a minute late is soon enough for one lost
// for HANDOFF_TIMEOUT. (The lookup reads only them, through an index of
// their own: 0.31 ms with 10,000 requests waiting, make scale.)
const didHandoffSweep = time.Minute

// didHandoffsDue reports whether Sweep should look for lost hand-offs of
// requests by DID now, and if so marks that it did.
func (s *Service) didHandoffsDue() bool {
	now := time.Now().UnixNano()
	last := s.didHandoffsSwept.Load()
	return now-last >= int64(didHandoffSweep) && s.didHandoffsSwept.CompareAndSwap(last, now)
}

// Sweep fails the operations taken for dead (running without a heartbeat
// for a lease; handed on and never picked up within the hand-off timeout,
// those of requests by DID looked for at most once a minute) and the
// requests that waited longer than PendingTTL for their DID's
// replica. It reads the store, never walks the storage. It returns how
// many operations it failed.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	n := 0
	if s.quiet() {
		return n, nil
	}
	stale, err := s.Store.Stale(ctx, time.Now().Add(-s.lease()), sweepBatch)
	if err != nil {
		return n, err
	}
	lostOps, err := s.Store.PendingBefore(ctx, time.Now().Add(-s.handoffTimeout()), PendingHandoff, sweepBatch)
	if err != nil {
		return n, err
	}
	if s.didHandoffsDue() {
		lostDIDs, err := s.Store.PendingBefore(ctx, time.Now().Add(-s.handoffTimeout()), PendingDIDHandoff, sweepBatch)
		if err != nil {
			return n, err
		}
		lostOps = append(lostOps, lostDIDs...)
	}
	for _, op := range append(stale, lostOps...) {
		done, err := s.abandon(ctx, &op)
		if err != nil {
			return n, err
		}
		if done {
			n++
			s.logger().InfoContext(ctx, "operation taken for dead", "operation", op.ID, "status", op.Status)
		}
	}
	if s.PendingTTL <= 0 {
		return n, nil
	}
	expired, err := s.Store.PendingBefore(ctx, time.Now().Add(-s.PendingTTL), PendingWaiting, sweepBatch)
	if err != nil {
		return n, err
	}
	for i := range expired {
		op := &expired[i]
		cause := Errorf(UpstreamTimeout, "Expired: the replica of %s did not arrive within %s", op.DID, s.PendingTTL)
		if out, _ := s.failPending(ctx, op, cause); out != nil && out.Operation.Status == StatusFailed && !out.Replayed {
			n++
			s.Notify(ctx, out.Operation)
		}
	}
	return n, nil
}

// Sweeper runs Sweep every third of a lease (and every PendingTTL/4 at
// least) until ctx ends. The first sweep comes one interval after start,
// not at once: a function started from zero has a request waiting for the
// store, and what its predecessor left expires no sooner for being looked
// at early.
func (s *Service) Sweeper(ctx context.Context) {
	every := s.lease() / 3
	if s.PendingTTL > 0 {
		every = min(every, max(s.PendingTTL/4, 50*time.Millisecond))
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.Store.Ping(ctx); err != nil {
			s.storeFailed()
		} else if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.logger().WarnContext(ctx, "sweep operations", "error", err)
		} else if n > 0 {
			s.logger().InfoContext(ctx, "swept operations", "count", n)
		}
	}
}

// Waiting returns up to 1000 requests waiting for did's replica, oldest
// first.
func (s *Service) Waiting(ctx context.Context, did string) ([]Operation, error) {
	ops, err := s.Store.PendingByDID(ctx, did, sweepBatch)
	if err != nil {
		return nil, StoreFailure(err)
	}
	return ops, nil
}

// FailWaiting fails a request waiting for its DID's replica with cause,
// unless it was taken meanwhile, and notifies its outcome. It reports
// whether it failed it.
func (s *Service) FailWaiting(ctx context.Context, op *Operation, cause error) bool {
	out, _ := s.failPending(ctx, op, cause)
	if out == nil || out.Replayed || out.Operation.Status != StatusFailed {
		return false
	}
	s.Notify(ctx, out.Operation)
	return true
}

// Alive reports whether the operation id may still be running somewhere:
// it exists, is not finished, and is not overdue. A store error counts as
// alive, so nothing is removed in doubt.
func (s *Service) Alive(ctx context.Context, id string) bool {
	op, err := s.Store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false
	}
	return err != nil || (!op.Status.Finished() && !s.overdue(op))
}

// Completion is what the arrival of a DID's replica did.
type Completion struct {
	Waiting    int         // requests that waited for the replica
	Operations []Operation // those this completion finished (not replays)
	// Refused is the replica's lasting failure of its check, with which
	// the waiting requests failed; nil when they were staged.
	Refused error
}

// Complete finishes the requests waiting for did's replica, which arrived
// at source, as caller: all of them, a thousand at a time. check verifies
// the replica (size, checksum) once, and only if someone waits: a lasting
// failure fails the waiting requests with it, a transient one (not visible
// yet, store away) changes nothing and is returned, so the sender retries.
// Outcomes are notified. A second arrival finds nobody waiting: no second
// effect.
func (s *Service) Complete(ctx context.Context, caller Caller, did, source string, check func() error) (*Completion, error) {
	// Completing other users' requests is a trusted sender's to do.
	if err := AuthorizeAdmin(caller); err != nil {
		return nil, err
	}
	c := &Completion{}
	for {
		waiting, err := s.Waiting(ctx, did)
		if err != nil {
			return nil, err
		}
		if len(waiting) == 0 {
			return c, nil
		}
		if c.Waiting == 0 {
			if err := check(); err != nil {
				if Transient(err) {
					return nil, err
				}
				c.Refused = err
			}
		}
		c.Waiting += len(waiting)
		finished := 0
		for i := range waiting {
			op, err := s.completeOne(ctx, caller, &waiting[i], source, c.Refused)
			if err != nil {
				return nil, err // the store is away: the sender retries
			}
			if op != nil {
				finished++
				c.Operations = append(c.Operations, *op)
			}
		}
		// Every request of a batch is finished (run, or failed when its
		// run was refused for good) unless another delivery took it: stop
		// when a batch moved nobody.
		if len(waiting) < sweepBatch || finished == 0 {
			return c, nil
		}
	}
}

// completeOne runs op, which waited for its DID's replica, now at source;
// or fails it with refused, the replica's failure of its check. A run
// refused for good before it started (its method no longer allowed, say)
// fails op with the refusal: left waiting, it would stay at the head of
// the DID's queue, and a thousand such would hide the requests behind
// them. It returns op's outcome when this call finished it, nil when it
// was finished elsewhere, and an error only when the sender should retry.
func (s *Service) completeOne(ctx context.Context, caller Caller, op *Operation, source string, refused error) (*Operation, error) {
	if refused != nil {
		if s.FailWaiting(ctx, op, refused) {
			return op, nil
		}
		return nil, nil
	}
	out, err := s.Handle(ctx, caller, Request{Method: op.Method, Username: op.Username,
		Target: op.RelativePath, Source: source, DID: op.DID, OperationID: op.ID}, Options{Detach: true})
	switch {
	case out == nil || out.Operation == nil:
		if Transient(err) {
			return nil, err
		}
		if err != nil && s.FailWaiting(ctx, op, err) {
			return op, nil
		}
		return nil, nil
	case out.Replayed:
		return nil, nil
	}
	s.Notify(ctx, out.Operation)
	return out.Operation, nil
}
