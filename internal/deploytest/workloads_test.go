package deploytest

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// requestTimeout is the functions' request limit every route, revision and
// delivery is given (the chart's requestTimeoutSeconds; config/knative's).
const requestTimeout = 600

// sharedGroup is the group the user areas are shared with (storage.group).
const sharedGroup = 100

// functionSpec is the pod spec a function runs with: its Deployment's or
// its Knative Service's.
func functionSpec(objs []object, name string) *corev1.PodSpec {
	if o, ok := find(objs, "apps/v1", "Deployment", name); ok {
		return &o.Typed.(*appsv1.Deployment).Spec.Template.Spec
	}
	if o, ok := find(objs, "serving.knative.dev/v1", "Service", name); ok {
		return &o.Typed.(*servingv1.Service).Spec.Template.Spec.PodSpec
	}
	return nil
}

// checkFunctionWorkloads checks what every function needs wherever it runs:
// probes on /healthz (liveness: the process) and /readyz (readiness: the
// database too), the storage roots mounted where the ConfigMap says (none
// for logs, which reads only the store), the unprivileged user with the
// shared group, no service account token.
func checkFunctionWorkloads(t *testing.T, src string, objs []object, name func(string) string) {
	t.Helper()
	cms := functionConfigMaps(objs, name)
	if len(cms) != 1 {
		t.Fatalf("%s: the functions take %d ConfigMaps, want one", src, len(cms))
	}
	cm := cms[0].Typed.(*corev1.ConfigMap)
	for _, f := range functionNames {
		spec := functionSpec(objs, name(f))
		if spec == nil {
			t.Errorf("%s: the %s function is not deployed", src, f)
			continue
		}
		c := spec.Containers[0]
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("%s: %s: readiness probe is not GET /readyz", src, f)
		}
		// The database can be down while the process is fine: liveness
		// must not follow it, or an outage restarts every pod.
		if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
			t.Errorf("%s: %s: liveness probe is not GET /healthz", src, f)
		} else if c.LivenessProbe.TimeoutSeconds < 3 {
			// Knative's drainer answers the kubelet's probes, whatever
			// their path, with the readiness check, which may take 2 s.
			t.Errorf("%s: %s: liveness timeout %d s, shorter than the 2 s the probe's answer may take", src, f, c.LivenessProbe.TimeoutSeconds)
		}
		mounts := map[string]bool{}
		for _, m := range c.VolumeMounts {
			mounts[m.MountPath] = m.ReadOnly
		}
		if f == "logs" {
			if len(mounts) != 0 || len(spec.Volumes) != 0 {
				t.Errorf("%s: logs mounts %v: it reads only the store", src, mounts)
			}
		} else {
			for _, v := range []string{"SOURCE_STORAGE_PATH", "TARGET_STORAGE_PATH"} {
				ro, ok := mounts[cm.Data[v]]
				if !ok {
					t.Errorf("%s: %s: %s=%s is not a mounted volume (mounts %v)", src, f, v, cm.Data[v], mounts)
				} else if v == "TARGET_STORAGE_PATH" && ro {
					t.Errorf("%s: %s: the user areas are mounted read-only", src, f)
				}
			}
		}
		if !strings.Contains(c.Image, "@sha256:") && !strings.HasPrefix(c.Image, "IMAGE-SET-BY-MAKE-DEPLOY/") {
			t.Errorf("%s: %s: image %q is neither pinned by digest nor the placeholder make deploy replaces", src, f, c.Image)
		}
		checkFunctionSecurity(t, src+": "+f, spec, &c)
	}
	modes := map[string]string{"STAGED_FILE_MODE": "0440", "STAGED_DIR_MODE": "0550"}
	for k, want := range modes {
		if cm.Data[k] != want {
			t.Errorf("%s: %s=%q, want %s: readable by the owner's group, which the users are in", src, k, cm.Data[k], want)
		}
	}
	// Without CAP_CHOWN a process may only give a file its own uid and one
	// of its groups.
	if owner := cm.Data["STAGED_OWNER"]; owner != "none" {
		spec := functionSpec(objs, name("stage"))
		p := spec.SecurityContext
		uid, gid, _ := strings.Cut(owner, ":")
		g, _ := strconv.ParseInt(gid, 10, 64)
		if p == nil || p.RunAsUser == nil || uid != strconv.FormatInt(*p.RunAsUser, 10) || !slices.Contains(append(p.SupplementalGroups, *p.RunAsGroup), g) {
			t.Errorf("%s: STAGED_OWNER=%q: the functions cannot chown to it without CAP_CHOWN", src, owner)
		}
	}
}

// checkFunctionSecurity checks who a function runs as: the images' user
// 65532, the shared group as a supplementary group (what it stages belongs
// to that group through the setgid user area), nothing a restricted Pod
// Security Standard refuses, no service account token.
func checkFunctionSecurity(t *testing.T, what string, spec *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	p := spec.SecurityContext
	if p == nil || p.RunAsUser == nil || *p.RunAsUser != 65532 || p.RunAsNonRoot == nil || !*p.RunAsNonRoot ||
		!slices.Contains(p.SupplementalGroups, sharedGroup) || p.FSGroup != nil ||
		p.SeccompProfile == nil || p.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod security context %+v: want uid 65532, non-root, supplementary group %d, no fsGroup (a recursive chown of the user areas), RuntimeDefault seccomp", what, p, sharedGroup)
	}
	checkRestrictedContainer(t, what, c)
	if c.SecurityContext != nil && (c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem) {
		t.Errorf("%s: the root file system is writable", what)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken || spec.ServiceAccountName == "" {
		t.Errorf("%s: want its own ServiceAccount with no token mounted", what)
	}
	if len(spec.TopologySpreadConstraints) == 0 {
		t.Errorf("%s: replicas are not spread over nodes", what)
	}
}

// checkRestrictedContainer checks a container against the restricted Pod
// Security Standard's container rules (the cluster test has the API
// server's own admission check them too).
func checkRestrictedContainer(t *testing.T, what string, c *corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		!slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 || (sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("%s: container security context %+v: want no privilege escalation, all capabilities dropped", what, sc)
	}
}

// checkKnativeServices checks the Knative Services of the functions: scale
// to zero with a ceiling, a hard concurrency limit and a target below it,
// the request timeout within Knative's default maximum, readiness without
// a period (Knative's aggressive probing at cold start), every function
// cluster-local (and every other Knative Service: the dead-letter sink).
func checkKnativeServices(t *testing.T, src string, objs []object, name func(string) string) {
	t.Helper()
	for _, o := range byKind(objs, "serving.knative.dev/v1", "Service") {
		if o.Meta.Labels["networking.knative.dev/visibility"] != "cluster-local" {
			t.Errorf("%s: Knative Service %s is not cluster-local", src, o.Name)
		}
	}
	for _, f := range functionNames {
		o, ok := find(objs, "serving.knative.dev/v1", "Service", name(f))
		if !ok {
			t.Errorf("%s: no Knative Service for %s", src, f)
			continue
		}
		svc := o.Typed.(*servingv1.Service)
		a := svc.Spec.Template.Annotations
		if a["autoscaling.knative.dev/min-scale"] != "0" || a["autoscaling.knative.dev/max-scale"] == "" {
			t.Errorf("%s: %s does not scale to zero with max-scale: %v", src, f, a)
		}
		if u, err := strconv.Atoi(a["autoscaling.knative.dev/target-utilization-percentage"]); err != nil || u < 1 || u > 100 {
			t.Errorf("%s: %s: target-utilization-percentage %q", src, f, a["autoscaling.knative.dev/target-utilization-percentage"])
		}
		spec := svc.Spec.Template.Spec
		if spec.ContainerConcurrency == nil || *spec.ContainerConcurrency < 1 || *spec.ContainerConcurrency > 100 {
			t.Errorf("%s: %s: containerConcurrency %v: want a hard limit (COPY_WORKERS copies each, 512 Mi)", src, f, spec.ContainerConcurrency)
		}
		if spec.TimeoutSeconds == nil || *spec.TimeoutSeconds != requestTimeout {
			t.Errorf("%s: %s: timeoutSeconds %v, want %d (Knative's default maximum)", src, f, spec.TimeoutSeconds, requestTimeout)
		}
		if p := spec.Containers[0].ReadinessProbe; p != nil && (p.PeriodSeconds != 0 || p.FailureThreshold != 0 || p.TimeoutSeconds != 0) {
			t.Errorf("%s: %s: readiness probe period %d: Knative probes aggressively only when it is unset", src, f, p.PeriodSeconds)
		}
		// Not on Knative's external domain: the route publishes what is public.
		if svc.Labels["networking.knative.dev/visibility"] != "cluster-local" {
			t.Errorf("%s: %s is not cluster-local: Knative would publish it, POST / included, on its external domain", src, f)
		}
		for _, v := range spec.Volumes {
			if v.PersistentVolumeClaim == nil && v.Secret == nil && v.Projected == nil {
				t.Errorf("%s: %s: volume %s is neither a claim nor the events' credentials", src, f, v.Name)
			}
		}
	}
}

// checkMySQL checks the MySQL StatefulSet: a startup probe long enough for
// a first boot (whose init runs with networking off), liveness only after
// it, resources, a restricted-compatible security context, and no root
// password anywhere: root exists only as root@localhost with a random one.
func checkMySQL(t *testing.T, src string, objs []object) {
	t.Helper()
	sts := byKind(objs, "apps/v1", "StatefulSet")
	if len(sts) != 1 {
		t.Fatalf("%s: %d StatefulSets, want MySQL's", src, len(sts))
	}
	spec := sts[0].Typed.(*appsv1.StatefulSet).Spec.Template.Spec
	c := spec.Containers[0]
	sp := c.StartupProbe
	if sp == nil || sp.Exec == nil || int(sp.PeriodSeconds)*int(sp.FailureThreshold) < 300 {
		t.Errorf("%s: MySQL's startup probe %+v gives a first boot less than 5 minutes", src, sp)
	}
	if c.LivenessProbe == nil {
		t.Errorf("%s: MySQL has no liveness probe", src)
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: MySQL has no memory request or limit", src)
	}
	p := spec.SecurityContext
	if p == nil || p.RunAsNonRoot == nil || !*p.RunAsNonRoot || p.RunAsUser == nil || *p.RunAsUser == 0 || p.FSGroup == nil ||
		p.SeccompProfile == nil || p.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: MySQL's pod security context %+v: want its non-root user, fsGroup for the data volume, RuntimeDefault seccomp", src, p)
	}
	checkRestrictedContainer(t, src+": MySQL", &c)
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if _, ok := env["MYSQL_ROOT_PASSWORD"]; ok || env["MYSQL_RANDOM_ROOT_PASSWORD"] != "yes" || env["MYSQL_ROOT_HOST"] != "localhost" {
		t.Errorf("%s: MySQL's root: want MYSQL_RANDOM_ROOT_PASSWORD=yes and MYSQL_ROOT_HOST=localhost, no root password (env %v)", src, env)
	}
}
