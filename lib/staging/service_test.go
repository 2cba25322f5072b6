package staging_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/staging/stagingtest"
)

// The pipeline tested in process: the service over an in-memory store,
// with methods that write to memory, through every door's way in (sync,
// batch, async, event, hand-off, DID, another function) and its lifetime
// (leases, streams, sweeps).

// area is a user area in memory that the test methods write to.
type area struct {
	mu    sync.Mutex
	files map[string]string // user/target -> source
}

func (a *area) put(user, target, source string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := user + "/" + target
	if _, ok := a.files[k]; ok {
		return false
	}
	a.files[k] = source
	return true
}

func (a *area) get(user, target string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.files[user+"/"+target]
	return s, ok
}

// copyMethod "copies" a source named in sources into the area. A source
// "slow" waits on gate; "boom" fails with a plain error naming a server
// path; "missing" does not exist.
type copyMethod struct {
	name     string
	function string
	area     *area
	gate     chan struct{}
	runs     atomic.Int32
	cleaned  chan string // operation ids cleaned up
	started  chan string // operation ids started
}

func (m *copyMethod) Name() string { return m.name }

func (m *copyMethod) Traits() staging.Traits {
	return staging.Traits{Function: m.function, NeedsTarget: true, TempOutput: true}
}

func (m *copyMethod) Prepare(ctx context.Context, req *staging.Request) (*staging.Plan, error) {
	switch {
	case req.Source == "missing":
		return nil, staging.Errorf(staging.Rejected, "Source path does not exist: %s", req.Source)
	case strings.HasPrefix(req.Target, ".."):
		return nil, staging.Errorf(staging.Forbidden, "Target path is outside the user area: %s", req.Target)
	}
	run := func(ctx context.Context, job *staging.Job) (*staging.Result, error) {
		m.runs.Add(1)
		if m.started != nil {
			m.started <- job.Operation.ID
		}
		job.SetTotal(100)
		switch req.Source {
		case "slow":
			select {
			case <-m.gate:
			case <-ctx.Done():
				return nil, staging.Wrap(staging.Unavailable, "Staging was cancelled", ctx.Err())
			}
		case "boom":
			return nil, fmt.Errorf("open /srv/secret/%s: input/output error", req.Source)
		}
		job.Add(100)
		if err := job.Confirm(ctx); err != nil {
			return nil, err
		}
		if !m.area.put(req.Username, req.Target, req.Source) {
			return &staging.Result{Message: "Data already available at " + req.Target}, nil
		}
		return &staging.Result{Message: "Data staged for user " + req.Username + " with method " + m.name, Bytes: 100}, nil
	}
	return &staging.Plan{Lock: staging.LockKey(req.Username, req.Target), Run: run}, nil
}

func (m *copyMethod) Cleanup(ctx context.Context, op *staging.Operation) error {
	if m.cleaned != nil {
		m.cleaned <- op.ID
	}
	return nil
}

// downloadMethod streams size bytes, in pieces of size/10.
type downloadMethod struct{ size int64 }

func (downloadMethod) Name() string { return "download" }

func (downloadMethod) Traits() staging.Traits {
	return staging.Traits{Function: "stage", Streams: true}
}

func (m downloadMethod) Prepare(ctx context.Context, req *staging.Request) (*staging.Plan, error) {
	run := func(ctx context.Context, job *staging.Job) (*staging.Result, error) {
		job.SetTotal(m.size)
		write := func(ctx context.Context, w io.Writer) error {
			_, err := w.Write(make([]byte, m.size))
			return err
		}
		return &staging.Result{Download: &staging.Download{Name: "x", Size: m.size, WriteTo: write}}, nil
	}
	return &staging.Plan{Run: run}, nil
}

// replicas are the DIDs whose replicas are present, and where.
type replicas map[string]string

func (r replicas) Locate(did string) (string, bool, error) {
	if !strings.Contains(did, ":") {
		return "", false, staging.Errorf(staging.Invalid, "Invalid DID %q", did)
	}
	p, ok := r[did]
	return p, ok, nil
}

// fixture is a service named "stage" over a fresh store, with local_copy
// (a copyMethod), a download, and jupyter_copy run by a "jupyter" service
// over the same store.
type fixture struct {
	store    *stagingtest.MemStore
	replicas replicas // the DIDs' replicas at this site, shared by every replica of the service
	area     *area
	copy     *copyMethod
	remote   *copyMethod
	svc      *staging.Service
	jupyter  *staging.Service
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	fx := &fixture{store: stagingtest.NewMemStore(), area: &area{files: map[string]string{}},
		replicas: replicas{"skao:here.fits": "rse/here.fits"}}
	fx.copy = &copyMethod{name: "local_copy", function: "stage", area: fx.area, gate: make(chan struct{})}
	fx.remote = &copyMethod{name: "jupyter_copy", function: "jupyter", area: fx.area, gate: make(chan struct{})}
	fx.svc = fx.service("stage")
	fx.jupyter = fx.service("jupyter")
	fx.svc.Peers = map[string]staging.Peer{"jupyter": localPeer{fx.jupyter}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fx.svc.Shutdown(ctx)
		fx.jupyter.Shutdown(ctx)
	})
	return fx
}

// service is one more replica of the function name, over the same store.
func (fx *fixture) service(name string) *staging.Service {
	s := &staging.Service{Store: fx.store, Function: name, Lease: time.Second, HandoffTimeout: time.Second,
		DIDs: fx.replicas}
	for _, m := range []staging.Method{fx.copy, fx.remote, downloadMethod{size: 1000}} {
		s.Register(m)
	}
	return s
}

// localPeer hands requests to another service in process, as
// events.Peer does over HTTP: the same request, the same caller.
type localPeer struct{ svc *staging.Service }

func (p localPeer) Run(ctx context.Context, caller staging.Caller, req *staging.Request) error {
	_, err := p.svc.Handle(ctx, caller, *req, staging.Options{})
	return err
}

// eventHandoff hands requests on as a broker would: encoded as request
// events, decoded, and delivered to a service; or dropped.
type eventHandoff struct {
	t    *testing.T
	to   *staging.Service
	drop bool
	sent chan staging.Request
}

func (h *eventHandoff) Handoff(ctx context.Context, req *staging.Request) error {
	ev, err := events.NewRequest("/test/stage", req)
	if err != nil {
		return err
	}
	got, err := events.DecodeRequest(&ev)
	if err != nil {
		return err
	}
	if h.sent != nil {
		h.sent <- got
	}
	if h.drop {
		return nil
	}
	go h.to.Handle(context.Background(), staging.Trusted, got, staging.Options{})
	return nil
}

var alice = staging.Caller{Name: "alice"}

func req(method, source, target string) staging.Request {
	return staging.Request{Method: method, Username: "alice", Source: source, Target: target}
}

// wait polls the store until op id has a final status.
func (fx *fixture) wait(t *testing.T, id string) staging.Operation {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		op, err := fx.store.Get(context.Background(), id)
		if err == nil && op.Status.Finished() {
			return *op
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("operation %s did not finish", id)
	return staging.Operation{}
}

func wantKind(t *testing.T, err error, kind staging.Kind, detail string) {
	t.Helper()
	got, gotDetail := staging.KindOf(err)
	if err == nil || got != kind || (detail != "" && gotDetail != detail) {
		t.Fatalf("error %v (%s %q), want %s %q", err, got, gotDetail, kind, detail)
	}
}

func TestSyncStaging(t *testing.T) {
	fx := newFixture(t)
	out, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "obs.fits", "in/obs.fits"), staging.Options{})
	if err != nil {
		t.Fatal(err)
	}
	op := out.Operation
	if op.Status != staging.StatusSuccess || op.Message != "Data staged for user alice with method local_copy" ||
		op.Bytes != 100 || op.BytesDone != 100 || op.LocalPathOnStorage != "obs.fits" || op.TargetLock != "" {
		t.Fatalf("outcome %+v", op)
	}
	stored := fx.store.All()
	if len(stored) != 1 || stored[0].Status != staging.StatusSuccess || stored[0].FinishedAt == nil {
		t.Fatalf("records %+v", stored)
	}
	// One insert and one conditional update: nothing else on the way.
	if fx.store.Calls["Create"] != 1 || fx.store.Calls["Finish"] != 1 || fx.store.Calls["Progress"] != 0 {
		t.Errorf("store calls %v", fx.store.Calls)
	}
}

// The same bad request gets the same kind, detail and record whichever
// door it came through: single, batch item, async, event.
func TestRefusalsAreTheSameThroughEveryDoor(t *testing.T) {
	bob := staging.Caller{Name: "bob"}
	for _, tc := range []struct {
		name     string
		caller   staging.Caller
		req      staging.Request
		kind     staging.Kind
		detail   string
		recorded bool
	}{
		{"no method", alice, staging.Request{Username: "alice", Source: "a", Target: "b"}, staging.Invalid, "method is required", false},
		{"no user", alice, staging.Request{Method: "local_copy", Source: "a", Target: "b"}, staging.Invalid, "username is required", false},
		{"bad user", alice, staging.Request{Method: "local_copy", Username: "../x", Source: "a", Target: "b"}, staging.Invalid, "", false},
		{"no source", alice, req("local_copy", "", "b"), staging.Invalid, "local_path_on_storage is required", false},
		{"no target", alice, req("local_copy", "a", ""), staging.Invalid, "relative_path is required", false},
		{"path and DID", alice, staging.Request{Method: "local_copy", Username: "alice", Source: "a", DID: "s:n", Target: "b"}, staging.Invalid, "Give either local_path_on_storage or did, not both", false},
		{"path too long", alice, req("local_copy", strings.Repeat("a", 5000), "b"), staging.Invalid, "local_path_on_storage is longer than 4096 bytes", false},
		{"name too long", alice, req("local_copy", "a", strings.Repeat("n", 256)), staging.Invalid, "relative_path has a name longer than 255 bytes", false},
		{"too deep", alice, req("local_copy", "a", strings.Repeat("d/", 64)+"f"), staging.Invalid, "relative_path is deeper than 64 folders", false},
		{"NUL", alice, req("local_copy", "a\x00", "b"), staging.Invalid, "local_path_on_storage contains a NUL byte", false},
		{"anonymous", staging.Caller{}, req("local_copy", "a", "b"), staging.Unauthenticated, "Authentication is required", false},
		{"another user", bob, req("local_copy", "a", "b"), staging.Forbidden, "User bob may not stage data for user alice", false},
		{"unknown method", alice, req("ftp", "a", "b"), staging.Rejected, "Invalid staging method: ftp", true},
		{"missing source", alice, req("local_copy", "missing", "b"), staging.Rejected, "Source path does not exist: missing", true},
		{"target outside", alice, req("local_copy", "a", "../b"), staging.Forbidden, "Target path is outside the user area: ../b", true},
		{"bad DID", alice, staging.Request{Method: "local_copy", Username: "alice", DID: "nocolon", Target: "b"}, staging.Invalid, `Invalid DID "nocolon"`, false},
		// A method no service could have is malformed, never recorded,
		// however long; the limits come before the method.
		{"method too long", alice, req(strings.Repeat("m", 200_000), "a", "b"), staging.Invalid, "Invalid method: must match ^[a-z][a-z0-9_]{0,63}$", false},
		{"method not a name", alice, req("Local Copy", "a", "b"), staging.Invalid, "Invalid method: must match ^[a-z][a-z0-9_]{0,63}$", false},
		{"unknown method, NUL", alice, req("ftp", "a\x00b", "../../etc"), staging.Invalid, "local_path_on_storage contains a NUL byte", false},
		{"unknown method, anonymous", staging.Caller{}, req("ftp", "a", "b"), staging.Unauthenticated, "Authentication is required", false},
		{"source not UTF-8", alice, req("local_copy", "samples/\xff.bin", "b"), staging.Invalid, "local_path_on_storage is not valid UTF-8", false},
		{"target not UTF-8", alice, req("local_copy", "a", "\xfe"), staging.Invalid, "relative_path is not valid UTF-8", false},
		{"DID not UTF-8", alice, staging.Request{Method: "local_copy", Username: "alice", DID: "user.alice:\xff", Target: "b"}, staging.Invalid, "did is not valid UTF-8", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, door := range []string{"single", "batch", "async", "event"} {
				fx := newFixture(t)
				r, opt := tc.req, staging.Options{Stream: door == "single", Async: door == "async"}
				var out *staging.Outcome
				var err error
				switch door {
				case "batch":
					items, berr := fx.svc.HandleBatch(context.Background(), tc.caller, []staging.Request{r, req("local_copy", "x", "y")}, opt)
					if berr != nil {
						err = berr // shared by every item: the whole batch is refused
					} else {
						out, err = items[0].Outcome, items[0].Err
					}
				case "event":
					r.EventSource, r.EventID = "/test", "1"
					fallthrough
				default:
					out, err = fx.svc.Handle(context.Background(), tc.caller, r, opt)
				}
				wantKind(t, err, tc.kind, tc.detail)
				var record *staging.Operation
				for _, op := range fx.store.All() {
					if op.RelativePath == tc.req.Target && op.Status == staging.StatusFailed {
						record = &op
					}
				}
				switch {
				case tc.recorded && (record == nil || record.ErrorKind != tc.kind || record.ErrorReason != tc.detail ||
					out == nil || out.Operation.ID != record.ID):
					t.Errorf("%s: record %+v, outcome %+v", door, record, out)
				case !tc.recorded && record != nil:
					t.Errorf("%s: refusal recorded: %+v", door, record)
				}
				if fx.copy.runs.Load() > 0 && door != "batch" {
					t.Errorf("%s: the method ran", door)
				}
			}
		})
	}
}

func TestNoInternalTextReachesTheClient(t *testing.T) {
	fx := newFixture(t)
	out, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "boom", "x"), staging.Options{})
	wantKind(t, err, staging.Internal, "Internal error")
	if out.Operation.ErrorReason != "Internal error" || strings.Contains(fmt.Sprint(out.Operation), "/srv/secret") {
		t.Fatalf("record %+v", out.Operation)
	}
}

func TestRedeliveredEventHasNoSecondEffect(t *testing.T) {
	fx := newFixture(t)
	r := req("local_copy", "obs.fits", "x")
	r.EventSource, r.EventID = "/rucio", "42"
	first, err := fx.svc.Handle(context.Background(), alice, r, staging.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Through another replica, concurrently and after.
	other := fx.service("stage")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			out, err := other.Handle(context.Background(), alice, r, staging.Options{})
			if err != nil || !out.Replayed || out.Operation.ID != first.Operation.ID {
				t.Errorf("redelivery: %+v %v", out, err)
			}
		})
	}
	wg.Wait()
	if fx.copy.runs.Load() != 1 || len(fx.store.All()) != 1 {
		t.Fatalf("%d runs, %d records", fx.copy.runs.Load(), len(fx.store.All()))
	}
	// A refused event replays its refusal.
	bad := req("local_copy", "missing", "y")
	bad.EventSource, bad.EventID = "/rucio", "43"
	for range 2 {
		_, err := fx.svc.Handle(context.Background(), alice, bad, staging.Options{})
		wantKind(t, err, staging.Rejected, "Source path does not exist: missing")
	}
	if len(fx.store.All()) != 2 {
		t.Fatalf("%d records, want 2", len(fx.store.All()))
	}
}

func TestBatch(t *testing.T) {
	fx := newFixture(t)
	items, err := fx.svc.HandleBatch(context.Background(), alice, []staging.Request{
		req("local_copy", "a", "1"), req("local_copy", "missing", "2"), req("local_copy", "b", ""),
		{Method: "local_copy", Username: "alice", DID: "skao:far.fits", Target: "3"},
	}, staging.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if items[0].Err != nil || items[0].Outcome.Operation.Status != staging.StatusSuccess {
		t.Errorf("item 0: %+v", items[0])
	}
	wantKind(t, items[1].Err, staging.Rejected, "")
	wantKind(t, items[2].Err, staging.Invalid, "relative_path is required")
	if items[3].Err != nil || !items[3].Outcome.Waiting {
		t.Errorf("item 3: %+v", items[3])
	}
	// What the items share is checked once: a bad user refuses the batch.
	_, err = fx.svc.HandleBatch(context.Background(), staging.Caller{Name: "bob"}, []staging.Request{req("local_copy", "a", "1")}, staging.Options{})
	wantKind(t, err, staging.Forbidden, "")
	// A method that streams cannot be batched.
	_, err = fx.svc.HandleBatch(context.Background(), alice, []staging.Request{req("download", "a", "")}, staging.Options{Stream: true})
	wantKind(t, err, staging.Invalid, "")
}

func TestAsyncInProcess(t *testing.T) {
	fx := newFixture(t)
	out, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "slow", "x"), staging.Options{Async: true})
	if err != nil || !out.Accepted || out.Operation.Status != staging.StatusPending {
		t.Fatalf("%+v %v", out, err)
	}
	// Shutdown waits for it, within its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := fx.svc.Shutdown(ctx); err == nil {
		t.Error("Shutdown returned while the staging was still running")
	}
	cancel()
	close(fx.copy.gate)
	if err := fx.svc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if op := fx.wait(t, out.Operation.ID); op.Status != staging.StatusSuccess {
		t.Fatalf("%+v", op)
	}
}

// Async through a broker: the pending request travels as an event to
// another replica, which completes that very operation. A DID resolved
// at admission travels with it.
func TestAsyncThroughHandoff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		req    staging.Request
		source string
	}{
		{"path", req("local_copy", "obs.fits", "x"), "obs.fits"},
		{"DID whose replica is here", staging.Request{Method: "local_copy", Username: "alice", DID: "skao:here.fits", Target: "y"}, "rse/here.fits"},
		{"method of another function", req("jupyter_copy", "obs.fits", "z"), "obs.fits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			replica := fx.service("stage")
			replica.Peers = fx.svc.Peers
			fx.svc.Handoff = &eventHandoff{t: t, to: replica}
			out, err := fx.svc.Handle(context.Background(), alice, tc.req, staging.Options{Async: true})
			if err != nil || !out.Accepted {
				t.Fatalf("%+v %v", out, err)
			}
			op := fx.wait(t, out.Operation.ID)
			if op.Status != staging.StatusSuccess || op.LocalPathOnStorage != tc.source || op.DID != tc.req.DID {
				t.Fatalf("%+v", op)
			}
			if got, _ := fx.area.get("alice", tc.req.Target); got != tc.source {
				t.Fatalf("staged %q, want %q", got, tc.source)
			}
			if n := len(fx.store.All()); n != 1 {
				t.Fatalf("%d records, want 1", n)
			}
		})
	}
}

// A hand-off is honoured only for its own pending operation: same user,
// method and paths. Anything else is refused and the record left alone;
// a hand-off of an operation that already runs waits for it instead of
// failing it or starting a second copy.
func TestHandoffCannotBeForged(t *testing.T) {
	fx := newFixture(t)
	sent := make(chan staging.Request, 1)
	fx.svc.Handoff = &eventHandoff{t: t, drop: true, sent: sent}
	out, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "slow", "x"), staging.Options{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	handoff := <-sent
	mallory := staging.Caller{Name: "mallory"}
	for _, forged := range []staging.Request{
		{Method: "local_copy", Username: "mallory", Source: "slow", Target: "x"},
		{Method: "local_copy", Username: "alice", Source: "other", Target: "x"},
		{Method: "local_copy", Username: "alice", Source: "slow", Target: "elsewhere"},
		{Method: "jupyter_copy", Username: "alice", Source: "slow", Target: "x"},
	} {
		forged.OperationID = handoff.OperationID
		caller := staging.Trusted
		kind, detail := staging.Forbidden, "Operation "+handoff.OperationID+" is not this request's"
		if forged.Username == "mallory" {
			// A user learns nothing of another's operation, not even that it exists.
			caller, kind, detail = mallory, staging.NotFound, "Operation not found: "+handoff.OperationID
		}
		_, err := fx.svc.Handle(context.Background(), caller, forged, staging.Options{})
		wantKind(t, err, kind, detail)
	}
	// Mallory cannot present alice's own request either.
	_, err = fx.svc.Handle(context.Background(), mallory, handoff, staging.Options{})
	wantKind(t, err, staging.Forbidden, "User mallory may not stage data for user alice")
	if op, _ := fx.store.Get(context.Background(), out.Operation.ID); op.Status != staging.StatusPending || op.Username != "alice" {
		t.Fatalf("record changed: %+v", op)
	}

	// The real hand-off runs it; a copy of it meanwhile waits for the
	// outcome without a second run or a failure.
	started := make(chan string, 2)
	fx.copy.started = started
	done := make(chan error, 2)
	go func() { _, err := fx.svc.Handle(context.Background(), alice, handoff, staging.Options{}); done <- err }()
	<-started
	go func() { _, err := fx.svc.Handle(context.Background(), alice, handoff, staging.Options{}); done <- err }()
	time.Sleep(20 * time.Millisecond)
	if op, _ := fx.store.Get(context.Background(), out.Operation.ID); op.Status != staging.StatusRunning {
		t.Fatalf("a second delivery changed the running operation: %+v", op)
	}
	close(fx.copy.gate)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if fx.copy.runs.Load() != 1 {
		t.Fatalf("%d runs, want 1", fx.copy.runs.Load())
	}
}

func TestLostHandoffIsSwept(t *testing.T) {
	fx := newFixture(t)
	fx.svc.Handoff = &eventHandoff{t: t, drop: true}
	out, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "a", "x"), staging.Options{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := fx.svc.Sweep(context.Background()); n != 0 {
		t.Fatalf("swept %d before the hand-off timeout", n)
	}
	fx.store.Update(out.Operation.ID, func(op *staging.Operation) { op.UpdatedAt = op.UpdatedAt.Add(-2 * time.Second) })
	if n, err := fx.svc.Sweep(context.Background()); n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	op, _ := fx.store.Get(context.Background(), out.Operation.ID)
	if op.Status != staging.StatusFailed || !strings.HasPrefix(op.ErrorReason, "Lost:") || op.ErrorKind != staging.Unavailable {
		t.Fatalf("%+v", op)
	}
	// A late delivery gets that outcome and stages nothing.
	late := req("local_copy", "a", "x")
	late.OperationID = op.ID
	_, err = fx.svc.Handle(context.Background(), alice, late, staging.Options{})
	wantKind(t, err, staging.Unavailable, op.ErrorReason)
	if fx.copy.runs.Load() != 0 {
		t.Fatal("a lost hand-off ran after it was failed")
	}
}

func TestHandoffFailureFailsTheOperation(t *testing.T) {
	fx := newFixture(t)
	fx.svc.Handoff = failingHandoff{}
	out, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "a", "x"), staging.Options{Async: true})
	wantKind(t, err, staging.Unavailable, "Could not hand the request over to run in the background")
	if op, _ := fx.store.Get(context.Background(), out.Operation.ID); op.Status != staging.StatusFailed {
		t.Fatalf("%+v", op)
	}
}

type failingHandoff struct{}

func (failingHandoff) Handoff(context.Context, *staging.Request) error {
	return errors.New("broker down")
}

func TestDIDWaitsThenCompletes(t *testing.T) {
	fx := newFixture(t)
	r := staging.Request{Method: "local_copy", Username: "alice", DID: "skao:far.fits", Target: "far.fits"}
	out, err := fx.svc.Handle(context.Background(), alice, r, staging.Options{})
	if err != nil || !out.Waiting || out.Operation.Status != staging.StatusPending {
		t.Fatalf("%+v %v", out, err)
	}
	notes := &notes{}
	fx.svc.Notifier = notes
	// The replica is not visible yet: nothing changes, the sender retries.
	notYet := func() error { return staging.Errorf(staging.Unavailable, "not visible yet") }
	if _, err := fx.svc.Complete(context.Background(), staging.System, "skao:far.fits", "rse/far.fits", notYet); err == nil {
		t.Fatal("a transient check failure completed the requests")
	}
	// The replica arrived and checks out (what the Rucio door does).
	fx.replicas["skao:far.fits"] = "rse/far.fits"
	ok := func() error { return nil }
	done, err := fx.svc.Complete(context.Background(), staging.System, "skao:far.fits", "rse/far.fits", ok)
	if err != nil || done.Waiting != 1 || len(done.Operations) != 1 || done.Refused != nil {
		t.Fatalf("%+v %v", done, err)
	}
	if op := done.Operations[0]; op.Status != staging.StatusSuccess || op.LocalPathOnStorage != "rse/far.fits" || op.ID != out.Operation.ID {
		t.Fatalf("%+v", op)
	}
	if len(notes.ops) != 1 || notes.ops[0].Status != staging.StatusSuccess {
		t.Fatalf("notified %+v", notes.ops)
	}
	// A second arrival finds nobody waiting.
	if again, err := fx.svc.Complete(context.Background(), staging.System, "skao:far.fits", "rse/far.fits", ok); err != nil || again.Waiting != 0 {
		t.Fatalf("second arrival: %+v %v", again, err)
	}
	// A replica that fails its check fails the waiting requests with it.
	out, _ = fx.svc.Handle(context.Background(), alice, staging.Request{Method: "local_copy", Username: "alice", DID: "skao:bad.fits", Target: "bad"}, staging.Options{})
	bad := func() error {
		return staging.Errorf(staging.Conflict, "Replica of skao:bad.fits has adler32 1, the transfer reported 2")
	}
	done, err = fx.svc.Complete(context.Background(), staging.System, "skao:bad.fits", "rse/bad.fits", bad)
	if err != nil || done.Refused == nil || len(done.Operations) != 1 {
		t.Fatalf("%+v %v", done, err)
	}
	if op, _ := fx.store.Get(context.Background(), out.Operation.ID); op.Status != staging.StatusFailed || op.ErrorKind != staging.Conflict || fx.copy.runs.Load() != 1 {
		t.Fatalf("%+v", op)
	}
	// A download cannot wait.
	_, err = fx.svc.Handle(context.Background(), alice, staging.Request{Method: "download", Username: "alice", DID: "skao:away.fits"}, staging.Options{Stream: true})
	wantKind(t, err, staging.NotFound, "Replica of skao:away.fits is not at this site yet")
}

func TestDIDWaitExpires(t *testing.T) {
	fx := newFixture(t)
	notes := &notes{}
	fx.svc.Notifier, fx.svc.PendingTTL = notes, time.Hour
	out, _ := fx.svc.Handle(context.Background(), alice, staging.Request{Method: "local_copy", Username: "alice", DID: "skao:far.fits", Target: "x"}, staging.Options{})
	fx.store.Update(out.Operation.ID, func(op *staging.Operation) { op.UpdatedAt = op.UpdatedAt.Add(-2 * time.Hour) })
	if n, err := fx.svc.Sweep(context.Background()); n != 1 || err != nil {
		t.Fatalf("Sweep = %d %v", n, err)
	}
	op, _ := fx.store.Get(context.Background(), out.Operation.ID)
	if op.Status != staging.StatusFailed || op.ErrorKind != staging.UpstreamTimeout || !strings.HasPrefix(op.ErrorReason, "Expired:") {
		t.Fatalf("%+v", op)
	}
	if len(notes.ops) != 1 || notes.ops[0].ID != op.ID {
		t.Fatalf("notified %v", notes.ops)
	}
}

type notes struct {
	mu  sync.Mutex
	ops []staging.Operation
}

func (n *notes) Notify(ctx context.Context, op *staging.Operation) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ops = append(n.ops, *op)
}

// A download that streams longer than the lease keeps its operation alive,
// its bytes_done growing, and finishes it once; a sweep meanwhile never
// takes it for dead.
func TestDownloadLongerThanTheLease(t *testing.T) {
	fx := newFixture(t)
	// A lease long enough that a loaded machine's scheduling delays do not
	// miss a heartbeat, and a stream over three of them.
	fx.svc.Lease = 300 * time.Millisecond
	sweeper := fx.service("stage") // another replica sweeping
	sweeper.Lease = fx.svc.Lease
	out, err := fx.svc.Handle(context.Background(), alice, staging.Request{Method: "download", Username: "alice", Source: "big"}, staging.Options{Stream: true})
	if err != nil || out.Download == nil {
		t.Fatalf("%+v %v", out, err)
	}
	var last int64
	for i := range 10 {
		out.Add(100)
		time.Sleep(100 * time.Millisecond) // three leases in all
		if n, _ := sweeper.Sweep(context.Background()); n != 0 {
			t.Fatalf("swept the streaming download after %d pieces", i+1)
		}
		op, _ := fx.store.Get(context.Background(), out.Operation.ID)
		if op.Status != staging.StatusRunning {
			t.Fatalf("status %s while streaming", op.Status)
		}
		if i >= 2 && op.BytesDone <= last {
			t.Fatalf("bytes_done %d did not grow past %d", op.BytesDone, last)
		}
		last = op.BytesDone
	}
	if err := out.Done(1000, nil); err != nil {
		t.Fatal(err)
	}
	op, _ := fx.store.Get(context.Background(), out.Operation.ID)
	if op.Status != staging.StatusSuccess || op.BytesDone != 1000 || op.Bytes != 1000 {
		t.Fatalf("%+v", op)
	}
}

// A replica that lost its lease (taken for dead and swept) does not write
// its outcome over the record: it says so, and the record stands.
func TestFinishAfterLostLease(t *testing.T) {
	fx := newFixture(t)
	fx.svc.Lease = time.Hour // this replica's heartbeat will not come in time
	cleaned := make(chan string, 1)
	fx.copy.cleaned = cleaned
	started := make(chan string, 1)
	fx.copy.started = started
	done := make(chan error, 1)
	var out *staging.Outcome
	go func() {
		var err error
		out, err = fx.svc.Handle(context.Background(), alice, req("local_copy", "slow", "x"), staging.Options{})
		done <- err
	}()
	id := <-started
	other := fx.service("stage")
	fx.store.Update(id, func(op *staging.Operation) { op.UpdatedAt = op.UpdatedAt.Add(-time.Minute) })
	if n, err := other.Sweep(context.Background()); n != 1 || err != nil {
		t.Fatalf("Sweep = %d %v", n, err)
	}
	if got := <-cleaned; got != id {
		t.Fatalf("cleaned %s, want %s", got, id)
	}
	close(fx.copy.gate)
	err := <-done
	wantKind(t, err, staging.Unavailable, "Operation "+id+" was taken over before it finished: its record stands as failed; try again")
	op, _ := fx.store.Get(context.Background(), id)
	if op.Status != staging.StatusFailed || !strings.HasPrefix(op.ErrorReason, "Interrupted") || out.Operation.Status != staging.StatusFailed {
		t.Fatalf("record %+v, outcome %+v", op, out.Operation)
	}
}

// The heartbeat notices a lost lease and stops the run.
func TestLostLeaseStopsTheRun(t *testing.T) {
	fx := newFixture(t)
	fx.svc.Lease = 50 * time.Millisecond
	started := make(chan string, 1)
	fx.copy.started = started
	done := make(chan error, 1)
	go func() {
		_, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "slow", "x"), staging.Options{})
		done <- err
	}()
	id := <-started
	fx.store.Update(id, func(op *staging.Operation) { op.LeaseOwner = "another replica" })
	select {
	case err := <-done:
		wantKind(t, err, staging.Unavailable, "")
	case <-time.After(5 * time.Second):
		t.Fatal("the run went on after its lease was lost")
	}
}

func TestMethodOfAnotherFunction(t *testing.T) {
	fx := newFixture(t)
	out, err := fx.svc.Handle(context.Background(), alice, req("jupyter_copy", "obs.fits", "nb/obs.fits"), staging.Options{})
	if err != nil || out.Operation.Status != staging.StatusSuccess || out.Operation.Method != "jupyter_copy" {
		t.Fatalf("%+v %v", out, err)
	}
	if fx.remote.runs.Load() != 1 || len(fx.store.All()) != 1 {
		t.Fatalf("%d runs, %d records", fx.remote.runs.Load(), len(fx.store.All()))
	}
	// Its refusals come back with their kind and detail, recorded once.
	_, err = fx.svc.Handle(context.Background(), alice, req("jupyter_copy", "missing", "nb/x"), staging.Options{})
	wantKind(t, err, staging.Rejected, "Source path does not exist: missing")
	if records := fx.store.All(); len(records) != 2 || records[1].Status != staging.StatusFailed {
		t.Fatalf("%+v", records)
	}
	// Unreachable: the recorded request fails, nobody will run it.
	fx.svc.Peers["jupyter"] = deadPeer{}
	out, err = fx.svc.Handle(context.Background(), alice, req("jupyter_copy", "obs.fits", "nb/y"), staging.Options{})
	wantKind(t, err, staging.Unavailable, "The jupyter function is unreachable")
	if op, _ := fx.store.Get(context.Background(), out.Operation.ID); op.Status != staging.StatusFailed {
		t.Fatalf("%+v", op)
	}
	// Without the peer the method is not available here.
	delete(fx.svc.Peers, "jupyter")
	_, err = fx.svc.Handle(context.Background(), alice, req("jupyter_copy", "a", "b"), staging.Options{})
	wantKind(t, err, staging.Rejected, "")
	var names []string
	for _, m := range fx.svc.Methods() {
		names = append(names, m.Name())
	}
	if fmt.Sprint(names) != "[local_copy download]" {
		t.Errorf("Methods() = %v", names)
	}
}

type deadPeer struct{}

func (deadPeer) Run(context.Context, staging.Caller, *staging.Request) error {
	return staging.Errorf(staging.Unavailable, "The jupyter function is unreachable")
}

func TestStreamingNeedsAStreamingDoor(t *testing.T) {
	fx := newFixture(t)
	dl := staging.Request{Method: "download", Username: "alice", Source: "a"}
	for _, opt := range []staging.Options{{}, {Stream: true, Async: true}} {
		_, err := fx.svc.Handle(context.Background(), alice, dl, opt)
		wantKind(t, err, staging.Invalid, "download sends its content to the client: it takes one item over HTTP, not a batch, an event or an async request")
	}
	_, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "a", "b"), staging.Options{Stream: true, Fetch: true})
	wantKind(t, err, staging.Invalid, "A download link (GET, or a form post) only fetches content; to stage with local_copy, POST JSON (Content-Type: application/json)")
	if len(fx.store.All()) != 0 {
		t.Fatal("refusals of the door's kind were recorded")
	}
}

func TestStoreDown(t *testing.T) {
	fx := newFixture(t)
	fx.store.SetDown(true)
	_, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "a", "x"), staging.Options{})
	wantKind(t, err, staging.Unavailable, "Database unavailable")
	if fx.copy.runs.Load() != 0 {
		t.Fatal("staged without a record")
	}
	fx.store.SetDown(false)
	if _, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "a", "x"), staging.Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestReadsAreScoped(t *testing.T) {
	fx := newFixture(t)
	bob := staging.Caller{Name: "bob"}
	mine, _ := fx.svc.Handle(context.Background(), alice, req("local_copy", "a", "x"), staging.Options{})
	r := req("local_copy", "b", "y")
	r.Username = "bob"
	fx.svc.Handle(context.Background(), bob, r, staging.Options{})
	for _, tc := range []struct {
		name   string
		caller staging.Caller
		filter staging.Filter
		want   int
		kind   staging.Kind
	}{
		{"own, implicitly", alice, staging.Filter{}, 1, ""},
		{"own, named", alice, staging.Filter{Username: "alice"}, 1, ""},
		{"another's", alice, staging.Filter{Username: "bob"}, 0, staging.Forbidden},
		{"anonymous", staging.Caller{}, staging.Filter{}, 0, staging.Unauthenticated},
		{"admin, everyone's", staging.Trusted, staging.Filter{}, 2, ""},
		{"admin, bob's", staging.Trusted, staging.Filter{Username: "bob"}, 1, ""},
		{"bad status", staging.Trusted, staging.Filter{Status: "done"}, 0, staging.Invalid},
	} {
		ops, err := fx.svc.Operations(context.Background(), tc.caller, tc.filter)
		if tc.kind != "" {
			if k, _ := staging.KindOf(err); k != tc.kind {
				t.Errorf("%s: %v, want %s", tc.name, err, tc.kind)
			}
			continue
		}
		if err != nil || len(ops) != tc.want {
			t.Errorf("%s: %d operations, %v; want %d", tc.name, len(ops), err, tc.want)
		}
	}
	if _, err := fx.svc.Operation(context.Background(), alice, mine.Operation.ID); err != nil {
		t.Error(err)
	}
	_, err := fx.svc.Operation(context.Background(), bob, mine.Operation.ID)
	wantKind(t, err, staging.NotFound, "Operation not found: "+mine.Operation.ID)
}

// While the store is away nobody's heartbeat gets through; once it is
// back, replicas take nobody for dead for a lease, so an operation that
// finished meanwhile records its own outcome instead of being swept.
func TestStoreOutageTakesNobodyForDead(t *testing.T) {
	fx := newFixture(t)
	fx.svc.Lease = 100 * time.Millisecond
	other := fx.service("stage")
	other.Lease = fx.svc.Lease
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go other.Sweeper(ctx)
	started := make(chan string, 1)
	fx.copy.started = started
	done := make(chan error, 1)
	go func() {
		_, err := fx.svc.Handle(context.Background(), alice, req("local_copy", "slow", "x"), staging.Options{})
		done <- err
	}()
	id := <-started
	fx.store.SetDown(true)
	time.Sleep(3 * fx.svc.Lease)
	close(fx.copy.gate) // finishes while the store is away
	time.Sleep(fx.svc.Lease / 2)
	fx.store.SetDown(false)
	if err := <-done; err != nil {
		t.Fatalf("staging across the outage: %v", err)
	}
	time.Sleep(2 * fx.svc.Lease) // sweeps go on meanwhile
	if op, _ := fx.store.Get(context.Background(), id); op.Status != staging.StatusSuccess {
		t.Fatalf("record %+v", op)
	}
}

// readNothing is a token's read scope that allows nothing.
type readNothing struct{}

func (readNothing) CanRead(string, bool) bool { return false }
func (readNothing) CanList(string) bool       { return false }

// A request by DID that waited runs on its replica when it resumes: a
// hand-off naming another source is refused, and so are one that comes
// before the replica and one from a caller who may not read the replica.
func TestResumedDIDRunsOnItsReplica(t *testing.T) {
	fx := newFixture(t)
	r := staging.Request{Method: "local_copy", Username: "alice", DID: "skao:far.fits", Target: "far.fits"}
	out, err := fx.svc.Handle(context.Background(), alice, r, staging.Options{})
	if err != nil || !out.Waiting {
		t.Fatalf("%+v %v", out, err)
	}
	id := out.Operation.ID
	forged := r
	forged.OperationID, forged.Source = id, "private/secret.fits"
	_, err = fx.svc.Handle(context.Background(), alice, forged, staging.Options{})
	wantKind(t, err, staging.NotFound, "Replica of skao:far.fits is not at this site yet")
	fx.replicas["skao:far.fits"] = "rse/far.fits"
	_, err = fx.svc.Handle(context.Background(), alice, forged, staging.Options{})
	wantKind(t, err, staging.Forbidden, "Operation "+id+" is not this request's")
	replica := forged
	replica.Source = "rse/far.fits"
	_, err = fx.svc.Handle(context.Background(), staging.Caller{Name: "alice", Reads: readNothing{}}, replica, staging.Options{})
	wantKind(t, err, staging.Forbidden, "The token does not allow reading rse/far.fits")
	if op, _ := fx.store.Get(context.Background(), id); op.Status != staging.StatusPending || fx.copy.runs.Load() != 0 {
		t.Fatalf("after refused hand-offs: %+v, %d runs", op, fx.copy.runs.Load())
	}
	got, err := fx.svc.Handle(context.Background(), alice, replica, staging.Options{})
	if err != nil || got.Operation.Status != staging.StatusSuccess || got.Operation.LocalPathOnStorage != "rse/far.fits" {
		t.Fatalf("%+v %v", got, err)
	}
	if src, _ := fx.area.get("alice", "far.fits"); src != "rse/far.fits" {
		t.Fatalf("staged %q", src)
	}
}

// A user chooses their own event's source and id: the same pair from
// another user is another event, never answered with the first one's
// outcome; from the same sender for another request it is refused.
func TestEventKeysOfUsersAreTheirOwn(t *testing.T) {
	fx := newFixture(t)
	b := staging.Request{Method: "local_copy", Username: "bob", Source: "b.fits", Target: "project/x",
		EventSource: "/portal", EventID: "42"}
	first, err := fx.svc.Handle(context.Background(), staging.Caller{Name: "bob"}, b, staging.Options{})
	if err != nil || first.Operation.Status != staging.StatusSuccess {
		t.Fatalf("%+v %v", first, err)
	}
	a := req("local_copy", "a.fits", "mine")
	a.EventSource, a.EventID = "/portal", "42"
	got, err := fx.svc.Handle(context.Background(), alice, a, staging.Options{})
	if err != nil || got.Replayed || got.Operation.Username != "alice" || got.Operation.ID == first.Operation.ID {
		t.Fatalf("alice's event with bob's source and id: %+v %v", got, err)
	}
	if src, _ := fx.area.get("alice", "mine"); src != "a.fits" {
		t.Fatalf("alice's event staged %q", src)
	}
	again, err := fx.svc.Handle(context.Background(), alice, a, staging.Options{})
	if err != nil || !again.Replayed || again.Operation.ID != got.Operation.ID {
		t.Fatalf("redelivery: %+v %v", again, err)
	}
	for _, tc := range []struct {
		name   string
		caller staging.Caller
		req    staging.Request
	}{
		{"a user's other request", alice, func() staging.Request { r := a; r.Target = "elsewhere"; return r }()},
		{"a verified sender's other request", staging.Trusted, func() staging.Request { r := b; r.Target = "y"; return r }()},
	} {
		if tc.caller.Admin {
			if _, err := fx.svc.Handle(context.Background(), tc.caller, b, staging.Options{}); err != nil {
				t.Fatalf("%s: first delivery: %v", tc.name, err)
			}
		}
		_, err := fx.svc.Handle(context.Background(), tc.caller, tc.req, staging.Options{})
		wantKind(t, err, staging.Conflict, "Event 42 from /portal was delivered before with another request")
	}
	if n := len(fx.store.All()); n != 3 {
		t.Fatalf("%d records, want 3 (bob's, alice's, the verified sender's)", n)
	}
}

// One replica's arrival completes every request waiting for it, however
// many: not only the first thousand.
func TestCompleteFinishesEveryWaitingRequest(t *testing.T) {
	fx := newFixture(t)
	const n = 1234
	for i := range n {
		r := staging.Request{Method: "local_copy", Username: "alice", DID: "skao:far.fits", Target: fmt.Sprintf("t/%d", i)}
		if out, err := fx.svc.Handle(context.Background(), alice, r, staging.Options{}); err != nil || !out.Waiting {
			t.Fatalf("%+v %v", out, err)
		}
	}
	fx.replicas["skao:far.fits"] = "rse/far.fits"
	c, err := fx.svc.Complete(context.Background(), staging.System, "skao:far.fits", "rse/far.fits", func() error { return nil })
	if err != nil || c.Waiting != n || len(c.Operations) != n {
		t.Fatalf("waiting %d, completed %d, %v; want %d", c.Waiting, len(c.Operations), err, n)
	}
	for _, op := range fx.store.All() {
		if op.Status != staging.StatusSuccess {
			t.Fatalf("%+v", op)
		}
	}
}

// A refused request's log record names its user as username (which puts
// it in that user's log viewer) only when the caller may act for them;
// anyone else's names them as requested_username. The client's texts are
// cut short, so a refusal cannot make a large log record.
func TestRefusalLogsNameTheUserOnlyForTheirCaller(t *testing.T) {
	long := strings.Repeat("p", 4000)
	for _, tc := range []struct {
		name   string
		caller staging.Caller
		req    staging.Request
		key    string // the key that names alice
	}{
		{"anonymous", staging.Caller{}, req("local_copy", "PLEASE-RESET-YOUR-PASSWORD", "b"), "requested_username"},
		{"another user", staging.Caller{Name: "bob"}, req("local_copy", "a", "b"), "requested_username"},
		{"anonymous, malformed", staging.Caller{}, req(strings.Repeat("m", 200_000), long, long), "requested_username"},
		{"alice, unknown method", alice, req("ftp", "a", "b"), "username"},
		{"admin", staging.Caller{Name: "root", Admin: true}, req("ftp", "a", "b"), "username"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			var buf strings.Builder
			fx.svc.Logger = slog.New(slog.NewJSONHandler(&buf, nil))
			if _, err := fx.svc.Handle(context.Background(), tc.caller, tc.req, staging.Options{Stream: true}); err == nil {
				t.Fatal("not refused")
			}
			var rec map[string]any
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				var r map[string]any
				if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == "staging refused" {
					rec = r
					if len(line) > 3*staging.MaxText {
						t.Errorf("log record of %d bytes", len(line))
					}
				}
			}
			if rec == nil {
				t.Fatalf("no refusal logged:\n%s", buf.String())
			}
			other := map[string]string{"username": "requested_username", "requested_username": "username"}[tc.key]
			if rec[tc.key] != "alice" || rec[other] != nil {
				t.Errorf("%s = %v, %s = %v; want %s = alice only", tc.key, rec[tc.key], other, rec[other], tc.key)
			}
		})
	}
}

// flakyPeer fails its first calls with err, without handing anything on,
// as a function that is full (429) or away (503) does; then hands on.
type flakyPeer struct {
	err   error
	fails int
	calls atomic.Int32
	next  staging.Peer
}

func (p *flakyPeer) Run(ctx context.Context, caller staging.Caller, req *staging.Request) error {
	if int(p.calls.Add(1)) <= p.fails {
		return p.err
	}
	return p.next.Run(ctx, caller, req)
}

// A request that another function runs, whose sender delivers it again
// (an event; a Rucio transfer-done completing a waiting request), is left
// pending when that function is full or away, and runs at the next
// delivery; a plain request, whose client only sees the error, fails.
func TestRequestsForAFunctionFullOrAwayWaitForTheNextDelivery(t *testing.T) {
	for _, kind := range []staging.Kind{staging.TooMany, staging.Unavailable} {
		t.Run(string(kind), func(t *testing.T) {
			ctx := context.Background()
			peer := func(fx *fixture) *flakyPeer {
				p := &flakyPeer{err: staging.Errorf(kind, "the jupyter function is %s", kind), fails: 1, next: localPeer{fx.jupyter}}
				fx.svc.Peers["jupyter"] = p
				return p
			}

			fx := newFixture(t)
			p := peer(fx)
			ev := req("jupyter_copy", "a", "event.txt")
			ev.EventSource, ev.EventID = "/broker", "ev-1"
			if _, err := fx.svc.Handle(ctx, alice, ev, staging.Options{}); err == nil {
				t.Fatal("the first delivery succeeded")
			} else {
				wantKind(t, err, kind, "")
			}
			if ops := fx.store.All(); len(ops) != 1 || ops[0].Status != staging.StatusPending {
				t.Fatalf("after the first delivery: %+v", ops)
			}
			out, err := fx.svc.Handle(ctx, alice, ev, staging.Options{})
			if err != nil || out.Operation.Status != staging.StatusSuccess {
				t.Fatalf("redelivery: %+v %v", out, err)
			}
			if _, ok := fx.area.get("alice", "event.txt"); !ok || p.calls.Load() != 2 || len(fx.store.All()) != 1 {
				t.Fatalf("staged %v, %d calls, %d records", ok, p.calls.Load(), len(fx.store.All()))
			}

			fx = newFixture(t)
			peer(fx)
			if _, err := fx.svc.Handle(ctx, alice, req("jupyter_copy", "a", "plain.txt"), staging.Options{Stream: true}); err == nil {
				t.Fatal("a plain request succeeded")
			}
			if ops := fx.store.All(); len(ops) != 1 || ops[0].Status != staging.StatusFailed {
				t.Fatalf("a plain request's record: %+v", ops)
			}

			fx = newFixture(t)
			p = peer(fx)
			waiting, err := fx.svc.Handle(ctx, alice, staging.Request{Method: "jupyter_copy", Username: "alice", DID: "skao:far.fits", Target: "far.fits"}, staging.Options{})
			if err != nil || !waiting.Waiting {
				t.Fatalf("%+v %v", waiting, err)
			}
			fx.replicas["skao:far.fits"] = "rse/far.fits"
			ok := func() error { return nil }
			if _, err := fx.svc.Complete(ctx, staging.System, "skao:far.fits", "rse/far.fits", ok); err == nil {
				t.Fatal("a transfer-done completed a request the jupyter function never took")
			}
			if op, _ := fx.store.Get(ctx, waiting.Operation.ID); !op.WaitsForReplica() {
				t.Fatalf("after a transfer-done that could not hand it on: %+v", op)
			}
			done, err := fx.svc.Complete(ctx, staging.System, "skao:far.fits", "rse/far.fits", ok)
			if err != nil || len(done.Operations) != 1 || done.Operations[0].Status != staging.StatusSuccess {
				t.Fatalf("the transfer-done's redelivery: %+v %v", done, err)
			}
		})
	}
}

// A door whose sender hangs up and delivers again (Detach) leaves the run
// going: the redelivery finds it done, not cancelled and failed. Without
// Detach, a client that hangs up cancels its run.
func TestDetachedRunOutlivesItsDelivery(t *testing.T) {
	for _, detach := range []bool{true, false} {
		t.Run(fmt.Sprintf("detach=%v", detach), func(t *testing.T) {
			fx := newFixture(t)
			fx.copy.started = make(chan string, 1)
			ev := req("local_copy", "slow", "slow.txt")
			ev.EventSource, ev.EventID = "/broker", "slow-1"
			ctx, hangUp := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := fx.svc.Handle(ctx, alice, ev, staging.Options{Detach: detach})
				done <- err
			}()
			id := <-fx.copy.started
			hangUp()
			if detach {
				close(fx.copy.gate) // the copy ends after its delivery did
			}
			<-done
			op := fx.wait(t, id)
			if want := map[bool]staging.Status{true: staging.StatusSuccess, false: staging.StatusFailed}[detach]; op.Status != want {
				t.Fatalf("after the delivery hung up: %s %s, want %s", op.Status, op.ErrorReason, want)
			}
			if !detach {
				return
			}
			out, err := fx.svc.Handle(context.Background(), alice, ev, staging.Options{Detach: true})
			if err != nil || !out.Replayed || out.Operation.Status != staging.StatusSuccess || fx.copy.runs.Load() != 1 {
				t.Fatalf("redelivery: %+v %v, %d runs", out, err, fx.copy.runs.Load())
			}
		})
	}
}

// A waiting request whose run is refused for good when its replica
// arrives (its method no longer allowed) fails with the refusal, and the
// requests behind it run: it does not stay at the head of the queue.
func TestCompletionFailsARequestRefusedForGood(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	var ids []string
	for _, method := range []string{"local_copy", "jupyter_copy"} {
		out, err := fx.svc.Handle(ctx, alice, staging.Request{Method: method, Username: "alice", DID: "skao:far.fits", Target: method}, staging.Options{})
		if err != nil || !out.Waiting {
			t.Fatalf("%+v %v", out, err)
		}
		ids = append(ids, out.Operation.ID)
	}
	fx.svc.Allowed = func(m string) bool { return m != "local_copy" } // ALLOWED_METHODS changed since
	fx.replicas["skao:far.fits"] = "rse/far.fits"
	done, err := fx.svc.Complete(ctx, staging.System, "skao:far.fits", "rse/far.fits", func() error { return nil })
	if err != nil || done.Waiting != 2 || len(done.Operations) != 2 {
		t.Fatalf("%+v %v", done, err)
	}
	for i, want := range []staging.Status{staging.StatusFailed, staging.StatusSuccess} {
		op, _ := fx.store.Get(ctx, ids[i])
		if op.Status != want {
			t.Errorf("%s: %s %q, want %s", op.Method, op.Status, op.ErrorReason, want)
		}
	}
	if op, _ := fx.store.Get(ctx, ids[0]); op.ErrorReason != "Invalid staging method: local_copy" {
		t.Errorf("reason %q", op.ErrorReason)
	}
}

// Reads follow the rule of acting for someone, and a refusal says it was
// a read.
func TestAuthorizeRead(t *testing.T) {
	for _, tt := range []struct {
		name     string
		caller   staging.Caller
		username string
		kind     staging.Kind
		detail   string
	}{
		{"own records", alice, "alice", "", ""},
		{"an admin, anyone's", staging.Caller{Name: "root", Admin: true}, "alice", "", ""},
		{"another user's", staging.Caller{Name: "bob"}, "alice", staging.Forbidden, "User bob may not read the records of user alice"},
		{"anonymous", staging.Caller{}, "alice", staging.Unauthenticated, "Authentication is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := staging.AuthorizeRead(tt.caller, tt.username)
			if tt.kind == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantKind(t, err, tt.kind, tt.detail)
		})
	}
}
