package staging_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/staging/stagingtest"
)

// A user has at most MaxWaitingPerUser requests waiting for their DID's
// replica: one more is refused with TooMany and leaves no record; other
// users are not affected, a request that stops waiting makes room, and a
// redelivered event is answered from its operation, never refused.
func TestWaitingPerUser(t *testing.T) {
	fx := newFixture(t)
	fx.svc.MaxWaitingPerUser = 2
	ctx := context.Background()
	wait := func(user, did, eventID string) (*staging.Outcome, error) {
		r := staging.Request{Method: "local_copy", Username: user, DID: did, Target: did}
		if eventID != "" {
			r.EventSource, r.EventID = "/test/sender", eventID
		}
		return fx.svc.Handle(ctx, staging.Trusted, r, staging.Options{})
	}
	mustWait := func(user, did, eventID string) *staging.Operation {
		t.Helper()
		out, err := wait(user, did, eventID)
		if err != nil || out == nil || !out.Waiting || out.Operation.Status != staging.StatusPending {
			t.Fatalf("%s waiting for %s: %+v %v", user, did, out, err)
		}
		return out.Operation
	}
	refused := func(user, did, eventID string) {
		t.Helper()
		before := len(fx.store.All())
		out, err := wait(user, did, eventID)
		wantKind(t, err, staging.TooMany, fmt.Sprintf("Too many requests waiting for a replica: user %s has 2, the most one user may (MAX_WAITING_PER_USER); try again once some have arrived or expired", user))
		if out != nil {
			t.Fatalf("refused request has an outcome: %+v", out)
		}
		if after := len(fx.store.All()); after != before {
			t.Fatalf("a refused request was recorded: %d records, were %d", after, before)
		}
	}

	first := mustWait("alice", "skao:a.fits", "e1")
	mustWait("alice", "skao:b.fits", "")
	refused("alice", "skao:c.fits", "")
	refused("alice", "skao:c.fits", "e3") // an event too
	// Another user is not affected.
	mustWait("bob", "skao:a.fits", "")
	// A redelivery of an accepted event is answered from its operation.
	out, err := wait("alice", "skao:a.fits", "e1")
	if err != nil || !out.Replayed || !out.Waiting || out.Operation.ID != first.ID {
		t.Fatalf("redelivery: %+v %v", out, err)
	}
	// A request whose replica is here does not wait: it is not bounded.
	if out, err := wait("alice", "skao:here.fits", ""); err != nil || out.Operation.Status != staging.StatusSuccess {
		t.Fatalf("replica present: %+v %v", out, err)
	}

	// Completed: room for one more, and only one.
	fx.replicas["skao:a.fits"] = "rse/a.fits"
	done, err := fx.svc.Complete(ctx, staging.System, "skao:a.fits", "rse/a.fits", func() error { return nil })
	if err != nil || len(done.Operations) != 2 {
		t.Fatalf("complete: %+v %v", done, err)
	}
	mustWait("alice", "skao:c.fits", "")
	refused("alice", "skao:d.fits", "")
	// Failed (as an expired request is): room again.
	waiting, err := fx.svc.Waiting(ctx, "skao:c.fits")
	if err != nil || len(waiting) != 1 {
		t.Fatalf("waiting for c: %v %v", waiting, err)
	}
	if !fx.svc.FailWaiting(ctx, &waiting[0], staging.Errorf(staging.UpstreamTimeout, "Expired")) {
		t.Fatal("FailWaiting failed nothing")
	}
	mustWait("alice", "skao:d.fits", "")
	refused("alice", "skao:e.fits", "")

	// The count fails with the store: unavailable, nothing recorded.
	fx.store.SetDown(true)
	_, err = wait("alice", "skao:f.fits", "")
	fx.store.SetDown(false)
	wantKind(t, err, staging.Unavailable, "Database unavailable")
	if n := fx.store.Calls["Create"]; n != 6 {
		t.Fatalf("%d records created, want 6 (the accepted requests)", n)
	}
}

// raceStore misses an event's key once, as a redelivery racing its first
// delivery does: it looks before the first has recorded its operation.
type raceStore struct {
	*stagingtest.MemStore
	missed atomic.Bool
}

func (s *raceStore) GetByEventKey(ctx context.Context, key string) (*staging.Operation, error) {
	if s.missed.CompareAndSwap(false, true) {
		return nil, staging.ErrNotFound
	}
	return s.MemStore.GetByEventKey(ctx, key)
}

// A redelivery that raced its first delivery past the lookup of its event
// and then finds the user at the limit (its own first delivery counted)
// is answered from the first delivery's operation, not refused.
func TestWaitingPerUserRacingRedelivery(t *testing.T) {
	fx := newFixture(t)
	fx.svc.MaxWaitingPerUser = 1
	r := staging.Request{Method: "local_copy", Username: "alice", DID: "skao:far.fits", Target: "far",
		EventSource: "/test/sender", EventID: "e1"}
	first, err := fx.svc.Handle(context.Background(), staging.Trusted, r, staging.Options{})
	if err != nil || !first.Waiting {
		t.Fatalf("first delivery: %+v %v", first, err)
	}
	fx.svc.Store = &raceStore{MemStore: fx.store}
	out, err := fx.svc.Handle(context.Background(), staging.Trusted, r, staging.Options{})
	if err != nil || !out.Replayed || out.Operation.ID != first.Operation.ID {
		t.Fatalf("racing redelivery: %+v %v", out, err)
	}
	// Another request of the same user is refused all the same.
	r.EventID, r.DID = "e2", "skao:other.fits"
	_, err = fx.svc.Handle(context.Background(), staging.Trusted, r, staging.Options{})
	if kind, detail := staging.KindOf(err); kind != staging.TooMany || !strings.Contains(detail, "MAX_WAITING_PER_USER") {
		t.Fatalf("another request: %v", err)
	}
	if n := len(fx.store.All()); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

// keptHandoff accepts every hand-off and never runs it, as a broker that
// has not delivered it yet.
type keptHandoff struct{}

func (keptHandoff) Handoff(context.Context, *staging.Request) error { return nil }

// An async request by DID whose replica is here is pending until it is
// picked up, but it waits for no replica: it does not count against
// MaxWaitingPerUser, so the user's first request that does wait is taken.
func TestWaitingPerUserNotHandoffs(t *testing.T) {
	fx := newFixture(t)
	fx.svc.MaxWaitingPerUser = 1
	fx.svc.Handoff = keptHandoff{}
	ctx := context.Background()
	out, err := fx.svc.Handle(ctx, staging.Trusted, staging.Request{Method: "local_copy", Username: "alice",
		DID: "skao:here.fits", Target: "here"}, staging.Options{Async: true})
	if err != nil || !out.Accepted || out.Operation.Status != staging.StatusPending {
		t.Fatalf("async request by DID: %+v %v", out, err)
	}
	out, err = fx.svc.Handle(ctx, staging.Trusted, staging.Request{Method: "local_copy", Username: "alice",
		DID: "skao:far.fits", Target: "far"}, staging.Options{})
	if err != nil || !out.Waiting {
		t.Fatalf("the user's first request waiting for a replica: %+v %v", out, err)
	}
}

// An async request by DID whose replica is here, handed on and never picked
// up, is lost like any hand-off: swept after the hand-off timeout, not left
// pending until PENDING_TTL as if it waited for its replica; a request
// that does wait for one is not swept then.
func TestLostHandoffByDIDIsSwept(t *testing.T) {
	fx := newFixture(t)
	fx.svc.Handoff = keptHandoff{}
	fx.svc.PendingTTL = time.Hour
	ctx := context.Background()
	handoff, err := fx.svc.Handle(ctx, staging.Trusted, staging.Request{Method: "local_copy", Username: "alice",
		DID: "skao:here.fits", Target: "here"}, staging.Options{Async: true})
	if err != nil || !handoff.Accepted {
		t.Fatalf("async request by DID: %+v %v", handoff, err)
	}
	waiting, err := fx.svc.Handle(ctx, staging.Trusted, staging.Request{Method: "local_copy", Username: "alice",
		DID: "skao:far.fits", Target: "far"}, staging.Options{})
	if err != nil || !waiting.Waiting {
		t.Fatalf("request waiting for a replica: %+v %v", waiting, err)
	}
	for _, id := range []string{handoff.Operation.ID, waiting.Operation.ID} {
		fx.store.Update(id, func(op *staging.Operation) { op.UpdatedAt = op.UpdatedAt.Add(-2 * fx.svc.HandoffTimeout) })
	}
	if n, err := fx.svc.Sweep(ctx); n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v; want the lost hand-off only", n, err)
	}
	if op, _ := fx.store.Get(ctx, handoff.Operation.ID); op.Status != staging.StatusFailed || !strings.HasPrefix(op.ErrorReason, "Lost:") {
		t.Fatalf("lost hand-off by DID: %+v", op)
	}
	if op, _ := fx.store.Get(ctx, waiting.Operation.ID); op.Status != staging.StatusPending {
		t.Fatalf("request waiting for its replica: %+v", op)
	}
	// Those are found only among every old pending operation: looked for
	// at most once a minute, not at every sweep (hand-offs by path,
	// stale runs and expired waits are).
	before := fx.store.Calls["PendingBefore"]
	if _, err := fx.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := fx.store.Calls["PendingBefore"] - before; n != 2 {
		t.Fatalf("a second sweep within the minute asked PendingBefore %d times, want 2 (hand-offs by path, expired waits)", n)
	}
}
