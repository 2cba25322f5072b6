package staging

import (
	"context"
	"time"
)

// Status is where an operation is in its life.
type Status string

const (
	StatusPending Status = "pending" // recorded, waiting to run (async, hand-off, or a DID's replica)
	StatusRunning Status = "running"
	StatusSuccess Status = "success"
	StatusFailed  Status = "failed"
)

// Valid reports whether s is one of the four statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusRunning, StatusSuccess, StatusFailed:
		return true
	}
	return false
}

// Finished reports whether s is final.
func (s Status) Finished() bool { return s == StatusSuccess || s == StatusFailed }

// Operation is the record of one staging request, one row in the store. The
// first columns are the earlier service's; the rest make progress, replay and
// coordination between replicas possible.
type Operation struct {
	ID                 string     `json:"id"`
	Method             string     `json:"method"`
	Username           string     `json:"username"`
	LocalPathOnStorage string     `json:"local_path_on_storage"`
	RelativePath       string     `json:"relative_path"`
	Status             Status     `json:"status"`
	Message            string     `json:"message,omitempty"`
	ErrorReason        string     `json:"error_reason"`
	ErrorKind          Kind       `json:"error_kind,omitempty"` // of a failure, replayed on redelivery
	Bytes              int64      `json:"bytes"`
	BytesDone          int64      `json:"bytes_done"`
	CreatedAt          time.Time  `json:"created_at"`
	UpdatedAt          time.Time  `json:"-"` // heartbeat of a running operation
	FinishedAt         *time.Time `json:"finished_at"`
	// DID is the Rucio data identifier (scope:name) staged, or awaited while
	// the operation is pending.
	DID string `json:"did,omitempty"`

	// EventKey is unique per delivered event (hash of its source and id), so a
	// redelivery finds the first outcome instead of staging again.
	EventKey string `json:"-"`
	// TargetLock is set while the operation runs (hash of user and target), so
	// two identical requests on any replicas never write the same target at once.
	TargetLock string `json:"-"`
	// LeaseOwner names the replica that runs the operation; only it may
	// record progress and the outcome.
	LeaseOwner string `json:"-"`
}

// Pending is a kind of pending operation (Store.PendingBefore).
type Pending int

const (
	// PendingHandoff is an async request by path, handed on and waiting to
	// be picked up: no DID.
	PendingHandoff Pending = iota
	// PendingDIDHandoff is an async request by DID whose replica was here,
	// handed on the same way: a DID and a source.
	PendingDIDHandoff
	// PendingWaiting is a request waiting for its DID's replica: a DID and
	// no source yet (WaitsForReplica).
	PendingWaiting
)

// WaitsForReplica reports whether op is a request waiting for its DID's
// replica: pending with a DID and no source yet. An async request by DID
// whose replica was here is pending with both, waiting for its hand-off.
func (op *Operation) WaitsForReplica() bool {
	return op.Status == StatusPending && op.DID != "" && op.LocalPathOnStorage == ""
}

// err is the failure a failed operation records.
func (op *Operation) err() error {
	kind := op.ErrorKind
	if kind == "" {
		kind = Internal
	}
	return Errorf(kind, "%s", op.ErrorReason)
}

// Filter selects operations for listing, newest first.
type Filter struct {
	Username string
	Status   Status
	Limit    int
	// After continues a listing after that position (the last operation
	// of the page before); the zero Cursor starts at the newest.
	After Cursor
}

// Store keeps operations. It is the only state replicas share besides the
// storage itself, so idempotency and coordination live here.
type Store interface {
	// Create inserts op (ID, CreatedAt and UpdatedAt set by the caller). It
	// returns an error matching ErrDuplicate when op.ID, op.EventKey or
	// op.TargetLock is already taken.
	Create(ctx context.Context, op *Operation) error
	// Claim turns a pending operation into a running one holding lock, held
	// by owner. It reports false when the operation was not pending, and
	// ErrDuplicate when the lock is held by another operation.
	Claim(ctx context.Context, id, lock, owner string, now time.Time) (bool, error)
	// Get returns one operation, or ErrNotFound.
	Get(ctx context.Context, id string) (*Operation, error)
	// GetByEventKey returns the operation created for an event, or ErrNotFound.
	GetByEventKey(ctx context.Context, key string) (*Operation, error)
	// GetByTargetLock returns the running operation holding lock, or ErrNotFound.
	GetByTargetLock(ctx context.Context, lock string) (*Operation, error)
	// Progress records bytes done and refreshes the heartbeat (UpdatedAt) of
	// a running operation held by owner, else ErrLeaseLost.
	Progress(ctx context.Context, id, owner string, bytes, bytesDone int64, now time.Time) error
	// Touch refreshes UpdatedAt of the operation id if it is still pending,
	// and reports whether it was: a request queued in a live process is
	// not a lost hand-off.
	Touch(ctx context.Context, id string, now time.Time) (bool, error)
	// Finish writes the outcome (Status, Message, ErrorReason, ErrorKind,
	// Bytes, BytesDone, FinishedAt, and LocalPathOnStorage, which a request
	// by DID learns only when it runs) of an unfinished operation held by
	// owner, releasing its target lock; ErrLeaseLost when the operation is
	// finished or held by another. A final status is never rewritten.
	Finish(ctx context.Context, op *Operation, owner string) error
	// Abandon fails the operation id if it is unfinished, still has status
	// and no heartbeat since before, releasing its lock, and reports whether
	// it did.
	Abandon(ctx context.Context, id string, status Status, before time.Time, kind Kind, reason string) (bool, error)
	// List returns up to f.Limit operations matching f, newest first by
	// (CreatedAt, ID), those after f.After when it is set. It reads only
	// what it returns, through an index, however many operations there are.
	List(ctx context.Context, f Filter) ([]Operation, error)
	// Stale returns up to limit running operations whose heartbeat is
	// older than before: their replicas died mid-staging.
	Stale(ctx context.Context, before time.Time, limit int) ([]Operation, error)
	// PendingBefore returns up to limit pending operations of a kind not
	// touched since before, oldest first.
	PendingBefore(ctx context.Context, before time.Time, kind Pending, limit int) ([]Operation, error)
	// PendingByDID returns up to limit operations waiting for did's replica
	// (WaitsForReplica), oldest first.
	PendingByDID(ctx context.Context, did string, limit int) ([]Operation, error)
	// CountWaiting returns how many requests of username wait for a DID's
	// replica (pending with a DID and no source yet: not the hand-off of
	// one whose replica was here), counting no further than limit: it
	// reads at most limit of them, however many operations the user has.
	CountWaiting(ctx context.Context, username string, limit int) (int, error)
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	Close() error
}
