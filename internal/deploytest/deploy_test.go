package deploytest

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"
)

const chartDir = "charts/skao-staging-service"

// functionNames are the functions the deployments run.
var functionNames = []string{"stage", "jupyter", "logs"}

// notSetByDeployments are variables the code reads that the deployment
// files must not or need not set, with the reason.
var notSetByDeployments = map[string]string{
	"PORT":              "set by Knative (reserved there); the chart's Deployments set it explicitly",
	"HOST":              "for local runs; in a pod the functions listen on all interfaces",
	"K_SINK":            "injected by the SinkBinding (checked with the Eventing objects)",
	"EVENT_HMAC_SECRET": "a secret: deployments mount it as a file (EVENT_HMAC_SECRET_FILE)",
}

// optionalPrefixes are families of standard variables that are set only
// when an operator opts in (the chart's telemetry.otlpEndpoint).
var optionalPrefixes = []string{"OTEL_"}

// envRead finds the variables a Go source reads: through lib/config's
// get("NAME", ...) helpers or os.Getenv/LookupEnv.
var envRead = regexp.MustCompile(`\b(?:get|Getenv|LookupEnv)\("([A-Z][A-Z0-9_]*)"`)

// variablesRead scans the non-test sources of lib and functions, the code
// the images contain, for the environment variables they read.
func variablesRead(t *testing.T) map[string]string {
	root := repoRoot(t)
	vars := map[string]string{}
	for _, dir := range []string{"lib", "functions"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			for _, m := range envRead.FindAllSubmatch(src, -1) {
				vars[string(m[1])] = rel
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(vars) < 5 {
		t.Fatalf("found only %d environment variables in the code (%v): is the scan broken?", len(vars), vars)
	}
	return vars
}

// functionEnv returns, per function, the variables its container gets:
// env entries plus the keys of the ConfigMaps and Secrets it takes whole.
func functionEnv(objs []object, name func(string) string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, f := range functionNames {
		var spec *corev1.PodSpec
		if o, ok := find(objs, "apps/v1", "Deployment", name(f)); ok {
			spec = &o.Typed.(*appsv1.Deployment).Spec.Template.Spec
		} else if o, ok := find(objs, "serving.knative.dev/v1", "Service", name(f)); ok {
			spec = &o.Typed.(*servingv1.Service).Spec.Template.Spec.PodSpec
		} else {
			continue
		}
		set := map[string]bool{}
		for _, c := range spec.Containers {
			for _, e := range c.Env {
				set[e.Name] = true
			}
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil {
					if cm, ok := find(objs, "v1", "ConfigMap", e.ConfigMapRef.Name); ok {
						for k := range cm.Typed.(*corev1.ConfigMap).Data {
							set[e.Prefix+k] = true
						}
					}
				}
				if e.SecretRef != nil {
					if s, ok := find(objs, "v1", "Secret", e.SecretRef.Name); ok {
						for k := range s.Typed.(*corev1.Secret).StringData {
							set[e.Prefix+k] = true
						}
					}
				}
			}
		}
		out[f] = set
	}
	return out
}

// checkEnvironment is the cross-check between code and deployment: every
// variable the code reads is set for some function (the storage roots and
// the database for every function), and every ConfigMap key is a variable
// the code reads.
func checkEnvironment(t *testing.T, src string, objs []object, name func(string) string) {
	t.Helper()
	read := variablesRead(t)
	env := functionEnv(objs, name)
	if len(env) != len(functionNames) {
		t.Errorf("%s: found the containers of %d functions, want %v", src, len(env), functionNames)
	}
	for v, file := range read {
		if _, ok := notSetByDeployments[v]; ok || slices.ContainsFunc(optionalPrefixes, func(p string) bool { return strings.HasPrefix(v, p) }) {
			continue
		}
		setFor := []string{}
		for f, set := range env {
			if set[v] {
				setFor = append(setFor, f)
			}
		}
		if len(setFor) == 0 {
			t.Errorf("%s: %s (read in %s) is set for no function", src, v, file)
		}
	}
	for _, v := range []string{"SOURCE_STORAGE_PATH", "TARGET_STORAGE_PATH", "DATABASE_URL"} {
		for f, set := range env {
			if !set[v] {
				t.Errorf("%s: %s is not set for the %s function", src, v, f)
			}
		}
	}
	for f, set := range env {
		for v := range set {
			if _, reserved := notSetByDeployments[v]; reserved && v != "PORT" {
				t.Errorf("%s: the %s function sets %s, which is not the deployment's to set", src, f, v)
			}
		}
	}
	for _, o := range byKind(objs, "v1", "ConfigMap") {
		for k := range o.Typed.(*corev1.ConfigMap).Data {
			if _, ok := read[k]; !ok {
				t.Errorf("%s: ConfigMap %s sets %s, which the code does not read", src, o.Name, k)
			}
		}
	}
}

// checkFunctionWorkloads checks what every function needs wherever it runs:
// probes on /healthz and /readyz, the storage roots mounted where the
// ConfigMap says they are.
func checkFunctionWorkloads(t *testing.T, src string, objs []object, name func(string) string) {
	t.Helper()
	var cm *corev1.ConfigMap
	for _, o := range byKind(objs, "v1", "ConfigMap") {
		cm = o.Typed.(*corev1.ConfigMap)
	}
	if cm == nil {
		t.Fatalf("%s: no ConfigMap", src)
	}
	for _, f := range functionNames {
		var spec *corev1.PodSpec
		if o, ok := find(objs, "apps/v1", "Deployment", name(f)); ok {
			spec = &o.Typed.(*appsv1.Deployment).Spec.Template.Spec
		} else if o, ok := find(objs, "serving.knative.dev/v1", "Service", name(f)); ok {
			spec = &o.Typed.(*servingv1.Service).Spec.Template.Spec.PodSpec
		} else {
			t.Errorf("%s: the %s function is not deployed", src, f)
			continue
		}
		c := spec.Containers[0]
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("%s: %s: readiness probe is not GET /readyz", src, f)
		}
		if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
			t.Errorf("%s: %s: liveness probe is not GET /healthz", src, f)
		}
		mounts := map[string]bool{}
		for _, m := range c.VolumeMounts {
			mounts[m.MountPath] = true
		}
		for _, v := range []string{"SOURCE_STORAGE_PATH", "TARGET_STORAGE_PATH"} {
			if !mounts[cm.Data[v]] {
				t.Errorf("%s: %s: %s=%s is not a mounted volume (mounts %v)", src, f, v, cm.Data[v], mounts)
			}
		}
	}
}

// checkKnativeServices checks the Knative Services of the functions: scale
// to zero with a ceiling and a concurrency target, jupyter cluster-local.
func checkKnativeServices(t *testing.T, src string, objs []object, name func(string) string) {
	t.Helper()
	for _, f := range functionNames {
		o, ok := find(objs, "serving.knative.dev/v1", "Service", name(f))
		if !ok {
			t.Errorf("%s: no Knative Service for %s", src, f)
			continue
		}
		svc := o.Typed.(*servingv1.Service)
		a := svc.Spec.Template.Annotations
		if a["autoscaling.knative.dev/min-scale"] != "0" || a["autoscaling.knative.dev/max-scale"] == "" || a["autoscaling.knative.dev/target"] == "" {
			t.Errorf("%s: %s does not scale to zero with max-scale and a target: %v", src, f, a)
		}
		local := svc.Labels["networking.knative.dev/visibility"] == "cluster-local"
		if local != (f == "jupyter") {
			t.Errorf("%s: %s: cluster-local is %v", src, f, local)
		}
		for _, v := range svc.Spec.Template.Spec.Volumes {
			if v.PersistentVolumeClaim == nil {
				t.Errorf("%s: %s: volume %s is not a claim", src, f, v.Name)
			}
		}
	}
}

// routeTarget answers which function a Gateway API route sends path to,
// with the Gateway API's precedence: an exact match, then the longest prefix.
func routeTarget(route *gatewayv1.HTTPRoute, path string) string {
	best, bestLen, exact := "", -1, false
	for _, rule := range route.Spec.Rules {
		host := ""
		for _, f := range rule.Filters {
			if f.URLRewrite != nil && f.URLRewrite.Hostname != nil {
				host = string(*f.URLRewrite.Hostname)
			}
		}
		for _, m := range rule.Matches {
			if m.Path == nil || m.Path.Value == nil || m.Path.Type == nil {
				continue
			}
			v := *m.Path.Value
			switch *m.Path.Type {
			case gatewayv1.PathMatchExact:
				if path == v && !exact {
					best, exact = host, true
				}
			case gatewayv1.PathMatchPathPrefix:
				p := strings.TrimSuffix(v, "/")
				if !exact && (path == v || path == p || strings.HasPrefix(path, p+"/")) && len(p) > bestLen {
					best, bestLen = host, len(p)
				}
			}
		}
	}
	return best
}

// publicPaths are where the public routes lead.
var publicPaths = map[string]string{
	"/": "stage", "/stage_data": "stage", "/stage-data/": "stage", "/config": "stage",
	"/config/allowed-methods": "stage", "/operations": "stage", "/operations/0123": "stage",
	"/openapi.json": "stage", "/docs": "stage", "/docs/index.html": "stage", "/browse": "stage",
	"/create-file": "stage", "/assets/app.js": "stage", "/logs": "logs", "/logs/stream": "logs",
}

func checkRoute(t *testing.T, src string, objs []object, host func(string) string) {
	t.Helper()
	routes := byKind(objs, "gateway.networking.k8s.io/v1", "HTTPRoute")
	if len(routes) != 1 {
		t.Fatalf("%s: want one HTTPRoute, have %d", src, len(routes))
	}
	route := routes[0].Typed.(*gatewayv1.HTTPRoute)
	if len(route.Spec.Hostnames) != 1 {
		t.Errorf("%s: the route serves %d hosts, want one", src, len(route.Spec.Hostnames))
	}
	for path, f := range publicPaths {
		if got := routeTarget(route, path); got != host(f) {
			t.Errorf("%s: %s goes to %q, want %q", src, path, got, host(f))
		}
	}
	grants := byKind(objs, "gateway.networking.k8s.io/v1beta1", "ReferenceGrant")
	for _, rule := range route.Spec.Rules {
		for _, b := range rule.BackendRefs {
			if b.Namespace == nil {
				continue
			}
			granted := false
			for _, g := range grants {
				rg := g.Typed.(*gatewayv1beta1.ReferenceGrant)
				granted = granted || (rg.Namespace == string(*b.Namespace) && len(rg.Spec.To) > 0 && rg.Spec.To[0].Name != nil && string(*rg.Spec.To[0].Name) == string(b.Name))
			}
			if !granted {
				t.Errorf("%s: the route sends to %s/%s without a ReferenceGrant there", src, *b.Namespace, b.Name)
			}
		}
	}
}

// ingressTarget answers which Service an Ingress sends path to (the
// longest matching path, as Kubernetes specifies for Prefix).
func ingressTarget(in *networkingv1.Ingress, path string) string {
	best, bestLen := "", -1
	for _, r := range in.Spec.Rules {
		for _, p := range r.HTTP.Paths {
			pre := strings.TrimSuffix(p.Path, "/")
			if (path == p.Path || strings.HasPrefix(path, pre+"/") || path == pre) && len(pre) > bestLen {
				best, bestLen = p.Backend.Service.Name, len(pre)
			}
		}
	}
	return best
}

func TestConfigKnative(t *testing.T) {
	root := repoRoot(t)
	dir := filepath.Join(root, "config", "knative")
	// Every file decodes on its own, and the kustomization lists each.
	var kz struct {
		APIVersion string           `json:"apiVersion"`
		Kind       string           `json:"kind"`
		Resources  []string         `json:"resources"`
		Images     []map[string]any `json:"images"`
		Components []string         `json:"components"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &kz); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" {
			continue
		}
		if !slices.Contains(kz.Resources, base) {
			t.Errorf("%s is not in kustomization.yaml's resources", base)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(decodeAll(t, base, data)) == 0 {
			t.Errorf("%s holds no objects", base)
		}
	}

	objs := decodeAll(t, "kustomize build config/knative", run(t, root, "kustomize", "build", "config/knative"))
	name := func(f string) string { return f }
	checkReferences(t, "config/knative", objs)
	validateKnative(t, "config/knative", objs)
	checkKnativeServices(t, "config/knative", objs, name)
	checkFunctionWorkloads(t, "config/knative", objs, name)
	checkEventing(t, "config/knative", objs, name)
	checkEnvironment(t, "config/knative", objs, name)
	checkRoute(t, "config/knative", objs, func(f string) string { return f + ".skao-staging.svc.cluster.local" })
	for _, o := range objs {
		if o.Namespace == "" && o.Kind != "Namespace" {
			t.Errorf("%s has no namespace", o)
		}
	}
	if _, ok := find(objs, "apps/v1", "StatefulSet", "mysql"); !ok {
		t.Error("no MySQL StatefulSet")
	}
	if ns, ok := find(objs, "v1", "Namespace", "skao-staging"); !ok || ns.Meta.Labels["bindings.knative.dev/include"] != "true" {
		t.Error("the namespace must opt in to SinkBinding (bindings.knative.dev/include)")
	}
}

func TestConfigKnativeTLS(t *testing.T) {
	root := repoRoot(t)
	overlay := t.TempDir()
	base, _ := filepath.Rel(overlay, filepath.Join(root, "config", "knative"))
	comp, _ := filepath.Rel(overlay, filepath.Join(root, "config", "knative", "tls"))
	kz := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [%s]\ncomponents: [%s]\n", base, comp)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kz), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, "config/knative with tls", run(t, overlay, "kustomize", "build", "--load-restrictor", "LoadRestrictionsNone", "."))
	gw, ok := find(objs, "gateway.networking.k8s.io/v1", "Gateway", "staging")
	if !ok {
		t.Fatal("no Gateway")
	}
	var https *gatewayv1.Listener
	for i, l := range gw.Typed.(*gatewayv1.Gateway).Spec.Listeners {
		if l.Protocol == gatewayv1.HTTPSProtocolType {
			https = &gw.Typed.(*gatewayv1.Gateway).Spec.Listeners[i]
		}
	}
	if https == nil || https.TLS == nil || len(https.TLS.CertificateRefs) != 1 || https.TLS.CertificateRefs[0].Name != "staging-tls" || https.Port != 443 {
		t.Fatalf("the tls component does not add an HTTPS listener with the staging-tls certificate: %+v", https)
	}
}

// chartCase is one way of installing the chart.
type chartCase struct {
	name    string
	values  map[string]any
	check   func(t *testing.T, objs []object)
	extSecs []string // Secrets that exist outside the chart
}

func fullname(f string) string { return "staging-skao-staging-service-" + f }

var chartCases = []chartCase{
	{name: "defaults", check: func(t *testing.T, objs []object) {
		for _, f := range functionNames {
			if _, ok := find(objs, "autoscaling/v2", "HorizontalPodAutoscaler", fullname(f)); !ok {
				t.Errorf("no HPA for %s", f)
			}
		}
		d, _ := find(objs, "apps/v1", "Deployment", fullname("stage"))
		if *d.Typed.(*appsv1.Deployment).Spec.Replicas != 2 {
			t.Error("the stage function does not run replicaCount (2) replicas")
		}
		svc, _ := find(objs, "v1", "Service", fullname("stage"))
		if s := svc.Typed.(*corev1.Service).Spec; s.Type != corev1.ServiceTypeNodePort || s.Ports[0].Port != 8000 {
			t.Errorf("the stage Service is %s:%d, want NodePort:8000", s.Type, s.Ports[0].Port)
		}
		ins := byKind(objs, "networking.k8s.io/v1", "Ingress")
		if len(ins) != 1 {
			t.Fatalf("want one Ingress, have %d", len(ins))
		}
		in := ins[0].Typed.(*networkingv1.Ingress)
		if in.Annotations["nginx.ingress.kubernetes.io/rewrite-target"] != "/" || in.Spec.Rules[0].Host != "staging-service.local" {
			t.Errorf("the Ingress lost its annotation or host: %v %v", in.Annotations, in.Spec.Rules[0].Host)
		}
		for path, f := range publicPaths {
			if got := ingressTarget(in, path); got != fullname(f) {
				t.Errorf("the Ingress sends %s to %q, want %q", path, got, fullname(f))
			}
		}
		cm, _ := find(objs, "v1", "ConfigMap", fullname("config"))
		data := cm.Typed.(*corev1.ConfigMap).Data
		want := map[string]string{"SOURCE_STORAGE_PATH": "/mnt/storage_a", "TARGET_STORAGE_PATH": "/mnt/user_areas",
			"ALLOWED_METHODS": `["local_copy","local_symlink","direct_download","jupyter_copy"]`, "LOGGING_LEVEL": "DEBUG",
			"JUPYTERHUB_URL": "https://jupyterhub", "RUCIO_BASE_URL": "https://rucio-instance",
			"JUPYTER_FUNCTION_URL": "http://" + fullname("jupyter") + ":8000"}
		for k, v := range want {
			if data[k] != v {
				t.Errorf("ConfigMap %s = %q, want %q", k, data[k], v)
			}
		}
		pv, _ := find(objs, "v1", "PersistentVolume", fullname("source-local-staging"))
		if hp := pv.Typed.(*corev1.PersistentVolume).Spec.HostPath; hp == nil || hp.Path != "/Volumes/FastStorage/storage_a" {
			t.Errorf("the local source is not the hostPath /Volumes/FastStorage/storage_a: %+v", hp)
		}
		sec, _ := find(objs, "v1", "Secret", fullname("database"))
		if u := sec.Typed.(*corev1.Secret).StringData["DATABASE_URL"]; !strings.HasPrefix(u, "mysql://staging:") || !strings.HasSuffix(u, "@"+fullname("mysql")+":3306/staging") {
			t.Errorf("DATABASE_URL %q does not lead to the chart's MySQL", u)
		}
	}},
	{name: "nfs", values: map[string]any{"storage": map[string]any{
		"source":   map[string]any{"type": "nfs", "local": map[string]any{"enabled": false}, "nfs": map[string]any{"enabled": true}},
		"userArea": map[string]any{"type": "nfs", "local": map[string]any{"enabled": false}, "nfs": map[string]any{"enabled": true}},
	}}, check: func(t *testing.T, objs []object) {
		for area, want := range map[string][3]string{"source": {"nfs-source.example.com", "/source-nfs-exported-path", "/mnt/source-nfs"},
			"user-area": {"nfs-user-area.example.com", "/user-area-nfs-exported-path", "/mnt/user-area-nfs"}} {
			pv, ok := find(objs, "v1", "PersistentVolume", fullname(area+"-nfs-staging"))
			if !ok {
				t.Fatalf("no NFS volume for %s", area)
			}
			if n := pv.Typed.(*corev1.PersistentVolume).Spec.NFS; n == nil || n.Server != want[0] || n.Path != want[1] {
				t.Errorf("%s NFS volume is %+v", area, n)
			}
		}
		if n := len(byKind(objs, "v1", "PersistentVolume")); n != 2 {
			t.Errorf("%d volumes, want the two NFS ones", n)
		}
	}},
	{name: "ceph", values: map[string]any{"storage": map[string]any{
		"source":   map[string]any{"type": "ceph", "local": map[string]any{"enabled": false}, "ceph": map[string]any{"enabled": true}},
		"userArea": map[string]any{"type": "ceph", "local": map[string]any{"enabled": false}, "ceph": map[string]any{"enabled": true}},
	}}, check: func(t *testing.T, objs []object) {
		pv, ok := find(objs, "v1", "PersistentVolume", fullname("source-ceph-staging"))
		if !ok {
			t.Fatal("no Ceph volume for the source")
		}
		c := pv.Typed.(*corev1.PersistentVolume).Spec.CSI
		if c == nil || c.Driver != "cephfs.csi.ceph.com" || c.VolumeAttributes["clusterID"] != "ceph-source.example.com" ||
			c.VolumeAttributes["staticVolume"] != "true" || c.NodeStageSecretRef == nil || c.ReadOnly {
			t.Fatalf("the Ceph source is not a static CephFS CSI volume: %+v", c)
		}
		sec, ok := find(objs, "v1", "Secret", c.NodeStageSecretRef.Name)
		if !ok {
			t.Fatalf("no Secret %s", c.NodeStageSecretRef.Name)
		}
		if d := sec.Typed.(*corev1.Secret).StringData; d["userID"] != "admin" || d["userKey"] != "<secret>" {
			t.Errorf("the Ceph credentials are not from storage.source.ceph.options: %v", d)
		}
	}},
	{name: "tls", values: map[string]any{"ingress": map[string]any{"tls": []any{
		map[string]any{"hosts": []any{"staging-service.local"}, "secretName": "staging-tls"}}}},
		check: func(t *testing.T, objs []object) {
			in := byKind(objs, "networking.k8s.io/v1", "Ingress")[0].Typed.(*networkingv1.Ingress)
			if len(in.Spec.TLS) != 1 || in.Spec.TLS[0].SecretName != "staging-tls" || in.Spec.TLS[0].Hosts[0] != "staging-service.local" {
				t.Errorf("the Ingress TLS is %+v", in.Spec.TLS)
			}
		}},
	{name: "external database", values: map[string]any{"mysql": map[string]any{"enabled": false},
		"externalDatabase": map[string]any{"url": "mysql://staging:s3cret@db.example.org:3306/staging"}},
		check: func(t *testing.T, objs []object) {
			if n := len(byKind(objs, "apps/v1", "StatefulSet")); n != 0 {
				t.Errorf("%d StatefulSets with an external database", n)
			}
			sec, _ := find(objs, "v1", "Secret", fullname("database"))
			if u := sec.Typed.(*corev1.Secret).StringData["DATABASE_URL"]; u != "mysql://staging:s3cret@db.example.org:3306/staging" {
				t.Errorf("DATABASE_URL is %q", u)
			}
		}},
	{name: "existing secrets", values: map[string]any{"mysql": map[string]any{"enabled": false},
		"externalDatabase": map[string]any{"existingSecret": "site-db", "existingSecretKey": "url"},
		"jupyterhub":       map[string]any{"existingSecret": "site-hub", "existingSecretKey": "api-token"}},
		extSecs: []string{"site-db", "site-hub"},
		check: func(t *testing.T, objs []object) {
			for _, o := range byKind(objs, "v1", "Secret") {
				t.Errorf("Secret %s rendered although existing ones are named", o.Name)
			}
		}},
	{name: "knative", values: map[string]any{"knative": map[string]any{"enabled": true}}, check: func(t *testing.T, objs []object) {
		for _, kind := range []string{"Deployment", "HorizontalPodAutoscaler"} {
			for _, o := range objs {
				if o.Kind == kind {
					t.Errorf("%s rendered with knative.enabled", o)
				}
			}
		}
		if n := len(byKind(objs, "v1", "Service")); n != 1 { // MySQL only
			t.Errorf("%d core Services with knative.enabled, want MySQL's only", n)
		}
		checkKnativeServices(t, "knative", objs, fullname)
		checkEventing(t, "knative", objs, fullname)
		checkRoute(t, "knative", objs, func(f string) string { return fullname(f) + ".staging.svc.cluster.local" })
	}},
}

// helmArgs writes values to a file and returns helm's arguments for it.
func helmValues(t *testing.T, values map[string]any) []string {
	if values == nil {
		return nil
	}
	data, err := json.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "values.json")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"-f", f}
}

func renderChart(t *testing.T, values map[string]any) []byte {
	args := append([]string{"template", "staging", chartDir, "--namespace", "staging"}, helmValues(t, values)...)
	return run(t, repoRoot(t), "helm", args...)
}

func TestChart(t *testing.T) {
	root := repoRoot(t)
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			vals := helmValues(t, c.values)
			run(t, root, "helm", append([]string{"lint", "--strict", chartDir, "--namespace", "staging"}, vals...)...)
			objs := decodeAll(t, c.name, renderChart(t, c.values))
			checkReferences(t, c.name, objs, c.extSecs...)
			validateKnative(t, c.name, objs)
			checkFunctionWorkloads(t, c.name, objs, fullname)
			if c.extSecs == nil {
				checkEnvironment(t, c.name, objs, fullname)
			}
			c.check(t, objs)
		})
	}
}

// TestChartRefusesBadStorage: a storage type that is not enabled, or
// unknown, is a clear error at install time.
func TestChartRefusesBadStorage(t *testing.T) {
	root := repoRoot(t)
	for _, tc := range []struct {
		values map[string]any
		want   string
	}{
		{map[string]any{"storage": map[string]any{"source": map[string]any{"type": "nfs"}}}, "storage.source.nfs.enabled is false"},
		{map[string]any{"storage": map[string]any{"userArea": map[string]any{"type": "s3"}}}, `"s3" is not local, nfs or ceph`},
		{map[string]any{"mysql": map[string]any{"enabled": false}}, "externalDatabase.url must be"},
	} {
		args := append([]string{"template", "staging", chartDir}, helmValues(t, tc.values)...)
		_, err := tryRun(root, tool(t, "helm"), args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want an error containing %q, got %v", tc.values, tc.want, err)
		}
	}
}

// leaf is one value of values.yaml: its path and its default.
type leaf struct {
	path []any // string keys and int indexes
	def  any
}

func (l leaf) String() string {
	var b strings.Builder
	for _, p := range l.path {
		switch p := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(p.(string))
		}
	}
	return b.String()
}

func leaves(v any, path []any) []leaf {
	switch v := v.(type) {
	case map[string]any:
		var out []leaf
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, leaves(v[k], append(slices.Clone(path), k))...)
		}
		return out
	case []any:
		if len(v) > 0 {
			if _, ok := v[0].(map[string]any); ok {
				var out []leaf
				for i, e := range v {
					out = append(out, leaves(e, append(slices.Clone(path), i))...)
				}
				return out
			}
		}
	}
	return []leaf{{path: path, def: v}}
}

// withValue returns a deep copy of values with the value at path replaced.
func withValue(values map[string]any, path []any, v any) map[string]any {
	var cp map[string]any
	data, _ := json.Marshal(values)
	_ = json.Unmarshal(data, &cp)
	var cur any = cp
	for i, p := range path { // an empty path only copies
		last := i == len(path)-1
		switch p := p.(type) {
		case string:
			m := cur.(map[string]any)
			if last {
				m[p] = v
			} else {
				if m[p] == nil {
					m[p] = map[string]any{}
				}
				cur = m[p]
			}
		case int:
			s := cur.([]any)
			if last {
				s[p] = v
			} else {
				cur = s[p]
			}
		}
	}
	return cp
}

// merge returns a deep copy of base with over's maps merged in, as helm
// merges a values file over the chart's values.
func merge(base, over map[string]any) map[string]any {
	out := withValue(base, nil, nil)
	for k, v := range over {
		if m, ok := v.(map[string]any); ok {
			if b, ok := out[k].(map[string]any); ok {
				out[k] = merge(b, m)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// leafContext gives the other values under which a value takes effect.
func leafContext(key string) map[string]any {
	ctx := map[string]any{}
	set := func(path string, v any) {
		parts := []any{}
		for _, p := range strings.Split(path, ".") {
			parts = append(parts, p)
		}
		ctx = withValue(ctx, parts, v)
	}
	for _, area := range []string{"source", "userArea"} {
		for _, typ := range []string{"nfs", "ceph"} {
			if strings.HasPrefix(key, "storage."+area+"."+typ+".") && !strings.HasSuffix(key, ".enabled") {
				set("storage."+area+".type", typ)
				set("storage."+area+"."+typ+".enabled", true)
			}
		}
		if key == "storage."+area+".type" {
			set("storage."+area+".nfs.enabled", true)
		}
		if key == "storage."+area+".local.enabled" {
			set("storage."+area+".type", "nfs")
			set("storage."+area+".nfs.enabled", true)
		}
	}
	switch {
	case strings.HasPrefix(key, "knative.") && key != "knative.enabled":
		set("knative.enabled", true)
	case key == "mysql.enabled":
		set("externalDatabase.url", "mysql://u:p@db:3306/staging")
	case key == "externalDatabase.url":
		set("mysql.enabled", false)
		set("externalDatabase.url", "mysql://u:p@db:3306/staging")
	case key == "externalDatabase.existingSecret" || key == "externalDatabase.existingSecretKey":
		set("mysql.enabled", false)
		set("externalDatabase.existingSecret", "site-db")
	case key == "functions.logs.enabled" || key == "functions.jupyter.enabled":
		set("ingress.enabled", false) // the ingress refuses paths to a disabled function
	case key == "jupyterhub.existingSecretKey":
		set("jupyterhub.existingSecret", "site-hub")
	}
	return ctx
}

// changedValue is the value a leaf is set to: a recognisable sentinel where
// any string or number will do, a valid other choice where not.
func changedValue(key string, def any, n int) (v any, sentinel string) {
	s := fmt.Sprintf("zq%dzq", n)
	switch key {
	case "storage.source.type", "storage.userArea.type":
		return "nfs", ""
	case "storage.source.ceph.options", "storage.userArea.ceph.options":
		return "name=" + s + ",secret=k", s
	case "externalDatabase.url":
		return "mysql://" + s + ":p@db:3306/staging", s
	case "externalDatabase.existingSecret":
		return s, s
	case "config.allowedMethods":
		return []any{"local_copy"}, ""
	case "ingress.tls":
		return []any{map[string]any{"hosts": []any{s}, "secretName": s}}, s
	}
	switch def.(type) {
	case bool:
		return !def.(bool), ""
	case float64, int:
		return 7900 + n, fmt.Sprint(7900 + n)
	case string:
		if strings.HasPrefix(def.(string), "/") {
			return "/" + s, s
		}
		return s, s
	}
	return s, s
}

// TestChartValuesTakeEffect is the cross-check between values and templates:
// every value of values.yaml, changed, changes the rendered objects, and a
// changed string or number shows up in them.
func TestChartValuesTakeEffect(t *testing.T) {
	root := repoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	all := leaves(values, nil)
	if len(all) < 50 {
		t.Fatalf("only %d values found", len(all))
	}
	for n, l := range all {
		key := l.String()
		t.Run(key, func(t *testing.T) {
			t.Parallel()
			ctx := merge(values, leafContext(key))
			base := renderChart(t, ctx)
			v, sentinel := changedValue(key, l.def, n)
			changed := renderChart(t, withValue(ctx, l.path, v))
			if string(base) == string(changed) {
				t.Fatalf("setting %s to %v changes nothing that is rendered", key, v)
			}
			if sentinel != "" && !strings.Contains(string(changed), sentinel) {
				t.Fatalf("setting %s to %v does not reach any rendered object", key, v)
			}
		})
	}
}
