package staging

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
)

var tracer = otel.Tracer("github.com/ska-telescope/skao-staging-service/lib/staging")

// Service is the staging pipeline every door hands its requests to:
// validate, authorize, resolve, record, run (or hand on), finish.
type Service struct {
	Store Store
	// Function is the name of the function this service runs in; methods
	// whose Traits.Function names another are handed to Peers. "" runs
	// every method here.
	Function string
	// Peers are the other functions that run methods, by name.
	Peers map[string]Peer
	// Handoff passes async requests on (K_SINK); nil runs them here.
	Handoff Handoff
	// Notifier hears of outcomes nobody waits for; nil: nobody.
	Notifier Notifier
	// DIDs locates Rucio DIDs' replicas; nil when no RSE is configured.
	DIDs DIDLocator
	// Sources resolves source paths for capability checks (Caller.Reads).
	Sources SourceResolver
	Allowed func(method string) bool // ALLOWED_METHODS; nil allows all
	Logger  *slog.Logger
	// Lease is how long a running operation may go without a heartbeat
	// before another replica takes it for dead (OPERATION_LEASE).
	Lease time.Duration
	// HandoffTimeout is how long an async request may wait for its
	// hand-off to be picked up before it is failed as lost.
	HandoffTimeout time.Duration
	// PendingTTL is how long a request waits for its DID's replica.
	PendingTTL time.Duration
	// MaxWaitingPerUser bounds the requests of one user waiting for their
	// DID's replica (MAX_WAITING_PER_USER); one more is refused with
	// TooMany and not recorded (see roomToWait). 0 is no bound.
	MaxWaitingPerUser int
	// MaxPathDepth bounds the elements of a request's paths.
	MaxPathDepth int
	// Instance names this replica as the owner of the leases it holds; ""
	// makes one up.
	Instance string
	// MaxInflight bounds the operations in flight in this process
	// (MAX_INFLIGHT) and MaxOpenFiles the files they may hold open at
	// once (MAX_OPEN_FILES); beyond either a request is refused with
	// TooMany (see inflight.go). 0 is no bound.
	MaxInflight  int
	MaxOpenFiles int

	once      sync.Once
	limitOnce sync.Once
	limiter   *limiter
	mu        sync.RWMutex
	methods   map[string]Method
	order     []string
	bg        sync.WaitGroup // async runs and late outcomes of this process
	// storeFailure is when this replica last saw the store fail (Unix ns).
	storeFailure atomic.Int64

	didHandoffsSwept atomic.Int64 // when Sweep last looked for lost hand-offs by DID (Unix ns)
}

// Register adds a method. Its traits say whether it runs here or in
// another function.
func (s *Service) Register(m Method) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.methods == nil {
		s.methods = map[string]Method{}
	}
	if _, ok := s.methods[m.Name()]; !ok {
		s.order = append(s.order, m.Name())
	}
	s.methods[m.Name()] = m
}

// Methods lists the registered methods a request may name here: allowed,
// and run here or by a configured peer, in the order registered.
func (s *Service) Methods() []Method {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Method
	for _, name := range s.order {
		if m, err := s.lookupLocked(name); err == nil {
			out = append(out, m)
		}
	}
	return out
}

func (s *Service) lookup(name string) (Method, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lookupLocked(name)
}

func (s *Service) lookupLocked(name string) (Method, error) {
	m, ok := s.methods[name]
	if !ok || (s.Allowed != nil && !s.Allowed(name)) {
		return nil, Errorf(Rejected, "Invalid staging method: %s", name)
	}
	if fn := m.Traits().Function; !s.local(m) && s.Peers[fn] == nil {
		return nil, Errorf(Rejected, "Staging method %s is not available: the %s function that runs it is not configured", name, fn)
	}
	return m, nil
}

// local reports whether m runs in this function; a service that names no
// function runs every method itself.
func (s *Service) local(m Method) bool {
	fn := m.Traits().Function
	return s.Function == "" || fn == "" || fn == s.Function
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Outcome is the answer to a request: its operation record and, for a
// download, the content to stream.
type Outcome struct {
	Operation *Operation
	Download  *Download
	Replayed  bool // a redelivery answered from the first outcome
	// Waiting: pending until its DID's replica arrives (a transfer-done
	// event completes it).
	Waiting bool
	// Accepted: recorded as pending and handed on (async).
	Accepted bool

	run *run // of a download, until Done
}

// Pending reports whether the request was accepted without running yet.
func (o *Outcome) Pending() bool { return o.Waiting || o.Accepted }

// Handle takes one request from a door through the pipeline. Errors are
// *Error values with a detail safe to show; the Outcome carries the
// operation record whenever one was written, failures included.
func (s *Service) Handle(ctx context.Context, caller Caller, req Request, opt Options) (*Outcome, error) {
	ctx, span := tracer.Start(ctx, "stage "+req.Method)
	defer span.End()
	span.SetAttributes(attribute.String("staging.method", req.Method), attribute.String("staging.username", req.Username))
	out, err := s.handle(ctx, caller, &req, opt)
	if err != nil {
		_, detail := KindOf(err)
		span.SetStatus(codes.Error, detail)
	}
	if out != nil && out.Operation != nil {
		span.SetAttributes(attribute.String("staging.operation", out.Operation.ID))
	}
	return out, err
}

func (s *Service) handle(ctx context.Context, caller Caller, req *Request, opt Options) (*Outcome, error) {
	start := time.Now()
	if !caller.Admin {
		req.sentBy = caller.Name
	}
	m, err := s.admit(caller, req, opt)
	if err != nil {
		kind, _ := KindOf(err)
		return s.refuse(ctx, caller, req, err, kind == Rejected) // callers refused are not recorded
	}
	if req.OperationID != "" {
		return s.resume(ctx, caller, m, req, opt, start)
	}
	if op, err := s.byEventKey(ctx, req); err == nil {
		if op.Status == StatusPending && !op.WaitsForReplica() && !s.local(m) && !opt.Async && op.matches(req) {
			// An earlier delivery found the function that runs it full or
			// away, and left it pending for this one.
			return s.rerunRemote(ctx, caller, m, op, req, opt)
		}
		return s.replayRedelivery(ctx, req, opt, op)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if req.DID != "" {
		present, err := s.locate(caller, m, req)
		if err != nil {
			kind, _ := KindOf(err)
			return s.refuse(ctx, caller, req, err, kind != Forbidden || caller.Reads == nil)
		}
		if !present {
			return s.await(ctx, caller, req)
		}
	} else if err := s.authorizeSource(caller, req.Source); err != nil {
		kind, _ := KindOf(err)
		return s.refuse(ctx, caller, req, err, kind != Forbidden) // a refused capability is the caller's, not recorded
	}
	if !s.local(m) {
		// Checked and run where it runs; recorded here, so the record
		// exists whatever happens there. Waiting for it is work in flight
		// here too.
		sl, err := s.reserve(ctx, req, opt, peerFiles)
		if err != nil {
			return nil, err
		}
		defer sl.release()
		op, replay, err := s.createPending(ctx, req)
		if err != nil || replay {
			return s.replayOr(ctx, op, err)
		}
		if opt.Async {
			return s.handOn(ctx, caller, op, req, opt, sl)
		}
		// An event's sender delivers it again after a transient failure.
		return s.runRemote(ctx, caller, m, op, req, req.eventKey() != "")
	}
	plan, err := m.Prepare(ctx, req)
	if err != nil {
		return s.refuse(ctx, caller, req, err, true)
	}
	sl, err := s.reserve(ctx, req, opt, plan.files())
	if err != nil {
		return nil, err
	}
	defer sl.release()
	if opt.Async {
		op, replay, err := s.createPending(ctx, req)
		if err != nil || replay {
			return s.replayOr(ctx, op, err)
		}
		return s.handOn(ctx, caller, op, req, opt, sl)
	}
	op, replay, err := s.open(ctx, req, plan.Lock)
	if err != nil || replay {
		return s.replayOr(ctx, op, err)
	}
	return s.run(runContext(ctx, opt), m, op, req, plan, start, sl)
}

// resume completes a pending operation a hand-off names: an async request,
// a request handed over by another function, or one whose DID's replica
// has arrived. The operation must be this very request: same user,
// method and paths; anything else is refused and the record left alone.
//
// A hand-off from outside this process that finds it full is refused with
// TooMany and its record left pending: its sender (a broker, the stage
// function, the Rucio event's broker) redelivers it. A run here in the
// background holds the slot its door took; should its files not fit after
// all, nobody would redeliver it, so it fails.
func (s *Service) resume(ctx context.Context, caller Caller, m Method, req *Request, opt Options, start time.Time) (*Outcome, error) {
	op, err := s.Store.Get(ctx, req.OperationID)
	// Another user's operation is not found, as GET /operations/<id>
	// answers: a user's own event cannot probe ids.
	if errors.Is(err, ErrNotFound) || (err == nil && AuthorizeRead(caller, op.Username) != nil) {
		return nil, Errorf(NotFound, "Operation not found: %s", req.OperationID)
	}
	if err != nil {
		return nil, StoreFailure(err)
	}
	if !op.matches(req) {
		s.logger().WarnContext(ctx, "hand-off refused: it does not match its operation", "operation", op.ID,
			"caller", caller.Name, "method", req.Method, "username", req.Username)
		return nil, Errorf(Forbidden, "Operation %s is not this request's", op.ID)
	}
	if op.Status != StatusPending {
		return s.replayRedelivery(ctx, req, opt, op)
	}
	if op.WaitsForReplica() {
		// A request by DID runs on its replica, found here, never on a
		// path the hand-off names; and only for a caller who may read it.
		if err := s.checkReplica(caller, m, op, req); err != nil {
			return nil, err
		}
	}
	redelivered := opt.held == nil // by a sender outside this process
	var plan *Plan
	files := peerFiles
	if s.local(m) {
		if plan, err = m.Prepare(ctx, req); err != nil {
			return s.failPending(ctx, op, err)
		}
		files = plan.files()
	}
	sl, err := s.reserve(ctx, req, opt, files)
	if err != nil {
		if redelivered {
			return nil, err // left pending
		}
		return s.failPending(ctx, op, err)
	}
	defer sl.release()
	if !s.local(m) {
		return s.runRemote(ctx, caller, m, op, req, redelivered)
	}
	op, replay, err := s.claim(ctx, op, plan.Lock)
	if err != nil || replay {
		return s.replayOr(ctx, op, err)
	}
	if op.LocalPathOnStorage == "" { // a request by DID, now resolved
		op.LocalPathOnStorage = req.Source
	}
	return s.run(runContext(ctx, opt), m, op, req, plan, start, sl)
}

// checkReplica checks that req, which resumes op, a request by DID that
// waited, names the DID's replica as its source, that the replica is
// here, and that caller may read it.
func (s *Service) checkReplica(caller Caller, m Method, op *Operation, req *Request) error {
	found := *req
	present, err := s.locate(caller, m, &found)
	switch {
	case err != nil:
		return err
	case !present:
		return Errorf(NotFound, "Replica of %s is not at this site yet", op.DID)
	case found.Source != req.Source:
		s.logger().Warn("hand-off refused: its source is not the DID's replica", "operation", op.ID,
			"caller", caller.Name, "did", op.DID, "local_path_on_storage", truncate(req.Source))
		return Errorf(Forbidden, "Operation %s is not this request's", op.ID)
	}
	return nil
}

// matches reports whether req is the request op records; a request by DID
// that waited learns its source when it resumes (see checkReplica).
func (op *Operation) matches(req *Request) bool {
	return op.sameRequest(req) && (op.LocalPathOnStorage == req.Source || op.LocalPathOnStorage == "")
}

// sameRequest reports whether req asks for what op records: the same user,
// method and target, and the same source, or for a request by DID the
// same DID (whose replica op's source is, once found).
func (op *Operation) sameRequest(req *Request) bool {
	return op.Username == req.Username && op.Method == req.Method && op.RelativePath == req.Target &&
		op.DID == req.DID && (req.DID != "" || op.LocalPathOnStorage == req.Source)
}

// handOn passes a pending operation on (Handoff, or a run in this
// process: its batch's, or its own in sl, which it takes over) and
// answers at once.
func (s *Service) handOn(ctx context.Context, caller Caller, op *Operation, req *Request, opt Options, sl *slot) (*Outcome, error) {
	req.OperationID = op.ID
	switch {
	case s.Handoff == nil && opt.collect != nil:
		opt.collect(*req)
		return &Outcome{Operation: op, Accepted: true}, nil
	case s.Handoff == nil:
		bg := sl.pass()
		s.runLater(ctx, caller, []Request{*req}, bg, bg)
		return &Outcome{Operation: op, Accepted: true}, nil
	}
	if err := s.Handoff.Handoff(ctx, req); err != nil {
		cause := Wrap(Unavailable, "Could not hand the request over to run in the background", err)
		return s.failPending(context.WithoutCancel(ctx), op, cause)
	}
	return &Outcome{Operation: op, Accepted: true}, nil
}

// runLater runs pending requests in this process, in the background, as
// many at a time as sl holds operations, each holding what held says:
// one of them, and its files if sl holds those too. It is tracked so that
// Shutdown waits for it; it tells the Notifier their outcomes and gives
// sl back at the end.
func (s *Service) runLater(ctx context.Context, caller Caller, reqs []Request, sl, held *slot) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer sl.release()
		ctx := context.WithoutCancel(ctx)
		var started atomic.Int64
		defer s.keepQueued(reqs, &started)()
		forEach(len(reqs), sl.ops, func(i int) {
			started.Add(1)
			out, err := s.Handle(ctx, caller, reqs[i], Options{held: held})
			if err != nil {
				s.logger().DebugContext(ctx, "background staging failed", "operation", reqs[i].OperationID, "error", err)
			}
			if out != nil && out.Operation != nil && out.Operation.Status.Finished() {
				s.Notify(ctx, out.Operation)
			}
		})
	}()
}

// keepQueued refreshes, every third of the hand-off timeout, the records
// of the pending requests of reqs that wait for their turn to run here
// (those from started on, as forEach starts them in order), so that no
// sweep takes them for lost hand-offs while this process lives. The
// function it returns stops it.
func (s *Service) keepQueued(reqs []Request, started *atomic.Int64) (stop func()) {
	done := make(chan struct{})
	t := time.NewTicker(s.handoffTimeout() / 3)
	go func() {
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			for _, r := range reqs[min(started.Load(), int64(len(reqs))):] {
				select {
				case <-done:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := s.Store.Touch(ctx, r.OperationID, time.Now().UTC())
				cancel()
				if err != nil {
					s.logger().Warn("refresh queued requests", "operation", r.OperationID, "error", err)
					break // the next tick tries again
				}
			}
		}
	}()
	return func() { close(done) }
}

// forEach calls fn(i) for i from 0 to n-1, up to workers at a time, and
// waits for them all.
func forEach(n, workers int, fn func(i int)) {
	sem := make(chan struct{}, max(workers, 1))
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}

// runRemote hands a recorded request to the function that runs its method
// and waits; that function records the outcome in the shared store. When
// that function is full it takes nothing: a redelivered request is left
// pending for its sender to redeliver, any other fails with TooMany.
func (s *Service) runRemote(ctx context.Context, caller Caller, m Method, op *Operation, req *Request, redelivered bool) (*Outcome, error) {
	req.OperationID = op.ID
	err := s.Peers[m.Traits().Function].Run(ctx, caller, req)
	got, gerr := s.Store.Get(context.WithoutCancel(ctx), op.ID)
	if gerr != nil {
		if err == nil {
			err = StoreFailure(gerr)
		}
		return &Outcome{Operation: op}, err
	}
	if err != nil {
		if redelivered && got.Status == StatusPending && Transient(err) {
			// Never taken there, for now (full, away): left pending for
			// the sender's next delivery, or the sweep once it is lost.
			return nil, err
		}
		if got.Status == StatusPending {
			// Never taken there: nobody will run it.
			return s.failPending(context.WithoutCancel(ctx), got, err)
		}
		return &Outcome{Operation: got}, err
	}
	if got.Status == StatusFailed {
		return &Outcome{Operation: got}, got.err()
	}
	return &Outcome{Operation: got}, nil
}

// runContext is the context an operation runs in: ctx, or with
// opt.Detach one that ctx's end does not cancel (the lease and SIGTERM's
// drain still bound the run).
func runContext(ctx context.Context, opt Options) context.Context {
	if opt.Detach {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// rerunRemote hands op, which an earlier delivery of req left pending, to
// the function that runs it again. Should that function have taken it
// meanwhile, it answers as a replay; should it still be full or away, op
// stays pending.
func (s *Service) rerunRemote(ctx context.Context, caller Caller, m Method, op *Operation, req *Request, opt Options) (*Outcome, error) {
	sl, err := s.reserve(ctx, req, opt, peerFiles)
	if err != nil {
		return nil, err
	}
	defer sl.release()
	return s.runRemote(ctx, caller, m, op, req, true)
}

// Notify tells the Notifier, if any, the outcome of op.
func (s *Service) Notify(ctx context.Context, op *Operation) {
	if s.Notifier != nil {
		s.Notifier.Notify(ctx, op)
	}
}

// BatchItem is the outcome of one item of a batch.
type BatchItem struct {
	Outcome *Outcome
	Err     error
}

// batchWorkers is how many items of one batch run at once.
const batchWorkers = 8

// HandleBatch handles several requests of one caller, a few at a time,
// and returns their outcomes in order. What the items share (method,
// user, the caller's right to act) is checked once first: if that fails
// in a way no item would be recorded for, the whole batch is refused with
// the error; otherwise every item gets its own outcome and record.
//
// A batch takes, at once, an operation slot for every item it runs at the
// same time (up to batchWorkers, and no more than MAX_INFLIGHT), and runs
// its items in them one after another, each item taking the files its
// plan holds. When those slots are not free the whole batch is refused
// with TooMany before anything is recorded; an item whose files do not
// fit is refused alone, unrecorded. An async batch run in this process
// (no Handoff) records its items, then keeps its slots for their run in
// the background, as many at a time as it runs now.
func (s *Service) HandleBatch(ctx context.Context, caller Caller, reqs []Request, opt Options) ([]BatchItem, error) {
	opt.Stream = false
	if len(reqs) > 0 {
		first := Request{Method: reqs[0].Method, Username: reqs[0].Username}
		if err := s.admitShared(caller, &first, opt); err != nil {
			if kind, _ := KindOf(err); kind != Rejected {
				return nil, err
			}
		}
	}
	workers := min(len(reqs), batchWorkers)
	if most := s.limit().maxOps; most > 0 {
		workers = min(workers, most)
	}
	hold, err := s.limit().take(workers, 0)
	if err != nil {
		return nil, err
	}
	defer hold.release()
	opt.held = &slot{ops: 1} // one of hold's
	var mu sync.Mutex
	var later []Request
	if opt.Async && s.Handoff == nil {
		opt.collect = func(r Request) { mu.Lock(); later = append(later, r); mu.Unlock() }
	}
	items := make([]BatchItem, len(reqs))
	forEach(len(reqs), workers, func(i int) {
		out, err := s.Handle(ctx, caller, reqs[i], opt)
		items[i] = BatchItem{Outcome: out, Err: err}
	})
	if len(later) > 0 {
		s.runLater(ctx, caller, later, hold.pass(), opt.held)
	}
	return items, nil
}

// Shutdown waits, until ctx ends, for the work this process does in the
// background: async runs and outcomes waiting for the database.
func (s *Service) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.bg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("background staging still running at shutdown")
	}
}
