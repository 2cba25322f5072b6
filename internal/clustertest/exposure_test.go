//go:build cluster

package clustertest

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// checkClusterLocal checks that Knative's own controller made a Service
// cluster-local: its URL is in the cluster's domain, not the external one
// (externalDomain; the Route reconciler writes the URL from the visibility
// it settled on, and gives the networking layer rules of that visibility only).
func checkClusterLocal(t *testing.T, c *cluster, ns, ksvc string) {
	t.Helper()
	want := fmt.Sprintf("http://%s.%s.svc.cluster.local", ksvc, ns)
	c.eventually(t, "Knative Service "+ns+"/"+ksvc+" has its URL", 60*time.Second, func() error {
		out, err := c.run(c.dir, c.kubectl, "-n", ns, "get", "route", ksvc, "-o", "jsonpath={.status.url}")
		if err != nil {
			return err
		}
		if got := string(out); got == "" {
			return fmt.Errorf("no URL yet")
		} else if got != want {
			t.Fatalf("Knative routes %s/%s at %s, want only %s (cluster-local)", ns, ksvc, got, want)
		}
		return nil
	})
}

// checkMySQLPolicy checks the NetworkPolicy as admitted against the pods the
// controllers created: it selects MySQL's pods and only them, and lets in
// exactly the pods isFunction names (the functions'), not the others in the
// namespace (the dead-letter sink's, a Job's), on MySQL's port. No network
// plugin here enforces it: what it selects is what a plugin would enforce.
func checkMySQLPolicy(t *testing.T, c *cluster, ns, name string, isMySQL, isFunction func(corev1.Pod) bool) {
	t.Helper()
	var np networkingv1.NetworkPolicy
	c.get(t, &np, "-n", ns, "networkpolicy", name)
	var pods corev1.PodList
	c.get(t, &pods, "-n", ns, "pods")
	selected, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	must(t, err)
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].Ports) != 1 || np.Spec.Ingress[0].Ports[0].Port.IntValue() != 3306 {
		t.Fatalf("NetworkPolicy %s/%s: ingress %+v, want one rule for port 3306", ns, name, np.Spec.Ingress)
	}
	var peers []labels.Selector
	for _, p := range np.Spec.Ingress[0].From {
		if p.PodSelector == nil || p.NamespaceSelector != nil || p.IPBlock != nil {
			t.Errorf("NetworkPolicy %s/%s lets in %+v", ns, name, p)
			continue
		}
		s, err := metav1.LabelSelectorAsSelector(p.PodSelector)
		must(t, err)
		peers = append(peers, s)
	}
	var mysql, in, functions []string
	for _, p := range pods.Items {
		l := labels.Set(p.Labels)
		if selected.Matches(l) != isMySQL(p) {
			t.Errorf("NetworkPolicy %s/%s: pod %s (%v) selected: %v", ns, name, p.Name, p.Labels, selected.Matches(l))
		}
		if isMySQL(p) {
			mysql = append(mysql, p.Name)
		}
		if slices.ContainsFunc(peers, func(s labels.Selector) bool { return s.Matches(l) }) {
			in = append(in, p.Name)
		}
		if isFunction(p) {
			functions = append(functions, p.Name)
		}
	}
	sort.Strings(in)
	sort.Strings(functions)
	if len(mysql) == 0 || len(functions) < 3 || !slices.Equal(in, functions) {
		t.Errorf("NetworkPolicy %s/%s lets %v reach MySQL (%v), want the functions' pods %v", ns, name, in, mysql, functions)
	}
}

// checkTriggerAudiences checks that the Triggers kept their subscribers'
// audiences (a CRD without the field would have pruned it).
func checkTriggerAudiences(t *testing.T, c *cluster, ns string, want map[string]string) {
	t.Helper()
	var trs struct {
		Items []struct {
			Spec struct {
				Subscriber struct {
					Ref      struct{ Name string } `json:"ref"`
					Audience string                `json:"audience"`
				} `json:"subscriber"`
			} `json:"spec"`
			Metadata struct{ Name string } `json:"metadata"`
		} `json:"items"`
	}
	c.get(t, &trs, "-n", ns, "triggers")
	for _, tr := range trs.Items {
		if a := want[tr.Spec.Subscriber.Ref.Name]; tr.Spec.Subscriber.Audience != a || a == "" {
			t.Errorf("Trigger %s/%s: subscriber audience %q, want %q", ns, tr.Metadata.Name, tr.Spec.Subscriber.Audience, a)
		}
	}
}

// checkEventPolicies checks the EventPolicies as stored: each applies to the
// Broker, names its senders and keeps its filters.
func checkEventPolicies(t *testing.T, c *cluster, ns, broker string, want int) {
	t.Helper()
	var eps struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     struct {
				To []struct {
					Ref struct{ Kind, Name string } `json:"ref"`
				} `json:"to"`
				From    []map[string]any `json:"from"`
				Filters []map[string]any `json:"filters"`
			} `json:"spec"`
		} `json:"items"`
	}
	c.get(t, &eps, "-n", ns, "eventpolicies.eventing.knative.dev")
	if len(eps.Items) != want {
		t.Errorf("%d EventPolicies in %s, want %d", len(eps.Items), ns, want)
	}
	for _, p := range eps.Items {
		if len(p.Spec.To) != 1 || p.Spec.To[0].Ref.Kind != "Broker" || p.Spec.To[0].Ref.Name != broker || len(p.Spec.From) == 0 || len(p.Spec.Filters) == 0 {
			raw, _ := json.Marshal(p.Spec)
			t.Errorf("EventPolicy %s/%s as stored: %s", ns, p.Metadata.Name, raw)
		}
	}
}

// secretValue reads one key of a Secret ("" when it is missing).
func secretValue(c *cluster, ns, name, key string) string {
	out, err := c.run(c.dir, c.kubectl, "-n", ns, "get", "secret", name, "-o", "json")
	if err != nil {
		return ""
	}
	var s corev1.Secret
	if json.Unmarshal(out, &s) != nil {
		return ""
	}
	return string(s.Data[key])
}

// knativeFunction and deploymentFunction say whether a pod is one of the
// functions' (by the labels Knative and the chart put on them).
func knativeFunction(names ...string) func(corev1.Pod) bool {
	return func(p corev1.Pod) bool { return slices.Contains(names, p.Labels["serving.knative.dev/service"]) }
}

func labelled(key string, values ...string) func(corev1.Pod) bool {
	return func(p corev1.Pod) bool { return slices.Contains(values, p.Labels[key]) }
}
