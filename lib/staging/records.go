package staging

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
)

// MaxText bounds the free texts an operation stores (message, error
// reason), so no request can make its record large.
const MaxText = 1024

// NewID returns a new operation id: a UUIDv7, so ids sort by creation.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// newOperation is the record of req with status.
func newOperation(req *Request, status Status) *Operation {
	now := time.Now().UTC()
	return &Operation{ID: NewID(), Method: req.Method, Username: req.Username,
		LocalPathOnStorage: req.Source, RelativePath: req.Target, DID: req.DID, Status: status,
		CreatedAt: now, UpdatedAt: now, EventKey: req.eventKey()}
}

// refuse answers a request refused before it ran, recording the refusal
// when record is set: every well-formed request of an authorized caller
// leaves a record, malformed ones and refused callers are only logged. The
// refusal wins over a store failure in what the caller sees.
//
// The log record names the user as its username (which puts it in that
// user's log viewer) only when caller may act for them: anyone's refused
// request names the user it asked for as requested_username, so nobody can
// write into another user's logs. The client's texts are cut short.
func (s *Service) refuse(ctx context.Context, caller Caller, req *Request, cause error, record bool) (*Outcome, error) {
	kind, detail := KindOf(cause)
	s.logCause(ctx, "", cause)
	user := "username"
	if authorize(caller, req.Username) != nil {
		user = "requested_username"
	}
	s.logger().InfoContext(ctx, "staging refused", "method", truncateTo(req.Method, 100), user, truncateTo(req.Username, 200),
		"local_path_on_storage", truncate(req.Source), "relative_path", truncate(req.Target),
		"error_kind", kind, "detail", truncate(detail))
	method := "unknown" // named by the client only: keep metrics' attributes few
	if _, err := s.lookup(req.Method); err == nil {
		method = req.Method
	}
	recordOutcome(ctx, method, outcomeRefused, 0, 0)
	if !record || kind == Invalid || req.OperationID != "" {
		return nil, cause
	}
	op := newOperation(req, StatusFailed)
	op.ErrorKind, op.ErrorReason = kind, truncate(detail)
	op.FinishedAt = &op.CreatedAt
	if err := s.Store.Create(ctx, op); err != nil {
		if errors.Is(err, ErrDuplicate) && op.EventKey != "" {
			existing, err := s.byEventKey(ctx, req)
			if err == nil {
				return s.replay(ctx, existing)
			}
			if k, _ := KindOf(err); k == Conflict {
				return nil, err
			}
		}
		s.logger().ErrorContext(ctx, "record refusal", "operation", op.ID, "error", err)
		return nil, cause
	}
	return &Outcome{Operation: op}, cause
}

// createPending records req as pending. replay is true when the request is
// a redelivery whose operation already exists (returned in op).
func (s *Service) createPending(ctx context.Context, req *Request) (op *Operation, replay bool, err error) {
	op = newOperation(req, StatusPending)
	if err := s.Store.Create(ctx, op); err != nil {
		if errors.Is(err, ErrDuplicate) && op.EventKey != "" {
			existing, err := s.byEventKey(ctx, req)
			if err == nil {
				return existing, true, nil
			}
			if k, _ := KindOf(err); k == Conflict {
				return nil, false, err
			}
		}
		return nil, false, StoreFailure(err)
	}
	return op, false, nil
}

// byEventKey returns the operation req's event made when it was delivered
// before, ErrNotFound when it was not (or req came by no event), and a
// Conflict when its key made an operation for another request: a sender
// that used an event's source and id again for something else is told so,
// not answered with the other request's outcome.
func (s *Service) byEventKey(ctx context.Context, req *Request) (*Operation, error) {
	key := req.eventKey()
	if key == "" {
		return nil, ErrNotFound
	}
	op, err := s.Store.GetByEventKey(ctx, key)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, err
	case err != nil:
		return nil, StoreFailure(err)
	case !op.sameRequest(req):
		return nil, Errorf(Conflict, "Event %s from %s was delivered before with another request", truncate(req.EventID), truncate(req.EventSource))
	}
	return op, nil
}

// await records a request whose DID's replica has not arrived yet as
// pending; a transfer-done event completes it. A user has at most
// MaxWaitingPerUser requests waiting: one more is refused with TooMany
// and not recorded. A redelivery never gets here (handle replays it first)
// unless it races its first delivery, which it then replays too.
func (s *Service) await(ctx context.Context, caller Caller, req *Request) (*Outcome, error) {
	if err := s.roomToWait(ctx, req.Username); err != nil {
		if kind, _ := KindOf(err); kind != TooMany {
			return nil, err
		}
		if op, rerr := s.byEventKey(ctx, req); rerr == nil {
			return s.replay(ctx, op)
		}
		return s.refuse(ctx, caller, req, err, false) // nothing recorded: a flood leaves no rows
	}
	op, replay, err := s.createPending(ctx, req)
	if err != nil || replay {
		return s.replayOr(ctx, op, err)
	}
	s.logger().InfoContext(ctx, "staging waits for replica", "operation", op.ID, "did", req.DID,
		"method", req.Method, "username", req.Username, "relative_path", req.Target)
	return &Outcome{Operation: op, Waiting: true}, nil
}

// waitingRetryAfter is how long a user at MaxWaitingPerUser is asked to
// wait before trying again (Retry-After).
const waitingRetryAfter = time.Minute

// roomToWait checks that user has fewer than MaxWaitingPerUser requests
// waiting for a replica, reading at most that many of them (a bounded
// count through an index), never the user's history.
//
// The count and the insert that follows are not one transaction: requests
// of one user that arrive at the same moment may each find room, so the
// user may end up over the limit by at most the number of their requests
// counted at once, never more. Closing that gap would take a lock per user
// shared by the replicas (SQLite has no SELECT ... FOR UPDATE) for a bound
// whose purpose is only to keep one user from filling the store.
func (s *Service) roomToWait(ctx context.Context, user string) error {
	most := s.MaxWaitingPerUser
	if most <= 0 {
		return nil
	}
	n, err := s.Store.CountWaiting(ctx, user, most)
	if err != nil {
		return StoreFailure(err)
	}
	if n >= most {
		e := Errorf(TooMany, "Too many requests waiting for a replica: user %s has %d, the most one user may (MAX_WAITING_PER_USER); try again once some have arrived or expired", user, most)
		e.RetryAfter = waitingRetryAfter // replicas take minutes to hours to arrive
		return e
	}
	return nil
}

// open records req as running, holding lock, waiting while another live
// operation holds it. replay is true when the request is a redelivery
// whose operation already exists (returned in op).
func (s *Service) open(ctx context.Context, req *Request, lock string) (op *Operation, replay bool, err error) {
	op = newOperation(req, StatusRunning)
	op.TargetLock, op.LeaseOwner = lock, s.instance()
	err = s.waitForLock(ctx, lock, func() error { return s.Store.Create(ctx, op) }, func() (*Operation, error) {
		return s.byEventKey(ctx, req)
	})
	var r *replayError
	if errors.As(err, &r) {
		return r.op, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	return op, false, nil
}

// claim turns the pending op into a running one held by this replica,
// holding lock. replay is true when op was no longer pending.
func (s *Service) claim(ctx context.Context, op *Operation, lock string) (*Operation, bool, error) {
	owner := s.instance()
	var claimed bool
	err := s.waitForLock(ctx, lock, func() error {
		var err error
		claimed, err = s.Store.Claim(ctx, op.ID, lock, owner, time.Now().UTC())
		return err
	}, func() (*Operation, error) { return nil, ErrNotFound })
	if err != nil {
		return nil, false, err
	}
	current, err := s.Store.Get(ctx, op.ID)
	if err != nil {
		return nil, false, StoreFailure(err)
	}
	return current, !claimed, nil
}

// replayError carries the operation a duplicate turned out to be.
type replayError struct{ op *Operation }

func (e *replayError) Error() string { return "replay " + e.op.ID }

// waitForLock runs try until it does not fail with ErrDuplicate. A
// duplicate that is a redelivery (found by redelivered, which answers
// ErrNotFound for none) ends the wait with a *replayError; one that is
// the target lock waits for its holder, or takes over from a holder whose
// replica died.
func (s *Service) waitForLock(ctx context.Context, lock string, try func() error, redelivered func() (*Operation, error)) error {
	wait := time.Millisecond
	for {
		err := try()
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrDuplicate) {
			return StoreFailure(err)
		}
		if op, err := redelivered(); err == nil {
			return &replayError{op}
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		holder, err := s.Store.GetByTargetLock(ctx, lock)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return StoreFailure(err)
		case s.overdue(holder):
			if _, err := s.abandon(ctx, holder); err != nil {
				return StoreFailure(err)
			}
		default:
			select {
			case <-ctx.Done():
				return Wrap(Unavailable, "Gave up waiting for another staging of the same target", ctx.Err())
			case <-time.After(wait):
			}
			wait = min(wait*2, 100*time.Millisecond)
		}
	}
}

// failPending records a pending operation as failed with cause, unless
// someone else took it first; the outcome is then theirs.
func (s *Service) failPending(ctx context.Context, op *Operation, cause error) (*Outcome, error) {
	s.logCause(ctx, op.ID, cause)
	claimed, err := s.Store.Claim(ctx, op.ID, "", s.instance(), time.Now().UTC())
	if err != nil {
		return &Outcome{Operation: op}, cause
	}
	if !claimed {
		current, err := s.Store.Get(ctx, op.ID)
		if err != nil {
			return &Outcome{Operation: op}, cause
		}
		return s.replay(ctx, current)
	}
	now := time.Now().UTC()
	op.Status, op.FinishedAt, op.UpdatedAt = StatusFailed, &now, now
	kind, detail := KindOf(cause)
	op.ErrorKind, op.ErrorReason = kind, truncate(detail)
	s.logger().InfoContext(ctx, "staging failed before it ran", "operation", op.ID, "method", op.Method,
		"username", op.Username, "local_path_on_storage", truncate(op.LocalPathOnStorage),
		"relative_path", truncate(op.RelativePath), "error_kind", kind, "detail", detail)
	if err := s.Store.Finish(ctx, op, s.instance()); err != nil {
		s.logger().ErrorContext(ctx, "record failed operation", "operation", op.ID, "error", err)
	}
	recordOutcome(ctx, op.Method, string(op.Status), 0, 0)
	return &Outcome{Operation: op}, cause
}

// replayOr answers with the operation a duplicate turned out to be, or
// with err.
func (s *Service) replayOr(ctx context.Context, op *Operation, err error) (*Outcome, error) {
	if err != nil {
		return nil, err
	}
	return s.replay(ctx, op)
}

// replayRedelivery answers a redelivery of req, which holds no share of
// the work in flight, from the first outcome of op. Waiting for a first
// delivery that still runs is work in flight here: the wait takes a share
// (no files), so a flood of redeliveries is refused with TooMany, and
// their sender retries, instead of each polling the store with no bound.
// An outcome already there is answered without one.
func (s *Service) replayRedelivery(ctx context.Context, req *Request, opt Options, op *Operation) (*Outcome, error) {
	if op.Status.Finished() || op.WaitsForReplica() {
		return s.replay(ctx, op)
	}
	sl, err := s.reserve(ctx, req, opt, 0)
	if err != nil {
		return nil, err
	}
	defer sl.release()
	return s.replay(ctx, op)
}

// replay answers a redelivered request from its first outcome, waiting for
// it while it runs.
func (s *Service) replay(ctx context.Context, op *Operation) (*Outcome, error) {
	wait := time.Millisecond
	for !op.Status.Finished() {
		if op.WaitsForReplica() {
			return &Outcome{Operation: op, Replayed: true, Waiting: true}, nil // waits for its replica, not for us
		}
		if s.overdue(op) {
			if _, err := s.abandon(ctx, op); err != nil {
				return nil, StoreFailure(err)
			}
		} else {
			select {
			case <-ctx.Done():
				return &Outcome{Operation: op}, Wrap(Unavailable, "The first delivery is still running", ctx.Err())
			case <-time.After(wait):
			}
			wait = min(wait*2, 100*time.Millisecond)
		}
		next, err := s.Store.Get(ctx, op.ID)
		if err != nil {
			return nil, StoreFailure(err)
		}
		op = next
	}
	out := &Outcome{Operation: op, Replayed: true}
	if op.Status == StatusFailed {
		return out, op.err()
	}
	return out, nil
}

// logCause logs the cause of a failure a client sees only as its detail.
func (s *Service) logCause(ctx context.Context, opID string, err error) {
	var e *Error
	if errors.Is(err, ErrRefused) {
		// The client is told which value; the operator needs the
		// driver's words, and to know it is no outage.
		s.logger().ErrorContext(ctx, "database refused a value", "operation", opID, "error", err)
		return
	}
	if !errors.As(err, &e) {
		s.logger().ErrorContext(ctx, "internal error", "operation", opID, "error", err)
	} else if e.Err != nil && e.Kind.Transient() {
		s.logger().WarnContext(ctx, "staging failed", "operation", opID, "detail", e.Detail, "error", e.Err)
	}
}

// truncate bounds a stored or logged text to MaxText bytes, on a rune
// boundary.
func truncate(s string) string { return truncateTo(s, MaxText) }

// truncateTo cuts s to at most n bytes, on a character boundary, marking
// the cut with "…". Bytes that are not UTF-8 become U+FFFD: a detail may
// quote a name found on disk (inside a folder being copied), and MySQL
// refuses such bytes in a text column, which made the outcome of the run
// unrecordable.
func truncateTo(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
