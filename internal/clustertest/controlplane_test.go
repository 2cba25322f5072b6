//go:build cluster

package clustertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// repoRoot is the repository's top directory.
func repoRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// binary finds a program `make cluster-test` built into ./bin/cluster or
// ./bin, or one on PATH (etcd). A missing one fails: never skipped.
func binary(t testing.TB, name string) string {
	for _, dir := range []string{"bin/cluster", "bin"} {
		p := filepath.Join(repoRoot(t), dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s is not installed: run `make cluster-test` (scripts/install-cluster-deps.sh)", name)
	return ""
}

// freePort asks the kernel for a free loopback port, never the same twice
// in one run (two components are given ports before either listens).
func freePort(t testing.TB) int {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !givenPorts[port] {
			givenPorts[port] = true
			return port
		}
	}
}

var givenPorts = map[int]bool{}

// hostIP is this machine's first non-loopback IPv4 address. Kubernetes
// refuses loopback addresses in EndpointSlices, and the API server reaches
// Knative's webhook through one (README.md, Development).
func hostIP(t testing.TB) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatal("no non-loopback IPv4 address on this machine: the API server cannot reach Knative's webhook")
	return ""
}

// process is one component the test started; its output goes to a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

// start runs a component until the test ends (SIGTERM, then SIGKILL).
func (c *cluster) start(t testing.TB, name, path string, args []string, env ...string) *process {
	t.Helper()
	log := filepath.Join(c.dir, name+".log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: log, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	c.procs = append(c.procs, p)
	return p
}

// tail is the end of a component's log, for failure messages.
func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// cluster is the control plane of one test run.
type cluster struct {
	dir        string // logs, certificates, etcd's data, kubeconfig
	kubeconfig string
	kubectl    string
	helm       string
	apiURL     string
	procs      []*process
}

// checkAlive fails the test if a component has exited.
func (c *cluster) checkAlive(t testing.TB) {
	t.Helper()
	for _, p := range c.procs {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited (%v):\n%s", p.name, err, p.tail())
		default:
		}
	}
}

// run runs kubectl, helm or a repository script against the cluster and
// returns its standard output, or an error with its standard error.
func (c *cluster) run(dir, path string, args ...string) ([]byte, error) {
	return c.runEnv(dir, nil, path, args...)
}

// runEnv is run with more environment variables.
func (c *cluster) runEnv(dir string, env []string, path string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig, "KUBECTL="+c.kubectl,
		"HELM_CACHE_HOME="+filepath.Join(c.dir, "helm"), "HELM_CONFIG_HOME="+filepath.Join(c.dir, "helm"),
		"HELM_DATA_HOME="+filepath.Join(c.dir, "helm"))
	cmd.Env = append(cmd.Env, env...)
	err := cmd.Run()
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", filepath.Base(path), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// kubectl runs kubectl and fails the test on an error.
func (c *cluster) kubectlOK(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := c.run(repoRoot(t), c.kubectl, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// apply applies files or a kustomization server-side, as `make deploy` does.
func (c *cluster) apply(t testing.TB, args ...string) {
	t.Helper()
	c.kubectlOK(t, append([]string{"apply", "--server-side", "--force-conflicts", "--field-manager=clustertest"}, args...)...)
}

// get reads one object (or a list) as JSON into v.
func (c *cluster) get(t testing.TB, v any, args ...string) {
	t.Helper()
	out := c.kubectlOK(t, append([]string{"get", "-o", "json"}, args...)...)
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("kubectl get %v: %v", args, err)
	}
}

// eventually retries check until it returns nil or the time is up.
func (c *cluster) eventually(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		c.checkAlive(t)
		if err = check(); err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: not after %v: %v", what, timeout, err)
}

// writeKey writes a new RSA key and its public half, the API server's
// service-account signing key.
func writeKey(t testing.TB, dir string) (key, pub string) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	key, pub = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	must(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600))
	must(t, os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644))
	return key, pub
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// startControlPlane starts etcd, kube-apiserver and kube-controller-manager
// and returns once the API server is ready.
func startControlPlane(t *testing.T) *cluster {
	dir, err := os.MkdirTemp("", "clustertest-")
	must(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of the components kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	c := &cluster{dir: dir, kubectl: binary(t, "kubectl"), helm: binary(t, "helm")}

	etcdPort, peerPort := freePort(t), freePort(t)
	c.start(t, "etcd", binary(t, "etcd"), []string{"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", peerPort)})

	token := "clustertest-admin-token"
	tokens := filepath.Join(dir, "tokens.csv")
	must(t, os.WriteFile(tokens, []byte(token+",admin,admin,system:masters\n"), 0o600))
	key, pub := writeKey(t, dir)
	apiPort := freePort(t)
	certs := filepath.Join(dir, "apiserver-certs")
	c.start(t, "kube-apiserver", binary(t, "kube-apiserver"), []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		fmt.Sprintf("--secure-port=%d", apiPort), "--bind-address=127.0.0.1",
		"--cert-dir=" + certs, "--token-auth-file=" + tokens, "--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file=" + pub,
		"--service-account-signing-key-file=" + key, "--service-cluster-ip-range=10.96.0.0/16",
		// Admission webhooks are reached through their Services' EndpointSlices:
		// no kube-proxy runs here to route a ClusterIP.
		"--enable-aggregator-routing=true",
		"--endpoint-reconciler-type=none"})
	c.apiURL = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	c.kubeconfig = filepath.Join(dir, "kubeconfig")
	must(t, os.WriteFile(c.kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster: {server: %q, insecure-skip-tls-verify: true}
users:
  - name: admin
    user: {token: %q}
contexts:
  - name: test
    context: {cluster: test, user: admin}
current-context: test
`, c.apiURL, token)), 0o600))

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	c.eventually(t, "kube-apiserver /readyz", 90*time.Second, func() error {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, c.apiURL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})

	// The controllers that turn Deployments into ReplicaSets and Pods, bind
	// claims, run Jobs and garbage-collect; no scheduler, no kubelet.
	c.start(t, "kube-controller-manager", binary(t, "kube-controller-manager"), []string{
		"--kubeconfig=" + c.kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--service-account-private-key-file=" + key, "--root-ca-file=" + filepath.Join(certs, "apiserver.crt"),
		"--use-service-account-credentials=false", "--controllers=*"})
	return c
}
