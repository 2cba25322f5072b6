//go:build cluster

package clustertest

import (
	"testing"
	"time"
)

// TestCluster starts one control plane and installs the deployments on it,
// one subtest after the other (README.md, Development: make cluster-test).
func TestCluster(t *testing.T) {
	begin := time.Now()
	c := startControlPlane(t)
	t.Logf("control plane ready after %v", time.Since(begin).Round(time.Millisecond))
	installKnative(t, c)
	t.Logf("Knative Serving ready after %v", time.Since(begin).Round(time.Millisecond))

	t.Run("config/knative", func(t *testing.T) { testConfigKnative(t, c) })
	t.Run("helm knative", func(t *testing.T) { testHelmKnative(t, c) })
	t.Run("helm deployments", func(t *testing.T) { testHelmDeployments(t, c) })
	// Before a kubelet runs, the installs above go: their pods would be
	// scheduled onto it (and local storage's hostPath made on this machine).
	c.kubectlOK(t, "delete", "namespace", "skao-staging", "staging-kn", "staging", "--wait=true", "--timeout=120s")
	t.Logf("control-plane checks done after %v", time.Since(begin).Round(time.Millisecond))
	t.Run("pods on a kubelet", func(t *testing.T) { testPods(t, c) })
	t.Logf("done after %v", time.Since(begin).Round(time.Millisecond))
}
