package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildMu  sync.Mutex
	binaries = map[string]string{}
	binDir   string // where this test binary builds functions, removed at exit
)

// RepoRoot is the module's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

// FunctionBinary builds functions/<name> once per test binary and returns
// the program's path.
func FunctionBinary(tb testing.TB, name string) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := binaries[name]; ok {
		return bin
	}
	// A directory of this test binary's own: test binaries of other
	// packages (or of another checkout) build the same names at the same time.
	if binDir == "" {
		dir, err := os.MkdirTemp("", "skao-staging-test-bin-")
		if err != nil {
			tb.Fatal(err)
		}
		binDir = dir
		atExit(func() { os.RemoveAll(dir) })
	}
	bin := filepath.Join(binDir, name)
	cmd := exec.Command("go", "build", "-o", bin, "./functions/"+name)
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", name, err, out)
	}
	binaries[name] = bin
	return bin
}

// Process is a function running as its own program, as in production.
type Process struct {
	Name string
	URL  string // http://127.0.0.1:PORT
	Port int
	Env  map[string]string

	tb   testing.TB
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	err  error
	// alive: start waits for /healthz only, not for readiness.
	alive bool
}

// StartFunction starts functions/<name> with env (PORT is chosen unless
// given) and waits until /readyz answers 200. The process is killed when tb
// ends if it is still running.
func StartFunction(tb testing.TB, name string, env map[string]string) *Process {
	tb.Helper()
	return startFunction(tb, name, env, false)
}

// StartFunctionAlive is StartFunction that waits only until the process
// answers /healthz, not until it is ready (its database may be away).
func StartFunctionAlive(tb testing.TB, name string, env map[string]string) *Process {
	tb.Helper()
	return startFunction(tb, name, env, true)
}

func startFunction(tb testing.TB, name string, env map[string]string, alive bool) *Process {
	tb.Helper()
	p := &Process{Name: name, Env: map[string]string{}, tb: tb, alive: alive}
	for k, v := range env {
		p.Env[k] = v
	}
	if p.Env["PORT"] == "" {
		p.Env["PORT"] = strconv.Itoa(FreePort(tb))
	}
	p.Port, _ = strconv.Atoi(p.Env["PORT"])
	p.URL = fmt.Sprintf("http://127.0.0.1:%d", p.Port)
	p.start()
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("%s logs:\n%s", name, p.Logs())
		}
	})
	return p
}

func (p *Process) start() {
	p.tb.Helper()
	p.cmd = exec.Command(FunctionBinary(p.tb, p.Name))
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range p.Env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.logs = &syncBuffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		p.tb.Fatalf("start %s: %v", p.Name, err)
	}
	p.done = make(chan struct{})
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	if err := p.wait("/healthz", p.alive, 10*time.Second); err != nil {
		p.Kill()
		p.tb.Fatalf("%s did not become ready: %v\n%s", p.Name, err, p.Logs())
	}
}

// WaitReady polls /readyz until it answers 200.
func (p *Process) WaitReady(timeout time.Duration) error { return p.wait("/readyz", true, timeout) }

// wait polls path (or /readyz unless alive) until it answers 200.
func (p *Process) wait(path string, alive bool, timeout time.Duration) error {
	if !alive {
		path = "/readyz"
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.err)
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no 200 from %s after %s (last error %v)", path, timeout, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Restart starts the process again with the same environment.
func (p *Process) Restart() {
	p.tb.Helper()
	p.Kill()
	p.start()
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) { p.cmd.Process.Signal(sig) }

// Kill ends the process at once (SIGKILL), like a node failure.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits for the process to exit, returning its
// exit error.
func (p *Process) Stop(timeout time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	return p.Wait(timeout)
}

// Wait waits for the process to exit.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Logs returns what the process printed so far.
func (p *Process) Logs() string { return p.logs.String() }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Unpublished returns the files the process is writing under dir that
// nobody sees under their final name yet: files it holds open without a
// name (made with O_TMPFILE; /proc shows them as "dir/#inode (deleted)")
// and files named with prefix (temporary names, where unnamed files cannot
// be made). Each is returned as its /proc/PID/fd path, which os.Stat
// follows to the file itself.
func (p *Process) Unpublished(dir, prefix string) []string {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	fds := fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid)
	entries, _ := os.ReadDir(fds)
	var found []string
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(fds, e.Name()))
		if err != nil || !strings.HasPrefix(target, dir+"/") {
			continue
		}
		name := filepath.Base(target)
		if strings.HasPrefix(name, prefix) || (strings.HasPrefix(name, "#") && strings.HasSuffix(name, " (deleted)")) {
			found = append(found, filepath.Join(fds, e.Name()))
		}
	}
	return found
}
