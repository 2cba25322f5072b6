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

// cutOff is one replica's view of a shared store that it can lose on its
// own (a network partition): while cut, its calls that reach the database
// for heartbeats and pings fail, and each failing Ping is signalled.
type cutOff struct {
	*stagingtest.MemStore
	cut    atomic.Bool
	pinged chan struct{}
}

func (c *cutOff) Progress(ctx context.Context, id, owner string, bytes, bytesDone int64, now time.Time) error {
	if c.cut.Load() {
		return stagingtest.ErrDown
	}
	return c.MemStore.Progress(ctx, id, owner, bytes, bytesDone, now)
}

func (c *cutOff) Ping(ctx context.Context) error {
	if c.cut.Load() {
		select {
		case c.pinged <- struct{}{}:
		default:
		}
		return stagingtest.ErrDown
	}
	return c.MemStore.Ping(ctx)
}

// A replica cut off from the store while it copies is taken for dead by
// the others, which fail its operation and remove what it left. When its
// copy is done it does not put it in place: it cannot renew its lease
// while cut off, and once it can, it learns the lease is lost.
func TestCutOffReplicaDoesNotShowItsOutput(t *testing.T) {
	fx := newFixture(t)
	owner := fx.service("stage")
	view := &cutOff{MemStore: fx.store}
	owner.Store, owner.Lease = view, 100*time.Millisecond
	other := fx.service("stage")
	other.Lease = owner.Lease
	started, cleaned := make(chan string, 1), make(chan string, 1)
	fx.copy.started, fx.copy.cleaned = started, cleaned
	type result struct {
		out *staging.Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := owner.Handle(context.Background(), alice, req("local_copy", "slow", "x"), staging.Options{})
		done <- result{out, err}
	}()
	id := <-started
	view.cut.Store(true)
	// The others see no heartbeat for a lease, and sweep.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := other.Sweep(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cut-off replica's operation was never taken for dead")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := <-cleaned; got != id {
		t.Fatalf("cleaned %s, want %s", got, id)
	}
	close(fx.copy.gate) // the copy is done, still cut off
	select {
	case r := <-done:
		t.Fatalf("finished while cut off from the store: %+v %v", r.out, r.err)
	case <-time.After(3 * owner.Lease):
	}
	if _, ok := fx.area.get("alice", "x"); ok {
		t.Fatal("the copy was put in place while its operation stood failed")
	}
	view.cut.Store(false)
	r := <-done
	wantKind(t, r.err, staging.Unavailable, "Operation "+id+" was taken over before it finished: its record stands as failed; try again")
	if _, ok := fx.area.get("alice", "x"); ok {
		t.Fatal("the copy was put in place after its lease was lost")
	}
	op, _ := fx.store.Get(context.Background(), id)
	if op.Status != staging.StatusFailed || !strings.HasPrefix(op.ErrorReason, "Interrupted") {
		t.Fatalf("record %+v", op)
	}
}

// Within a lease of a store failure, a request for the same target as a
// running operation waits for it rather than taking it for dead, as the
// sweep does: the holder's heartbeats could not get through either.
func TestLockWaitTakesNobodyForDeadAfterAnOutage(t *testing.T) {
	fx := newFixture(t)
	fx.svc.Lease = time.Hour // the holder's heartbeat will not come in the test
	started, cleaned := make(chan string, 1), make(chan string, 1)
	fx.copy.started, fx.copy.cleaned = started, cleaned
	held := make(chan error, 1)
	go func() {
		_, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "slow", "x"), staging.Options{})
		held <- err
	}()
	id := <-started
	// Another replica sees the store fail, and the holder's record looks
	// dead by the time the store is back.
	other := fx.service("stage")
	view := &cutOff{MemStore: fx.store, pinged: make(chan struct{}, 1)}
	other.Store, other.Lease = view, 2*time.Second
	view.cut.Store(true)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go other.Sweeper(ctx)
	<-view.pinged
	view.cut.Store(false)
	fx.store.Update(id, func(op *staging.Operation) { op.UpdatedAt = op.UpdatedAt.Add(-time.Minute) })
	wctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := other.Handle(wctx, alice, req("local_copy", "b", "x"), staging.Options{})
	wantKind(t, err, staging.Unavailable, "Gave up waiting for another staging of the same target")
	select {
	case got := <-cleaned:
		t.Fatalf("removed what %s wrote while it ran", got)
	default:
	}
	close(fx.copy.gate)
	if err := <-held; err != nil {
		t.Fatalf("the holder: %v", err)
	}
	if op, _ := fx.store.Get(context.Background(), id); op.Status != staging.StatusSuccess {
		t.Fatalf("record %+v", op)
	}
	if got, _ := fx.area.get("alice", "x"); got != "slow" {
		t.Fatalf("staged %q, want the holder's", got)
	}
}

// An async batch run in this process waits its turn, a few items at a
// time: the items still queued are alive, and no sweep takes them for
// lost hand-offs, however long the batch takes.
func TestQueuedAsyncItemsAreNotLost(t *testing.T) {
	fx := newFixture(t)
	fx.svc.HandoffTimeout = 300 * time.Millisecond
	other := fx.service("stage")
	other.HandoffTimeout = fx.svc.HandoffTimeout
	started := make(chan string, 16)
	fx.copy.started = started
	var batch []staging.Request
	for i := range 12 {
		batch = append(batch, req("local_copy", "slow", fmt.Sprintf("x%d", i)))
	}
	items, err := fx.svc.HandleBatch(context.Background(), alice, batch, staging.Options{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 8 { // the batch's workers are busy; the rest wait
		<-started
	}
	for range 4 { // sweeps over several hand-off timeouts
		time.Sleep(fx.svc.HandoffTimeout)
		if n, err := other.Sweep(context.Background()); n != 0 || err != nil {
			t.Fatalf("Sweep = %d %v while the batch ran", n, err)
		}
	}
	close(fx.copy.gate)
	for _, it := range items {
		if op := fx.wait(t, it.Outcome.Operation.ID); op.Status != staging.StatusSuccess {
			t.Fatalf("%+v", op)
		}
	}
}
