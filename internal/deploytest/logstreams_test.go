package deploytest

import (
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/config"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// checkLogStreams: on Knative the logs function's MAX_LOG_STREAMS, as
// lib/config reads it from the container's environment, stays below the
// Service's containerConcurrency. Each followed stream holds one of those
// slots and Knative queues a request that finds none: with as many streams
// as slots, one user's streams (a quarter of MAX_LOG_STREAMS per replica)
// could fill every replica, and everyone else's /logs would wait instead
// of the user getting 429. It returns MAX_LOG_STREAMS.
func checkLogStreams(t *testing.T, src string, objs []object, name func(string) string) int {
	t.Helper()
	o, ok := find(objs, "serving.knative.dev/v1", "Service", name("logs"))
	if !ok {
		t.Fatalf("%s: no Knative Service %s", src, name("logs"))
	}
	spec := o.Typed.(*servingv1.Service).Spec.Template.Spec
	if spec.ContainerConcurrency == nil || *spec.ContainerConcurrency < 1 {
		t.Fatalf("%s: the logs function has no containerConcurrency", src)
	}
	cc := int(*spec.ContainerConcurrency)
	env := effectiveEnv(objs, &spec.Containers[0])
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("%s: the logs function would not start: %v", src, err)
	}
	if n := cfg.MaxLogStreams; n >= cc {
		t.Errorf("%s: MAX_LOG_STREAMS %d is not below the logs function's containerConcurrency %d: streams can take every slot, and Knative queues /logs instead of the function answering 503 or 429",
			src, n, cc)
	}
	return cfg.MaxLogStreams
}

// TestChartLogStreams: the chart's MAX_LOG_STREAMS follows
// knative.containerConcurrency.logs by default, keeps a value below it, and
// stays the code's 1000 with Deployments, which have no such slots. (A value
// not below it stops the install: TestChartRefuses.)
func TestChartLogStreams(t *testing.T) {
	knative := func(cc int, streams int) map[string]any {
		k := map[string]any{"enabled": true}
		if cc > 0 {
			k["containerConcurrency"] = map[string]any{"logs": cc}
		}
		v := map[string]any{"knative": k}
		if streams > 0 {
			v["config"] = map[string]any{"maxLogStreams": streams}
		}
		return v
	}
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   int
	}{
		{"knative defaults", knative(0, 0), 40},
		{"knative containerConcurrency.logs 10", knative(10, 0), 8},
		{"knative containerConcurrency.logs 200", knative(200, 0), 160},
		{"knative containerConcurrency.logs 2", knative(2, 0), 1},
		{"knative maxLogStreams 49", knative(0, 49), 49},
		{"knative maxLogStreams 5 of 10", knative(10, 5), 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := decodeAll(t, tc.name, renderChart(t, merge(baseValues(), tc.values)))
			if got := checkLogStreams(t, tc.name, objs, fullname); got != tc.want {
				t.Errorf("MAX_LOG_STREAMS %d, want %d", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"deployments", nil, "1000"},
		{"deployments maxLogStreams 5000", map[string]any{"config": map[string]any{"maxLogStreams": 5000}}, "5000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := decodeAll(t, tc.name, renderChart(t, merge(baseValues(), tc.values)))
			cm, _ := find(objs, "v1", "ConfigMap", fullname("config"))
			if got := cm.Typed.(*corev1.ConfigMap).Data["MAX_LOG_STREAMS"]; got != tc.want {
				t.Errorf("MAX_LOG_STREAMS %q, want %q", got, tc.want)
			}
		})
	}
}
