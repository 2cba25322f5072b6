package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	hubOnce sync.Once
	hub     *JupyterHub
	hubErr  error
)

// ServiceScopes are the scopes of the harness's own service token (Token):
// enough to look users up, create them, start their servers and reach them,
// and mint tokens.
var ServiceScopes = []string{"admin:users", "admin:servers", "access:servers", "read:users", "list:users", "tokens"}

// StagingScopes are the scopes of StagingToken, those the README asks of
// the staging service's JUPYTERHUB_API_TOKEN: look users up, start their
// servers, mint and delete tokens for them. Not access:servers: the service
// token never goes to a user's server.
var StagingScopes = []string{"read:users", "admin:servers", "tokens"}

// JupyterHub is a real JupyterHub (Debian's jupyterhub package) on loopback
// ports, with the dummy authenticator and real single-user servers started by
// SimpleLocalProcessSpawner, users' homes under a temporary directory.
type JupyterHub struct {
	URL   string // public URL, http://127.0.0.1:PORT
	Token string // the harness's service token (scopes ServiceScopes)
	// StagingToken is a service token with StagingScopes only, for the
	// staging service under test.
	StagingToken string
	dir          string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *syncBuffer
}

// Hub returns the test binary's shared hub, starting it on first use; Main
// stops it. Tests share it by using distinct users (see NewHubUser).
func Hub(tb testing.TB) *JupyterHub {
	tb.Helper()
	if !mainUsed.Load() {
		tb.Fatalf("testenv.Hub: the package's tests must declare func TestMain(m *testing.M) { testenv.Main(m) } so the hub is stopped at the end")
	}
	requireHub(tb)
	hubOnce.Do(func() {
		hub, hubErr = startHub()
		if hubErr == nil {
			atExit(hub.remove)
		}
	})
	if hubErr != nil {
		tb.Fatalf("testenv: start JupyterHub: %v", hubErr)
	}
	return hub
}

// HubFor starts a hub for tb alone, removed when tb ends; Stop and Start
// take it away and bring it back (fault tests).
func HubFor(tb testing.TB) *JupyterHub {
	tb.Helper()
	requireHub(tb)
	h, err := startHub()
	if err != nil {
		tb.Fatalf("testenv: start JupyterHub: %v", err)
	}
	tb.Cleanup(h.remove)
	return h
}

func requireHub(tb testing.TB) {
	tb.Helper()
	for _, name := range []string{"jupyterhub", "configurable-http-proxy", "jupyterhub-singleuser"} {
		if _, err := exec.LookPath(name); err != nil {
			tb.Fatalf("testenv: %s not found: these tests need a real JupyterHub; run `make test`, which installs jupyterhub", name)
		}
	}
}

// StartHub starts a hub outside of a test (the benchmarks); Remove stops it
// and deletes its files.
func StartHub() (*JupyterHub, error) { return startHub() }

// Remove stops the hub and deletes its files.
func (h *JupyterHub) Remove() { h.remove() }

func startHub() (*JupyterHub, error) {
	dir, err := os.MkdirTemp("", "testenv-jupyterhub-")
	if err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = FreeTCPPort(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	secret, staging := make([]byte, 32), make([]byte, 32)
	rand.Read(secret)
	rand.Read(staging)
	h := &JupyterHub{URL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), Token: hex.EncodeToString(secret),
		StagingToken: hex.EncodeToString(staging), dir: dir}
	if err := os.MkdirAll(filepath.Join(dir, "home"), 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	scopes, _ := json.Marshal(ServiceScopes)
	stagingScopes, _ := json.Marshal(StagingScopes)
	config := fmt.Sprintf(`# Written by internal/testenv for one test hub.
c = get_config()  # noqa
c.JupyterHub.bind_url = 'http://127.0.0.1:%d'
c.JupyterHub.hub_bind_url = 'http://127.0.0.1:%d'
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:%d'
c.ConfigurableHTTPProxy.pid_file = %q
c.JupyterHub.pid_file = %q
c.JupyterHub.db_url = 'sqlite:///' + %q
c.JupyterHub.cookie_secret_file = %q
c.JupyterHub.authenticator_class = 'dummy'
c.Authenticator.admin_users = {'hubadmin'}
c.JupyterHub.spawner_class = 'simple'
c.SimpleLocalProcessSpawner.home_dir_template = %q
c.Spawner.ip = '127.0.0.1'
c.Spawner.args = ['--allow-root']
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.JupyterHub.services = [{'name': 'harness', 'api_token': %q}, {'name': 'staging', 'api_token': %q}]
c.JupyterHub.load_roles = [{'name': 'harness', 'scopes': %s, 'services': ['harness']},
                           {'name': 'staging', 'scopes': %s, 'services': ['staging']}]
`, ports[0], ports[1], ports[2], filepath.Join(dir, "proxy.pid"), filepath.Join(dir, "hub.pid"),
		filepath.Join(dir, "hub.sqlite"), filepath.Join(dir, "cookie_secret"),
		filepath.Join(dir, "home", "{username}"), h.Token, h.StagingToken, scopes, stagingScopes)
	if err := os.WriteFile(filepath.Join(dir, "jupyterhub_config.py"), []byte(config), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := h.Start(); err != nil {
		h.remove()
		return nil, err
	}
	return h, nil
}

// Start starts the hub (same ports, same database) and waits until its API
// answers the service token. Starting a running hub does nothing.
func (h *JupyterHub) Start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.running() {
		return nil
	}
	cmd := exec.Command("jupyterhub", "-f", filepath.Join(h.dir, "jupyterhub_config.py"))
	cmd.Dir = h.dir
	// configurable-http-proxy finds its modules only through NODE_PATH on
	// Debian's Node.
	cmd.Env = append(os.Environ(), "NODE_PATH=/usr/share/nodejs")
	// Its own process group, so Stop reaches the proxy and the single-user
	// servers too; if the test binary dies, the hub dies with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	h.logs = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = h.logs, h.logs
	// The proxy and the single-user servers run in sessions of their own
	// and inherit the hub's output: without a bound, Wait would wait for
	// them too, and a server left behind would hang the test binary.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start jupyterhub: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	h.cmd, h.done = cmd, done
	deadline := time.Now().Add(90 * time.Second)
	for {
		status, _, err := h.api(http.MethodGet, "/hub/api/", nil)
		if err == nil && status == http.StatusOK {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("jupyterhub exited (%v) before answering; log:\n%s", cmd.ProcessState, tail([]byte(h.logs.String()), 4000))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.kill()
			return fmt.Errorf("jupyterhub not ready after 90s (%d, %v); log:\n%s", status, err, tail([]byte(h.logs.String()), 4000))
		}
	}
}

// Stop stops the hub, its proxy and every single-user server, and waits
// until the hub has exited and its port is closed.
func (h *JupyterHub) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kill()
}

func (h *JupyterHub) kill() {
	if !h.running() {
		return
	}
	syscall.Kill(-h.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(20 * time.Second):
		syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.done
	}
	// Whatever the hub left behind goes too: its group, and the proxy and
	// single-user servers, which the hub starts in new sessions (so neither
	// the group signal nor Pdeathsig reaches them) with their working
	// directory inside the hub's.
	syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
	killWorkingIn(h.dir)
}

// killWorkingIn kills every process whose working directory is dir or below.
func killWorkingIn(dir string) {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue
		}
		if cwd == dir || strings.HasPrefix(cwd, dir+"/") {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (h *JupyterHub) running() bool {
	if h.cmd == nil {
		return false
	}
	select {
	case <-h.done:
		return false
	default:
		return true
	}
}

func (h *JupyterHub) remove() {
	h.Stop()
	os.RemoveAll(h.dir)
}

// Logs returns what the hub (and its servers) printed since its last start.
func (h *JupyterHub) Logs() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.logs == nil {
		return ""
	}
	return h.logs.String()
}

// Home is the home directory (the Jupyter workspace root) of user.
func (h *JupyterHub) Home(user string) string { return filepath.Join(h.dir, "home", user) }

// api calls the hub's REST API with the service token.
func (h *JupyterHub) api(method, path string, body any) (int, []byte, error) {
	return h.call(method, path, h.Token, body)
}

func (h *JupyterHub) call(method, path, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, h.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "token "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (h *JupyterHub) must(tb testing.TB, method, path string, body any, want ...int) []byte {
	tb.Helper()
	status, b, err := h.api(method, path, body)
	if err != nil {
		tb.Fatalf("hub %s %s: %v", method, path, err)
	}
	for _, w := range want {
		if status == w {
			return b
		}
	}
	tb.Fatalf("hub %s %s: %d %s", method, path, status, b)
	return nil
}

var hubUsers sync.Map // names handed out, per test binary

// NewHubUser creates a hub user named after tb (and prefix), distinct
// across the test binary, and returns the name. admin makes it a hub admin.
func (h *JupyterHub) NewHubUser(tb testing.TB, prefix string, admin bool) string {
	tb.Helper()
	base := strings.Trim(unsafeName.ReplaceAllString(strings.ToLower(prefix), "-"), "-")
	name := base
	for i := 2; ; i++ {
		if _, taken := hubUsers.LoadOrStore(name, true); !taken {
			break
		}
		name = fmt.Sprintf("%s%d", base, i)
	}
	if err := h.CreateUser(name, admin); err != nil {
		tb.Fatalf("hub: %v", err)
	}
	return name
}

// CreateUser creates a hub user; admin makes it a hub admin.
func (h *JupyterHub) CreateUser(name string, admin bool) error {
	if status, b, err := h.api(http.MethodPost, "/hub/api/users/"+name, nil); err != nil || status != http.StatusCreated {
		return fmt.Errorf("create user %s: %d %s %v", name, status, b, err)
	}
	if admin {
		if status, b, err := h.api(http.MethodPatch, "/hub/api/users/"+name, map[string]any{"admin": true}); err != nil || status != http.StatusOK {
			return fmt.Errorf("make %s an admin: %d %s %v", name, status, b, err)
		}
	}
	return nil
}

// UserToken mints an API token owned by user, as the user would in the
// hub's token page.
func (h *JupyterHub) UserToken(tb testing.TB, user string) string {
	tb.Helper()
	return h.UserTokenWith(tb, user, nil)
}

// UserTokenWith mints an API token owned by user with only scopes (the
// hub's default, all of the user's own, when nil).
func (h *JupyterHub) UserTokenWith(tb testing.TB, user string, scopes []string) string {
	tb.Helper()
	req := map[string]any{"note": "test"}
	if scopes != nil {
		req["scopes"] = scopes
	}
	b := h.must(tb, http.MethodPost, "/hub/api/users/"+user+"/tokens", req, http.StatusCreated, http.StatusOK)
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &tok); err != nil || tok.Token == "" {
		tb.Fatalf("hub: token for %s: %v %s", user, err, b)
	}
	return tok.Token
}

// Tokens lists user's API tokens as the hub describes them (id, note,
// scopes, expires_at, ...), read with the service token.
func (h *JupyterHub) Tokens(tb testing.TB, user string) []map[string]any {
	tb.Helper()
	b := h.must(tb, http.MethodGet, "/hub/api/users/"+url.PathEscape(user)+"/tokens", nil, http.StatusOK)
	var out struct {
		Tokens []map[string]any `json:"api_tokens"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		tb.Fatalf("hub: tokens of %s: %v %s", user, err, b)
	}
	return out.Tokens
}

// RecordAuthorization makes user's single-user server, from its next
// start, append the Authorization header of every request it receives to
// the file at log, one a line, as a user's own code in their server could
// (a jupyter_notebook_config.py in their home).
func (h *JupyterHub) RecordAuthorization(tb testing.TB, user, log string) {
	tb.Helper()
	dir := filepath.Join(h.Home(user), ".jupyter")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	config := fmt.Sprintf(`# Written by internal/testenv: records what the server receives.
import tornado.web
_init = tornado.web.RequestHandler.__init__
def _record(self, application, request, **kwargs):
    with open(%q, 'a') as f:
        f.write(request.headers.get('Authorization', '') + '\n')
    _init(self, application, request, **kwargs)
tornado.web.RequestHandler.__init__ = _record
`, log)
	if err := os.WriteFile(filepath.Join(dir, "jupyter_notebook_config.py"), []byte(config), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// StartServer starts user's single-user server and waits until it is ready,
// following the hub's progress stream.
func (h *JupyterHub) StartServer(tb testing.TB, user string) {
	tb.Helper()
	if err := h.Spawn(user); err != nil {
		tb.Fatalf("hub: %v\n%s", err, tail([]byte(h.Logs()), 3000))
	}
}

// Spawn starts user's server and waits until it is ready.
func (h *JupyterHub) Spawn(user string) error {
	status, b, err := h.api(http.MethodPost, "/hub/api/users/"+user+"/server", nil)
	if err != nil || (status != http.StatusCreated && status != http.StatusAccepted && status != http.StatusBadRequest) {
		return fmt.Errorf("start server of %s: %d %s %v", user, status, b, err)
	}
	if err := h.waitProgress(user); err != nil {
		return fmt.Errorf("server of %s: %w", user, err)
	}
	return nil
}

func (h *JupyterHub) waitProgress(user string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.URL+"/hub/api/users/"+user+"/server/progress", nil)
	req.Header.Set("Authorization", "token "+h.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok {
			continue
		}
		var ev struct {
			Ready   bool   `json:"ready"`
			Failed  bool   `json:"failed"`
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(strings.TrimSpace(data)), &ev) == nil {
			if ev.Ready {
				return nil
			}
			if ev.Failed {
				return errors.New("spawn failed: " + ev.Message)
			}
		}
	}
	return fmt.Errorf("progress stream ended without ready: %v", sc.Err())
}

// StopServer stops user's server and waits until the hub says it is gone.
func (h *JupyterHub) StopServer(tb testing.TB, user string) {
	tb.Helper()
	h.must(tb, http.MethodDelete, "/hub/api/users/"+user+"/server", nil, http.StatusNoContent, http.StatusAccepted, http.StatusBadRequest)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if !h.ServerRunning(tb, user) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("hub: server of %s still running after 60s", user)
}

// ServerRunning reports whether user's default server exists (ready or
// starting), as the hub's user model says.
func (h *JupyterHub) ServerRunning(tb testing.TB, user string) bool {
	tb.Helper()
	b := h.must(tb, http.MethodGet, "/hub/api/users/"+url.PathEscape(user), nil, http.StatusOK)
	var u struct {
		Servers map[string]json.RawMessage `json:"servers"`
	}
	if err := json.Unmarshal(b, &u); err != nil {
		tb.Fatalf("hub: user %s: %v", user, err)
	}
	_, ok := u.Servers[""]
	return ok
}

// KillServer kills user's single-user server at once (SIGKILL), as a
// crash would, without telling the hub.
func (h *JupyterHub) KillServer(tb testing.TB, user string) {
	tb.Helper()
	b := h.must(tb, http.MethodGet, "/hub/api/users/"+url.PathEscape(user), nil, http.StatusOK)
	var u struct {
		Servers map[string]struct {
			State struct {
				Pid int `json:"pid"`
			} `json:"state"`
		} `json:"servers"`
	}
	if err := json.Unmarshal(b, &u); err != nil || u.Servers[""].State.Pid == 0 {
		tb.Fatalf("hub: no pid for the server of %s: %v %s", user, err, b)
	}
	if err := syscall.Kill(u.Servers[""].State.Pid, syscall.SIGKILL); err != nil {
		tb.Fatalf("hub: kill the server of %s: %v", user, err)
	}
}
