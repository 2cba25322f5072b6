package telemetry

import (
	"context"
	"net/http"
	"reflect"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/store"
)

func TestSettingsFrom(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		want Settings
		bad  bool
	}{
		{"nothing set: nothing exported", nil, Settings{}, false},
		{"an endpoint turns both on", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, Settings{true, true}, false},
		{"a traces endpoint turns traces on", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, Settings{Traces: true}, false},
		{"exporter otlp with the default endpoint", map[string]string{"OTEL_METRICS_EXPORTER": "otlp"}, Settings{Metrics: true}, false},
		{"none wins over an endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"}, Settings{Traces: true}, false},
		{"SDK disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, Settings{}, false},
		{"http/protobuf", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, Settings{Traces: true}, false},
		{"grpc is not supported", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, Settings{}, true},
		{"a signal's protocol wins", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, Settings{Traces: true}, false},
		{"unknown exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, Settings{}, true},
		{"protocol of a signal not exported is ignored", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, Settings{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := SettingsFrom(func(k string) (string, bool) { v, ok := c.env[k]; return v, ok })
			if c.bad {
				if err == nil {
					t.Fatalf("SettingsFrom = %+v, want an error", got)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("SettingsFrom = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

// TestOffInstallsNothing: without an exporter, handlers, transports and
// stores are used as they are, so nothing slows down.
func TestOffInstallsNothing(t *testing.T) {
	was := tracing
	tracing = false
	defer func() { tracing = was }()
	h := http.NotFoundHandler()
	if got := Handler(h); reflect.ValueOf(got).Pointer() != reflect.ValueOf(h).Pointer() {
		t.Errorf("Handler wrapped the handler with tracing off")
	}
	if got := Transport(http.DefaultTransport); got != http.DefaultTransport {
		t.Errorf("Transport wrapped the transport with tracing off")
	}
	var s staging.Store = &store.Store{}
	if got := TraceStore(s, "sqlite"); got != s {
		t.Errorf("TraceStore wrapped the store with tracing off")
	}
	if s, err := Setup(context.Background(), "stage"); err != nil || s.Traces || s.Metrics || tracing {
		t.Errorf("Setup with no OTEL_* set = %+v, %v; tracing %v", s, err, tracing)
	}
}
