package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

var storeTracer = otel.Tracer("github.com/ska-telescope/skao-staging-service/lib/store")

// TraceStore returns s with a client span around each of the pipeline's
// store queries, when traces are exported; s itself otherwise. system is
// the database ("mysql" or "sqlite"). Methods it does not know pass through.
func TraceStore(s staging.Store, system string) staging.Store {
	if !tracing {
		return s
	}
	return tracedStore{Store: s, system: system}
}

type tracedStore struct {
	staging.Store
	system string
}

func (s tracedStore) start(ctx context.Context, op string) (context.Context, trace.Span) {
	return storeTracer.Start(ctx, "store "+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system.name", s.system), attribute.String("db.operation.name", op)))
}

// End ends span, marking it failed when err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func (s tracedStore) Create(ctx context.Context, op *staging.Operation) (err error) {
	ctx, span := s.start(ctx, "create")
	defer func() { End(span, err) }()
	return s.Store.Create(ctx, op)
}

func (s tracedStore) Claim(ctx context.Context, id, lock, owner string, now time.Time) (ok bool, err error) {
	ctx, span := s.start(ctx, "claim")
	defer func() { End(span, err) }()
	return s.Store.Claim(ctx, id, lock, owner, now)
}

func (s tracedStore) Get(ctx context.Context, id string) (op *staging.Operation, err error) {
	ctx, span := s.start(ctx, "get")
	defer func() { End(span, err) }()
	return s.Store.Get(ctx, id)
}

func (s tracedStore) GetByEventKey(ctx context.Context, key string) (op *staging.Operation, err error) {
	ctx, span := s.start(ctx, "get by event key")
	defer func() { End(span, err) }()
	return s.Store.GetByEventKey(ctx, key)
}

func (s tracedStore) GetByTargetLock(ctx context.Context, lock string) (op *staging.Operation, err error) {
	ctx, span := s.start(ctx, "get by target lock")
	defer func() { End(span, err) }()
	return s.Store.GetByTargetLock(ctx, lock)
}

func (s tracedStore) Progress(ctx context.Context, id, owner string, bytes, bytesDone int64, now time.Time) (err error) {
	ctx, span := s.start(ctx, "progress")
	defer func() { End(span, err) }()
	return s.Store.Progress(ctx, id, owner, bytes, bytesDone, now)
}

func (s tracedStore) Finish(ctx context.Context, op *staging.Operation, owner string) (err error) {
	ctx, span := s.start(ctx, "finish")
	defer func() { End(span, err) }()
	return s.Store.Finish(ctx, op, owner)
}

func (s tracedStore) Abandon(ctx context.Context, id string, status staging.Status, before time.Time, kind staging.Kind, reason string) (ok bool, err error) {
	ctx, span := s.start(ctx, "abandon")
	defer func() { End(span, err) }()
	return s.Store.Abandon(ctx, id, status, before, kind, reason)
}

func (s tracedStore) List(ctx context.Context, f staging.Filter) (ops []staging.Operation, err error) {
	ctx, span := s.start(ctx, "list")
	defer func() { End(span, err) }()
	return s.Store.List(ctx, f)
}

func (s tracedStore) CountWaiting(ctx context.Context, username string, limit int) (n int, err error) {
	ctx, span := s.start(ctx, "count waiting")
	defer func() { End(span, err) }()
	return s.Store.CountWaiting(ctx, username, limit)
}
