//go:build cluster

package clustertest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"github.com/ska-telescope/skao-staging-service/lib/eventauth"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// startNode runs a node on this machine: Debian's containerd (runc, the CNI
// bridge plugin) with the images' registry, the kubelet and the scheduler
// built from tools/kube. The node is named node-1, where the chart's local
// storage is pinned.
func startNode(t *testing.T, c *cluster, img *images) {
	dir := filepath.Join(c.dir, "node")
	sock := filepath.Join(dir, "containerd.sock")
	hosts := filepath.Join(dir, "certs.d", img.registry)
	must(t, os.MkdirAll(hosts, 0o755))
	must(t, os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(fmt.Sprintf(
		"server = \"http://%[1]s\"\n\n[host.\"http://%[1]s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", img.registry)), 0o644))
	cni := filepath.Join(dir, "cni")
	must(t, os.MkdirAll(cni, 0o755))
	// A bridge of the test's own (removed at the end); no masquerading, so
	// no iptables: the pods reach this machine's address directly.
	must(t, os.WriteFile(filepath.Join(cni, "10-clustertest.conflist"), []byte(fmt.Sprintf(`{
  "cniVersion": "0.4.0", "name": "clustertest",
  "plugins": [{"type": "bridge", "bridge": "ctbr0", "isGateway": true, "ipMasq": false,
    "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]
}`, filepath.Join(dir, "ipam"))), 0o644))
	// containerd's shims keep their sockets in /run/containerd, and the CNI
	// plugins their cache in /var/lib/cni, whatever the configuration:
	// removed at the end if this test made them.
	// So do the kubelet's device plugins and container log links, and the
	// pods' cgroups (kubepods in each hierarchy).
	for _, d := range []string{"/run/containerd", "/var/lib/cni", "/var/lib/kubelet", "/var/log/containers"} {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			t.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	t.Cleanup(func() {
		cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
		for _, cg := range cgroups {
			var dirs []string
			filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				os.Remove(dirs[i]) // cgroup folders go with rmdir once empty
			}
		}
	})
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "delete", "ctbr0").CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find") {
			t.Errorf("removing the bridge ctbr0: %v %s", err, out)
		}
	})
	config := filepath.Join(dir, "containerd.toml")
	must(t, os.WriteFile(config, []byte(fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # The test runs without CAP_SYS_RESOURCE here (it may not lower
  # oom_score_adj, as the kubelet asks for its pods): keep it where it is.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, filepath.Join(dir, "containerd"), filepath.Join(dir, "containerd-state"), sock, img.named["pause"], filepath.Join(dir, "runc"), cni, filepath.Join(dir, "certs.d"))), 0o644))
	ctrd := c.start(t, "containerd", binary(t, "containerd"), []string{"--config", config})
	c.eventually(t, "containerd's socket", 30*time.Second, func() error { _, err := os.Stat(sock); return err })
	// Containers outlive containerd (their shims): stop them first.
	t.Cleanup(func() { stopContainers(t, c, sock, ctrd) })

	c.start(t, "kube-scheduler", binary(t, "kube-scheduler"), []string{"--kubeconfig=" + c.kubeconfig,
		"--leader-elect=false", fmt.Sprintf("--secure-port=%d", freePort(t)), "--bind-address=127.0.0.1"})

	kubeletConfig := filepath.Join(dir, "kubelet.yaml")
	must(t, os.WriteFile(kubeletConfig, []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
failSwapOn: false
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
resolvConf: /etc/resolv.conf
podLogsDir: %s
serializeImagePulls: false
evictionHard: {memory.available: 50Mi, nodefs.available: 1%%, imagefs.available: 1%%}
`, sock, hostIP(t), freePort(t), freePort(t), filepath.Join(dir, "pod-logs"))), 0o644))
	c.start(t, "kubelet", binary(t, "kubelet"), []string{"--kubeconfig=" + c.kubeconfig, "--config=" + kubeletConfig,
		"--hostname-override=node-1", "--node-ip=" + hostIP(t), "--root-dir=" + filepath.Join(dir, "kubelet"),
		"--cert-dir=" + filepath.Join(dir, "kubelet-pki")})
	c.eventually(t, "node node-1 Ready", 120*time.Second, func() error {
		var n corev1.Node
		out, err := c.run(c.dir, c.kubectl, "get", "node", "node-1", "-o", "json")
		if err != nil {
			return err
		}
		must(t, json.Unmarshal(out, &n))
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", n.Status.Conditions)
	})
}

// stopContainers stops every pod's containers before the kubelet and
// containerd stop: their shims would keep them running after the test.
func stopContainers(t *testing.T, c *cluster, sock string, ctrd *process) {
	ctr := func(args ...string) string {
		out, _ := exec.Command("ctr", append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
		return string(out)
	}
	for _, id := range strings.Fields(ctr("tasks", "list", "--quiet")) {
		ctr("tasks", "kill", "--signal", "SIGKILL", id)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && strings.TrimSpace(ctr("tasks", "list", "--quiet")) != "" {
		for _, id := range strings.Fields(ctr("tasks", "list", "--quiet")) {
			ctr("tasks", "delete", "--force", id)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if left := strings.TrimSpace(ctr("tasks", "list", "--quiet")); left != "" {
		t.Errorf("containers left running: %s", left)
	}
	// What containerd and the kubelet mounted under the test's folder.
	data, _ := os.ReadFile("/proc/self/mountinfo")
	lines := strings.Split(string(data), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) > 4 && strings.HasPrefix(f[4], c.dir) {
			syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
}

// startMariaDB runs Debian's MariaDB on this machine's address (the pods
// reach it there: no Service routing without kube-proxy), with a database
// and a user for the functions, and returns DATABASE_URL.
func startMariaDB(t *testing.T, c *cluster) string {
	dir := filepath.Join(c.dir, "mariadb")
	must(t, os.MkdirAll(dir, 0o755))
	if out, err := exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+filepath.Join(dir, "data"),
		"--auth-root-authentication-method=normal", "--user=root").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	ip, port, sock := hostIP(t), freePort(t), filepath.Join(dir, "sock")
	c.start(t, "mariadb", "mariadbd", []string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data"), "--socket=" + sock,
		fmt.Sprintf("--port=%d", port), "--bind-address=" + ip, "--user=root"})
	sql := "CREATE DATABASE staging; CREATE USER 'staging'@'%' IDENTIFIED BY 'pods-password'; GRANT ALL ON staging.* TO 'staging'@'%';"
	c.eventually(t, "MariaDB", 60*time.Second, func() error {
		out, err := exec.Command("mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e", sql).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	return fmt.Sprintf("mysql://staging:pods-password@%s:%d/staging", ip, port)
}

// waitRunning waits until pods matching selector run and are Ready (their
// readiness probes answered for real), and returns them.
func waitRunning(t *testing.T, c *cluster, ns, selector string, timeout time.Duration) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	c.eventually(t, "pods "+ns+"/"+selector+" running and ready", timeout, func() error {
		out, err := c.run(c.dir, c.kubectl, "-n", ns, "get", "pods", "-l", selector, "-o", "json")
		if err != nil {
			return err
		}
		must(t, json.Unmarshal(out, &pods))
		if len(pods.Items) == 0 {
			return fmt.Errorf("no pods")
		}
		for _, p := range pods.Items {
			ready := false
			for _, cond := range p.Status.Conditions {
				ready = ready || (cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue)
			}
			if !ready {
				return fmt.Errorf("%s: %s %+v", p.Name, p.Status.Phase, p.Status.ContainerStatuses)
			}
		}
		return nil
	})
	return pods.Items
}

// stageAt asks a function at addr (a pod's address) to local_copy a file.
func stageAt(t *testing.T, addr, source, target string) {
	t.Helper()
	body := fmt.Sprintf(`{"data":{"local_path_on_storage":%q,"relative_path":%q}}`, source, target)
	resp, err := http.Post("http://"+addr+"/stage_data?method=local_copy&username=alice", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("local_copy through %s: %d %s", addr, resp.StatusCode, b)
	}
}

// eventAt sends the function at addr (a pod's address) an
// org.skao.staging.request for a local_copy, as a Trigger delivers it,
// signed with secret unless it is nil, and returns the answer's status.
func eventAt(t *testing.T, addr string, secret []byte, id, source, target string) int {
	t.Helper()
	ev := cetest.RequestEvent(t, id, staging.Request{Method: "local_copy", Username: "alice", Source: source, Target: target})
	ev.SetTime(time.Now())
	if secret != nil {
		must(t, eventauth.Sign(&ev, secret))
	}
	status, _, _ := cetest.SendEvent(t, "http://"+addr+"/", ev, false)
	return status
}

// checkEventDoor checks that a function's events door (POST /) takes only
// events signed with the secret the deployment generated and mounted
// (EVENT_AUTH=hmac): an unsigned one gets 401 and stages nothing, a signed
// one is staged.
func checkEventDoor(t *testing.T, c *cluster, ns, secretName, addr, storage, dir string) {
	t.Helper()
	secret := secretValue(c, ns, secretName, "hmac-secret")
	if len(secret) < eventauth.MinSecretBytes {
		t.Fatalf("Secret %s/%s: %d bytes", ns, secretName, len(secret))
	}
	if status := eventAt(t, addr, nil, dir+"-unsigned", "vis.dat", dir+"/unsigned.dat"); status != http.StatusUnauthorized {
		t.Errorf("an unsigned event: %d, want 401", status)
	}
	if _, err := os.Stat(filepath.Join(storage, "user_areas", "alice", dir, "unsigned.dat")); err == nil {
		t.Errorf("an unsigned event was staged")
	}
	if status := eventAt(t, addr, []byte(secret), dir+"-signed", "vis.dat", dir+"/signed.dat"); status != http.StatusOK {
		t.Fatalf("an event signed with the deployment's secret: %d, want 200", status)
	}
	checkStaged(t, filepath.Join(storage, "user_areas", "alice", dir, "signed.dat"))
}

// checkStaged checks a file the function staged in a container: its
// owner, the shared group (the prepared area's setgid), the chart's mode.
func checkStaged(t *testing.T, path string) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	if st.Uid != 65532 || st.Gid != 100 || info.Mode().Perm() != 0o440 {
		t.Errorf("%s: uid %d gid %d mode %v, want 65532, 100, 0440", path, st.Uid, st.Gid, info.Mode())
	}
}

// testPods runs the chart's pods for real on a kubelet: in Deployment mode,
// and in Knative mode with Knative's queue-proxy in front of the function.
func testPods(t *testing.T, c *cluster) {
	img := buildImages(t, c)
	startNode(t, c, img)
	dbURL := startMariaDB(t, c)
	storage := filepath.Join(c.dir, "storage")
	must(t, os.MkdirAll(filepath.Join(storage, "source"), 0o755))
	must(t, os.WriteFile(filepath.Join(storage, "source", "vis.dat"), []byte("visibilities"), 0o644))
	values := []string{"--set", "mysql.enabled=false", "--set", "externalDatabase.url=" + dbURL,
		"--set", "storage.prepare.image=" + img.named["busybox"],
		"--set", "storage.source.local.node=node-1", "--set", "storage.source.local.hostPath=" + filepath.Join(storage, "source"),
		"--set", "storage.userArea.local.node=node-1", "--set", "storage.userArea.local.hostPath=" + filepath.Join(storage, "user_areas"),
		"--set", "replicaCount=1", "--set", "autoscaling.enabled=false", "--set", "ingress.enabled=false"}
	root := repoRoot(t)
	imgArgs, err := c.run(root, filepath.Join(root, "tools", "helm-image-args.sh"), img.refs)
	must(t, err)

	t.Run("deployments", func(t *testing.T) {
		namespace(t, c, "pods", "pod-security.kubernetes.io/enforce=baseline")
		args := append([]string{"upgrade", "--install", "pods", "charts/skao-staging-service", "--namespace", "pods"}, strings.Fields(string(imgArgs))...)
		if out, err := c.run(root, c.helm, append(args, values...)...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		c.kubectlOK(t, "-n", "pods", "wait", "--for=condition=complete", "--timeout=120s", "job", "-l", "app.kubernetes.io/component=storage")
		for _, f := range []string{"stage", "jupyter"} {
			waitRunning(t, c, "pods", "app.kubernetes.io/component="+f, 180*time.Second)
		}
		stage := waitRunning(t, c, "pods", "app.kubernetes.io/component=stage", time.Second)[0]
		stageAt(t, stage.Status.PodIP+":8080", "vis.dat", "deployment/vis.dat")
		checkStaged(t, filepath.Join(storage, "user_areas", "alice", "deployment", "vis.dat"))
		checkEventDoor(t, c, "pods", "pods-skao-staging-service-events", stage.Status.PodIP+":8080", storage, "deployment-events")
	})

	t.Run("knative", func(t *testing.T) {
		c.kubectlOK(t, "-n", "knative-serving", "patch", "configmap/config-deployment", "--type=merge",
			"-p", fmt.Sprintf(`{"data":{"queue-sidecar-image":%q}}`, img.named["queue"]))
		namespace(t, c, "pods-kn", "pod-security.kubernetes.io/enforce=baseline")
		args := append([]string{"upgrade", "--install", "kn", "charts/skao-staging-service", "--namespace", "pods-kn",
			"--set", "knative.enabled=true", "--set", "knative.eventing.enabled=false"}, strings.Fields(string(imgArgs))...)
		if out, err := c.run(root, c.helm, append(args, values...)...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		pods := waitRunning(t, c, "pods-kn", "serving.knative.dev/service=kn-skao-staging-service-stage", 180*time.Second)
		// Through queue-proxy (its port 8012), as Knative's activator and
		// gateways reach a revision.
		stageAt(t, pods[0].Status.PodIP+":8012", "vis.dat", "knative/vis.dat")
		checkStaged(t, filepath.Join(storage, "user_areas", "alice", "knative", "vis.dat"))
		checkEventDoor(t, c, "pods-kn", "kn-skao-staging-service-events", pods[0].Status.PodIP+":8012", storage, "knative-events")
	})
}
