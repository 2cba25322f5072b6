package staging

import (
	"context"
	"time"
)

// Status is where an operation is in its life.
type Status string

const (
	StatusPending Status = "pending" // accepted, waiting to run (async)
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
	Code               int        `json:"-"` // HTTP status of the outcome, replayed on redelivery
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
}

// Filter selects operations for listing, newest first.
type Filter struct {
	Username string
	Status   Status
	Limit    int
}

// Store keeps operations. It is the only state replicas share besides the
// storage itself, so idempotency and coordination live here.
type Store interface {
	// Create inserts op (ID, CreatedAt and UpdatedAt set by the caller). It
	// returns an error matching ErrDuplicate when op.EventKey or op.TargetLock
	// is already taken.
	Create(ctx context.Context, op *Operation) error
	// Claim turns a pending operation into a running one holding lock. It
	// reports false when the operation was not pending (already claimed), and
	// ErrDuplicate when the lock is held by another operation.
	Claim(ctx context.Context, id, lock string, now time.Time) (bool, error)
	// Get returns one operation, or ErrNotFound.
	Get(ctx context.Context, id string) (*Operation, error)
	// GetByEventKey returns the operation created for an event, or ErrNotFound.
	GetByEventKey(ctx context.Context, key string) (*Operation, error)
	// GetByTargetLock returns the running operation holding lock, or ErrNotFound.
	GetByTargetLock(ctx context.Context, lock string) (*Operation, error)
	// Progress records bytes done and refreshes the heartbeat (UpdatedAt).
	Progress(ctx context.Context, id string, bytes, bytesDone int64, now time.Time) error
	// Finish writes the outcome (Status, Message, ErrorReason, Code, Bytes,
	// BytesDone, FinishedAt, and LocalPathOnStorage, which a request by DID
	// learns only when it runs) and releases the target lock.
	Finish(ctx context.Context, op *Operation) error
	// Abandon marks running operations whose heartbeat is older than before
	// as failed with reason and releases their locks; id "" means all such
	// operations. It returns how many it marked.
	Abandon(ctx context.Context, id string, before time.Time, reason string) (int64, error)
	// List returns operations matching f, newest first.
	List(ctx context.Context, f Filter) ([]Operation, error)
	// Stale returns the running operations whose heartbeat is older than
	// before: their replicas died mid-staging.
	Stale(ctx context.Context, before time.Time) ([]Operation, error)
	// PendingByDID returns the operations waiting for did's replica, oldest
	// first.
	PendingByDID(ctx context.Context, did string) ([]Operation, error)
	// PendingBefore returns the operations waiting for a DID's replica
	// since before a time, oldest first.
	PendingBefore(ctx context.Context, before time.Time) ([]Operation, error)
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	Close() error
}
