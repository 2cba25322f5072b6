package staging

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
)

var tracer = otel.Tracer("github.com/ska-telescope/skao-staging-service/lib")

// usernamePattern is what a username may look like: it names a directory.
var usernamePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._@+-]{0,127}$`)

// ValidUsername reports whether u is an acceptable username.
func ValidUsername(u string) bool {
	return usernamePattern.MatchString(u) && !strings.Contains(u, "..")
}

// LockKey names a target for the store's lock: one per user and cleaned path.
func LockKey(username, target string) string { return hash("target", username, path.Clean(target)) }

// EventKey identifies a CloudEvent by its source and id, as the spec says
// they identify an event uniquely.
func EventKey(source, id string) string { return hash("event", source, id) }

func hash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Service is the staging pipeline: validate, prepare, record, run, finish.
type Service struct {
	Store   Store
	Allowed func(method string) bool // ALLOWED_METHODS
	Logger  *slog.Logger
	// Lease is how long a running operation may go without a heartbeat
	// before another replica takes it for dead.
	Lease time.Duration
	// DIDs locates Rucio DIDs' replicas; nil when no RSE is configured.
	DIDs DIDLocator
	// Cleanup removes what an operation whose replica died left behind (its
	// temporary output) before the operation is recorded as failed.
	Cleanup func(ctx context.Context, op *Operation)

	mu      sync.RWMutex
	methods map[string]Method
	wg      sync.WaitGroup // async work in this process
}

// Register adds a method. A new method is one file plus one Register call.
func (s *Service) Register(m Method) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.methods == nil {
		s.methods = map[string]Method{}
	}
	s.methods[m.Name()] = m
}

// Methods lists the registered methods that are also allowed.
func (s *Service) method(name string) (Method, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.methods[name]
	if !ok || (s.Allowed != nil && !s.Allowed(name)) {
		return nil, false
	}
	return m, true
}

func (s *Service) lease() time.Duration {
	if s.Lease > 0 {
		return s.Lease
	}
	return 15 * time.Second
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
	// Waiting is true when the operation is pending until its DID's replica
	// arrives (a transfer-done event completes it).
	Waiting bool

	job     *Job
	service *Service
	start   time.Time
	ctx     context.Context // of the request, for Done's log record and metrics
}

// Validate checks what every door must check before anything else: a
// well-formed username (422) and a known, allowed method (400).
func (s *Service) Validate(req *Request) error {
	if req.Method == "" {
		return Errorf(http.StatusUnprocessableEntity, "method is required")
	}
	if req.Username == "" {
		return Errorf(http.StatusUnprocessableEntity, "username is required")
	}
	if !ValidUsername(req.Username) {
		return Errorf(http.StatusUnprocessableEntity, "Invalid username: must match %s and not contain '..'", usernamePattern)
	}
	if _, ok := s.method(req.Method); !ok {
		return Errorf(http.StatusBadRequest, "Invalid staging method: %s", req.Method)
	}
	return nil
}

// Stage runs req through the pipeline and waits for its outcome. Errors are
// *Error values; the returned Outcome carries the operation record whenever
// one was written, failures included.
func (s *Service) Stage(ctx context.Context, req Request) (*Outcome, error) {
	ctx, span := tracer.Start(ctx, "stage "+req.Method)
	defer span.End()
	span.SetAttributes(attribute.String("staging.method", req.Method), attribute.String("staging.username", req.Username))
	out, err := s.stage(ctx, &req)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	if out != nil && out.Operation != nil {
		span.SetAttributes(attribute.String("staging.operation", out.Operation.ID))
	}
	return out, err
}

func (s *Service) stage(ctx context.Context, req *Request) (*Outcome, error) {
	start := time.Now()
	if err := s.Validate(req); err != nil {
		if status, _ := StatusOf(err); status == http.StatusUnprocessableEntity {
			return nil, err // too malformed to record
		}
		return s.refuse(ctx, req, "", err)
	}
	m, _ := s.method(req.Method)
	if f, ok := m.(Forwarder); ok {
		return f.Forward(ctx, req)
	}
	if req.EventKey != "" && req.OperationID == "" {
		if op, err := s.Store.GetByEventKey(ctx, req.EventKey); err == nil {
			return s.replay(ctx, op)
		} else if !errors.Is(err, ErrNotFound) {
			return nil, Unavailable(err)
		}
	}
	if req.DID != "" && req.OperationID == "" {
		present, err := s.locate(req)
		if err != nil {
			return s.refuse(ctx, req, "", err)
		}
		if !present {
			return s.await(ctx, req)
		}
	}
	plan, err := m.Prepare(ctx, req)
	if err != nil {
		return s.refuse(ctx, req, "", err)
	}
	op, replay, err := s.open(ctx, req, plan)
	if err != nil || replay {
		if err == nil {
			return s.replay(ctx, op)
		}
		return nil, err
	}
	job := &Job{Operation: op, Request: req}
	stop := s.heartbeat(op, job)
	running(ctx, req.Method)
	runCtx, span := tracer.Start(ctx, "run "+req.Method)
	res, err := plan.Run(runCtx, job)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	stop()
	if err == nil && res.Download != nil {
		// The door streams it and finishes the operation through Done.
		return &Outcome{Operation: op, Download: res.Download, job: job, service: s, start: start, ctx: ctx}, nil
	}
	return s.finish(ctx, op, job, res, err, start)
}

// refuse records a request refused before it ran, so every request that
// names a user and a method leaves a record; the refusal wins over a store
// failure in what the caller sees.
func (s *Service) refuse(ctx context.Context, req *Request, source string, cause error) (*Outcome, error) {
	status, detail := StatusOf(cause)
	now := time.Now().UTC()
	op := &Operation{ID: newID(), Method: req.Method, Username: req.Username,
		LocalPathOnStorage: orDefault(source, req.Source), RelativePath: req.Target,
		Status: StatusFailed, ErrorReason: detail, Code: status, CreatedAt: now, UpdatedAt: now,
		FinishedAt: &now, EventKey: req.EventKey, DID: req.DID}
	if req.OperationID != "" {
		op.ID, op.EventKey = req.OperationID, ""
		if claimed, err := s.Store.Claim(ctx, op.ID, "", now); err != nil || !claimed {
			if existing, err := s.Store.Get(ctx, op.ID); err == nil && existing.Status.Finished() {
				return s.replay(ctx, existing)
			}
		}
		if err := s.Store.Finish(ctx, op); err != nil {
			s.logger().ErrorContext(ctx, "record refusal", "operation", op.ID, "error", err)
		}
	} else if err := s.Store.Create(ctx, op); err != nil {
		if errors.Is(err, ErrDuplicate) && req.EventKey != "" {
			if existing, err := s.Store.GetByEventKey(ctx, req.EventKey); err == nil {
				return s.replay(ctx, existing)
			}
		}
		s.logger().ErrorContext(ctx, "record refusal", "operation", op.ID, "error", err)
		if !errors.Is(err, ErrDuplicate) {
			op = nil
		}
	}
	opID := ""
	if op != nil {
		opID = op.ID
	}
	s.logger().InfoContext(ctx, "staging refused", "operation", opID, "method", req.Method, "username", req.Username,
		"local_path_on_storage", req.Source, "relative_path", req.Target, "status", status, "detail", detail)
	method := "unknown" // a method named by the client only: keep metrics' attributes few
	if _, ok := s.method(req.Method); ok {
		method = req.Method
	}
	recordOutcome(ctx, method, outcomeRefused, 0, 0)
	return &Outcome{Operation: op}, cause
}

// open records the operation as running and holding its plan's lock, waiting
// while another live operation holds it. replay is true when the request is a
// redelivery whose operation already exists (returned in op).
func (s *Service) open(ctx context.Context, req *Request, plan *Plan) (op *Operation, replay bool, err error) {
	now := time.Now().UTC()
	op = &Operation{ID: newID(), Method: req.Method, Username: req.Username,
		LocalPathOnStorage: orDefault(plan.Source, req.Source), RelativePath: req.Target,
		Status: StatusRunning, CreatedAt: now, UpdatedAt: now, EventKey: req.EventKey, TargetLock: plan.Lock,
		DID: req.DID}
	wait := time.Millisecond
	for {
		if req.OperationID != "" {
			claimed, err := s.Store.Claim(ctx, req.OperationID, plan.Lock, time.Now().UTC())
			if err == nil && !claimed {
				existing, err := s.Store.Get(ctx, req.OperationID)
				if err != nil {
					return nil, false, storeError(err, "Operation not found: "+req.OperationID)
				}
				return existing, true, nil
			}
			if err == nil {
				if op, err = s.Store.Get(ctx, req.OperationID); err != nil {
					return nil, false, Unavailable(err)
				}
				if op.LocalPathOnStorage == "" { // a request by DID, now resolved
					op.LocalPathOnStorage = orDefault(plan.Source, req.Source)
				}
				return op, false, nil
			}
			if !errors.Is(err, ErrDuplicate) {
				return nil, false, Unavailable(err)
			}
		} else {
			err := s.Store.Create(ctx, op)
			if err == nil {
				return op, false, nil
			}
			if !errors.Is(err, ErrDuplicate) {
				return nil, false, Unavailable(err)
			}
			if req.EventKey != "" {
				if existing, err := s.Store.GetByEventKey(ctx, req.EventKey); err == nil {
					return existing, true, nil
				}
			}
		}
		// The target is locked: wait for its holder, or take over from a
		// holder whose replica died (no heartbeat for a lease).
		holder, err := s.Store.GetByTargetLock(ctx, plan.Lock)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, false, Unavailable(err)
		case holder.UpdatedAt.Before(time.Now().Add(-s.lease())):
			if _, err := s.abandon(ctx, holder); err != nil {
				return nil, false, Unavailable(err)
			}
		default:
			select {
			case <-ctx.Done():
				return nil, false, Wrap(http.StatusServiceUnavailable, "Gave up waiting for another staging of the same target", ctx.Err())
			case <-time.After(wait):
			}
			wait = min(wait*2, 100*time.Millisecond)
		}
	}
}

const interrupted = "Interrupted: the function stopped before the staging finished"

// heartbeat records progress and keeps the operation's lease while it runs.
func (s *Service) heartbeat(op *Operation, job *Job) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(s.lease() / 5)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				total, n := job.Counts()
				ctx, cancel := context.WithTimeout(context.Background(), s.lease()/5)
				if err := s.Store.Progress(ctx, op.ID, total, n, time.Now().UTC()); err != nil {
					s.logger().Warn("record progress", "operation", op.ID, "error", err)
				}
				cancel()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// finish records the outcome. A store failure is retried briefly: the work is
// done and its record must say so.
func (s *Service) finish(ctx context.Context, op *Operation, job *Job, res *Result, runErr error, start time.Time) (*Outcome, error) {
	now := time.Now().UTC()
	op.FinishedAt = &now
	op.UpdatedAt = now
	op.Bytes, op.BytesDone = job.Counts()
	if runErr != nil {
		op.Status = StatusFailed
		op.Code, op.ErrorReason = StatusOf(runErr)
	} else {
		op.Status, op.Code, op.Message = StatusSuccess, http.StatusOK, res.Message
		if res.Bytes > 0 {
			op.Bytes, op.BytesDone = res.Bytes, res.Bytes
		}
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		err = s.Store.Finish(fctx, op)
		cancel()
		if err == nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	op.TargetLock = ""
	took := time.Since(start)
	s.logger().InfoContext(ctx, "staging finished", "operation", op.ID, "method", op.Method, "username", op.Username,
		"local_path_on_storage", op.LocalPathOnStorage, "relative_path", op.RelativePath,
		"status", op.Status, "bytes", op.Bytes, "duration_ms", took.Milliseconds(),
		"error_reason", op.ErrorReason)
	stopped(ctx, op.Method)
	recordOutcome(ctx, op.Method, string(op.Status), op.Bytes, took)
	if err != nil {
		s.finishLater(*op)
		return &Outcome{Operation: op}, Unavailable(fmt.Errorf("record outcome of %s: %w", op.ID, err))
	}
	if runErr != nil {
		return &Outcome{Operation: op}, runErr
	}
	return &Outcome{Operation: op}, nil
}

// finishLater keeps trying, in the background, to record an outcome the
// store could not take: the work is done, and once the database is back its
// record must say so rather than be swept as interrupted. It gives up after
// 10 minutes; the caller has been answered 503 meanwhile.
func (s *Service) finishLater(op Operation) {
	go func() {
		for wait, deadline := 100*time.Millisecond, time.Now().Add(10*time.Minute); time.Now().Before(deadline); wait = min(wait*2, 5*time.Second) {
			time.Sleep(wait)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := s.Store.Finish(ctx, &op)
			cancel()
			if err == nil {
				s.logger().Info("outcome recorded after the store came back", "operation", op.ID, "status", op.Status)
				return
			}
		}
		s.logger().Error("outcome never recorded", "operation", op.ID, "status", op.Status)
	}()
}

// Done finishes a download's operation once the door has streamed it.
func (o *Outcome) Done(sent int64, err error) {
	if o.job == nil {
		return
	}
	o.job.done.Store(sent)
	if o.Download.Size >= 0 {
		o.job.total.Store(o.Download.Size)
	} else if err == nil {
		o.job.total.Store(sent)
	}
	res := &Result{Message: "Data downloaded by user " + o.Operation.Username}
	if err != nil {
		err = Wrap(499, "Download interrupted", err)
	}
	o.service.finish(o.ctx, o.Operation, o.job, res, err, o.start)
	o.job = nil
}

// replay answers a redelivered request from its first outcome, waiting for
// it when it is still running.
func (s *Service) replay(ctx context.Context, op *Operation) (*Outcome, error) {
	wait := time.Millisecond
	for !op.Status.Finished() {
		if op.Status == StatusPending && op.DID != "" {
			return &Outcome{Operation: op, Replayed: true, Waiting: true}, nil // waits for its replica, not for us
		}
		if op.UpdatedAt.Before(time.Now().Add(-s.lease())) {
			if _, err := s.abandon(ctx, op); err != nil {
				return nil, Unavailable(err)
			}
		} else {
			select {
			case <-ctx.Done():
				return &Outcome{Operation: op}, Wrap(http.StatusServiceUnavailable, "The first delivery is still running", ctx.Err())
			case <-time.After(wait):
			}
			wait = min(wait*2, 100*time.Millisecond)
		}
		next, err := s.Store.Get(ctx, op.ID)
		if err != nil {
			return nil, Unavailable(err)
		}
		op = next
	}
	out := &Outcome{Operation: op, Replayed: true}
	if op.Status == StatusFailed {
		return out, Errorf(orStatus(op.Code), "%s", op.ErrorReason)
	}
	return out, nil
}

// locate resolves req.DID to the path of its local replica. It reports
// whether the replica is there; if so req.Source is set to it.
func (s *Service) locate(req *Request) (bool, error) {
	if s.DIDs == nil {
		return false, Errorf(http.StatusBadRequest, "Staging by DID needs RUCIO_RSE to be configured")
	}
	if req.Source != "" {
		return false, Errorf(http.StatusUnprocessableEntity, "Give either local_path_on_storage or did, not both")
	}
	source, present, err := s.DIDs.Locate(req.DID)
	if err != nil {
		return false, err
	}
	if present {
		req.Source = source
	} else if req.NoWait {
		return false, Errorf(http.StatusNotFound, "Replica of %s is not at this site yet", req.DID)
	}
	return present, nil
}

// await records a request whose DID's replica has not arrived yet as
// pending; a transfer-done event completes it (see Complete).
func (s *Service) await(ctx context.Context, req *Request) (*Outcome, error) {
	now := time.Now().UTC()
	op := &Operation{ID: newID(), Method: req.Method, Username: req.Username, RelativePath: req.Target,
		Status: StatusPending, CreatedAt: now, UpdatedAt: now, EventKey: req.EventKey, DID: req.DID}
	if err := s.Store.Create(ctx, op); err != nil {
		if errors.Is(err, ErrDuplicate) && req.EventKey != "" {
			if existing, err := s.Store.GetByEventKey(ctx, req.EventKey); err == nil {
				return s.replay(ctx, existing)
			}
		}
		return nil, Unavailable(err)
	}
	s.logger().InfoContext(ctx, "staging waits for replica", "operation", op.ID, "did", req.DID,
		"method", req.Method, "username", req.Username, "relative_path", req.Target)
	return &Outcome{Operation: op, Waiting: true}, nil
}

// Submit checks req, records it as pending and returns at once (Prefer:
// respond-async). The caller hands the work on: to K_SINK as an event, or to
// RunAsync in this process. A refused request is recorded and returned as an
// error with its Outcome, as by Stage.
func (s *Service) Submit(ctx context.Context, req Request) (*Outcome, error) {
	if err := s.Validate(&req); err != nil {
		if status, _ := StatusOf(err); status == http.StatusUnprocessableEntity {
			return nil, err
		}
		return s.refuse(ctx, &req, "", err)
	}
	if req.DID != "" {
		present, err := s.locate(&req)
		if err != nil {
			return s.refuse(ctx, &req, "", err)
		}
		if !present {
			return s.await(ctx, &req)
		}
	}
	m, _ := s.method(req.Method)
	source := req.Source
	// A forwarded method's paths are checked where it runs; here it is
	// only recorded as pending.
	if _, forwarded := m.(Forwarder); !forwarded {
		plan, err := m.Prepare(ctx, &req)
		if err != nil {
			return s.refuse(ctx, &req, "", err)
		}
		source = plan.Source
	}
	now := time.Now().UTC()
	op := &Operation{ID: newID(), Method: req.Method, Username: req.Username,
		LocalPathOnStorage: orDefault(source, req.Source), RelativePath: req.Target,
		Status: StatusPending, CreatedAt: now, UpdatedAt: now, DID: req.DID}
	if err := s.Store.Create(ctx, op); err != nil {
		return nil, Unavailable(err)
	}
	return &Outcome{Operation: op}, nil
}

// Fail records a pending operation that could not be handed on as failed.
func (s *Service) Fail(ctx context.Context, op *Operation, cause error) error {
	now := time.Now().UTC()
	op.Status, op.FinishedAt, op.UpdatedAt = StatusFailed, &now, now
	op.Code, op.ErrorReason = StatusOf(cause)
	return s.Store.Finish(ctx, op)
}

// RunAsync completes a pending operation in this process, tracked so that
// Wait can drain it on shutdown.
func (s *Service) RunAsync(ctx context.Context, req Request) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if _, err := s.Stage(context.WithoutCancel(ctx), req); err != nil {
			s.logger().Debug("async staging failed", "operation", req.OperationID, "error", err)
		}
	}()
}

// Wait blocks until in-process async work is done.
func (s *Service) Wait() { s.wg.Wait() }

// Sweep records the operations whose replica died (no heartbeat for a
// lease) as failed, releasing their locks, after removing what they left.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	stale, err := s.Store.Stale(ctx, time.Now().Add(-s.lease()))
	if err != nil {
		return 0, err
	}
	n := 0
	for i := range stale {
		done, err := s.abandon(ctx, &stale[i])
		if err != nil {
			return n, err
		}
		if done {
			n++
		}
	}
	return n, nil
}

// abandon removes what op, whose replica died, left behind, then records it
// as failed, unless it has sent a heartbeat since. An operation without a
// heartbeat for a lease is taken for dead, here as by the lock takeover.
// Cleaning first means a replica that dies in between leaves op stale, to
// be swept again.
func (s *Service) abandon(ctx context.Context, op *Operation) (bool, error) {
	if s.Cleanup != nil {
		s.Cleanup(ctx, op)
	}
	n, err := s.Store.Abandon(ctx, op.ID, time.Now().Add(-s.lease()), interrupted)
	return n > 0, err
}

// Alive reports whether op may still be running somewhere: it is not
// finished and its heartbeat is within the lease.
func (s *Service) Alive(op *Operation) bool {
	return !op.Status.Finished() && !op.UpdatedAt.Before(time.Now().Add(-s.lease()))
}

func storeError(err error, notFound string) error {
	if errors.Is(err, ErrNotFound) {
		return Errorf(http.StatusNotFound, "%s", notFound)
	}
	return Unavailable(err)
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

func orDefault(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

func orStatus(code int) int {
	if code == 0 {
		return http.StatusInternalServerError
	}
	return code
}
