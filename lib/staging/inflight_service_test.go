package staging_test

import (
	"context"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// The limit of work in flight through every door: a full process refuses
// new work with TooMany before recording it, leaves work already recorded
// pending for its sender to redeliver, and takes new work again once
// something ends. "slow" runs are held open by the copy method's gate;
// nothing here sleeps.

const busyDetail = "Too much staging in flight here: try again shortly"

// hold starts n slow copies on svc and returns once they all run, with a
// channel that receives each one's error when it ends (after a send on
// fx.copy.gate).
func (fx *fixture) hold(t *testing.T, svc *staging.Service, n int) <-chan error {
	t.Helper()
	done := make(chan error, n)
	for i := range n {
		go func() {
			_, err := svc.Handle(context.Background(), alice, req("local_copy", "slow", "held/"+string(rune('a'+i))), staging.Options{})
			done <- err
		}()
	}
	for range n {
		<-fx.copy.started
	}
	return done
}

// inFlight checks what svc's work in flight holds.
func inFlight(t *testing.T, svc *staging.Service, ops, files int) {
	t.Helper()
	if o, f := svc.InFlight(); o != ops || f != files {
		t.Fatalf("in flight: %d operations, %d files; want %d, %d", o, f, ops, files)
	}
}

func TestFullProcessRefusesNewWorkUnrecorded(t *testing.T) {
	fx := newFixture(t)
	fx.copy.started = make(chan string, 8)
	fx.svc.MaxInflight = 2
	done := fx.hold(t, fx.svc, 2)
	inFlight(t, fx.svc, 2, 2*staging.DefaultFiles)

	event := req("local_copy", "obs.fits", "event")
	event.EventSource, event.EventID = "/test", "1"
	for _, door := range []struct {
		name string
		call func() error
	}{
		{"single", func() error {
			_, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "obs.fits", "single"), staging.Options{})
			return err
		}},
		{"async", func() error {
			_, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "obs.fits", "async"), staging.Options{Async: true})
			return err
		}},
		{"event", func() error {
			_, err := fx.svc.Handle(context.Background(), alice, event, staging.Options{})
			return err
		}},
		{"method of another function", func() error {
			_, err := fx.svc.Handle(context.Background(), alice, req("jupyter_copy", "obs.fits", "nb"), staging.Options{})
			return err
		}},
		{"download", func() error {
			_, err := fx.svc.Handle(context.Background(), alice, staging.Request{Method: "download", Username: "alice", Source: "a"}, staging.Options{Stream: true})
			return err
		}},
		{"batch", func() error {
			_, err := fx.svc.HandleBatch(context.Background(), alice, []staging.Request{req("local_copy", "obs.fits", "b1")}, staging.Options{})
			return err
		}},
	} {
		t.Run(door.name, func(t *testing.T) { wantKind(t, door.call(), staging.TooMany, busyDetail) })
	}
	if n := len(fx.store.All()); n != 2 {
		t.Fatalf("%d records, want the 2 running", n)
	}
	// Refusals that are no matter of load come first, as ever.
	_, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "missing", "m"), staging.Options{})
	wantKind(t, err, staging.Rejected, "")

	// One ends: one slot is free, a batch of two is still refused whole,
	// one request runs.
	fx.copy.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	inFlight(t, fx.svc, 1, staging.DefaultFiles)
	_, err = fx.svc.HandleBatch(context.Background(), alice, []staging.Request{req("local_copy", "obs.fits", "b1"), req("local_copy", "obs.fits", "b2")}, staging.Options{})
	wantKind(t, err, staging.TooMany, busyDetail)
	if _, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "obs.fits", "single"), staging.Options{}); err != nil {
		t.Fatal(err)
	}
	items, err := fx.svc.HandleBatch(context.Background(), alice, []staging.Request{req("local_copy", "obs.fits", "b3")}, staging.Options{})
	if err != nil || items[0].Err != nil {
		t.Fatalf("batch of one in the free slot: %v %+v", err, items)
	}
	fx.copy.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	inFlight(t, fx.svc, 0, 0)
	if n := len(fx.store.All()); n != 5 { // 2 held, the missing source, the single, the batch's item
		t.Fatalf("%d records, want 5", n)
	}
}

// A batch runs in as many slots as it runs items at once, never more than
// the limit: with MAX_INFLIGHT=2, a batch of five runs two at a time.
func TestBatchRunsInItsSlots(t *testing.T) {
	fx := newFixture(t)
	fx.copy.started = make(chan string, 8)
	fx.svc.MaxInflight = 2
	batch := make([]staging.Request, 5)
	for i := range batch {
		batch[i] = req("local_copy", "slow", "b/"+string(rune('a'+i)))
	}
	result := make(chan []staging.BatchItem, 1)
	go func() {
		items, err := fx.svc.HandleBatch(context.Background(), alice, batch, staging.Options{})
		if err != nil {
			t.Error(err)
		}
		result <- items
	}()
	<-fx.copy.started
	<-fx.copy.started
	_, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "obs.fits", "x"), staging.Options{})
	wantKind(t, err, staging.TooMany, busyDetail)
	// Each item that ends lets the next one run, in its slot.
	for range len(batch) - 2 {
		inFlight(t, fx.svc, 2, 2*staging.DefaultFiles)
		if len(fx.copy.started) > 0 {
			t.Fatal("more items run at once than the batch has slots")
		}
		fx.copy.gate <- struct{}{}
		<-fx.copy.started
	}
	fx.copy.gate <- struct{}{}
	fx.copy.gate <- struct{}{}
	for _, it := range <-result {
		if it.Err != nil || it.Outcome.Operation.Status != staging.StatusSuccess {
			t.Fatalf("%+v", it)
		}
	}
	inFlight(t, fx.svc, 0, 0)
}

// Async work run in this process keeps its slot while it runs in the
// background; an async batch runs its items in the batch's slots.
func TestAsyncRunHereHoldsItsSlot(t *testing.T) {
	fx := newFixture(t)
	fx.copy.started = make(chan string, 8)
	fx.svc.MaxInflight = 2
	out, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "slow", "one"), staging.Options{Async: true})
	if err != nil || !out.Accepted {
		t.Fatalf("%+v %v", out, err)
	}
	<-fx.copy.started
	inFlight(t, fx.svc, 1, staging.DefaultFiles)
	// One slot left: a batch, which would run two items at once, is
	// refused whole.
	batch := []staging.Request{req("local_copy", "slow", "b1"), req("local_copy", "slow", "b2"), req("local_copy", "slow", "b3")}
	_, err = fx.svc.HandleBatch(context.Background(), alice, batch, staging.Options{Async: true})
	wantKind(t, err, staging.TooMany, busyDetail)
	fx.copy.gate <- struct{}{}
	if err := fx.svc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	inFlight(t, fx.svc, 0, 0)

	// Free again: the batch is accepted, its items recorded, and run two
	// at a time in the background.
	items, err := fx.svc.HandleBatch(context.Background(), alice, batch, staging.Options{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Err != nil || !it.Outcome.Accepted {
			t.Fatalf("%+v", it)
		}
	}
	<-fx.copy.started
	<-fx.copy.started
	inFlight(t, fx.svc, 2, 2*staging.DefaultFiles)
	_, err = fx.svc.Handle(context.Background(), alice, req("local_copy", "obs.fits", "x"), staging.Options{Async: true})
	wantKind(t, err, staging.TooMany, busyDetail)
	if len(fx.copy.started) > 0 {
		t.Fatal("the async batch runs more items at once than it has slots")
	}
	fx.copy.gate <- struct{}{}
	<-fx.copy.started
	fx.copy.gate <- struct{}{}
	fx.copy.gate <- struct{}{}
	if err := fx.svc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	inFlight(t, fx.svc, 0, 0)
	if records := fx.store.All(); len(records) != 4 {
		t.Fatalf("%d records, want 4", len(records))
	}
	for _, op := range fx.store.All() {
		if op.Status != staging.StatusSuccess {
			t.Errorf("%+v", op)
		}
	}
}

// A download holds its slot until the door has streamed it.
func TestDownloadHoldsItsSlotUntilDone(t *testing.T) {
	fx := newFixture(t)
	fx.svc.MaxInflight = 1
	dl := staging.Request{Method: "download", Username: "alice", Source: "a"}
	out, err := fx.svc.Handle(context.Background(), alice, dl, staging.Options{Stream: true})
	if err != nil || out.Download == nil {
		t.Fatalf("%+v %v", out, err)
	}
	inFlight(t, fx.svc, 1, staging.DefaultFiles)
	_, err = fx.svc.Handle(context.Background(), alice, req("local_copy", "obs.fits", "x"), staging.Options{})
	wantKind(t, err, staging.TooMany, busyDetail)
	if err := out.Done(1000, nil); err != nil {
		t.Fatal(err)
	}
	inFlight(t, fx.svc, 0, 0)
	if _, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "obs.fits", "x"), staging.Options{}); err != nil {
		t.Fatal(err)
	}
}

// Work already recorded is never lost to a full process: a broker's
// hand-off, a hand-off to another function and a DID's completion are
// refused with their records left pending, and succeed when redelivered.
func TestRecordedWorkWaitsForRedelivery(t *testing.T) {
	t.Run("hand-off", func(t *testing.T) {
		fx := newFixture(t)
		fx.copy.started = make(chan string, 8)
		sent := make(chan staging.Request, 1)
		fx.svc.Handoff = &eventHandoff{t: t, drop: true, sent: sent}
		out, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "obs.fits", "x"), staging.Options{Async: true})
		if err != nil || !out.Accepted {
			t.Fatalf("%+v %v", out, err)
		}
		worker := fx.service("stage")
		worker.MaxInflight = 1
		done := fx.hold(t, worker, 1)
		delivery := <-sent
		_, err = worker.Handle(context.Background(), staging.Trusted, delivery, staging.Options{})
		wantKind(t, err, staging.TooMany, busyDetail)
		if op, _ := fx.store.Get(context.Background(), out.Operation.ID); op.Status != staging.StatusPending {
			t.Fatalf("refused hand-off: %+v", op)
		}
		fx.copy.gate <- struct{}{}
		<-done
		if got, err := worker.Handle(context.Background(), staging.Trusted, delivery, staging.Options{}); err != nil || got.Operation.Status != staging.StatusSuccess {
			t.Fatalf("redelivery: %+v %v", got, err)
		}
	})

	t.Run("another function", func(t *testing.T) {
		fx := newFixture(t)
		fx.remote.started = make(chan string, 8)
		fx.jupyter.MaxInflight = 1
		held := make(chan error, 1)
		go func() {
			_, err := fx.svc.Handle(context.Background(), alice, req("jupyter_copy", "slow", "held"), staging.Options{})
			held <- err
		}()
		<-fx.remote.started
		// Asked now: recorded before it was handed over, so it fails,
		// with the kind the client retries.
		out, err := fx.svc.Handle(context.Background(), alice, req("jupyter_copy", "obs.fits", "now"), staging.Options{})
		wantKind(t, err, staging.TooMany, busyDetail)
		if out == nil || out.Operation.Status != staging.StatusFailed || out.Operation.ErrorKind != staging.TooMany {
			t.Fatalf("%+v", out)
		}
		// Handed on by a broker: left pending for the broker.
		sent := make(chan staging.Request, 1)
		fx.svc.Handoff = &eventHandoff{t: t, drop: true, sent: sent}
		accepted, err := fx.svc.Handle(context.Background(), alice, req("jupyter_copy", "obs.fits", "later"), staging.Options{Async: true})
		if err != nil {
			t.Fatal(err)
		}
		delivery := <-sent
		got, err := fx.svc.Handle(context.Background(), staging.Trusted, delivery, staging.Options{})
		wantKind(t, err, staging.TooMany, busyDetail)
		if got != nil {
			t.Fatalf("refused hand-off answered with %+v", got)
		}
		if op, _ := fx.store.Get(context.Background(), accepted.Operation.ID); op.Status != staging.StatusPending {
			t.Fatalf("%+v", op)
		}
		fx.remote.gate <- struct{}{}
		if err := <-held; err != nil {
			t.Fatal(err)
		}
		if got, err := fx.svc.Handle(context.Background(), staging.Trusted, delivery, staging.Options{}); err != nil || got.Operation.Status != staging.StatusSuccess {
			t.Fatalf("redelivery: %+v %v", got, err)
		}
		inFlight(t, fx.svc, 0, 0)
		inFlight(t, fx.jupyter, 0, 0)
	})

	t.Run("DID completion", func(t *testing.T) {
		fx := newFixture(t)
		fx.copy.started = make(chan string, 8)
		fx.svc.MaxInflight = 1
		done := fx.hold(t, fx.svc, 1)
		// Waiting for a replica is not work in flight: accepted while full.
		r := staging.Request{Method: "local_copy", Username: "alice", DID: "skao:far.fits", Target: "far.fits"}
		out, err := fx.svc.Handle(context.Background(), alice, r, staging.Options{})
		if err != nil || !out.Waiting {
			t.Fatalf("%+v %v", out, err)
		}
		fx.replicas["skao:far.fits"] = "rse/far.fits" // arrived
		ok := func() error { return nil }
		_, err = fx.svc.Complete(context.Background(), staging.System, "skao:far.fits", "rse/far.fits", ok)
		wantKind(t, err, staging.TooMany, busyDetail)
		if op, _ := fx.store.Get(context.Background(), out.Operation.ID); op.Status != staging.StatusPending {
			t.Fatalf("%+v", op)
		}
		fx.copy.gate <- struct{}{}
		<-done
		c, err := fx.svc.Complete(context.Background(), staging.System, "skao:far.fits", "rse/far.fits", ok)
		if err != nil || len(c.Operations) != 1 || c.Operations[0].Status != staging.StatusSuccess {
			t.Fatalf("%+v %v", c, err)
		}
	})
}

// The files a plan declares count: a process whose files are taken
// refuses more, whatever its operations.
func TestOpenFilesBound(t *testing.T) {
	fx := newFixture(t)
	fx.copy.started = make(chan string, 8)
	fx.svc.MaxInflight, fx.svc.MaxOpenFiles = 10, 2*staging.DefaultFiles
	done := fx.hold(t, fx.svc, 2)
	_, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "obs.fits", "x"), staging.Options{})
	wantKind(t, err, staging.TooMany, busyDetail)
	for range 2 {
		fx.copy.gate <- struct{}{}
		<-done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := fx.svc.Handle(ctx, alice, req("local_copy", "obs.fits", "x"), staging.Options{}); err != nil {
		t.Fatal(err)
	}
}

// A redelivery that waits for its first delivery, still running here or
// elsewhere, is work in flight too: it takes a share while it polls the
// store, so a flood of redeliveries is refused with TooMany instead of
// each waiting unbounded; the first delivery is not disturbed.
func TestRedeliveryWaitingHoldsASlot(t *testing.T) {
	fx := newFixture(t)
	fx.copy.started = make(chan string, 8)
	fx.svc.MaxInflight = 2
	event := req("local_copy", "slow", "event")
	event.EventSource, event.EventID = "/test", "slow-1"
	first := make(chan error, 1)
	go func() {
		_, err := fx.svc.Handle(context.Background(), alice, event, staging.Options{})
		first <- err
	}()
	<-fx.copy.started
	inFlight(t, fx.svc, 1, staging.DefaultFiles)

	waiting := make(chan *staging.Outcome, 1)
	go func() {
		out, err := fx.svc.Handle(context.Background(), alice, event, staging.Options{})
		if err != nil {
			t.Error(err)
		}
		waiting <- out
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ops, _ := fx.svc.InFlight(); ops == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the redelivery did not take a share while it waits")
		}
		time.Sleep(time.Millisecond)
	}
	_, err := fx.svc.Handle(context.Background(), alice, event, staging.Options{})
	wantKind(t, err, staging.TooMany, busyDetail)

	fx.copy.gate <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if out := <-waiting; out == nil || !out.Replayed || out.Operation.Status != staging.StatusSuccess {
		t.Fatalf("waiting redelivery: %+v", out)
	}
	inFlight(t, fx.svc, 0, 0)
	// Finished: a redelivery is answered without waiting, so without a
	// share, even by a full process.
	done := fx.hold(t, fx.svc, 2)
	if out, err := fx.svc.Handle(context.Background(), alice, event, staging.Options{}); err != nil || !out.Replayed {
		t.Fatalf("redelivery of a finished event, process full: %+v %v", out, err)
	}
	fx.copy.gate <- struct{}{}
	fx.copy.gate <- struct{}{}
	<-done
	<-done
}
