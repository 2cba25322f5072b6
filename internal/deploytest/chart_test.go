package deploytest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

const chartDir = "charts/skao-staging-service"

// digest is a well-formed image digest, different per n.
func digest(n int) string { return fmt.Sprintf("sha256:%064x", n) }

// baseValues are what every install must give (make helm-install passes
// the images; the operator names the node of local storage): the chart's
// defaults refuse to render without them.
func baseValues() map[string]any {
	img := func(f string, n int) map[string]any {
		return map[string]any{"repository": "registry.example.org/skao/" + f, "digest": digest(n)}
	}
	return map[string]any{
		"image":     img("stage", 1),
		"functions": map[string]any{"logs": map[string]any{"image": img("logs", 2)}, "jupyter": map[string]any{"image": img("jupyter", 3)}},
		"storage": map[string]any{"source": map[string]any{"local": map[string]any{"node": "node-1"}},
			"userArea": map[string]any{"local": map[string]any{"node": "node-1"}}},
	}
}

// chartCase is one way of installing the chart: values over baseValues.
type chartCase struct {
	name    string
	values  map[string]any
	check   func(t *testing.T, objs []object)
	extSecs []string // Secrets that exist outside the chart
}

func fullname(f string) string { return "staging-skao-staging-service-" + f }

// storageValues switches both storages to typ.
func storageValues(typ string, extra map[string]any) map[string]any {
	area := func() map[string]any {
		a := map[string]any{"type": typ, "local": map[string]any{"enabled": false}, typ: map[string]any{"enabled": true}}
		for k, v := range extra {
			a[typ].(map[string]any)[k] = v
		}
		return a
	}
	return map[string]any{"storage": map[string]any{"source": area(), "userArea": area()}}
}

var chartCases = []chartCase{
	{name: "defaults", check: func(t *testing.T, objs []object) {
		for _, f := range functionNames {
			d, _ := find(objs, "apps/v1", "Deployment", fullname(f))
			if d.Typed.(*appsv1.Deployment).Spec.Replicas != nil {
				t.Errorf("the %s Deployment sets replicas beside its HPA: every upgrade would reset the HPA's scale", f)
			}
			h, ok := find(objs, "autoscaling/v2", "HorizontalPodAutoscaler", fullname(f))
			if !ok {
				t.Errorf("no HPA for %s", f)
				continue
			}
			var metrics []string
			for _, m := range h.Typed.(*autoscalingv2.HorizontalPodAutoscaler).Spec.Metrics {
				metrics = append(metrics, string(m.Resource.Name))
			}
			if !slices.Equal(metrics, []string{"cpu", "memory"}) {
				t.Errorf("the %s HPA scales on %v, want cpu and memory", f, metrics)
			}
			pdb, ok := find(objs, "policy/v1", "PodDisruptionBudget", fullname(f))
			if !ok {
				t.Errorf("no PodDisruptionBudget for %s", f)
				continue
			}
			sel, _ := metav1.LabelSelectorAsSelector(pdb.Typed.(*policyv1.PodDisruptionBudget).Spec.Selector)
			if !sel.Matches(labels.Set(d.Typed.(*appsv1.Deployment).Spec.Template.Labels)) {
				t.Errorf("the %s PodDisruptionBudget does not select its pods", f)
			}
			if d.Typed.(*appsv1.Deployment).Spec.Template.Annotations["checksum/secrets"] == "" {
				t.Errorf("the %s pods do not roll when a Secret's values change", f)
			}
		}
		h, _ := find(objs, "autoscaling/v2", "HorizontalPodAutoscaler", fullname("stage"))
		if *h.Typed.(*autoscalingv2.HorizontalPodAutoscaler).Spec.MinReplicas != 2 {
			t.Error("the stage function's HPA does not keep replicaCount (2) replicas")
		}
		svc, _ := find(objs, "v1", "Service", fullname("stage"))
		if s := svc.Typed.(*corev1.Service).Spec; s.Type != corev1.ServiceTypeClusterIP || s.Ports[0].Port != 8000 {
			t.Errorf("the stage Service is %s:%d, want ClusterIP:8000 behind the Ingress", s.Type, s.Ports[0].Port)
		}
		ins := ingresses(objs)
		if len(ins) != 2 || ins[0].Annotations["nginx.ingress.kubernetes.io/rewrite-target"] != "/$1" || ins[0].Spec.Rules[0].Host != "staging-service.local" ||
			ins[1].Name != fullname("page") || ins[1].Spec.Rules[0].Host != "staging-service.local" {
			t.Fatalf("want the API's Ingress on staging-service.local with the earlier values' rewrite-target key, now /$1, and the page's: %v", ins)
		}
		checkIngress(t, "defaults", ins, fullname, true)
		checkNetworkPolicy(t, "defaults", objs, fullname)
		checkEventAuth(t, "defaults", objs, fullname, "staging")
		events, ok := find(objs, "v1", "Secret", fullname("events"))
		if !ok || events.Meta.Annotations["helm.sh/resource-policy"] != "keep" || len(events.Typed.(*corev1.Secret).Data["hmac-secret"]) < 64 {
			t.Errorf("the events secret: want one generated once (64 characters) and kept by helm uninstall: %v", events.Meta)
		}
		cm, _ := find(objs, "v1", "ConfigMap", fullname("config"))
		data := cm.Typed.(*corev1.ConfigMap).Data
		want := map[string]string{"SOURCE_STORAGE_PATH": "/mnt/storage_a", "TARGET_STORAGE_PATH": "/mnt/user_areas",
			"ALLOWED_METHODS": `["local_copy","local_symlink","direct_download","jupyter_copy"]`, "LOGGING_LEVEL": "INFO",
			"JUPYTERHUB_URL": "https://jupyterhub", "RUCIO_BASE_URL": "https://rucio-instance",
			"JUPYTER_FUNCTION_URL": "http://" + fullname("jupyter") + ":8000"}
		for k, v := range want {
			if data[k] != v {
				t.Errorf("ConfigMap %s = %q, want %q", k, data[k], v)
			}
		}
		checkLocalStorage(t, objs)
		checkMySQL(t, "defaults", objs)
		sec, _ := find(objs, "v1", "Secret", fullname("mysql"))
		s := sec.Typed.(*corev1.Secret)
		if len(s.Data["password"]) < 24 || s.Annotations["helm.sh/resource-policy"] != "keep" || len(s.Data) != 2 ||
			string(s.Data["url-password"]) != string(s.Data["password"]) { // generated: URL-safe as it is
			t.Errorf("the MySQL Secret: want one generated password (and its URL form), kept by helm uninstall: %v %v", s.Annotations, len(s.Data["password"]))
		}
		stage := functionSpec(objs, fullname("stage"))
		for _, e := range stage.Containers[0].Env {
			if e.Name == "DATABASE_URL" && e.Value != "mysql://staging:$(DB_PASSWORD)@"+fullname("mysql")+":3306/staging" {
				t.Errorf("DATABASE_URL %q does not lead to the chart's MySQL with the Secret's password", e.Value)
			}
		}
		sa, ok := find(objs, "v1", "ServiceAccount", "staging-skao-staging-service")
		if !ok || *sa.Typed.(*corev1.ServiceAccount).AutomountServiceAccountToken {
			t.Error("no ServiceAccount without a token")
		}
		checkLabels(t, objs)
	}},
	{name: "no autoscaling", values: map[string]any{"autoscaling": map[string]any{"enabled": false}}, check: func(t *testing.T, objs []object) {
		d, _ := find(objs, "apps/v1", "Deployment", fullname("stage"))
		if r := d.Typed.(*appsv1.Deployment).Spec.Replicas; r == nil || *r != 2 {
			t.Errorf("without an HPA the stage Deployment runs %v replicas, want replicaCount (2)", r)
		}
	}},
	// Helm merges maps: a key is removed by setting it to null.
	// A controller without ingress-nginx's rewrite: one Prefix path per API
	// prefix, and the page at its own path, /index.html (the page's Ingress
	// needs the controller's own rewrite of / to it).
	{name: "portable ingress", values: map[string]any{"ingress": map[string]any{"annotations": map[string]any{"nginx.ingress.kubernetes.io/rewrite-target": nil},
		"hosts": []any{map[string]any{"host": "staging.example.org", "paths": portablePaths()}},
		"page":  map[string]any{"enabled": false}}},
		check: func(t *testing.T, objs []object) {
			ins := ingresses(objs)
			checkIngress(t, "portable ingress", ins, fullname, false)
			if svc, got := nginxRoute(ins, "/index.html"); svc != fullname("stage") || got != "/index.html" {
				t.Errorf("portable ingress: the page's own path goes to %s as %s", svc, got)
			}
		}},
	// The same paths with the earlier values' Prefix / to the stage
	// function: every method on / reaches the events door.
	{name: "portable ingress exposing POST /", values: map[string]any{"ingress": map[string]any{"annotations": map[string]any{"nginx.ingress.kubernetes.io/rewrite-target": nil},
		"hosts": []any{map[string]any{"host": "staging.example.org", "paths": []any{
			map[string]any{"path": "/", "pathType": "Prefix", "function": "stage"}, map[string]any{"path": "/logs", "pathType": "Prefix", "function": "logs"}}}},
		"page": map[string]any{"enabled": false}}},
		check: func(t *testing.T, objs []object) {
			if svc, got := nginxRoute(ingresses(objs), "/"); svc != fullname("stage") || got != "/" {
				t.Errorf("the model misses the exposure: / goes to %s as %s", svc, got)
			}
		}},
	{name: "nfs", values: storageValues("nfs", nil), check: func(t *testing.T, objs []object) {
		for area, want := range map[string][3]string{"source": {"nfs-source.example.com", "/source-nfs-exported-path", "/mnt/source-nfs"},
			"user-area": {"nfs-user-area.example.com", "/user-area-nfs-exported-path", "/mnt/user-area-nfs"}} {
			pv, ok := find(objs, "v1", "PersistentVolume", fullname(area+"-nfs-staging"))
			if !ok {
				t.Fatalf("no NFS volume for %s", area)
			}
			spec := pv.Typed.(*corev1.PersistentVolume).Spec
			if n := spec.NFS; n == nil || n.Server != want[0] || n.Path != want[1] || !slices.Equal(spec.AccessModes, []corev1.PersistentVolumeAccessMode{"ReadWriteMany"}) {
				t.Errorf("%s NFS volume is %+v %v", area, n, spec.AccessModes)
			}
		}
		if n := len(byKind(objs, "v1", "PersistentVolume")); n != 2 {
			t.Errorf("%d volumes, want the two NFS ones", n)
		}
		if n := len(byKind(objs, "batch/v1", "Job")); n != 0 {
			t.Errorf("%d Jobs: NFS is prepared by its administrator (root squash)", n)
		}
	}},
	{name: "ceph", values: storageValues("ceph", map[string]any{"clusterID": "site-ceph", "key": "AQB-key==", "mountOptions": "ms_mode=secure"}),
		check: func(t *testing.T, objs []object) {
			pv, ok := find(objs, "v1", "PersistentVolume", fullname("source-ceph-staging"))
			if !ok {
				t.Fatal("no Ceph volume for the source")
			}
			c := pv.Typed.(*corev1.PersistentVolume).Spec.CSI
			if c == nil || c.Driver != "cephfs.csi.ceph.com" || c.VolumeAttributes["clusterID"] != "site-ceph" || c.VolumeAttributes["fsName"] != "cephfs" ||
				c.VolumeAttributes["staticVolume"] != "true" || c.VolumeAttributes["kernelMountOptions"] != "ms_mode=secure" || c.NodeStageSecretRef == nil || c.ReadOnly {
				t.Fatalf("the Ceph source is not a static CephFS CSI volume of cluster site-ceph: %+v", c)
			}
			sec, ok := find(objs, "v1", "Secret", c.NodeStageSecretRef.Name)
			if !ok {
				t.Fatalf("no Secret %s", c.NodeStageSecretRef.Name)
			}
			if d := sec.Typed.(*corev1.Secret).Data; string(d["userID"]) != "admin" || string(d["userKey"]) != "AQB-key==" {
				t.Errorf("the Ceph credentials are not storage.source.ceph.user and key: %v", d)
			}
		}},
	{name: "ceph existing secret", values: storageValues("ceph", map[string]any{"clusterID": "site-ceph", "existingSecret": "site-ceph-user", "readOnly": true}),
		extSecs: []string{"site-ceph-user"},
		check: func(t *testing.T, objs []object) {
			pv, _ := find(objs, "v1", "PersistentVolume", fullname("source-ceph-staging"))
			if c := pv.Typed.(*corev1.PersistentVolume).Spec.CSI; c.NodeStageSecretRef.Name != "site-ceph-user" || !c.ReadOnly {
				t.Errorf("the Ceph volume does not use the existing Secret read-only: %+v", c)
			}
			for _, o := range byKind(objs, "v1", "Secret") {
				if strings.HasSuffix(o.Name, "-ceph") {
					t.Errorf("Secret %s rendered although an existing one is named", o.Name)
				}
			}
		}},
	{name: "tls", values: map[string]any{"ingress": map[string]any{"tls": []any{
		map[string]any{"hosts": []any{"staging-service.local"}, "secretName": "staging-tls"}}}},
		check: func(t *testing.T, objs []object) {
			in := ingresses(objs)[0]
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
			if u := string(sec.Typed.(*corev1.Secret).Data["DATABASE_URL"]); u != "mysql://staging:s3cret@db.example.org:3306/staging" {
				t.Errorf("DATABASE_URL is %q", u)
			}
			if n := len(byKind(objs, "networking.k8s.io/v1", "NetworkPolicy")); n != 0 {
				t.Errorf("%d NetworkPolicies for a MySQL the chart does not install", n)
			}
		}},
	{name: "existing secrets", values: map[string]any{"mysql": map[string]any{"enabled": false},
		"externalDatabase": map[string]any{"existingSecret": "site-db", "existingSecretKey": "url"},
		"jupyterhub":       map[string]any{"existingSecret": "site-hub", "existingSecretKey": "api-token"},
		"config":           map[string]any{"events": map[string]any{"existingSecret": "site-events", "existingSecretKey": "key"}}},
		extSecs: []string{"site-db", "site-hub", "site-events"},
		check: func(t *testing.T, objs []object) {
			for _, o := range byKind(objs, "v1", "Secret") {
				t.Errorf("Secret %s rendered although existing ones are named", o.Name)
			}
		}},
	{name: "mysql existing secret", values: map[string]any{"mysql": map[string]any{"existingSecret": "site-mysql"}},
		extSecs: []string{"site-mysql"},
		check: func(t *testing.T, objs []object) {
			if _, ok := find(objs, "v1", "Secret", fullname("mysql")); ok {
				t.Error("a MySQL Secret is rendered although mysql.existingSecret names one")
			}
			sts := byKind(objs, "apps/v1", "StatefulSet")[0].Typed.(*appsv1.StatefulSet)
			for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
				if e.Name == "MYSQL_PASSWORD" && e.ValueFrom.SecretKeyRef.Name != "site-mysql" {
					t.Errorf("MySQL takes its password from %s", e.ValueFrom.SecretKeyRef.Name)
				}
			}
			// An existing Secret's password goes into DATABASE_URL as it is.
			for _, e := range functionSpec(objs, fullname("stage")).Containers[0].Env {
				if e.Name == "DB_PASSWORD" && (e.ValueFrom.SecretKeyRef.Name != "site-mysql" || e.ValueFrom.SecretKeyRef.Key != "password") {
					t.Errorf("the functions take their MySQL password from %s, key %s", e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
		}},
	{name: "own files", values: map[string]any{"config": map[string]any{"stagedOwner": "65532:100"}}, check: func(t *testing.T, objs []object) {
		cm, _ := find(objs, "v1", "ConfigMap", fullname("config"))
		if v := cm.Typed.(*corev1.ConfigMap).Data["STAGED_OWNER"]; v != "65532:100" {
			t.Errorf("STAGED_OWNER %q: the functions' own uid and the shared group need no CAP_CHOWN", v)
		}
	}},
	{name: "knative", values: map[string]any{"knative": map[string]any{"enabled": true}, "storage": storageValues("nfs", nil)["storage"]},
		check: func(t *testing.T, objs []object) {
			for _, kind := range []string{"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"} {
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
			checkNetworkPolicy(t, "knative", objs, fullname)
			checkEventAuth(t, "knative", objs, fullname, "staging")
			checkLogStreams(t, "knative", objs, fullname)
		}},
	{name: "knative oidc", values: map[string]any{"knative": map[string]any{"enabled": true, "eventing": map[string]any{
		"rucioSenders": []any{"system:serviceaccount:rucio:transfer-events"}}}, "config": map[string]any{"events": map[string]any{"auth": "oidc"}}},
		check: func(t *testing.T, objs []object) {
			checkKnativeServices(t, "knative oidc", objs, fullname)
			checkEventing(t, "knative oidc", objs, fullname)
			checkEventAuth(t, "knative oidc", objs, fullname, "staging")
			checkNetworkPolicy(t, "knative oidc", objs, fullname)
			if _, ok := find(objs, "v1", "Secret", fullname("events")); ok {
				t.Error("an events secret rendered with oidc")
			}
			if n := len(byKind(objs, "eventing.knative.dev/v1alpha1", "EventPolicy")); n != 3 {
				t.Errorf("%d EventPolicies, want the functions', the Triggers' replies and the Rucio bridge's", n)
			}
		}},
	{name: "knative kafka broker", values: map[string]any{"knative": map[string]any{"enabled": true, "eventing": map[string]any{
		"brokerClass": "Kafka", "kafka": map[string]any{"bootstrapServers": "kafka-bootstrap.kafka:9092"}}}},
		check: func(t *testing.T, objs []object) {
			cm, ok := find(objs, "v1", "ConfigMap", fullname("broker"))
			if d := cm.Typed.(*corev1.ConfigMap).Data; !ok || d["bootstrap.servers"] != "kafka-bootstrap.kafka:9092" || d["default.topic.replication.factor"] != "3" {
				t.Errorf("the Kafka broker's config: %v", d)
			}
			checkEventing(t, "knative kafka broker", objs, fullname)
		}},
}

// portablePaths are the API's paths as Prefix paths (Exact for one file),
// for controllers without ingress-nginx's regular expressions.
func portablePaths() []any {
	var out []any
	for _, p := range []string{"/stage_data", "/stage-data", "/config", "/operations", "/browse", "/create-file", "/assets", "/docs"} {
		out = append(out, map[string]any{"path": p, "pathType": "Prefix", "function": "stage"})
	}
	return append(out, map[string]any{"path": "/openapi.json", "pathType": "Exact", "function": "stage"},
		map[string]any{"path": "/index.html", "pathType": "Exact", "function": "stage"},
		map[string]any{"path": "/logs", "pathType": "Prefix", "function": "logs"})
}

// ingresses are the rendered Ingresses.
func ingresses(objs []object) []*networkingv1.Ingress {
	var out []*networkingv1.Ingress
	for _, o := range byKind(objs, "networking.k8s.io/v1", "Ingress") {
		out = append(out, o.Typed.(*networkingv1.Ingress))
	}
	return out
}

// checkLocalStorage checks local storage: a hostPath volume pinned to its
// node (ReadWriteOnce: one node), and the Job that gives the user area to
// the shared group with setgid on that node.
func checkLocalStorage(t *testing.T, objs []object) {
	t.Helper()
	for area, path := range map[string]string{"source": "/Volumes/FastStorage/storage_a", "user-area": "/Volumes/FastStorage/user_areas"} {
		pv, _ := find(objs, "v1", "PersistentVolume", fullname(area+"-local-staging"))
		spec := pv.Typed.(*corev1.PersistentVolume).Spec
		if hp := spec.HostPath; hp == nil || hp.Path != path {
			t.Errorf("the local %s is not the hostPath %s: %+v", area, path, hp)
		}
		na := spec.NodeAffinity
		if na == nil || na.Required == nil || len(na.Required.NodeSelectorTerms) != 1 ||
			na.Required.NodeSelectorTerms[0].MatchExpressions[0].Key != "kubernetes.io/hostname" ||
			!slices.Equal(na.Required.NodeSelectorTerms[0].MatchExpressions[0].Values, []string{"node-1"}) {
			t.Errorf("the local %s is not pinned to node-1: %+v", area, na)
		}
		if !slices.Equal(spec.AccessModes, []corev1.PersistentVolumeAccessMode{"ReadWriteOnce"}) {
			t.Errorf("the local %s is %v: a folder on one node is ReadWriteOnce", area, spec.AccessModes)
		}
	}
	jobs := byKind(objs, "batch/v1", "Job")
	if len(jobs) != 1 {
		t.Fatalf("%d Jobs, want the one that prepares the local user area", len(jobs))
	}
	pod := jobs[0].Typed.(*batchv1.Job).Spec.Template.Spec
	if len(pod.Volumes) != 1 || pod.Volumes[0].PersistentVolumeClaim.ClaimName != fullname("user-area-local") {
		t.Errorf("the Job prepares %+v, want the user area's claim", pod.Volumes)
	}
}

// recommendedLabels are Kubernetes' recommended labels, on every object
// and pod the chart makes.
var recommendedLabels = []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
	"app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart"}

func checkLabels(t *testing.T, objs []object) {
	t.Helper()
	for _, o := range objs {
		sets := map[string]map[string]string{"": o.Meta.Labels}
		switch v := o.Typed.(type) {
		case *appsv1.Deployment:
			sets["pods"] = v.Spec.Template.Labels
		case *appsv1.StatefulSet:
			sets["pods"] = v.Spec.Template.Labels
		case *batchv1.Job:
			sets["pods"] = v.Spec.Template.Labels
		case *servingv1.Service:
			sets["pods"] = v.Spec.Template.Labels
		}
		for where, l := range sets {
			for _, k := range recommendedLabels {
				if l[k] == "" {
					t.Errorf("%s %s: no label %s", o, where, k)
				}
			}
		}
	}
}

// helmValues writes values to a file and returns helm's arguments for it.
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
			values := merge(baseValues(), c.values)
			vals := helmValues(t, values)
			run(t, root, "helm", append([]string{"lint", "--strict", chartDir, "--namespace", "staging"}, vals...)...)
			objs := decodeAll(t, c.name, renderChart(t, values))
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

// TestChartRefuses: what cannot work stops the install with a message
// naming the value (the templates' checks and values.schema.json).
func TestChartRefuses(t *testing.T) {
	root := repoRoot(t)
	noImages := baseValues()
	delete(noImages, "image")
	for _, tc := range []struct {
		values map[string]any
		want   string
	}{
		{map[string]any{"storage": map[string]any{"source": map[string]any{"type": "nfs"}}}, "storage.source.nfs.enabled is false"},
		{map[string]any{"storage": map[string]any{"userArea": map[string]any{"type": "s3"}}}, "value must be one of 'local', 'nfs', 'ceph'"},
		{map[string]any{"mysql": map[string]any{"enabled": false}}, "externalDatabase.url must be"},
		{map[string]any{"image": map[string]any{"repository": ""}}, "image.repository is empty: the chart ships no images"},
		{map[string]any{"image": map[string]any{"digest": "latest"}}, "image/digest"},
		{map[string]any{"functions": map[string]any{"logs": map[string]any{"image": map[string]any{"digest": ""}}}}, "functions.logs.image: set a digest"},
		{map[string]any{"storage": map[string]any{"userArea": map[string]any{"local": map[string]any{"node": ""}}}}, "storage.userArea.local.node is empty"},
		{storageValues("ceph", map[string]any{"key": "k"}), "storage.source.ceph.clusterID is empty"},
		{storageValues("ceph", map[string]any{"clusterID": "c"}), "storage.source.ceph: set key"},
		// The earlier chart's Ceph keys: the monitors are ceph-csi's, by cluster ID.
		{storageValues("ceph", map[string]any{"clusterID": "c", "key": "k", "server": "mon.example.org"}), "additional properties 'server' not allowed"},
		{storageValues("ceph", map[string]any{"clusterID": "c", "key": "k", "options": "name=admin,secret=k,rw"}), "additional properties 'options' not allowed"},
		{map[string]any{"config": map[string]any{"stagedOwner": "user"}}, "config.stagedOwner=user cannot work in the function images"},
		{map[string]any{"config": map[string]any{"stagedOwner": "1000:100"}}, "config.stagedOwner 1000:100 needs CAP_CHOWN"},
		{map[string]any{"mysql": map[string]any{"rootPassword": "change-me"}}, "additional properties 'rootPassword' not allowed"},
		{map[string]any{"knative": map[string]any{"timeoutSeconds": 900}}, "additional properties 'timeoutSeconds' not allowed"},
		{map[string]any{"knative": map[string]any{"enabled": true, "eventing": map[string]any{"channel": "NatsChannel"}}}, "value must be one of 'KafkaChannel', 'InMemoryChannel'"},
		{map[string]any{"config": map[string]any{"events": map[string]any{"auth": "oidc"}}}, "config.events.auth=oidc is Knative Eventing's sender identity: it needs knative.enabled"},
		{map[string]any{"config": map[string]any{"events": map[string]any{"hmacSecret": "too-short"}}}, "config.events.hmacSecret: a secret of 9 bytes; at least 32 are required"},
		{map[string]any{"config": map[string]any{"authMode": "oidc"}}, "config.authMode=oidc needs config.oidc.issuerURL and config.oidc.audience"},
		{map[string]any{"logging": map[string]any{"level": "loud"}}, `logging.level "loud" is not one of DEBUG, INFO, WARNING, ERROR`},
		{map[string]any{"knative": map[string]any{"enabled": true}, "config": map[string]any{"authMode": "oidc", "events": map[string]any{"auth": "none"},
			"oidc": map[string]any{"issuerURL": "https://iam.example.org/", "audience": "staging"}}}, "config.events.auth=none with config.authMode=oidc"},
		{map[string]any{"config": map[string]any{"events": map[string]any{"tokenFile": "/var/run/token"}}}, "additional properties 'tokenFile' not allowed"},
		{map[string]any{"knative": map[string]any{"eventing": map[string]any{"rucioSenders": []any{"rucio-bridge"}}}}, "rucioSenders"},
		{map[string]any{"config": map[string]any{"maxWaitingPerUser": 0}}, "maxWaitingPerUser"},
		{map[string]any{"config": map[string]any{"maxWaitingPerUser": 100001}}, "maxWaitingPerUser"},
		// On Knative each followed log stream holds a slot of the logs function.
		{map[string]any{"knative": map[string]any{"enabled": true}, "config": map[string]any{"maxLogStreams": 50}},
			"config.maxLogStreams 50 is not below knative.containerConcurrency.logs 50"},
		{map[string]any{"knative": map[string]any{"enabled": true, "containerConcurrency": map[string]any{"logs": 8}}, "config": map[string]any{"maxLogStreams": 1000}},
			"config.maxLogStreams 1000 is not below knative.containerConcurrency.logs 8"},
		{map[string]any{"knative": map[string]any{"enabled": true, "containerConcurrency": map[string]any{"logs": 1}}},
			"knative.containerConcurrency.logs 1 leaves no slot"},
		{map[string]any{"config": map[string]any{"maxLogStreams": 100001}}, "maxLogStreams"},
	} {
		args := append([]string{"template", "staging", chartDir}, helmValues(t, merge(baseValues(), tc.values))...)
		if tc.want == "image.repository is empty: the chart ships no images" {
			args = append([]string{"template", "staging", chartDir}, helmValues(t, noImages)...)
		}
		_, err := tryRun(root, tool(t, "helm"), args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want an error containing %q, got %v", tc.values, tc.want, err)
		}
	}
}

// TestChartTriggerNames: Eventing names a Trigger's OIDC identity after the
// Trigger and shortens it with a hash beyond 63 characters, which the chart
// could not compute; so the chart's Trigger names stay within 29: a short
// fullname keeps them readable, a long one gets a hash of its own. Either
// way EVENT_SENDERS names the identities Eventing makes.
func TestChartTriggerNames(t *testing.T) {
	for _, full := range []string{"skao-staging-service", "a-rather-long-release-of-the-staging-service"} {
		values := merge(baseValues(), map[string]any{"fullnameOverride": full, "knative": map[string]any{"enabled": true},
			"config": map[string]any{"events": map[string]any{"auth": "oidc"}}})
		objs := decodeAll(t, full, renderChart(t, values))
		prefix := strings.TrimSuffix(full[:min(len(full), 40)], "-")
		name := func(f string) string { return prefix + "-" + f }
		checkEventAuth(t, full, objs, name, "staging")
		triggers := byKind(objs, "eventing.knative.dev/v1", "Trigger")
		if len(triggers) != 4 {
			t.Fatalf("%s: %d Triggers", full, len(triggers))
		}
		for _, o := range triggers {
			if len(o.Name) > 29 || (len(full) <= 20 && !strings.HasPrefix(o.Name, full+"-")) {
				t.Errorf("%s: Trigger %s", full, o.Name)
			}
		}
	}
}
