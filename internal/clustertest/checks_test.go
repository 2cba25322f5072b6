//go:build cluster

package clustertest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// fn is one function as a deployment names and configures it.
type fn struct {
	name        string // stage, jupyter, logs: the container's name
	object      string // the Knative Service's or Deployment's name
	concurrency int    // containerConcurrency (Knative)
	paths       storagePaths
	events      string // EVENT_AUTH: hmac or oidc (README.md, Authentication and authorization)
	// brokerAudience is the audience of the token the functions hold for
	// the Broker (oidc).
	brokerAudience string
}

// storagePaths are where the source and the user areas are mounted.
type storagePaths struct{ source, userAreas string }

var defaultPaths = storagePaths{"/mnt/storage_a", "/mnt/user_areas"}

// waitRevisionDeployment waits until Knative's controller has reconciled
// a Service into its first Revision and that Revision's Deployment.
func waitRevisionDeployment(t *testing.T, c *cluster, ns, ksvc string) (*servingv1.Revision, *appsv1.Deployment) {
	t.Helper()
	rev, dep := &servingv1.Revision{}, &appsv1.Deployment{}
	c.eventually(t, "Knative Service "+ns+"/"+ksvc+" reconciled into a Revision and a Deployment", 120*time.Second, func() error {
		out, err := c.run(c.dir, c.kubectl, "-n", ns, "get", "revision", ksvc+"-00001", "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal(out, rev); err != nil {
			return err
		}
		for _, cond := range rev.Status.Conditions {
			// A revision whose image cannot be resolved, or whose pod
			// spec Kubernetes refuses, says so here.
			if cond.Type == "ContainerHealthy" && cond.Status == corev1.ConditionFalse {
				t.Fatalf("Revision %s: %s: %s", rev.Name, cond.Reason, cond.Message)
			}
		}
		out, err = c.run(c.dir, c.kubectl, "-n", ns, "get", "deployment", ksvc+"-00001-deployment", "-o", "json")
		if err != nil {
			return err
		}
		return json.Unmarshal(out, dep)
	})
	return rev, dep
}

// waitPods waits until the controllers have created pods for a workload
// (the Pod Security admission admitted them) and returns one.
func waitPods(t *testing.T, c *cluster, ns, selector string) corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	c.eventually(t, "pods "+ns+"/"+selector+" created", 90*time.Second, func() error {
		out, err := c.run(c.dir, c.kubectl, "-n", ns, "get", "pods", "-l", selector, "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal(out, &pods); err != nil {
			return err
		}
		if len(pods.Items) == 0 {
			// Why not, when a controller could not create them.
			ev, _ := c.run(c.dir, c.kubectl, "-n", ns, "get", "events", "--field-selector", "reason=FailedCreate", "-o", "custom-columns=OBJ:.involvedObject.name,MSG:.message", "--no-headers")
			return fmt.Errorf("no pods yet; FailedCreate events: %s", strings.TrimSpace(string(ev)))
		}
		return nil
	})
	return pods.Items[0]
}

func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

func envOf(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// checkPod checks a function's pod spec as the cluster made it: who it runs
// as, what it mounts, its probes, its image by digest; on Knative also the
// queue-proxy that Knative added and what it was told.
func checkPod(t *testing.T, where string, spec *corev1.PodSpec, f fn, knative bool) {
	t.Helper()
	errorf := func(format string, args ...any) { t.Errorf(where+": "+f.name+": "+format, args...) }
	sc := spec.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		!slices.Contains(sc.SupplementalGroups, 100) || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		errorf("pod security context %+v: want uid 65532, non-root, supplementary group 100, RuntimeDefault seccomp", sc)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		errorf("the pod mounts the default service account token")
	}
	// The events' credentials (none for logs, which neither takes nor sends
	// events): the HMAC secret from a Secret, or (oidc) a token for the
	// Broker's audience and the API token and CA the verifier reads the
	// issuer's keys with. Nothing else is projected.
	var projected []string
	for _, v := range spec.Volumes {
		switch {
		case v.Projected != nil && f.events == "oidc" && f.name != "logs" && v.Name == "broker-token":
			s := v.Projected.Sources
			if len(s) != 1 || s[0].ServiceAccountToken == nil || s[0].ServiceAccountToken.Audience != f.brokerAudience {
				errorf("volume broker-token %+v: want one token for the Broker's audience %s", s, f.brokerAudience)
			}
			projected = append(projected, v.Name)
		case v.Projected != nil && f.events == "oidc" && f.name != "logs" && v.Name == "api-access":
			projected = append(projected, v.Name)
		case v.Projected != nil:
			errorf("projected volume %s (a service account token?)", v.Name)
		case v.Secret != nil && (f.events != "hmac" || f.name == "logs" || v.Name != "event-secret"):
			errorf("Secret volume %s (%s)", v.Name, v.Secret.SecretName)
		}
	}
	if f.events == "oidc" && f.name != "logs" && len(projected) != 2 {
		errorf("projected volumes %v, want broker-token and api-access", projected)
	}
	if len(spec.TopologySpreadConstraints) == 0 {
		errorf("no topology spread constraints")
	}
	u := container(spec, f.name)
	if u == nil {
		t.Fatalf("%s: no container %s in %+v", where, f.name, spec.Containers)
	}
	if !strings.Contains(u.Image, "@sha256:") {
		errorf("image %s is not pinned by digest", u.Image)
	}
	csc := u.SecurityContext
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation || csc.Capabilities == nil ||
		!slices.Contains(csc.Capabilities.Drop, "ALL") || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		errorf("container security context %+v", csc)
	}
	mounts := map[string]bool{}
	credentials := map[string]string{} // mount path -> volume
	for _, m := range u.VolumeMounts {
		switch m.Name {
		case "event-secret", "broker-token", "api-access":
			credentials[m.MountPath] = m.Name
			if !m.ReadOnly {
				errorf("%s is mounted writable", m.Name)
			}
			continue
		}
		if strings.HasPrefix(m.MountPath, "/var/run/secrets") {
			errorf("mounts %s", m.MountPath)
			continue
		}
		mounts[m.MountPath] = m.ReadOnly
	}
	want := map[string]string{}
	switch {
	case f.name == "logs":
	case f.events == "hmac":
		want["/etc/skao-staging/events"] = "event-secret"
	case f.events == "oidc":
		want["/var/run/skao-staging/broker"] = "broker-token"
		want["/var/run/secrets/kubernetes.io/serviceaccount"] = "api-access"
	}
	if fmt.Sprint(credentials) != fmt.Sprint(want) {
		errorf("the events' credentials are mounted as %v, want %v", credentials, want)
	}
	if f.name == "logs" {
		if len(mounts) != 0 {
			errorf("the logs function mounts %v; it reads only the store", mounts)
		}
	} else if ro, ok := mounts[f.paths.source]; !ok || !ro {
		errorf("the source is not mounted read-only at %s: %v", f.paths.source, mounts)
	} else if ro, ok := mounts[f.paths.userAreas]; !ok || ro {
		errorf("the user areas are not mounted writable at %s: %v", f.paths.userAreas, mounts)
	}
	if u.LivenessProbe == nil || u.LivenessProbe.HTTPGet == nil || u.LivenessProbe.HTTPGet.Path != "/healthz" {
		errorf("liveness probe %+v, want GET /healthz", u.LivenessProbe)
	}
	if !knative {
		if p := u.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
			errorf("readiness probe %+v, want GET /readyz", p)
		}
		return
	}

	// Knative moves the readiness probe into queue-proxy, which probes
	// aggressively (every 25 ms at start) only when periodSeconds is 0.
	q := container(spec, "queue-proxy")
	if q == nil {
		t.Fatalf("%s: %s: Knative added no queue-proxy", where, f.name)
	}
	if q.Image != queueImage {
		errorf("queue-proxy image %s, want %s (config-deployment)", q.Image, queueImage)
	}
	raw, _ := envOf(q, "SERVING_READINESS_PROBE")
	var probes []corev1.Probe
	if err := json.Unmarshal([]byte(raw), &probes); err != nil {
		var one corev1.Probe
		if err := json.Unmarshal([]byte(raw), &one); err != nil {
			t.Fatalf("%s: %s: SERVING_READINESS_PROBE %q: %v", where, f.name, raw, err)
		}
		probes = []corev1.Probe{one}
	}
	if len(probes) != 1 || probes[0].HTTPGet == nil || probes[0].HTTPGet.Path != "/readyz" {
		errorf("queue-proxy probes %s, want GET /readyz", raw)
	} else if probes[0].PeriodSeconds != 0 {
		errorf("readiness periodSeconds %d: Knative probes aggressively only with 0", probes[0].PeriodSeconds)
	}
	if v, _ := envOf(q, "CONTAINER_CONCURRENCY"); v != fmt.Sprint(f.concurrency) {
		errorf("containerConcurrency %q, want %d", v, f.concurrency)
	}
	if v, _ := envOf(q, "REVISION_TIMEOUT_SECONDS"); v != "600" {
		errorf("revision timeout %q, want 600", v)
	}
	qsc := q.SecurityContext
	if qsc == nil || qsc.RunAsNonRoot == nil || !*qsc.RunAsNonRoot || qsc.AllowPrivilegeEscalation == nil || *qsc.AllowPrivilegeEscalation {
		errorf("queue-proxy security context %+v", qsc)
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds < 600 {
		errorf("termination grace period %v: in-flight requests get the revision timeout to finish", spec.TerminationGracePeriodSeconds)
	}
}

// checkDefaulted checks that Knative's webhook defaulted and kept a Service
// as deployed: the request timeout, the concurrency limit, the readiness
// probe without a period.
func checkDefaulted(t *testing.T, c *cluster, ns string, f fn) {
	t.Helper()
	var ksvc servingv1.Service
	c.get(t, &ksvc, "-n", ns, "ksvc", f.object)
	spec := ksvc.Spec.Template.Spec
	if spec.TimeoutSeconds == nil || *spec.TimeoutSeconds != 600 || spec.ContainerConcurrency == nil || *spec.ContainerConcurrency != int64(f.concurrency) {
		t.Errorf("%s: timeout %v, concurrency %v", f.object, spec.TimeoutSeconds, spec.ContainerConcurrency)
	}
	// Defaults only the webhook writes.
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		t.Errorf("%s: enableServiceLinks not defaulted to false: did Knative's webhook see it?", f.object)
	}
	if p := spec.Containers[0].ReadinessProbe; p == nil || p.PeriodSeconds != 0 || p.SuccessThreshold != 1 {
		t.Errorf("%s: readiness probe after defaulting %+v", f.object, p)
	}
}
