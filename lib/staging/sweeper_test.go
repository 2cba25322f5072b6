package staging_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/staging/stagingtest"
)

// The sweeper leaves the store to a function's first request and looks for
// dead operations one interval (a third of a lease) after it starts, then
// every interval.
func TestSweeperStartsAfterOneInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := stagingtest.NewMemStore()
		old := time.Now().Add(-time.Hour)
		dead := staging.Operation{ID: staging.NewID(), Method: "local_copy", Username: "alice", LocalPathOnStorage: "a",
			RelativePath: "a", Status: staging.StatusRunning, CreatedAt: old, UpdatedAt: old, LeaseOwner: "gone"}
		store.Put(dead)
		svc := &staging.Service{Store: store, Function: "stage", Lease: 3 * time.Second}
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go svc.Sweeper(ctx)

		status := func() staging.Status {
			op, err := store.Get(context.Background(), dead.ID)
			if err != nil {
				t.Fatal(err)
			}
			return op.Status
		}
		synctest.Wait()
		if got := status(); got != staging.StatusRunning {
			t.Fatalf("at start: %s, want still running (no sweep yet)", got)
		}
		time.Sleep(time.Second - time.Nanosecond)
		synctest.Wait()
		if got := status(); got != staging.StatusRunning {
			t.Fatalf("just before one interval: %s, want still running", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := status(); got != staging.StatusFailed {
			t.Fatalf("after one interval: %s, want failed (taken for dead)", got)
		}
		stop()
		synctest.Wait()
	})
}
