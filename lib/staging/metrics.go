package staging

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The pipeline's metrics. They go to the global meter provider, a no-op
// one unless lib/telemetry installed an exporter.
var (
	meter          = otel.Meter("github.com/ska-telescope/skao-staging-service/lib/staging")
	stagedBytes, _ = meter.Int64Counter("staging.bytes", metric.WithUnit("By"),
		metric.WithDescription("Bytes staged, by method and outcome"))
	operations, _ = meter.Int64Counter("staging.operations", metric.WithUnit("{operation}"),
		metric.WithDescription("Staging operations finished, by method and outcome (success, failed, refused)"))
	duration, _ = meter.Float64Histogram("staging.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from a staging request to its outcome, by method and outcome"),
		metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
	inFlight, _ = meter.Int64UpDownCounter("staging.operations.in_flight", metric.WithUnit("{operation}"),
		metric.WithDescription("Staging operations running in this process, by method"))
)

// outcomeRefused is the outcome of a request refused before it ran (400,
// 403, 409, ...); others are the operation's status, success or failed.
const outcomeRefused = "refused"

// recordOutcome counts one finished operation; took is 0 for a refusal,
// which has no staging duration.
func recordOutcome(ctx context.Context, method, outcome string, bytes int64, took time.Duration) {
	attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("staging.method", method), attribute.String("staging.outcome", outcome)))
	operations.Add(ctx, 1, attrs)
	if bytes > 0 {
		stagedBytes.Add(ctx, bytes, attrs)
	}
	if took > 0 {
		duration.Record(ctx, took.Seconds(), attrs)
	}
}

// running and stopped count the operations in flight.
func running(ctx context.Context, method string) {
	inFlight.Add(ctx, 1, metric.WithAttributes(attribute.String("staging.method", method)))
}

func stopped(ctx context.Context, method string) {
	inFlight.Add(ctx, -1, metric.WithAttributes(attribute.String("staging.method", method)))
}
