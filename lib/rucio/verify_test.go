package rucio

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// A replica is read once per message, whoever asks and however often: a
// redelivery whose first delivery stopped waiting takes the check's
// outcome; a transient outcome is tried again; a changed replica is
// checked anew; and the checks kept are bounded.
func TestChecksRunOncePerReplica(t *testing.T) {
	var c checks
	key := checkKey{path: "rse/a.ms", size: 8, mtime: 1, wantSize: 8, adler: "01c20001"}
	var reads atomic.Int32
	gate := make(chan struct{})
	slow := func() error { reads.Add(1); <-gate; return nil }

	// The first delivery stops waiting; the check goes on.
	ctx, hangUp := context.WithCancel(context.Background())
	hangUp()
	if err := c.run(ctx, key, "user.a:a.ms", slow); !staging.Transient(err) {
		t.Fatalf("a delivery that stopped waiting: %v, want a transient error", err)
	}
	// Redeliveries meanwhile wait for that same check.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = c.run(context.Background(), key, "user.a:a.ms", slow) })
	}
	close(gate)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("redelivery: %v", err)
		}
	}
	if err := c.run(context.Background(), key, "user.a:a.ms", slow); err != nil || reads.Load() != 1 {
		t.Fatalf("later: %v, %d reads, want nil and 1", err, reads.Load())
	}

	// A replica changed since (another mtime) is read again.
	changed := key
	changed.mtime = 2
	if err := c.run(context.Background(), changed, "user.a:a.ms", slow); err != nil || reads.Load() != 2 {
		t.Fatalf("changed replica: %v, %d reads", err, reads.Load())
	}

	// A transient failure is not kept; a lasting one is.
	for _, tc := range []struct {
		err   error
		reads int32
	}{
		{staging.Errorf(staging.Internal, "read error"), 2},
		{staging.Errorf(staging.Conflict, "Replica has adler32 1, the transfer reported 2"), 1},
	} {
		k := key
		k.path = fmt.Sprint(tc.err)
		var n atomic.Int32
		for range 2 {
			c.run(context.Background(), k, "user.a:a.ms", func() error { n.Add(1); return tc.err })
		}
		if n.Load() != tc.reads {
			t.Errorf("%v: read %d times, want %d", tc.err, n.Load(), tc.reads)
		}
	}

	// Checks kept are bounded: with every place taken by a running one, a
	// new replica is refused, to be delivered again.
	var full checks
	block := make(chan struct{})
	for i := range maxChecks {
		k := checkKey{path: fmt.Sprint(i)}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		full.run(ctx, k, "d", func() error { <-block; return nil })
	}
	err := full.run(context.Background(), checkKey{path: "one more"}, "d", func() error { return nil })
	if k, _ := staging.KindOf(err); k != staging.TooMany {
		t.Fatalf("with %d checks running: %v, want too many", maxChecks, err)
	}
	close(block)
}
