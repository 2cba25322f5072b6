//go:build cluster

package clustertest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// moduleDir is where a module of tools/knative's build list lives in the
// module cache (downloaded if missing), for its CRDs and config.
func moduleDir(t testing.TB, module string) string {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = filepath.Join(repoRoot(t), "tools", "knative")
	out, err := cmd.Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		t.Fatalf("go list -m %s in tools/knative: %v", module, err)
	}
	return strings.TrimSpace(string(out))
}

// gatewayAPIDir is the Gateway API release whose standard channel has the
// HTTPRoute rule timeouts the routes set (v1.2 and later; Envoy Gateway
// installs its own copy).
func gatewayAPIDir(t testing.TB) string {
	cmd := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/gateway-api@v1.3.0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download sigs.k8s.io/gateway-api@v1.3.0: %v", err)
	}
	var m struct{ Dir string }
	must(t, json.Unmarshal(out, &m))
	return m.Dir
}

// knativeFeatures are the Knative Serving feature flags README.md tells
// operators to turn on (config-features); the README is checked for them.
var knativeFeatures = []string{
	"kubernetes.podspec-persistent-volume-claim",
	"kubernetes.podspec-persistent-volume-write",
	"kubernetes.podspec-securitycontext",
	"kubernetes.podspec-topologyspreadconstraints",
}

// queueImage stands for Knative's queue-proxy image (config-deployment):
// no image is pulled without a kubelet, but the controller puts this
// reference into every revision's pods.
const queueImage = "ko.local/knative.dev/serving/cmd/queue:v0.42.2"

// externalDomain is Knative's domain for Services it publishes (config-domain).
const externalDomain = "staging.example.org"

// installKnative installs Knative Serving as its release does (CRDs,
// namespace, ConfigMaps, webhook configurations), starts its webhook and
// controller from tools/knative, and the CRDs of Eventing and the Gateway API.
func installKnative(t *testing.T, c *cluster) {
	serving := moduleDir(t, "knative.dev/serving")
	networking := moduleDir(t, "knative.dev/networking")
	caching := moduleDir(t, "knative.dev/caching")
	gw := gatewayAPIDir(t)

	crds := []string{filepath.Join(serving, "config/core/300-resources"),
		filepath.Join(networking, "config/certificate.yaml"), filepath.Join(networking, "config/domain-claim.yaml"),
		filepath.Join(networking, "config/ingress.yaml"), filepath.Join(networking, "config/serverlessservice.yaml"),
		filepath.Join(caching, "config/image.yaml"),
		filepath.Join(repoRoot(t), "internal/clustertest/testdata/knative-eventing-crds"),
		filepath.Join(gw, "config/crd/standard")}
	for _, f := range crds {
		c.apply(t, "-f", f)
	}
	c.kubectlOK(t, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

	c.apply(t, "-f", filepath.Join(serving, "config/core/100-namespace.yaml"))
	c.apply(t, "-f", filepath.Join(serving, "config/core/configmaps"))
	c.apply(t, "-f", filepath.Join(networking, "config/config-network.yaml"))
	c.apply(t, "-f", filepath.Join(serving, "config/core/webhooks"))

	// The webhook's Service, and an EndpointSlice that sends it to the
	// webhook process on this machine (no kubelet runs its pod).
	ip, port := hostIP(t), freePort(t)
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: webhook, namespace: knative-serving}
spec:
  ports: [{name: https-webhook, port: 443, targetPort: %[2]d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: webhook-local
  namespace: knative-serving
  labels: {kubernetes.io/service-name: webhook}
addressType: IPv4
ports: [{name: https-webhook, port: %[2]d, protocol: TCP}]
endpoints: [{addresses: [%[1]q], conditions: {ready: true}}]
`, ip, port)
	f := filepath.Join(c.dir, "webhook-endpoint.yaml")
	must(t, os.WriteFile(f, []byte(manifest), 0o644))
	c.apply(t, "-f", f)

	env := []string{"KUBECONFIG=" + c.kubeconfig, "SYSTEM_NAMESPACE=knative-serving",
		"CONFIG_LOGGING_NAME=config-logging", "CONFIG_OBSERVABILITY_NAME=config-observability",
		"METRICS_DOMAIN=knative.dev/internal/serving", "PROFILING_PORT=0"}
	// Metrics off: the webhook and the controller would both listen on 9090.
	c.kubectlOK(t, "-n", "knative-serving", "patch", "configmap/config-observability", "--type=merge",
		"-p", `{"data":{"metrics.backend-destination":"none"}}`)
	c.start(t, "knative-webhook", binary(t, "webhook"), nil,
		append(env, "POD_NAME=webhook-local", "WEBHOOK_NAME=webhook", fmt.Sprintf("WEBHOOK_PORT=%d", port))...)

	// Ready when it has registered itself and defaults a Service: a dry-run
	// Service comes back with Knative's default timeout filled in.
	probe := filepath.Join(c.dir, "probe-ksvc.yaml")
	must(t, os.WriteFile(probe, []byte(`apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: probe, namespace: default}
spec:
  template:
    spec:
      containers: [{image: "example.org/probe@sha256:`+strings.Repeat("0", 64)+`"}]
`), 0o644))
	c.eventually(t, "Knative's webhook defaults a Service", 90*time.Second, func() error {
		out, err := c.run(c.dir, c.kubectl, "create", "--dry-run=server", "-o", "jsonpath={.spec.template.spec.timeoutSeconds}", "-f", probe)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(out)) != "300" {
			return fmt.Errorf("timeoutSeconds %q, want Knative's default 300", out)
		}
		return nil
	})

	// The settings an operator changes, through the webhook's validation of
	// Knative's ConfigMaps: README.md's feature flags; the queue-proxy
	// image; no tag resolution for gcr.io (the dead-letter sink's image:
	// no registry is reachable here, and resolution blocks a revision).
	features := map[string]string{}
	for _, f := range knativeFeatures {
		features[f] = "enabled"
	}
	patch, _ := json.Marshal(map[string]any{"data": features})
	c.kubectlOK(t, "-n", "knative-serving", "patch", "configmap/config-features", "--type=merge", "-p", string(patch))
	c.kubectlOK(t, "-n", "knative-serving", "patch", "configmap/config-deployment", "--type=merge",
		"-p", fmt.Sprintf(`{"data":{"queue-sidecar-image":%q,"registries-skipping-tag-resolving":"kind.local,ko.local,dev.local,gcr.io"}}`, queueImage))
	// An external domain, as a site has: without one Knative gives every
	// Service a URL in svc.cluster.local, and a Service it publishes could
	// not be told from a cluster-local one (checkClusterLocal).
	c.kubectlOK(t, "-n", "knative-serving", "patch", "configmap/config-domain", "--type=merge",
		"-p", `{"data":{"`+externalDomain+`":""}}`)

	c.start(t, "knative-controller", binary(t, "controller"), nil, append(env, "POD_NAME=controller-local")...)
}
