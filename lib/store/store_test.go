package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pressly/goose/v3"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// backends give a URL of a fresh, empty database.
var backends = []struct {
	name string
	url  func(t *testing.T) string
}{
	{"sqlite", func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "staging.db") }},
	{"mariadb", func(t *testing.T) string { return testenv.MariaDB(t) }},
}

// cases run against every backend, each on a fresh database.
var cases = []struct {
	name string
	run  func(t *testing.T, url string)
}{
	{"RoundTrip", testRoundTrip},
	{"NotFound", testNotFound},
	{"DuplicateEventKey", testDuplicateEventKey},
	{"DuplicateTargetLock", testDuplicateTargetLock},
	{"EmptyKeysDoNotCollide", testEmptyKeys},
	{"Claim", testClaim},
	{"FinishReleasesLock", testFinishReleasesLock},
	{"Progress", testProgress},
	{"Touch", testTouch},
	{"Abandon", testAbandon},
	{"List", testList},
	{"ListPages", testListPages},
	{"PendingDIDs", testPendingDIDs},
	{"CountWaiting", testCountWaiting},
	{"Stale", testStale},
	{"ConcurrentOpen", testConcurrentOpen},
	{"ConcurrentWriters", testConcurrentWriters},
	{"Warm", testWarm},
}

func TestStore(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, b.url(t)) })
			}
		})
	}
}

func open(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testWarm: Warm prepares the two statements every staging writes, and
// those writes then run on them.
func testWarm(t *testing.T, url string) {
	s := open(t, url)
	s.Warm(context.Background())
	for name, tmpl := range map[string]*template{"create": &s.create, "finish": &s.finish} {
		if tmpl.err != nil {
			t.Fatalf("%s: %v", name, tmpl.err)
		}
		if _, ok := s.stmts.Load(tmpl.q); !ok {
			t.Errorf("%s: not prepared after Warm: %s", name, tmpl.q)
		}
	}
	op := newOp("alice", t0)
	op.Status, op.LeaseOwner = staging.StatusRunning, "replica-1"
	mustCreate(t, s, op)
	op.Status, op.Message, op.FinishedAt = staging.StatusSuccess, "done", &t0
	if err := s.Finish(context.Background(), op, "replica-1"); err != nil {
		t.Fatalf("Finish after Warm: %v", err)
	}
	if got := mustGet(t, s, op.ID); got.Status != staging.StatusSuccess {
		t.Fatalf("status %q, want success", got.Status)
	}
}

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

// newOp returns a pending operation created at created.
func newOp(user string, created time.Time) *staging.Operation {
	id, _ := uuid.NewV7()
	return &staging.Operation{
		ID: id.String(), Method: "local_copy", Username: user,
		LocalPathOnStorage: "/data/x", RelativePath: "x",
		Status: staging.StatusPending, CreatedAt: created, UpdatedAt: created,
	}
}

func mustCreate(t *testing.T, s *Store, op *staging.Operation) {
	t.Helper()
	if err := s.Create(context.Background(), op); err != nil {
		t.Fatalf("Create %s: %v", op.ID, err)
	}
}

func mustGet(t *testing.T, s *Store, id string) *staging.Operation {
	t.Helper()
	op, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get %s: %v", id, err)
	}
	return op
}

// hash is a 64-hex-digit key, as the callers make them.
func hash(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }

func testRoundTrip(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	zone := time.FixedZone("CET", 3600)
	// Nanoseconds are dropped, the zone becomes UTC.
	created := time.Date(2026, 1, 2, 3, 4, 5, 123456789, zone)
	updated := created.Add(90*time.Minute + 1001*time.Nanosecond)
	finished := updated.Add(time.Microsecond)
	long := "/" + strings.Repeat("d", 4000)
	op := &staging.Operation{
		ID:                 "0190a6e4-2b4c-7d8e-9f00-0123456789ab",
		Method:             "direct_download",
		Username:           "ÄliceÖ",
		LocalPathOnStorage: long,
		RelativePath:       "a b/ünï/c.fits",
		Status:             staging.StatusFailed,
		Message:            "message\nwith lines",
		ErrorReason:        "reason 'quoted' \"too\"",
		ErrorKind:          staging.Upstream,
		Bytes:              1 << 40,
		BytesDone:          1<<40 - 1,
		CreatedAt:          created,
		UpdatedAt:          updated,
		FinishedAt:         &finished,
		EventKey:           hash("event"),
		TargetLock:         hash("lock"),
		LeaseOwner:         "host/1/abc",
		DID:                "user.jdoe:image.fits",
	}
	mustCreate(t, s, op)

	want := *op
	want.CreatedAt = time.Date(2026, 1, 2, 2, 4, 5, 123456000, time.UTC)
	want.UpdatedAt = want.CreatedAt.Add(90*time.Minute + time.Microsecond)
	f := want.UpdatedAt.Add(time.Microsecond)
	want.FinishedAt = &f

	check := func(how string, got *staging.Operation, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		for _, tm := range []time.Time{got.CreatedAt, got.UpdatedAt, *got.FinishedAt} {
			if tm.Location() != time.UTC {
				t.Errorf("%s: time %v not in UTC", how, tm)
			}
		}
		if *got.FinishedAt != *want.FinishedAt {
			t.Errorf("%s: FinishedAt %v, want %v", how, *got.FinishedAt, *want.FinishedAt)
		}
		g, w := *got, want
		g.FinishedAt, w.FinishedAt = nil, nil
		if g != w {
			t.Errorf("%s:\n got %+v\nwant %+v", how, g, w)
		}
	}
	got, err := s.Get(ctx, op.ID)
	check("Get", got, err)
	got, err = s.GetByEventKey(ctx, op.EventKey)
	check("GetByEventKey", got, err)
	got, err = s.GetByTargetLock(ctx, op.TargetLock)
	check("GetByTargetLock", got, err)

	// A pending operation: no finish time, empty strings, no keys.
	p := newOp("bob", t0)
	mustCreate(t, s, p)
	got = mustGet(t, s, p.ID)
	if got.FinishedAt != nil || got.Message != "" || got.ErrorReason != "" || got.EventKey != "" || got.TargetLock != "" || got.LeaseOwner != "" {
		t.Errorf("pending op read back as %+v", got)
	}
	if !got.CreatedAt.Equal(t0) {
		t.Errorf("CreatedAt %v, want %v", got.CreatedAt, t0)
	}
}

func testNotFound(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	mustCreate(t, s, newOp("alice", t0)) // keys empty: must not match ""
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, staging.ErrNotFound) {
		t.Errorf("Get: %v, want ErrNotFound", err)
	}
	for _, k := range []string{"", hash("x")} {
		if _, err := s.GetByEventKey(ctx, k); !errors.Is(err, staging.ErrNotFound) {
			t.Errorf("GetByEventKey(%q): %v, want ErrNotFound", k, err)
		}
		if _, err := s.GetByTargetLock(ctx, k); !errors.Is(err, staging.ErrNotFound) {
			t.Errorf("GetByTargetLock(%q): %v, want ErrNotFound", k, err)
		}
	}
	if err := s.Progress(ctx, "nope", "me", 1, 1, t0); !errors.Is(err, staging.ErrLeaseLost) {
		t.Errorf("Progress: %v, want ErrLeaseLost", err)
	}
	op := newOp("alice", t0)
	op.Status = staging.StatusSuccess
	if err := s.Finish(ctx, op, "me"); !errors.Is(err, staging.ErrLeaseLost) {
		t.Errorf("Finish: %v, want ErrLeaseLost", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func testDuplicateEventKey(t *testing.T, url string) {
	s := open(t, url)
	a, b := newOp("alice", t0), newOp("alice", t0)
	a.EventKey, b.EventKey = hash("e1"), hash("e1")
	mustCreate(t, s, a)
	err := s.Create(context.Background(), b)
	if !errors.Is(err, staging.ErrDuplicate) {
		t.Fatalf("second Create with the same event key: %v, want ErrDuplicate", err)
	}
	if !strings.Contains(err.Error(), b.ID) {
		t.Errorf("error %q does not name the operation", err)
	}
	// Same ID again is a duplicate too.
	c := newOp("alice", t0)
	c.ID = a.ID
	if err := s.Create(context.Background(), c); !errors.Is(err, staging.ErrDuplicate) {
		t.Errorf("Create with a taken ID: %v, want ErrDuplicate", err)
	}
}

func testDuplicateTargetLock(t *testing.T, url string) {
	s := open(t, url)
	a, b := newOp("alice", t0), newOp("alice", t0)
	a.Status, b.Status = staging.StatusRunning, staging.StatusRunning
	a.TargetLock, b.TargetLock = hash("l1"), hash("l1")
	mustCreate(t, s, a)
	if err := s.Create(context.Background(), b); !errors.Is(err, staging.ErrDuplicate) {
		t.Fatalf("second Create with the same target lock: %v, want ErrDuplicate", err)
	}
}

func testEmptyKeys(t *testing.T, url string) {
	s := open(t, url)
	for i := 0; i < 3; i++ {
		mustCreate(t, s, newOp("alice", t0)) // EventKey and TargetLock ""
	}
	a, b := newOp("alice", t0), newOp("alice", t0)
	a.EventKey, b.EventKey = hash("e"), ""
	a.TargetLock, b.TargetLock = "", hash("l")
	mustCreate(t, s, a)
	mustCreate(t, s, b)
}

func testClaim(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	a, b := newOp("alice", t0), newOp("alice", t0)
	mustCreate(t, s, a)
	mustCreate(t, s, b)
	now := t0.Add(time.Second)
	ok, err := s.Claim(ctx, a.ID, hash("target"), "me", now)
	if err != nil || !ok {
		t.Fatalf("first Claim: %v %v, want true", ok, err)
	}
	got := mustGet(t, s, a.ID)
	if got.Status != staging.StatusRunning || got.TargetLock != hash("target") || !got.UpdatedAt.Equal(now) || got.LeaseOwner != "me" {
		t.Errorf("claimed op: %+v", got)
	}
	if ok, err := s.Claim(ctx, a.ID, hash("other"), "other", now); err != nil || ok {
		t.Errorf("second Claim: %v %v, want false", ok, err)
	}
	if got := mustGet(t, s, a.ID); got.TargetLock != hash("target") || got.LeaseOwner != "me" {
		t.Errorf("second Claim changed the lock to %q, the owner to %q", got.TargetLock, got.LeaseOwner)
	}
	if ok, err := s.Claim(ctx, b.ID, hash("target"), "me", now); !errors.Is(err, staging.ErrDuplicate) || ok {
		t.Errorf("Claim of a held lock: %v %v, want ErrDuplicate", ok, err)
	}
	if got := mustGet(t, s, b.ID); got.Status != staging.StatusPending {
		t.Errorf("failed Claim changed status to %s", got.Status)
	}
	if ok, err := s.Claim(ctx, "missing", hash("x"), "me", now); err != nil || ok {
		t.Errorf("Claim of a missing op: %v %v", ok, err)
	}
	if got, err := s.GetByTargetLock(ctx, hash("target")); err != nil || got.ID != a.ID {
		t.Errorf("GetByTargetLock: %v %v", got, err)
	}
	// An empty lock claims without a lock.
	c := newOp("alice", t0)
	mustCreate(t, s, c)
	if ok, err := s.Claim(ctx, c.ID, "", "me", now); err != nil || !ok {
		t.Errorf("Claim without lock: %v %v", ok, err)
	}
}

func testFinishReleasesLock(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	lock := hash("user/target")
	a := newOp("alice", t0)
	mustCreate(t, s, a)
	if ok, err := s.Claim(ctx, a.ID, lock, "me", t0); err != nil || !ok {
		t.Fatalf("Claim: %v %v", ok, err)
	}
	fin := t0.Add(3 * time.Second)
	a.Status, a.Message, a.Bytes, a.BytesDone, a.FinishedAt = staging.StatusSuccess, "done", 10, 10, &fin
	if err := s.Finish(ctx, a, "someone else"); !errors.Is(err, staging.ErrLeaseLost) {
		t.Fatalf("Finish by another replica: %v, want ErrLeaseLost", err)
	}
	if err := s.Finish(ctx, a, "me"); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, a.ID)
	if got.Status != staging.StatusSuccess || got.Message != "done" || got.Bytes != 10 ||
		got.BytesDone != 10 || got.TargetLock != "" || !got.FinishedAt.Equal(fin) || !got.UpdatedAt.Equal(fin) {
		t.Errorf("finished op: %+v", got)
	}
	if _, err := s.GetByTargetLock(ctx, lock); !errors.Is(err, staging.ErrNotFound) {
		t.Errorf("lock still held: %v", err)
	}
	b := newOp("alice", t0)
	b.Status, b.TargetLock = staging.StatusRunning, lock
	mustCreate(t, s, b) // the lock is free again

	// A final status is never rewritten, not even by its owner.
	a.Status, a.Message = staging.StatusFailed, "again"
	if err := s.Finish(ctx, a, "me"); !errors.Is(err, staging.ErrLeaseLost) {
		t.Errorf("second Finish: %v, want ErrLeaseLost", err)
	}
	if got := mustGet(t, s, a.ID); got.Status != staging.StatusSuccess || got.Message != "done" {
		t.Errorf("second Finish rewrote the outcome: %+v", got)
	}

	// Finish needs a final status and fills in FinishedAt.
	c := newOp("alice", t0)
	mustCreate(t, s, c)
	if ok, err := s.Claim(ctx, c.ID, "", "me", t0); err != nil || !ok {
		t.Fatalf("Claim: %v %v", ok, err)
	}
	if err := s.Finish(ctx, c, "me"); err == nil {
		t.Error("Finish with status pending succeeded")
	}
	c.Status, c.ErrorReason, c.ErrorKind = staging.StatusFailed, "boom", staging.Internal
	if err := s.Finish(ctx, c, "me"); err != nil || c.FinishedAt == nil {
		t.Fatalf("Finish: %v, FinishedAt %v", err, c.FinishedAt)
	}
	if got := mustGet(t, s, c.ID); got.ErrorReason != "boom" || got.ErrorKind != staging.Internal || got.FinishedAt == nil || !got.FinishedAt.Equal(*c.FinishedAt) {
		t.Errorf("finished op: %+v", got)
	}
}

func testTouch(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	a := newOp("alice", t0)
	mustCreate(t, s, a)
	now := t0.Add(time.Minute)
	if ok, err := s.Touch(ctx, a.ID, now); err != nil || !ok {
		t.Fatalf("Touch of a pending op: %v %v", ok, err)
	}
	if got := mustGet(t, s, a.ID); !got.UpdatedAt.Equal(now) || got.Status != staging.StatusPending {
		t.Errorf("after Touch: %+v", got)
	}
	if ok, err := s.Claim(ctx, a.ID, "", "me", now); err != nil || !ok {
		t.Fatalf("Claim: %v %v", ok, err)
	}
	if ok, err := s.Touch(ctx, a.ID, now.Add(time.Minute)); err != nil || ok {
		t.Errorf("Touch of a running op: %v %v, want false", ok, err)
	}
	if got := mustGet(t, s, a.ID); !got.UpdatedAt.Equal(now) {
		t.Errorf("a running op touched: %+v", got)
	}
	if ok, err := s.Touch(ctx, "nope", now); err != nil || ok {
		t.Errorf("Touch of no op: %v %v", ok, err)
	}
}

func testProgress(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	a := newOp("alice", t0)
	mustCreate(t, s, a)
	now := t0.Add(time.Minute)
	if err := s.Progress(ctx, a.ID, "me", 100, 40, now); !errors.Is(err, staging.ErrLeaseLost) {
		t.Fatalf("Progress of a pending op: %v, want ErrLeaseLost", err)
	}
	if ok, err := s.Claim(ctx, a.ID, "", "me", t0); err != nil || !ok {
		t.Fatalf("Claim: %v %v", ok, err)
	}
	if err := s.Progress(ctx, a.ID, "me", 100, 40, now); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, a.ID)
	if got.Bytes != 100 || got.BytesDone != 40 || !got.UpdatedAt.Equal(now) || !got.CreatedAt.Equal(t0) {
		t.Errorf("after Progress: %+v", got)
	}
	// The same values again still find the row.
	if err := s.Progress(ctx, a.ID, "me", 100, 40, now); err != nil {
		t.Errorf("repeated Progress: %v", err)
	}
	// Another replica does not hold it.
	if err := s.Progress(ctx, a.ID, "other", 200, 80, now); !errors.Is(err, staging.ErrLeaseLost) {
		t.Errorf("Progress by another replica: %v, want ErrLeaseLost", err)
	}
}

func testAbandon(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	old, recent := t0, t0.Add(10*time.Minute)
	cutoff := t0.Add(5 * time.Minute)
	mk := func(status staging.Status, updated time.Time, lock string) *staging.Operation {
		op := newOp("alice", t0)
		op.Status, op.UpdatedAt, op.TargetLock = status, updated, lock
		if status == staging.StatusRunning {
			op.LeaseOwner = "dead replica"
		}
		if status.Finished() {
			op.FinishedAt = &updated
		}
		mustCreate(t, s, op)
		return op
	}
	staleRunning := mk(staging.StatusRunning, old, hash("a"))
	freshRunning := mk(staging.StatusRunning, recent, hash("b"))
	stalePending := mk(staging.StatusPending, old, "")
	staleDone := mk(staging.StatusSuccess, old, "")

	for _, c := range []struct {
		op     *staging.Operation
		status staging.Status
		want   bool
	}{
		{freshRunning, staging.StatusRunning, false}, // alive
		{staleRunning, staging.StatusPending, false}, // not in that status
		{staleDone, staging.StatusSuccess, false},    // final statuses are never rewritten
		{staleRunning, staging.StatusRunning, true},
		{staleRunning, staging.StatusRunning, false}, // already done
		{stalePending, staging.StatusPending, true},
	} {
		if ok, err := s.Abandon(ctx, c.op.ID, c.status, cutoff, staging.Unavailable, "replica died"); err != nil || ok != c.want {
			t.Errorf("Abandon(%s, %s) = %v %v, want %v", c.op.ID, c.status, ok, err, c.want)
		}
	}
	for _, c := range []struct {
		op     *staging.Operation
		status staging.Status
		reason string
	}{
		{staleRunning, staging.StatusFailed, "replica died"},
		{stalePending, staging.StatusFailed, "replica died"},
		{freshRunning, staging.StatusRunning, ""},
		{staleDone, staging.StatusSuccess, ""},
	} {
		got := mustGet(t, s, c.op.ID)
		if got.Status != c.status || got.ErrorReason != c.reason {
			t.Errorf("op %s: status %s reason %q, want %s %q", got.ID, got.Status, got.ErrorReason, c.status, c.reason)
		}
		if c.status == staging.StatusFailed && (got.ErrorKind != staging.Unavailable || got.TargetLock != "" || got.LeaseOwner != "" || got.FinishedAt == nil) {
			t.Errorf("abandoned op %+v", got)
		}
	}
	if got := mustGet(t, s, freshRunning.ID); got.TargetLock != hash("b") {
		t.Errorf("fresh op lost its lock: %+v", got)
	}
	// The abandoned lock is free again, and the dead replica cannot finish.
	mk(staging.StatusRunning, recent, hash("a"))
	staleRunning.Status = staging.StatusSuccess
	if err := s.Finish(ctx, staleRunning, "dead replica"); !errors.Is(err, staging.ErrLeaseLost) {
		t.Errorf("Finish after Abandon: %v, want ErrLeaseLost", err)
	}
}

func testList(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	// Times across sub-second and second boundaries must sort as times.
	times := []time.Time{
		t0, t0.Add(time.Microsecond), t0.Add(464102 * time.Microsecond), t0.Add(time.Second),
		t0.Add(time.Hour), t0.Add(-time.Hour), t0.Add(24 * time.Hour),
	}
	var alice []*staging.Operation
	for i, tm := range times {
		op := newOp("alice", tm)
		if i%2 == 1 {
			op.Status = staging.StatusRunning
		}
		mustCreate(t, s, op)
		alice = append(alice, op)
		mustCreate(t, s, newOp("bob", tm))
	}
	ids := func(ops []staging.Operation) []string {
		var r []string
		for _, op := range ops {
			r = append(r, op.ID)
		}
		return r
	}
	newestFirst := []string{alice[6].ID, alice[4].ID, alice[3].ID, alice[2].ID, alice[1].ID, alice[0].ID, alice[5].ID}

	got, err := s.List(ctx, staging.Filter{Username: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids(got)) != fmt.Sprint(newestFirst) {
		t.Errorf("List alice:\n got %v\nwant %v", ids(got), newestFirst)
	}
	got, _ = s.List(ctx, staging.Filter{Username: "alice", Limit: 2})
	if fmt.Sprint(ids(got)) != fmt.Sprint(newestFirst[:2]) {
		t.Errorf("List alice limit 2: %v", ids(got))
	}
	got, _ = s.List(ctx, staging.Filter{Username: "alice", Status: staging.StatusRunning})
	if want := []string{alice[3].ID, alice[1].ID, alice[5].ID}; fmt.Sprint(ids(got)) != fmt.Sprint(want) {
		t.Errorf("List alice running:\n got %v\nwant %v", ids(got), want)
	}
	got, _ = s.List(ctx, staging.Filter{Status: staging.StatusPending})
	if len(got) != 4+7 {
		t.Errorf("List pending: %d ops, want 11", len(got))
	}
	got, _ = s.List(ctx, staging.Filter{Username: "nobody"})
	if got == nil || len(got) != 0 {
		t.Errorf("List nobody: %v, want empty", got)
	}

	// Same created_at: id breaks the tie, newest (greatest) first.
	same := []string{"00000000-0000-7000-8000-00000000000a", "00000000-0000-7000-8000-00000000000b"}
	for _, id := range same {
		op := newOp("carol", t0)
		op.ID = id
		mustCreate(t, s, op)
	}
	got, _ = s.List(ctx, staging.Filter{Username: "carol"})
	if len(got) != 2 || got[0].ID != same[1] {
		t.Errorf("tie order: %v", ids(got))
	}

	// Limit 0 means DefaultLimit.
	for i := 0; i < DefaultLimit+5; i++ {
		mustCreate(t, s, newOp("dave", t0.Add(time.Duration(i)*time.Millisecond)))
	}
	got, _ = s.List(ctx, staging.Filter{Username: "dave"})
	if len(got) != DefaultLimit {
		t.Errorf("List with no limit: %d ops, want %d", len(got), DefaultLimit)
	}
}

func testConcurrentOpen(t *testing.T, url string) {
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	stores := make([]*Store, n)
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(context.Background(), url) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	for _, s := range stores {
		mustCreate(t, s, newOp("alice", t0))
	}
	got, err := stores[0].List(context.Background(), staging.Filter{})
	if err != nil || len(got) != n {
		t.Errorf("List after concurrent opens: %d ops, %v", len(got), err)
	}
}

func testConcurrentWriters(t *testing.T, url string) {
	const goroutines, each = 8, 500
	s := open(t, url)
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				op := newOp(fmt.Sprintf("user%d", g), time.Now())
				op.EventKey = hash(fmt.Sprintf("event %d %d", g, i))
				op.TargetLock = hash(fmt.Sprintf("lock %d %d", g, i))
				op.Status, op.LeaseOwner = staging.StatusRunning, "me"
				err := s.Create(ctx, op)
				if err == nil {
					op.Status = staging.StatusSuccess
					err = s.Finish(ctx, op, op.LeaseOwner)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%s: %d Create+Finish in %v (%.0f writes/s)", s.Dialect(), goroutines*each, elapsed,
		float64(2*goroutines*each)/elapsed.Seconds())
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	got, err := s.List(ctx, staging.Filter{Status: staging.StatusSuccess, Limit: goroutines * each * 2})
	if err != nil || len(got) != goroutines*each {
		t.Errorf("finished ops: %d, %v", len(got), err)
	}
}

func TestDialect(t *testing.T) {
	s := open(t, "sqlite://"+filepath.Join(t.TempDir(), "d.db"))
	if s.Dialect() != "sqlite3" {
		t.Errorf("sqlite Dialect() = %q", s.Dialect())
	}
	m := open(t, testenv.MariaDB(t))
	if m.Dialect() != "mysql" {
		t.Errorf("mysql Dialect() = %q", m.Dialect())
	}
}

func TestOpenSQLiteRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	s := open(t, "sqlite://sub/dir/staging.db")
	mustCreate(t, s, newOp("alice", t0))
	if _, err := os.Stat("sub/dir/staging.db"); err != nil {
		t.Fatal(err)
	}
	// Reopening an existing database migrates nothing and keeps the data.
	s.Close()
	s = open(t, "sqlite://sub/dir/staging.db")
	if got, err := s.List(context.Background(), staging.Filter{}); err != nil || len(got) != 1 {
		t.Fatalf("after reopen: %d ops, %v", len(got), err)
	}
}

func TestOpenMySQLQueryParams(t *testing.T) {
	url := testenv.MariaDB(t)
	s := open(t, url+"?timeout=5s&readTimeout=30s")
	mustCreate(t, s, newOp("alice", t0))
	if _, err := Open(context.Background(), url+"?nosuchparam=%zz"); err == nil {
		t.Error("Open with a malformed parameter succeeded")
	}
}

func TestOpenBadURLs(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"", "database URL"},
		{"staging.db", "database URL"},
		{"postgres://u:p@host/db", `unsupported scheme "postgres"`},
		{"mysql://", "no user"},
		{"mysql://root@/db", "no host"},
		{"mysql://root@127.0.0.1", "database name"},
		{"mysql://root@127.0.0.1/a/b", "database name"},
		{"mysql://root@127.0.0.1:99999/db", "port"},
		{"mysql://root@127.0.0.1:x/db", "mysql URL"},
		{"mysql://root:hunter2@127.0.0.1:1/db", "127.0.0.1:1"}, // nothing listens there
		{"mysql://staging:Top/Secret@127.0.0.1:3306/db", "percent-encoded"},
		{"sqlite://", "no file path"},
		{"sqlite:///tmp/a.db?mode=ro", "must not contain"},
		{"sqlite:///dev/null/x/staging.db", "/dev/null/x/staging.db"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s, err := Open(ctx, c.url)
		cancel()
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", c.url)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) = %q, want it to mention %q", c.url, err, c.want)
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "Top") || strings.Contains(err.Error(), "Secret") {
			t.Errorf("Open(%q) = %q repeats the password", c.url, err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q) error shows the password: %q", c.url, err)
		}
	}
}

func testPendingDIDs(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	mk := func(did string, status staging.Status, created time.Time) *staging.Operation {
		op := newOp("alice", created)
		op.DID, op.Status = did, status
		if did != "" {
			op.LocalPathOnStorage = "" // waiting: its source is its replica, found later
		}
		if status.Finished() {
			op.FinishedAt = &created
		}
		mustCreate(t, s, op)
		return op
	}
	old := mk("skao:a", staging.StatusPending, t0)
	newer := mk("skao:a", staging.StatusPending, t0.Add(time.Hour))
	mk("skao:a", staging.StatusSuccess, t0)
	other := mk("skao:b", staging.StatusPending, t0.Add(2*time.Hour))
	handoff := mk("", staging.StatusPending, t0) // an async request, not waiting for a replica
	// An async request by DID whose replica was here: it has its source,
	// and waits for its hand-off, not for a replica.
	didHandoff := newOp("alice", t0)
	didHandoff.DID, didHandoff.Status = "skao:c", staging.StatusPending
	mustCreate(t, s, didHandoff)

	for _, c := range []struct {
		name string
		got  func() ([]staging.Operation, error)
		want []string
	}{
		{"by DID, oldest first", func() ([]staging.Operation, error) { return s.PendingByDID(ctx, "skao:a", 10) }, []string{old.ID, newer.ID}},
		{"by DID, bounded", func() ([]staging.Operation, error) { return s.PendingByDID(ctx, "skao:a", 1) }, []string{old.ID}},
		{"unknown DID", func() ([]staging.Operation, error) { return s.PendingByDID(ctx, "skao:zz", 10) }, nil},
		// A transfer-done of its DID leaves a hand-off alone: its replica was here.
		{"by DID, not a hand-off", func() ([]staging.Operation, error) { return s.PendingByDID(ctx, "skao:c", 10) }, nil},
		{"before a time, DIDs only", func() ([]staging.Operation, error) {
			return s.PendingBefore(ctx, t0.Add(90*time.Minute), staging.PendingWaiting, 10)
		}, []string{old.ID, newer.ID}},
		{"before everything", func() ([]staging.Operation, error) { return s.PendingBefore(ctx, t0, staging.PendingWaiting, 10) }, nil},
		{"all", func() ([]staging.Operation, error) {
			return s.PendingBefore(ctx, t0.Add(3*time.Hour), staging.PendingWaiting, 10)
		}, []string{old.ID, newer.ID, other.ID}},
		{"all, bounded", func() ([]staging.Operation, error) {
			return s.PendingBefore(ctx, t0.Add(3*time.Hour), staging.PendingWaiting, 2)
		}, []string{old.ID, newer.ID}},
	} {
		ops, err := c.got()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var ids []string
		for _, op := range ops {
			ids = append(ids, op.ID)
			if op.DID == "" {
				t.Errorf("%s: operation %s lost its DID", c.name, op.ID)
			}
		}
		if fmt.Sprint(ids) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, want %v", c.name, ids, c.want)
		}
	}
	// Hand-offs waiting to be picked up are the others: by path, and by
	// DID with their source.
	for _, c := range []struct {
		kind staging.Pending
		want string
	}{{staging.PendingHandoff, handoff.ID}, {staging.PendingDIDHandoff, didHandoff.ID}} {
		if ops, err := s.PendingBefore(ctx, t0.Add(time.Second), c.kind, 10); err != nil || len(ops) != 1 || ops[0].ID != c.want {
			t.Errorf("PendingBefore, hand-offs of kind %d: %v %v, want %s", c.kind, ops, err, c.want)
		}
	}
}

// testCountWaiting: CountWaiting counts a user's requests waiting for a
// DID's replica (pending with a DID and no source yet) and nothing else,
// no further than its limit; one that is claimed or finished no longer
// counts.
func testCountWaiting(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	mk := func(user, did string, status staging.Status) *staging.Operation {
		op := newOp(user, t0)
		op.DID, op.Status = did, status
		if did != "" {
			op.LocalPathOnStorage = "" // a request by DID learns its source when it runs
		}
		if status.Finished() {
			op.FinishedAt = &t0
		}
		mustCreate(t, s, op)
		return op
	}
	var waiting []*staging.Operation
	for i := range 5 {
		waiting = append(waiting, mk("alice", fmt.Sprintf("skao:f%d", i), staging.StatusPending))
	}
	mk("alice", "", staging.StatusPending) // a hand-off, not waiting for a replica
	// The async hand-off of a request by DID whose replica was here: its
	// source is set, it waits to be picked up, not for a replica.
	handoff := newOp("alice", t0)
	handoff.DID, handoff.LocalPathOnStorage = "skao:here", "rse/here"
	mustCreate(t, s, handoff)
	mk("alice", "skao:done", staging.StatusSuccess)    // staged
	mk("alice", "skao:failed", staging.StatusFailed)   // expired or refused
	mk("alice", "skao:running", staging.StatusRunning) // its replica arrived
	mk("bob", "skao:f0", staging.StatusPending)
	for _, c := range []struct {
		user        string
		limit, want int
	}{
		{"alice", 100, 5},
		{"alice", 5, 5},
		{"alice", 3, 3}, // bounded: no further than the limit
		{"alice", 1, 1},
		{"bob", 100, 1},
		{"carol", 100, 0},
	} {
		if n, err := s.CountWaiting(ctx, c.user, c.limit); err != nil || n != c.want {
			t.Errorf("CountWaiting(%s, %d) = %d, %v, want %d", c.user, c.limit, n, err, c.want)
		}
	}
	// Claimed (its replica arrived) and failed (expired): no longer waiting.
	if ok, err := s.Claim(ctx, waiting[0].ID, "", "r1", t0); !ok || err != nil {
		t.Fatalf("Claim: %v %v", ok, err)
	}
	if ok, err := s.Abandon(ctx, waiting[1].ID, staging.StatusPending, t0.Add(time.Hour), staging.UpstreamTimeout, "Expired"); !ok || err != nil {
		t.Fatalf("Abandon: %v %v", ok, err)
	}
	if n, err := s.CountWaiting(ctx, "alice", 100); err != nil || n != 3 {
		t.Errorf("CountWaiting after a claim and a failure = %d, %v, want 3", n, err)
	}
}

func testStale(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	mk := func(status staging.Status, updated time.Time) *staging.Operation {
		op := newOp("alice", t0)
		op.Status, op.UpdatedAt = status, updated
		if status.Finished() {
			op.FinishedAt = &updated
		}
		mustCreate(t, s, op)
		return op
	}
	older := mk(staging.StatusRunning, t0)
	old := mk(staging.StatusRunning, t0.Add(time.Minute))
	mk(staging.StatusRunning, t0.Add(time.Hour)) // heartbeat after the cut
	mk(staging.StatusPending, t0)                // waits, does not run
	mk(staging.StatusSuccess, t0)                // finished
	ops, err := s.Stale(ctx, t0.Add(30*time.Minute), 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, op := range ops {
		ids = append(ids, op.ID)
	}
	if want := []string{older.ID, old.ID}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("stale %v, want %v (oldest heartbeat first)", ids, want)
	}
}

// A store at the newest migration is recognised with one query, so a
// function's start skips the migration lock and goose.
func TestMigrateFastPath(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := open(t, b.url(t))
			ctx := context.Background()
			if !s.current(ctx) {
				t.Fatal("a migrated store is not current")
			}
			if n := newestMigration(s.dialect); n < 5 {
				t.Fatalf("newest migration %d", n)
			}
			if _, err := s.db.ExecContext(ctx, "DELETE FROM goose_db_version WHERE version_id = ?", newestMigration(s.dialect)); err != nil {
				t.Fatal(err)
			}
			if s.current(ctx) {
				t.Fatal("a store one migration behind is current")
			}
		})
	}
}

// Every migration can be undone and done again, with records in place: an
// operator rolling a release back runs the migrations down. A lost hand-off
// by DID written before is found after.
func TestMigrationsDownAndUp(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := open(t, b.url(t))
			ctx := context.Background()
			dialect, dir := goose.DialectSQLite3, "migrations/sqlite"
			if s.dialect == DialectMySQL {
				dialect, dir = goose.DialectMySQL, "migrations/mysql"
			}
			fsys, err := fs.Sub(migrations, dir)
			if err != nil {
				t.Fatal(err)
			}
			p, err := goose.NewProvider(dialect, s.db, fsys, goose.WithDisableGlobalRegistry(true))
			if err != nil {
				t.Fatal(err)
			}
			old := time.Now().Add(-time.Hour)
			op := &staging.Operation{ID: uuid.NewString(), Method: "local_copy", Username: "alice", DID: "user.alice:a.ms",
				LocalPathOnStorage: "rse/a.ms", RelativePath: "a", Status: staging.StatusPending, CreatedAt: old, UpdatedAt: old}
			if err := s.Create(ctx, op); err != nil {
				t.Fatal(err)
			}
			newest := newestMigration(s.dialect)
			if _, err := p.DownTo(ctx, newest-1); err != nil {
				t.Fatalf("down to %d: %v", newest-1, err)
			}
			if _, err := p.Up(ctx); err != nil {
				t.Fatalf("up again: %v", err)
			}
			lost, err := s.PendingBefore(ctx, time.Now().Add(-time.Minute), staging.PendingDIDHandoff, 10)
			if err != nil || len(lost) != 1 || lost[0].ID != op.ID {
				t.Fatalf("lost hand-offs by DID after down and up: %v, %v", lost, err)
			}
			if _, err := p.DownTo(ctx, 0); err != nil {
				t.Fatalf("down to 0: %v", err)
			}
			if _, err := p.Up(ctx); err != nil {
				t.Fatalf("up from 0: %v", err)
			}
			if !s.current(ctx) {
				t.Fatal("not current after down and up")
			}
		})
	}
}

// TestWritesAfterClose: on SQLite every write goes through the group
// committer; once the store is closed, writes fail at once, however many
// race with the close, and none waits for a committer that is gone.
func TestWritesAfterClose(t *testing.T) {
	s, err := Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 200)
	for i := range 200 {
		go func() {
			done <- s.Create(context.Background(), newOp(fmt.Sprintf("after-close-%d", i), t0))
		}()
	}
	s.Close()
	timeout := time.After(10 * time.Second)
	closed := 0
	for range 200 {
		select {
		case err := <-done:
			if err != nil {
				closed++
			}
		case <-timeout:
			t.Fatal("a write racing with Close is still waiting after 10 s")
		}
	}
	if err := s.Create(context.Background(), newOp("after-close", t0)); !errors.Is(err, errStoreClosed) {
		t.Fatalf("Create after Close: %v; want errStoreClosed", err)
	}
	t.Logf("%d of 200 writes racing with Close failed, the others were committed before it", closed)
}
