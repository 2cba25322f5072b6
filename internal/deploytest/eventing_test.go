package deploytest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"

	"github.com/ska-telescope/skao-staging-service/lib/methods"
)

// Knative Eventing's Go module cannot be fetched here, so its objects are
// decoded (strictly) into these types, which follow the fields of Knative
// Eventing's v1 API reference for Broker, Trigger and SinkBinding.

type kReference struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Namespace  string `json:"namespace,omitempty"`
	Group      string `json:"group,omitempty"`
}

type destination struct {
	Ref      *kReference `json:"ref,omitempty"`
	URI      string      `json:"uri,omitempty"`
	CACerts  string      `json:"CACerts,omitempty"`
	Audience string      `json:"audience,omitempty"`
}

type deliverySpec struct {
	DeadLetterSink *destination `json:"deadLetterSink,omitempty"`
	Retry          *int32       `json:"retry,omitempty"`
	Timeout        *string      `json:"timeout,omitempty"`
	BackoffPolicy  *string      `json:"backoffPolicy,omitempty"`
	BackoffDelay   *string      `json:"backoffDelay,omitempty"`
	RetryAfterMax  *string      `json:"retryAfterMax,omitempty"`
	Format         *string      `json:"format,omitempty"`
}

type broker struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Config   *kReference   `json:"config,omitempty"`
		Delivery *deliverySpec `json:"delivery,omitempty"`
	} `json:"spec"`
}

type trigger struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Broker string `json:"broker"`
		Filter *struct {
			Attributes map[string]string `json:"attributes,omitempty"`
		} `json:"filter,omitempty"`
		Filters    []map[string]any `json:"filters,omitempty"`
		Subscriber destination      `json:"subscriber"`
		Delivery   *deliverySpec    `json:"delivery,omitempty"`
	} `json:"spec"`
}

type sinkBinding struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Subject struct {
			APIVersion string                `json:"apiVersion"`
			Kind       string                `json:"kind"`
			Namespace  string                `json:"namespace,omitempty"`
			Name       string                `json:"name,omitempty"`
			Selector   *metav1.LabelSelector `json:"selector,omitempty"`
		} `json:"subject"`
		Sink        destination `json:"sink"`
		CEOverrides *struct {
			Extensions map[string]string `json:"extensions,omitempty"`
		} `json:"ceOverrides,omitempty"`
	} `json:"spec"`
}

// checkEventing checks the Eventing objects against what the functions
// expect: a Broker with retries and a dead-letter sink; Triggers for every
// event-capable staging method, each to the function that runs it, and for
// Rucio's transfer-done to the stage function; a SinkBinding that gives the
// functions K_SINK. fn maps a function name (stage, jupyter) to its Knative
// Service name.
func checkEventing(t testing.TB, src string, objs []object, fn func(string) string) {
	t.Helper()
	ksvc := func(ref *kReference, what string) {
		if ref == nil {
			t.Errorf("%s: %s has no ref", src, what)
			return
		}
		if ref.APIVersion != "serving.knative.dev/v1" || ref.Kind != "Service" {
			t.Errorf("%s: %s points at %s %s, not a Knative Service", src, what, ref.APIVersion, ref.Kind)
			return
		}
		if _, ok := find(objs, "serving.knative.dev/v1", "Service", ref.Name); !ok {
			t.Errorf("%s: %s points at Knative Service %q, which is not defined", src, what, ref.Name)
		}
	}
	delivery := func(d *deliverySpec, what string) {
		if d == nil || d.Retry == nil || *d.Retry < 1 || d.DeadLetterSink == nil {
			t.Errorf("%s: %s needs delivery with retry and a deadLetterSink", src, what)
			return
		}
		if d.BackoffPolicy == nil || (*d.BackoffPolicy != "linear" && *d.BackoffPolicy != "exponential") {
			t.Errorf("%s: %s: backoffPolicy must be linear or exponential", src, what)
		}
		if d.BackoffDelay == nil || !isISO8601Duration(*d.BackoffDelay) {
			t.Errorf("%s: %s: backoffDelay must be an ISO 8601 duration such as PT0.5S", src, what)
		}
		// A delivery runs the copy it asks for: it may take the functions'
		// request timeout before it counts as failed.
		if want := fmt.Sprintf("PT%dS", requestTimeout); d.Timeout == nil || *d.Timeout != want {
			t.Errorf("%s: %s: delivery timeout %v, want %s", src, what, d.Timeout, want)
		}
		ksvc(d.DeadLetterSink.Ref, what+" dead-letter sink")
		checkMaxAge(t, src, objs, d, what)
	}

	brokers := byKind(objs, "eventing.knative.dev/v1", "Broker")
	if len(brokers) != 1 {
		t.Fatalf("%s: want one Broker, have %d", src, len(brokers))
	}
	b := brokers[0].Typed.(*broker)
	if b.Annotations["eventing.knative.dev/broker.class"] == "" {
		t.Errorf("%s: Broker %s names no broker class", src, b.Name)
	}
	delivery(b.Spec.Delivery, "Broker "+b.Name)
	checkBrokerStorage(t, src, objs, b)

	routed := map[string]string{} // "type/stagingmethod" -> Knative Service
	for _, o := range byKind(objs, "eventing.knative.dev/v1", "Trigger") {
		tr := o.Typed.(*trigger)
		if tr.Spec.Broker != b.Name {
			t.Errorf("%s: Trigger %s uses broker %q, not %q", src, tr.Name, tr.Spec.Broker, b.Name)
		}
		if tr.Spec.Filter == nil || tr.Spec.Filter.Attributes["type"] == "" {
			t.Errorf("%s: Trigger %s does not filter on type", src, tr.Name)
			continue
		}
		ksvc(tr.Spec.Subscriber.Ref, "Trigger "+tr.Name+" subscriber")
		delivery(tr.Spec.Delivery, "Trigger "+tr.Name)
		attrs := tr.Spec.Filter.Attributes
		key := attrs["type"] + "/" + attrs["stagingmethod"]
		if prev, dup := routed[key]; dup {
			t.Errorf("%s: events %s go to both %s and %s", src, key, prev, tr.Spec.Subscriber.Ref.Name)
		}
		if tr.Spec.Subscriber.Ref != nil {
			routed[key] = tr.Spec.Subscriber.Ref.Name
		}
	}
	// The method registry says which methods events may ask for (all but
	// those that stream to a client) and which function runs each.
	want := map[string]string{"io.rucio.transfer-done/": fn("stage")}
	for _, m := range methods.All(methods.Env{}) {
		if t := m.Traits(); !t.Streams {
			want["org.skao.staging.request/"+m.Name()] = fn(t.Function)
		}
	}
	for key, svc := range want {
		if routed[key] != svc {
			t.Errorf("%s: events %s should go to %s, go to %q", src, key, svc, routed[key])
		}
	}
	for key := range routed {
		if _, ok := want[key]; !ok {
			t.Errorf("%s: a Trigger for %s, which no function handles", src, key)
		}
	}

	bindings := byKind(objs, "sources.knative.dev/v1", "SinkBinding")
	if len(bindings) != 1 {
		t.Fatalf("%s: want one SinkBinding, have %d", src, len(bindings))
	}
	sb := bindings[0].Typed.(*sinkBinding)
	if r := sb.Spec.Sink.Ref; r == nil || r.Kind != "Broker" || r.APIVersion != "eventing.knative.dev/v1" || r.Name != b.Name {
		t.Errorf("%s: SinkBinding %s does not sink into Broker %s", src, sb.Name, b.Name)
	}
	subj := sb.Spec.Subject
	if subj.APIVersion != "serving.knative.dev/v1" || subj.Kind != "Service" || subj.Selector == nil {
		t.Fatalf("%s: SinkBinding %s must select Knative Services by label", src, sb.Name)
	}
	sel, err := metav1.LabelSelectorAsSelector(subj.Selector)
	if err != nil {
		t.Fatalf("%s: SinkBinding %s: %v", src, sb.Name, err)
	}
	var bound []string
	for _, o := range byKind(objs, "serving.knative.dev/v1", "Service") {
		if sel.Matches(labels.Set(o.Typed.(*servingv1.Service).Labels)) {
			bound = append(bound, o.Name)
		}
	}
	for _, f := range []string{"stage", "jupyter"} {
		if !slices.Contains(bound, fn(f)) {
			t.Errorf("%s: SinkBinding %s does not give K_SINK to %s (binds %v)", src, sb.Name, fn(f), bound)
		}
	}
}

// checkMaxAge checks that the functions accept a signed event for longer
// than d redelivers it: a redelivery keeps the event's time, and one older
// than EVENT_MAX_AGE is refused (401) as a replay.
func checkMaxAge(t testing.TB, src string, objs []object, d *deliverySpec, what string) {
	t.Helper()
	var maxAges []string
	for _, o := range byKind(objs, "v1", "ConfigMap") {
		if v, ok := o.Typed.(*corev1.ConfigMap).Data["EVENT_MAX_AGE"]; ok {
			maxAges = append(maxAges, v)
		}
	}
	if len(maxAges) == 0 {
		t.Errorf("%s: no ConfigMap sets EVENT_MAX_AGE", src)
	}
	window := redeliveryWindow(d)
	for _, v := range maxAges {
		maxAge, err := time.ParseDuration(v)
		if err != nil || maxAge < window {
			t.Errorf("%s: EVENT_MAX_AGE %q: %s may redeliver an event %s after its first attempt, and signed events older than EVENT_MAX_AGE are refused", src, v, what, window)
		}
	}
}

// redeliveryWindow is how long after its first attempt d may start the
// last attempt to deliver an event: each attempt may take the timeout,
// and the wait before retry n is backoffDelay × n (linear) or × 2^n
// (exponential), or longer where retryAfterMax lets a Retry-After header
// (the functions send them with 429) ask for up to that.
func redeliveryWindow(d *deliverySpec) time.Duration {
	iso := func(p *string) time.Duration {
		if p == nil || !isISO8601Duration(*p) {
			return 0
		}
		v, _ := time.ParseDuration(toGoDuration((*p)[2:]))
		return v
	}
	var retries int
	if d.Retry != nil {
		retries = int(*d.Retry)
	}
	delay, timeout, retryAfter := iso(d.BackoffDelay), iso(d.Timeout), iso(d.RetryAfterMax)
	var window time.Duration
	for n := 1; n <= retries; n++ {
		backoff := delay * time.Duration(n)
		if d.BackoffPolicy != nil && *d.BackoffPolicy == "exponential" {
			backoff = delay << n
		}
		window += timeout + max(backoff, retryAfter)
	}
	return window
}

// The deployments' delivery (5 retries, exponential from 0.5 s, 600 s per
// attempt) may start its last attempt 50m31s after the first; with
// Retry-After honoured up to 10 minutes, 100 minutes.
func TestRedeliveryWindow(t *testing.T) {
	str := func(s string) *string { return &s }
	retries := int32(5)
	d := deliverySpec{Retry: &retries, BackoffPolicy: str("exponential"), BackoffDelay: str("PT0.5S"), Timeout: str("PT600S")}
	if got, want := redeliveryWindow(&d), 50*time.Minute+31*time.Second; got != want {
		t.Errorf("exponential: %s, want %s", got, want)
	}
	d.BackoffPolicy = str("linear")
	if got, want := redeliveryWindow(&d), 50*time.Minute+7500*time.Millisecond; got != want {
		t.Errorf("linear: %s, want %s", got, want)
	}
	d.RetryAfterMax = str("PT600S")
	if got, want := redeliveryWindow(&d), 100*time.Minute; got != want {
		t.Errorf("Retry-After up to 10 minutes: %s, want %s", got, want)
	}
}

// isISO8601Duration accepts the durations Knative's delivery takes (PT0.5S, PT2M).
func isISO8601Duration(s string) bool {
	if len(s) < 4 || s[:2] != "PT" {
		return false
	}
	_, err := time.ParseDuration(toGoDuration(s[2:]))
	return err == nil
}

func toGoDuration(s string) string {
	out := []byte{}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		out = append(out, c)
	}
	return string(out)
}

// checkBrokerStorage checks where the Broker keeps events: Knative's Kafka
// broker, or a channel-based broker whose channel is a KafkaChannel. The
// default InMemoryChannel loses every event in flight when its dispatcher
// restarts, and a lost hand-off leaves its operation waiting.
func checkBrokerStorage(t testing.TB, src string, objs []object, b *broker) {
	t.Helper()
	class := b.Annotations["eventing.knative.dev/broker.class"]
	ref := b.Spec.Config
	if ref == nil || ref.Kind != "ConfigMap" || ref.APIVersion != "v1" {
		t.Errorf("%s: Broker %s has no config ConfigMap: it gets the cluster's default channel", src, b.Name)
		return
	}
	if class == "Kafka" {
		return // its topic is Kafka's, configured there or in ref
	}
	cm, ok := find(objs, "v1", "ConfigMap", ref.Name)
	if class != "MTChannelBasedBroker" || !ok {
		t.Errorf("%s: Broker %s: class %q with config %s (in the objects: %v)", src, b.Name, class, ref.Name, ok)
		return
	}
	var channel struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Spec       map[string]any `json:"spec"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Typed.(*corev1.ConfigMap).Data["channel-template-spec"]), &channel); err != nil {
		t.Fatalf("%s: %s: channel-template-spec: %v", src, ref.Name, err)
	}
	if channel.Kind != "KafkaChannel" || channel.APIVersion != "messaging.knative.dev/v1beta1" || channel.Spec["replicationFactor"] == nil {
		t.Errorf("%s: Broker %s keeps events in %s %s, not a replicated KafkaChannel", src, b.Name, channel.APIVersion, channel.Kind)
	}
}
