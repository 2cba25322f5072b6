//go:build cluster

package clustertest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// imageRefs writes what `make images` (ko build --image-refs) records: one
// reference a line, tagged and pinned by digest. No registry serves these
// images: nothing pulls them without a kubelet, and a digest spares Knative
// the tag resolution.
func imageRefs(t *testing.T, c *cluster) string {
	var b strings.Builder
	for i, f := range []string{"stage", "logs", "jupyter"} {
		fmt.Fprintf(&b, "registry.example.org:5000/skao/%s:latest@%s\n", f, digestOf(i+1))
	}
	p := filepath.Join(c.dir, "images.txt")
	must(t, os.WriteFile(p, []byte(b.String()), 0o644))
	return p
}

func digestOf(n int) string { return fmt.Sprintf("sha256:%064x", n) }

// namespace makes a namespace with labels (the Pod Security level).
func namespace(t *testing.T, c *cluster, name string, labels ...string) {
	c.kubectlOK(t, "create", "namespace", name)
	if len(labels) > 0 {
		c.kubectlOK(t, append([]string{"label", "namespace", name}, labels...)...)
	}
}

// testConfigKnative installs config/knative as `make deploy` does.
func testConfigKnative(t *testing.T, c *cluster) {
	root := repoRoot(t)
	// The networking layer's namespace, where the route's ReferenceGrant goes.
	namespace(t, c, "kourier-system")

	// As shipped, the functions' images are placeholders Knative refuses.
	_, err := c.run(root, c.kubectl, "apply", "--server-side", "-k", "config/knative")
	if err == nil || !strings.Contains(err.Error(), "IMAGE-SET-BY-MAKE-DEPLOY") || !strings.Contains(err.Error(), "denied the request") {
		t.Fatalf("kubectl apply -k config/knative as shipped should be refused by Knative's webhook for its placeholder images; got %v", err)
	}

	// make deploy: the Secrets once, then the overlay with the digests.
	secrets := filepath.Join(root, "tools", "knative-secrets.sh")
	if _, err := c.run(root, secrets); err != nil {
		t.Fatal(err)
	}
	password := func() string {
		out := c.kubectlOK(t, "-n", "skao-staging", "get", "secret", "staging-mysql", "-o", "jsonpath={.data.password}")
		return string(out)
	}
	first := password()
	events := secretValue(c, "skao-staging", "staging-events", "hmac-secret")
	out, err := c.run(root, secrets)
	if err != nil || !strings.Contains(string(out), "kept") || password() != first || len(first) < 40 {
		t.Fatalf("a second run must keep the Secrets (MySQL keeps its first password): %v %s", err, out)
	}
	if again := secretValue(c, "skao-staging", "staging-events", "hmac-secret"); len(events) != 64 || again != events {
		t.Fatalf("the events secret: %d characters, then %d: want 32 random bytes in hex, kept (its senders sign with it)", len(events), len(again))
	}
	overlay := filepath.Join(c.dir, "deploy")
	if _, err := c.run(root, "make", "--no-print-directory", "-s", "deploy-overlay", "DEPLOY_DIR="+overlay, "IMAGE_REFS="+imageRefs(t, c)); err != nil {
		t.Fatal(err)
	}
	c.apply(t, "-k", overlay)

	var ns corev1.Namespace
	c.get(t, &ns, "namespace", "skao-staging")
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("skao-staging does not enforce the restricted Pod Security Standard: %v", ns.Labels)
	}
	fns := []fn{{"stage", "stage", 16, defaultPaths, "hmac", ""}, {"jupyter", "jupyter", 8, defaultPaths, "hmac", ""}, {"logs", "logs", 50, defaultPaths, "hmac", ""}}
	for _, f := range fns {
		checkDefaulted(t, c, "skao-staging", f)
		_, dep := waitRevisionDeployment(t, c, "skao-staging", f.object)
		checkPod(t, "config/knative Deployment", &dep.Spec.Template.Spec, f, true)
		pod := waitPods(t, c, "skao-staging", "serving.knative.dev/service="+f.object)
		checkPod(t, "config/knative pod", &pod.Spec, f, true)
	}
	waitRevisionDeployment(t, c, "skao-staging", "dead-letters")
	waitPods(t, c, "skao-staging", "serving.knative.dev/service=dead-letters")
	waitPods(t, c, "skao-staging", "app.kubernetes.io/name=mysql")
	for _, f := range []string{"stage", "jupyter", "logs", "dead-letters"} {
		checkClusterLocal(t, c, "skao-staging", f)
	}
	checkRoute(t, c, "skao-staging", "staging", map[string]string{"/logs": "0s", "/stage_data": "600s", "/": "600s"})
	checkEventing(t, c, "skao-staging", 4, "PT600S")
	checkTriggerAudiences(t, c, "skao-staging", map[string]string{"stage": "serving.knative.dev/service/skao-staging/stage",
		"jupyter": "eventing.knative.dev/broker/skao-staging/staging"})
	checkMySQLPolicy(t, c, "skao-staging", "mysql", labelled("app.kubernetes.io/name", "mysql"), knativeFunction("stage", "jupyter", "logs"))
}

// checkRoute checks that the HTTPRoute kept its timeouts (a Gateway API
// CRD without them would have pruned the field).
func checkRoute(t *testing.T, c *cluster, ns, name string, want map[string]string) {
	t.Helper()
	var route gatewayv1.HTTPRoute
	c.get(t, &route, "-n", ns, "httproute", name)
	got := map[string]string{}
	for _, r := range route.Spec.Rules {
		for _, m := range r.Matches {
			if m.Path != nil && m.Path.Value != nil && r.Timeouts != nil && r.Timeouts.Request != nil {
				got[*m.Path.Value] = string(*r.Timeouts.Request)
			}
		}
	}
	for path, timeout := range want {
		if got[path] != timeout {
			t.Errorf("HTTPRoute %s: the rule for %s has request timeout %q, want %q (all: %v)", name, path, got[path], timeout, got)
		}
	}
	// / is the page's for GET and HEAD only: POST / is the events door.
	for _, r := range route.Spec.Rules {
		for _, m := range r.Matches {
			if m.Path != nil && m.Path.Value != nil && *m.Path.Value == "/" && (m.Method == nil || (*m.Method != "GET" && *m.Method != "HEAD")) {
				t.Errorf("HTTPRoute %s: a match for / with method %v: only GET and HEAD may reach the page", name, m.Method)
			}
		}
	}
}

// checkEventing checks the Broker and Triggers as stored (after Eventing's
// CRD schemas pruned what they do not know): a config, delivery timeouts.
func checkEventing(t *testing.T, c *cluster, ns string, triggers int, timeout string) {
	t.Helper()
	type delivery struct {
		Timeout string `json:"timeout"`
		Retry   int    `json:"retry"`
	}
	var brokers struct {
		Items []struct {
			Spec struct {
				Config   map[string]string `json:"config"`
				Delivery delivery          `json:"delivery"`
			} `json:"spec"`
		} `json:"items"`
	}
	c.get(t, &brokers, "-n", ns, "brokers")
	if len(brokers.Items) != 1 || brokers.Items[0].Spec.Config["kind"] != "ConfigMap" || brokers.Items[0].Spec.Delivery.Timeout != timeout {
		t.Errorf("Broker in %s: %+v, want a config and delivery timeout %s", ns, brokers.Items, timeout)
	}
	var trs struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     struct {
				Delivery delivery `json:"delivery"`
			} `json:"spec"`
		} `json:"items"`
	}
	c.get(t, &trs, "-n", ns, "triggers")
	if len(trs.Items) != triggers {
		t.Errorf("%d Triggers in %s, want %d", len(trs.Items), ns, triggers)
	}
	for _, tr := range trs.Items {
		if tr.Spec.Delivery.Timeout != timeout || tr.Spec.Delivery.Retry < 1 {
			t.Errorf("Trigger %s: delivery %+v, want timeout %s", tr.Metadata.Name, tr.Spec.Delivery, timeout)
		}
	}
}

// helmInstall runs helm upgrade --install as `make helm-install` does, with
// the digests from tools/helm-image-args.sh.
func helmInstall(t *testing.T, c *cluster, release, ns string, args ...string) string {
	t.Helper()
	root := repoRoot(t)
	imgArgs, err := c.run(root, filepath.Join(root, "tools", "helm-image-args.sh"), imageRefs(t, c))
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{"upgrade", "--install", release, "charts/skao-staging-service", "--namespace", ns}, strings.Fields(string(imgArgs))...)
	out, err := c.run(root, c.helm, append(all, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// testHelmKnative installs the chart's Knative mode with NFS storage into
// a namespace that enforces the restricted Pod Security Standard.
func testHelmKnative(t *testing.T, c *cluster) {
	namespace(t, c, "staging-kn", "pod-security.kubernetes.io/enforce=restricted")
	out := helmInstall(t, c, "kn", "staging-kn", "--set", "knative.enabled=true",
		"--set", "config.events.auth=oidc", "--set", "knative.eventing.rucioSenders[0]=system:serviceaccount:rucio:transfer-events",
		"--set", "storage.source.type=nfs", "--set", "storage.source.local.enabled=false", "--set", "storage.source.nfs.enabled=true",
		"--set", "storage.userArea.type=nfs", "--set", "storage.userArea.local.enabled=false", "--set", "storage.userArea.nfs.enabled=true")
	for _, want := range []string{"kubernetes.podspec-securitycontext", "Events carry Knative Eventing's OIDC tokens", "authentication-oidc"} {
		if !strings.Contains(out, want) {
			t.Errorf("NOTES do not say %q:\n%s", want, out)
		}
	}
	prefix := "kn-skao-staging-service-"
	nfs := storagePaths{"/mnt/source-nfs", "/mnt/user-area-nfs"}
	broker := "eventing.knative.dev/broker/staging-kn/kn-skao-staging-service"
	for _, f := range []fn{{"stage", prefix + "stage", 16, nfs, "oidc", broker}, {"jupyter", prefix + "jupyter", 8, nfs, "oidc", broker}, {"logs", prefix + "logs", 50, nfs, "oidc", broker}} {
		checkDefaulted(t, c, "staging-kn", f)
		_, dep := waitRevisionDeployment(t, c, "staging-kn", f.object)
		checkPod(t, "chart (Knative) Deployment", &dep.Spec.Template.Spec, f, true)
		pod := waitPods(t, c, "staging-kn", "serving.knative.dev/service="+f.object)
		checkPod(t, "chart (Knative) pod", &pod.Spec, f, true)
	}
	waitPods(t, c, "staging-kn", "app.kubernetes.io/component=mysql")
	for _, f := range []string{"stage", "jupyter", "logs", "dead-letters"} {
		checkClusterLocal(t, c, "staging-kn", prefix+f)
	}
	checkRoute(t, c, "staging-kn", "kn-skao-staging-service", map[string]string{"/logs": "0s", "/": "600s"})
	checkEventing(t, c, "staging-kn", 4, "PT600S")
	checkTriggerAudiences(t, c, "staging-kn", map[string]string{prefix + "stage": "serving.knative.dev/service/staging-kn/" + prefix + "stage",
		prefix + "jupyter": broker})
	checkEventPolicies(t, c, "staging-kn", "kn-skao-staging-service", 3)
	checkMySQLPolicy(t, c, "staging-kn", prefix+"mysql", labelled("app.kubernetes.io/component", "mysql"),
		knativeFunction(prefix+"stage", prefix+"jupyter", prefix+"logs"))
	var cm corev1.ConfigMap
	c.get(t, &cm, "-n", "staging-kn", "configmap", prefix+"broker")
	if !strings.Contains(cm.Data["channel-template-spec"], "kind: KafkaChannel") {
		t.Errorf("the broker's channel is not a KafkaChannel: %v", cm.Data)
	}
}

// testHelmDeployments installs the chart's default mode (Deployments, local
// storage on one node with its preparing Job) into a namespace at the
// baseline level (for that Job), checks the function pods against the
// restricted level, and upgrades, uninstalls and reinstalls it.
func testHelmDeployments(t *testing.T, c *cluster) {
	const ns, release, prefix = "staging", "staging", "staging-skao-staging-service-"
	namespace(t, c, ns, "pod-security.kubernetes.io/enforce=baseline")
	namespace(t, c, "restricted-check", "pod-security.kubernetes.io/enforce=restricted")
	nodes := []string{"--set", "storage.source.local.node=node-1", "--set", "storage.userArea.local.node=node-1"}
	notes := helmInstall(t, c, release, ns, nodes...)
	for _, want := range []string{"http://staging-service.local/", "storage.userArea is a folder on the node node-1", "gives the user area to group 100",
		"Events carry an HMAC (EVENT_AUTH=hmac) with the secret in the Secret " + prefix + "events"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES do not say %q:\n%s", want, notes)
		}
	}
	// A tag without a digest installs, with a warning.
	out, err := c.run(repoRoot(t), c.helm, append([]string{"install", "tagged", "charts/skao-staging-service", "--namespace", ns, "--dry-run=server",
		"--set", "image.repository=registry.example.org/skao/stage", "--set", "image.tag=v1",
		"--set", "functions.logs.image.digest=" + digestOf(2), "--set", "functions.jupyter.image.digest=" + digestOf(3)}, nodes...)...)
	if err != nil || !strings.Contains(string(out), "the stage function's image (registry.example.org/skao/stage:v1) has no digest") {
		t.Errorf("a tag without a digest: %v\n%s", err, out)
	}

	for _, f := range []fn{{"stage", prefix + "stage", 0, defaultPaths, "hmac", ""}, {"jupyter", prefix + "jupyter", 0, defaultPaths, "hmac", ""}, {"logs", prefix + "logs", 0, defaultPaths, "hmac", ""}} {
		var dep appsv1.Deployment
		c.get(t, &dep, "-n", ns, "deployment", f.object)
		checkPod(t, "chart Deployment", &dep.Spec.Template.Spec, f, false)
		pod := waitPods(t, c, ns, "app.kubernetes.io/component="+f.name)
		checkPod(t, "chart pod", &pod.Spec, f, false)
		restricted(t, c, "the "+f.name+" function's pod", pod.Spec)
	}
	mysql := waitPods(t, c, ns, "app.kubernetes.io/component=mysql")
	restricted(t, c, "MySQL's pod", mysql.Spec)
	waitPods(t, c, ns, "app.kubernetes.io/component=prepare-storage")
	checkMySQLPolicy(t, c, ns, prefix+"mysql", labelled("app.kubernetes.io/component", "mysql"), labelled("app.kubernetes.io/component", "stage", "jupyter", "logs"))
	for _, claim := range []string{prefix + "source-local", prefix + "user-area-local"} {
		c.eventually(t, "claim "+claim+" bound", 60*time.Second, func() error {
			out, _ := c.run(c.dir, c.kubectl, "-n", ns, "get", "pvc", claim, "-o", "jsonpath={.status.phase}")
			if string(out) != "Bound" {
				return fmt.Errorf("phase %q", out)
			}
			return nil
		})
	}

	// The HPA owns the replicas: an upgrade must not reset what it set.
	// A changed Secret rolls the pods that read it.
	c.kubectlOK(t, "-n", ns, "scale", "deployment", prefix+"stage", "--replicas=3")
	var stage, jupyter appsv1.Deployment
	c.get(t, &jupyter, "-n", ns, "deployment", prefix+"jupyter")
	sum := jupyter.Spec.Template.Annotations["checksum/secrets"]
	helmInstall(t, c, release, ns, append(nodes, "--set", "jupyterhub.token=changed")...)
	c.get(t, &stage, "-n", ns, "deployment", prefix+"stage")
	if stage.Spec.Replicas == nil || *stage.Spec.Replicas != 3 {
		t.Errorf("helm upgrade reset the stage function's replicas to %v (the HPA had 3)", stage.Spec.Replicas)
	}
	c.get(t, &jupyter, "-n", ns, "deployment", prefix+"jupyter")
	if now := jupyter.Spec.Template.Annotations["checksum/secrets"]; now == sum || sum == "" {
		t.Errorf("the jupyter function's pods do not roll when its token changes (checksum/secrets %q, then %q)", sum, now)
	}

	// The generated MySQL password outlives the release.
	password := func() string {
		out, err := c.run(c.dir, c.kubectl, "-n", ns, "get", "secret", prefix+"mysql", "-o", "jsonpath={.data.password}")
		if err != nil {
			return ""
		}
		return string(out)
	}
	before := password()
	events := secretValue(c, ns, prefix+"events", "hmac-secret")
	if len(events) < 32 {
		t.Fatalf("the events secret has %d characters", len(events))
	}
	if _, err := c.run(repoRoot(t), c.helm, "uninstall", release, "--namespace", ns, "--wait"); err != nil {
		t.Fatal(err)
	}
	if password() != before || before == "" {
		t.Fatalf("helm uninstall removed the MySQL Secret: the kept data directory would refuse a new password")
	}
	if secretValue(c, ns, prefix+"events", "hmac-secret") != events {
		t.Fatalf("helm uninstall removed the events secret: its senders would sign with one the functions no longer have")
	}
	helmInstall(t, c, release, ns, nodes...)
	if after := password(); after != before {
		t.Errorf("a reinstall changed the MySQL password")
	}
	if secretValue(c, ns, prefix+"events", "hmac-secret") != events {
		t.Errorf("a reinstall changed the events secret")
	}
}

// restricted asks the API server whether a pod with spec may run in a
// namespace that enforces the restricted Pod Security Standard. The pod
// uses that namespace's default ServiceAccount: admission stops at a
// missing one before the Pod Security check.
func restricted(t *testing.T, c *cluster, what string, podSpec corev1.PodSpec) {
	t.Helper()
	spec := podSpec.DeepCopy()
	spec.NodeName = ""
	spec.ServiceAccountName, spec.DeprecatedServiceAccount = "", ""
	pod := map[string]any{"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "check", "namespace": "restricted-check"}, "spec": spec}
	data, _ := json.Marshal(pod)
	f := filepath.Join(c.dir, "restricted-pod.json")
	must(t, os.WriteFile(f, data, 0o644))
	c.eventually(t, what+" admitted where the restricted Pod Security Standard is enforced", 30*time.Second, func() error {
		_, err := c.run(c.dir, c.kubectl, "create", "--dry-run=server", "-f", f)
		if err != nil && strings.Contains(err.Error(), "PodSecurity") {
			t.Fatalf("%s does not meet the restricted Pod Security Standard: %v", what, err)
		}
		return err // e.g. the namespace's default ServiceAccount not made yet
	})
}
