package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// testListPages walks every filter's listing page by page with the cursor
// of each page's last operation: every operation comes exactly once, in
// the order of one long listing, ties in time included.
func testListPages(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	var all []*staging.Operation
	for i := range 40 {
		user := []string{"alice", "bob"}[i%2]
		// Every third shares its creation time with the one before.
		created := t0.Add(time.Duration(i-i%3) * 250 * time.Millisecond)
		op := newOp(user, created)
		if i%5 == 0 {
			op.Status = staging.StatusRunning
		}
		mustCreate(t, s, op)
		all = append(all, op)
	}
	for _, f := range []staging.Filter{{}, {Username: "alice"}, {Status: staging.StatusRunning},
		{Username: "bob", Status: staging.StatusPending}} {
		want, err := s.List(ctx, staging.Filter{Username: f.Username, Status: f.Status, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, 3, 7} {
			var got []string
			page := f
			page.Limit = size
			for n := 0; ; n++ {
				ops, err := s.List(ctx, page)
				if err != nil {
					t.Fatal(err)
				}
				for _, op := range ops {
					got = append(got, op.ID)
				}
				if len(ops) < size || n > len(all) {
					break
				}
				last := ops[len(ops)-1]
				page.After = staging.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
			}
			var wantIDs []string
			for _, op := range want {
				wantIDs = append(wantIDs, op.ID)
			}
			if fmt.Sprint(got) != fmt.Sprint(wantIDs) {
				t.Errorf("%+v in pages of %d:\n got %v\nwant %v", f, size, got, wantIDs)
			}
		}
	}
}
