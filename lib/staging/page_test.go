package staging_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/staging/stagingtest"
)

func TestCursorRoundTrip(t *testing.T) {
	c := staging.Cursor{CreatedAt: time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.UTC), ID: staging.NewID()}
	got, err := staging.DecodeCursor(c.Encode())
	if err != nil || !got.CreatedAt.Equal(c.CreatedAt) || got.ID != c.ID {
		t.Fatalf("round trip: %+v %v, want %+v", got, err, c)
	}
	for _, bad := range []string{"", "!!!", "bm90LWEtY3Vyc29y", strings.Repeat("A", 200),
		// "-5.x", "12.x y", "12." encoded
		"LTUueA", "MTIueCB5", "MTIu",
		// "253402300800000000.a" (the year 10000) and "9000000000000000000.a"
		"MjUzNDAyMzAwODAwMDAwMDAwLmE", "OTAwMDAwMDAwMDAwMDAwMDAwMC5h"} {
		if _, err := staging.DecodeCursor(bad); err == nil {
			t.Errorf("DecodeCursor(%q) accepted", bad)
		} else if k, _ := staging.KindOf(err); k != staging.Invalid {
			t.Errorf("DecodeCursor(%q): %v, want invalid", bad, err)
		}
	}
}

// A page holds at most its limit and its byte bound, says where the next
// starts, and the pages together hold every operation the caller may
// read, once, newest first.
func TestOperationsPages(t *testing.T) {
	store := stagingtest.NewMemStore()
	svc := &staging.Service{Store: store}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	long := strings.Repeat("p", 4000)
	for i := range 30 {
		user := []string{"alice", "bob", "carol"}[i%3]
		store.Put(staging.Operation{ID: staging.NewID(), Method: "local_copy", Username: user,
			LocalPathOnStorage: long, RelativePath: "x", Status: staging.StatusFailed,
			// a record from before the limits: its reason is far longer than MaxText
			ErrorReason: strings.Repeat("r", 100_000),
			CreatedAt:   t0.Add(time.Duration(i/2) * time.Second)})
	}
	ctx := context.Background()
	walk := func(caller staging.Caller, f staging.Filter, maxBytes int) (pages int, ids []string) {
		for {
			page, err := svc.OperationsPage(ctx, caller, f, maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(page.Operations)
			if maxBytes == 0 {
				maxBytes = staging.MaxPageBytes
			}
			if len(page.Operations) > 1 && len(b) > maxBytes {
				t.Fatalf("page of %d bytes, bound %d", len(b), maxBytes)
			}
			if len(page.Operations) == 0 || len(page.Operations) > f.Limit {
				t.Fatalf("page of %d operations, limit %d", len(page.Operations), f.Limit)
			}
			for _, op := range page.Operations {
				if len(op.ErrorReason) > staging.MaxText {
					t.Fatalf("a listed error reason of %d bytes", len(op.ErrorReason))
				}
				if caller.Name == "alice" && op.Username != "alice" {
					t.Fatalf("alice sees %s's operation", op.Username)
				}
				ids = append(ids, op.ID)
			}
			pages++
			if page.Next == nil {
				return pages, ids
			}
			f.After = *page.Next
		}
	}
	all, _ := store.List(ctx, staging.Filter{Limit: 1000})
	pages, ids := walk(staging.Trusted, staging.Filter{Limit: 7}, staging.MaxPageBytes)
	if pages != 5 || len(ids) != 30 {
		t.Errorf("admin, pages of 7: %d pages, %d operations", pages, len(ids))
	}
	for i, op := range all {
		if ids[i] != op.ID {
			t.Fatalf("operation %d is %s, want %s", i, ids[i], op.ID)
		}
	}
	// About 5 KiB each: a 12 KiB bound holds two.
	pages, ids = walk(staging.Trusted, staging.Filter{Limit: 100}, 12<<10)
	if pages != 15 || len(ids) != 30 {
		t.Errorf("admin, 12 KiB pages: %d pages, %d operations", pages, len(ids))
	}
	// A bound smaller than one operation still moves on, one at a time.
	if pages, _ = walk(staging.Trusted, staging.Filter{Limit: 100}, 10); pages != 30 {
		t.Errorf("tiny bound: %d pages", pages)
	}
	if _, ids = walk(staging.Caller{Name: "alice"}, staging.Filter{Limit: 3}, 0); len(ids) != 10 {
		t.Errorf("alice: %d operations, want her 10", len(ids))
	}
	if _, err := svc.OperationsPage(ctx, staging.Caller{Name: "alice"}, staging.Filter{Username: "bob"}, 0); err == nil {
		t.Error("alice lists bob's operations")
	}
	if _, err := svc.OperationsPage(ctx, staging.Caller{}, staging.Filter{}, 0); err == nil {
		t.Error("anonymous lists operations")
	}
}
