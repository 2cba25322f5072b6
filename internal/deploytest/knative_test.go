package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// scriptSecret is one `create NAME key=value ...` line of
// tools/knative-secrets.sh.
var scriptSecret = regexp.MustCompile(`(?m)^create ([a-z0-9-]+) (.*)$`)

// scriptKey is one key=value argument of such a line (the value may be a
// shell expansion such as a random password).
var scriptKey = regexp.MustCompile(`(?:^|\s)"?([a-z][a-z-]*)=("?\$\([^)]*\)|\S*)`)

// knativeSecrets are the Secrets tools/knative-secrets.sh creates (make
// deploy runs it): config/knative ships none, so no password is committed.
func knativeSecrets(t *testing.T) []object {
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "tools", "knative-secrets.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var out []object
	for _, m := range scriptSecret.FindAllStringSubmatch(string(src), -1) {
		s := &corev1.Secret{StringData: map[string]string{}}
		s.Name, s.Namespace = m[1], "skao-staging"
		for _, kv := range scriptKey.FindAllStringSubmatch(m[2], -1) {
			s.StringData[kv[1]] = kv[2]
		}
		out = append(out, object{APIVersion: "v1", Kind: "Secret", Namespace: s.Namespace, Name: s.Name, Typed: s, Meta: &s.ObjectMeta})
	}
	if len(out) != 3 {
		t.Fatalf("tools/knative-secrets.sh creates %d Secrets, want staging-mysql, staging-jupyterhub and staging-events", len(out))
	}
	return out
}

// deployOverlay builds what `make deploy` applies: config/knative through
// the overlay tools/knative-overlay.sh writes from image references.
func deployOverlay(t *testing.T) []object {
	dir := writeDeployOverlay(t)
	return decodeAll(t, "the deploy overlay", run(t, dir, "kustomize", "build", "--load-restrictor", "LoadRestrictionsNone", "."))
}

// writeDeployOverlay writes the overlay `make deploy` builds, for made-up
// image references, into a new folder and returns the folder.
func writeDeployOverlay(t *testing.T) string {
	dir := t.TempDir()
	refs := filepath.Join(dir, "images.txt")
	var b strings.Builder
	for i, f := range functionNames {
		fmt.Fprintf(&b, "registry.example.org:5000/skao/%s:latest@sha256:%064x\n", f, i+1)
	}
	if err := os.WriteFile(refs, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, repoRoot(t), "make", "--no-print-directory", "-s", "deploy-overlay", "DEPLOY_DIR="+dir, "IMAGE_REFS="+refs)
	return dir
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

	// As shipped, the functions' images are placeholders that Knative's own
	// validation refuses, naming them: applied alone it fails loudly.
	shipped := decodeAll(t, "kustomize build config/knative", run(t, root, "kustomize", "build", "config/knative"))
	for _, o := range byKind(shipped, "serving.knative.dev/v1", "Service") {
		svc := o.Typed.(*servingv1.Service)
		if svc.Name == "dead-letters" {
			continue
		}
		ctx := knativeContext()
		svc.SetDefaults(ctx)
		if err := svc.Validate(ctx); err == nil || !strings.Contains(err.Error(), "IMAGE-SET-BY-MAKE-DEPLOY/"+svc.Name) {
			t.Errorf("config/knative as shipped: Knative should refuse %s's placeholder image; got %v", svc.Name, err)
		}
	}
	for _, o := range byKind(shipped, "v1", "Secret") {
		t.Errorf("config/knative ships Secret %s: passwords are made by tools/knative-secrets.sh, never committed", o.Name)
	}

	objs := append(deployOverlay(t), knativeSecrets(t)...)
	name := func(f string) string { return f }
	checkReferences(t, "config/knative", objs)
	validateKnative(t, "config/knative", objs)
	checkKnativeServices(t, "config/knative", objs, name)
	checkFunctionWorkloads(t, "config/knative", objs, name)
	checkEventing(t, "config/knative", objs, name)
	checkEnvironment(t, "config/knative", objs, name)
	checkMySQL(t, "config/knative", objs)
	checkRoute(t, "config/knative", objs, func(f string) string { return f + ".skao-staging.svc.cluster.local" })
	checkNetworkPolicy(t, "config/knative", objs, name)
	checkEventAuth(t, "config/knative", objs, name, "skao-staging")
	checkLogStreams(t, "config/knative", objs, name)
	for _, o := range objs {
		if o.Namespace == "" && o.Kind != "Namespace" {
			t.Errorf("%s has no namespace", o)
		}
	}
	ns, ok := find(objs, "v1", "Namespace", "skao-staging")
	if !ok || ns.Meta.Labels["bindings.knative.dev/include"] != "true" {
		t.Error("the namespace must opt in to SinkBinding (bindings.knative.dev/include)")
	}
	if ns.Meta.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Error("the namespace should enforce the restricted Pod Security Standard, which every pod in it meets")
	}
	sa, ok := find(objs, "v1", "ServiceAccount", "staging")
	if !ok || sa.Typed.(*corev1.ServiceAccount).AutomountServiceAccountToken == nil || *sa.Typed.(*corev1.ServiceAccount).AutomountServiceAccountToken {
		t.Error("no ServiceAccount staging without a token")
	}
}

// withComponent builds config/knative with one of its components, over
// base (a directory holding a kustomization, such as the deploy overlay).
func withComponent(t *testing.T, base, component string) []object {
	root := repoRoot(t)
	overlay := t.TempDir()
	rel, _ := filepath.Rel(overlay, base)
	comp, _ := filepath.Rel(overlay, filepath.Join(root, "config", "knative", component))
	kz := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [%s]\ncomponents: [%s]\n", rel, comp)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kz), 0o644); err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, "config/knative with "+component, run(t, overlay, "kustomize", "build", "--load-restrictor", "LoadRestrictionsNone", "."))
}

func TestConfigKnativeTLS(t *testing.T) {
	objs := withComponent(t, filepath.Join(repoRoot(t), "config", "knative"), "tls")
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

// TestReadmeKnativeFeatures: the README's config-features command turns on
// every feature flag the Knative Services need (the tests validate with
// exactly these, and the cluster test patches them in).
func TestReadmeKnativeFeatures(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(readme), "kubectl patch configmap/config-features")
	if i < 0 {
		t.Fatal("README.md has no `kubectl patch configmap/config-features` command")
	}
	cmd := string(readme[i:])
	cmd = cmd[:strings.Index(cmd, "}'")]
	for _, f := range knativeFeatures {
		if !strings.Contains(cmd, `"`+f+`":"enabled"`) {
			t.Errorf("README.md's config-features command does not enable %s", f)
		}
	}
}

// TestConfigKnativeOIDC builds what `make deploy` applies with the oidc
// component (Knative Eventing's sender identity) and checks it as the base:
// Knative's validation, references, the workloads, and who may send events.
func TestConfigKnativeOIDC(t *testing.T) {
	dir := writeDeployOverlay(t)
	objs := append(withComponent(t, dir, "oidc"), knativeSecrets(t)...)
	name := func(f string) string { return f }
	checkReferences(t, "config/knative with oidc", objs)
	validateKnative(t, "config/knative with oidc", objs)
	checkKnativeServices(t, "config/knative with oidc", objs, name)
	checkFunctionWorkloads(t, "config/knative with oidc", objs, name)
	checkEventing(t, "config/knative with oidc", objs, name)
	checkEnvironment(t, "config/knative with oidc", objs, name)
	checkEventAuth(t, "config/knative with oidc", objs, name, "skao-staging")
	for _, f := range []string{"stage", "jupyter"} {
		for _, v := range functionSpec(objs, f).Volumes {
			if v.Secret != nil {
				t.Errorf("%s still mounts Secret %s: the events secret is not used with oidc", f, v.Secret.SecretName)
			}
		}
	}
	if n := len(byKind(objs, "eventing.knative.dev/v1alpha1", "EventPolicy")); n != 3 {
		t.Errorf("%d EventPolicies, want the functions', the Triggers' replies and the Rucio bridge's", n)
	}
}
