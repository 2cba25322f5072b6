package telemetry

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The CloudEvents distributed-tracing extension's attributes.
const (
	ExtTraceParent = "traceparent"
	ExtTraceState  = "tracestate"
)

var eventTracer = otel.Tracer("github.com/ska-telescope/skao-staging-service/lib/events")

// w3c reads and writes traceparent and tracestate, whatever the global
// propagator is: the extension is defined by W3C Trace Context.
var w3c propagation.TraceContext

// InjectEvent sets ev's distributed-tracing extension to ctx's span, so
// whoever receives it, through any broker, continues the trace.
func InjectEvent(ctx context.Context, ev *event.Event) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	if tp := c.Get(ExtTraceParent); tp != "" {
		ev.SetExtension(ExtTraceParent, tp)
		if ts := c.Get(ExtTraceState); ts != "" {
			ev.SetExtension(ExtTraceState, ts)
		}
	}
}

// ExtractEvent returns ctx carrying the span context of ev's
// distributed-tracing extension, or ctx itself when ev has none.
func ExtractEvent(ctx context.Context, ev *event.Event) context.Context {
	ext := ev.Extensions()
	tp, _ := types.ToString(ext[ExtTraceParent])
	if tp == "" {
		return ctx
	}
	ts, _ := types.ToString(ext[ExtTraceState])
	return w3c.Extract(ctx, propagation.MapCarrier{ExtTraceParent: tp, ExtTraceState: ts})
}

// StartReceive starts the span of a received event. Its parent is the
// event's traceparent extension when it has one (the trace of whoever sent
// it, continued across a broker), linked to the HTTP request's span;
// otherwise the HTTP request's span.
func StartReceive(ctx context.Context, ev *event.Event) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(eventAttrs(ev)...)}
	parent := ExtractEvent(ctx, ev)
	if hop := trace.SpanContextFromContext(ctx); hop.IsValid() && !hop.Equal(trace.SpanContextFromContext(parent)) {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: hop}))
	}
	return eventTracer.Start(parent, "receive "+ev.Type(), opts...)
}

// StartSend starts the span of an event being sent and records it in ev's
// distributed-tracing extension.
func StartSend(ctx context.Context, ev *event.Event) (context.Context, trace.Span) {
	ctx, span := eventTracer.Start(ctx, "send "+ev.Type(), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(eventAttrs(ev)...))
	InjectEvent(ctx, ev)
	return ctx, span
}

func eventAttrs(ev *event.Event) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("cloudevents.event_id", ev.ID()),
		attribute.String("cloudevents.event_source", ev.Source()),
		attribute.String("cloudevents.event_type", ev.Type()),
	}
}
