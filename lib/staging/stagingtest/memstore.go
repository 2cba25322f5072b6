// Package stagingtest holds what tests of the staging pipeline share: an
// in-memory staging.Store with the same semantics as the SQL store (unique
// ids, event keys and target locks; conditional claims, progress and
// finishes), and a switch to make it fail like a database that went away.
package stagingtest

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// ErrDown is what a MemStore answers while it is down.
var ErrDown = errors.New("database is down")

// MemStore is a staging.Store in memory. It is safe for concurrent use.
type MemStore struct {
	mu   sync.Mutex
	ops  map[string]*staging.Operation
	down bool
	// Calls counts the calls of each method, for tests of what the
	// pipeline asks of the store.
	Calls map[string]int
}

var _ staging.Store = (*MemStore)(nil)

// NewMemStore returns an empty store.
func NewMemStore() *MemStore {
	return &MemStore{ops: map[string]*staging.Operation{}, Calls: map[string]int{}}
}

// SetDown makes every call fail with ErrDown (true) or work again.
func (m *MemStore) SetDown(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = down
}

// Put stores a copy of op as it is, for tests that set up a record.
func (m *MemStore) Put(op staging.Operation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops[op.ID] = &op
}

// Update changes a stored record in place, for tests that age it.
func (m *MemStore) Update(id string, change func(op *staging.Operation)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if op, ok := m.ops[id]; ok {
		change(op)
	}
}

// All returns copies of every record, oldest first.
func (m *MemStore) All() []staging.Operation {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]staging.Operation, 0, len(m.ops))
	for _, op := range m.ops {
		out = append(out, *op)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (m *MemStore) enter(name string) error {
	m.mu.Lock()
	m.Calls[name]++
	if m.down {
		m.mu.Unlock()
		return ErrDown
	}
	return nil
}

func (m *MemStore) Create(ctx context.Context, op *staging.Operation) error {
	if err := m.enter("Create"); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if _, ok := m.ops[op.ID]; ok {
		return staging.ErrDuplicate
	}
	for _, o := range m.ops {
		if (op.EventKey != "" && o.EventKey == op.EventKey) || (op.TargetLock != "" && o.TargetLock == op.TargetLock) {
			return staging.ErrDuplicate
		}
	}
	c := *op
	m.ops[op.ID] = &c
	return nil
}

func (m *MemStore) Claim(ctx context.Context, id, lock, owner string, now time.Time) (bool, error) {
	if err := m.enter("Claim"); err != nil {
		return false, err
	}
	defer m.mu.Unlock()
	op, ok := m.ops[id]
	if !ok || op.Status != staging.StatusPending {
		return false, nil
	}
	for _, o := range m.ops {
		if lock != "" && o.TargetLock == lock && o.ID != id {
			return false, staging.ErrDuplicate
		}
	}
	op.Status, op.TargetLock, op.LeaseOwner, op.UpdatedAt = staging.StatusRunning, lock, owner, now
	return true, nil
}

func (m *MemStore) get(name string, match func(*staging.Operation) bool) (*staging.Operation, error) {
	if err := m.enter(name); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	for _, o := range m.ops {
		if match(o) {
			c := *o
			return &c, nil
		}
	}
	return nil, staging.ErrNotFound
}

func (m *MemStore) Get(ctx context.Context, id string) (*staging.Operation, error) {
	return m.get("Get", func(o *staging.Operation) bool { return o.ID == id })
}

func (m *MemStore) GetByEventKey(ctx context.Context, key string) (*staging.Operation, error) {
	return m.get("GetByEventKey", func(o *staging.Operation) bool { return key != "" && o.EventKey == key })
}

func (m *MemStore) GetByTargetLock(ctx context.Context, lock string) (*staging.Operation, error) {
	return m.get("GetByTargetLock", func(o *staging.Operation) bool { return lock != "" && o.TargetLock == lock })
}

func (m *MemStore) Progress(ctx context.Context, id, owner string, bytes, bytesDone int64, now time.Time) error {
	if err := m.enter("Progress"); err != nil {
		return err
	}
	defer m.mu.Unlock()
	op, ok := m.ops[id]
	if !ok || op.Status != staging.StatusRunning || op.LeaseOwner != owner {
		return staging.ErrLeaseLost
	}
	op.Bytes, op.BytesDone, op.UpdatedAt = bytes, bytesDone, now
	return nil
}

func (m *MemStore) Finish(ctx context.Context, op *staging.Operation, owner string) error {
	if err := m.enter("Finish"); err != nil {
		return err
	}
	defer m.mu.Unlock()
	cur, ok := m.ops[op.ID]
	if !ok || cur.Status.Finished() || cur.LeaseOwner != owner {
		return staging.ErrLeaseLost
	}
	finished := op.FinishedAt
	if finished == nil {
		now := time.Now().UTC()
		finished = &now
	}
	cur.Status, cur.Message, cur.ErrorReason, cur.ErrorKind = op.Status, op.Message, op.ErrorReason, op.ErrorKind
	cur.Bytes, cur.BytesDone, cur.LocalPathOnStorage = op.Bytes, op.BytesDone, op.LocalPathOnStorage
	f := *finished
	cur.FinishedAt, cur.UpdatedAt, cur.TargetLock = &f, f, ""
	op.FinishedAt, op.UpdatedAt, op.TargetLock = &f, f, ""
	return nil
}

func (m *MemStore) Touch(ctx context.Context, id string, now time.Time) (bool, error) {
	if err := m.enter("Touch"); err != nil {
		return false, err
	}
	defer m.mu.Unlock()
	op, ok := m.ops[id]
	if !ok || op.Status != staging.StatusPending {
		return false, nil
	}
	op.UpdatedAt = now
	return true, nil
}

func (m *MemStore) Abandon(ctx context.Context, id string, status staging.Status, before time.Time, kind staging.Kind, reason string) (bool, error) {
	if err := m.enter("Abandon"); err != nil {
		return false, err
	}
	defer m.mu.Unlock()
	op, ok := m.ops[id]
	if !ok || op.Status != status || op.Status.Finished() || !op.UpdatedAt.Before(before) {
		return false, nil
	}
	now := time.Now().UTC()
	op.Status, op.ErrorKind, op.ErrorReason = staging.StatusFailed, kind, reason
	op.FinishedAt, op.UpdatedAt, op.TargetLock, op.LeaseOwner = &now, now, "", ""
	return true, nil
}

func (m *MemStore) list(name string, match func(*staging.Operation) bool, newestFirst bool, limit int) ([]staging.Operation, error) {
	if err := m.enter(name); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	var out []staging.Operation
	for _, o := range m.ops {
		if match(o) {
			out = append(out, *o)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.Before(b.CreatedAt)
		}
		return a.ID < b.ID
	})
	if newestFirst {
		slices.Reverse(out)
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *MemStore) List(ctx context.Context, f staging.Filter) ([]staging.Operation, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	return m.list("List", func(o *staging.Operation) bool {
		return (f.Username == "" || o.Username == f.Username) && (f.Status == "" || o.Status == f.Status) &&
			(f.After.IsZero() || pastCursor(o, f.After))
	}, true, limit)
}

// pastCursor reports whether o comes after c in the newest-first order,
// at the microseconds the SQL store keeps.
func pastCursor(o *staging.Operation, c staging.Cursor) bool {
	t := o.CreatedAt.UTC().Truncate(time.Microsecond)
	return t.Before(c.CreatedAt) || (t.Equal(c.CreatedAt) && o.ID < c.ID)
}

func (m *MemStore) Stale(ctx context.Context, before time.Time, limit int) ([]staging.Operation, error) {
	return m.list("Stale", func(o *staging.Operation) bool {
		return o.Status == staging.StatusRunning && o.UpdatedAt.Before(before)
	}, false, limit)
}

func (m *MemStore) PendingBefore(ctx context.Context, before time.Time, kind staging.Pending, limit int) ([]staging.Operation, error) {
	return m.list("PendingBefore", func(o *staging.Operation) bool {
		var is bool
		switch kind {
		case staging.PendingHandoff:
			is = o.DID == ""
		case staging.PendingDIDHandoff:
			is = o.DID != "" && o.LocalPathOnStorage != ""
		case staging.PendingWaiting:
			is = o.DID != "" && o.LocalPathOnStorage == ""
		}
		return is && o.Status == staging.StatusPending && o.UpdatedAt.Before(before)
	}, false, limit)
}

func (m *MemStore) PendingByDID(ctx context.Context, did string, limit int) ([]staging.Operation, error) {
	return m.list("PendingByDID", func(o *staging.Operation) bool {
		return o.DID == did && o.WaitsForReplica()
	}, false, limit)
}

func (m *MemStore) CountWaiting(ctx context.Context, username string, limit int) (int, error) {
	if err := m.enter("CountWaiting"); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	n := 0
	for _, o := range m.ops {
		if n < limit && o.Username == username && o.Status == staging.StatusPending && o.DID != "" && o.LocalPathOnStorage == "" {
			n++
		}
	}
	return n, nil
}

func (m *MemStore) Ping(ctx context.Context) error {
	if err := m.enter("Ping"); err != nil {
		return err
	}
	m.mu.Unlock()
	return nil
}

func (m *MemStore) Close() error { return nil }
