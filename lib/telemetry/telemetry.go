// Package telemetry sets up OpenTelemetry for a function from the standard
// OTEL_* environment variables: traces and metrics exported over OTLP/HTTP,
// the W3C trace-context propagator, spans for HTTP requests (otelhttp),
// for store queries and for CloudEvents sent and received (the CloudEvents
// distributed-tracing extension), so a trace follows a request from the
// ingress or the broker through every function.
//
// With no exporter configured, nothing is installed: the global providers
// stay OpenTelemetry's no-op ones, handlers are not wrapped, and start-up
// and requests cost nothing extra.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Settings say which signals are exported, as read from the environment.
type Settings struct {
	Traces  bool
	Metrics bool
}

// SettingsFrom reads the OTEL_* variables through lookup. A signal is
// exported when its OTEL_<SIGNAL>_EXPORTER is "otlp", or when that variable
// is unset and an OTLP endpoint is (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT). OTEL_SDK_DISABLED=true turns both
// off. Only the http/protobuf protocol is supported. Endpoints, headers,
// timeouts, sampling and export intervals are read by the SDK itself.
func SettingsFrom(lookup func(string) (string, bool)) (Settings, error) {
	get := func(name string) string {
		v, _ := lookup(name)
		return strings.TrimSpace(v)
	}
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return Settings{}, nil
	}
	var s Settings
	for _, sig := range []struct {
		name string
		on   *bool
	}{{"TRACES", &s.Traces}, {"METRICS", &s.Metrics}} {
		exporter := "OTEL_" + sig.name + "_EXPORTER"
		switch v := strings.ToLower(get(exporter)); v {
		case "otlp":
			*sig.on = true
		case "none":
		case "":
			*sig.on = get("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || get("OTEL_EXPORTER_OTLP_"+sig.name+"_ENDPOINT") != ""
		default:
			return Settings{}, fmt.Errorf("%s: %q is not supported (otlp or none)", exporter, v)
		}
		if !*sig.on {
			continue
		}
		for _, name := range []string{"OTEL_EXPORTER_OTLP_" + sig.name + "_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
			if p := get(name); p != "" {
				if p != "http/protobuf" {
					return Settings{}, fmt.Errorf("%s: %q is not supported (http/protobuf)", name, p)
				}
				break
			}
		}
	}
	return s, nil
}

// Telemetry is what Setup installed.
type Telemetry struct {
	Settings
	tracer *sdktrace.TracerProvider
	meter  *sdkmetric.MeterProvider
}

// tracing is true once Setup installed a tracer provider; Handler and
// Transport wrap only then.
var tracing bool

// Setup reads the environment and installs the global tracer and meter
// providers and the W3C propagator for the signals that are exported. The
// service name defaults to skao-staging-<function> (OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES win).
func Setup(ctx context.Context, function string) (*Telemetry, error) {
	s, err := SettingsFrom(os.LookupEnv)
	if err != nil {
		return nil, err
	}
	t := &Telemetry{Settings: s}
	if !s.Traces && !s.Metrics {
		return t, nil
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "skao-staging-"+function),
			attribute.String("service.namespace", "skao-staging")),
		resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	if s.Traces {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		t.tracer = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		InstallTracerProvider(t.tracer)
	}
	if s.Metrics {
		exp, err := otlpmetrichttp.New(ctx)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("OTLP metric exporter: %w", err), t.Shutdown(ctx))
		}
		t.meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)), sdkmetric.WithResource(res))
		otel.SetMeterProvider(t.meter)
	}
	return t, nil
}

// InstallTracerProvider makes tp the global tracer provider with the W3C
// propagator, and turns on the spans of Handler, Transport and TraceStore.
// The default HTTP client's requests get client spans and a traceparent
// header too, so calls to other functions and services continue the trace.
func InstallTracerProvider(tp trace.TracerProvider) {
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	tracing = true
	http.DefaultClient.Transport = otelhttp.NewTransport(http.DefaultTransport)
}

// Shutdown exports what is buffered and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if t.tracer != nil {
		errs = append(errs, t.tracer.Shutdown(ctx))
	}
	if t.meter != nil {
		errs = append(errs, t.meter.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// Handler wraps h so every request gets a server span (continuing the
// caller's traceparent) named after its route, when traces are exported.
func Handler(h http.Handler) http.Handler {
	if !tracing {
		return h
	}
	return otelhttp.NewHandler(h, "http", otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
		if r.Pattern != "" {
			return r.Pattern // "POST /stage_data": the route, never the raw path
		}
		return r.Method
	}))
}

// Transport wraps rt so every outgoing request gets a client span and a
// traceparent header, when traces are exported.
func Transport(rt http.RoundTripper) http.RoundTripper {
	if !tracing {
		return rt
	}
	return otelhttp.NewTransport(rt)
}
