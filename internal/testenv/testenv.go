// Package testenv starts real servers on 127.0.0.1 for integration tests.
//
// A package whose tests use MariaDB declares
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// and then calls MariaDB(t) for a fresh, empty database on a throwaway server
// shared by the whole test binary, or MariaDBServerFor(t) for a server of its
// own that it can stop and start (fault tests). The servers need the Debian
// package mariadb-server, which `make test` installs.
//
// In the same way Hub(t) gives the test binary's shared JupyterHub (with its
// proxy and real single-user servers; tests keep apart by creating their own
// users with NewHubUser) and HubFor(t) a hub of the test's own; they need
// Debian's jupyterhub package, which `make test` installs too.
//
// OIDCProviderFor(t, cfg) starts a real OpenID provider of the test's own
// (tools/oidcprovider, on zitadel/oidc's op package) with the users and
// clients the test chooses; it needs only the Go module proxy to build.
package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

var (
	mainUsed atomic.Bool

	sharedOnce sync.Once
	shared     *MariaDBServer
	sharedErr  error
)

// Main runs the tests, then stops the shared servers (MariaDB, JupyterHub)
// that were started and removes their files, and exits with the tests' code.
func Main(m *testing.M) {
	mainUsed.Store(true)
	code := m.Run()
	if shared != nil {
		shared.remove()
	}
	exitMu.Lock()
	for _, f := range exitHooks {
		f()
	}
	exitMu.Unlock()
	os.Exit(code)
}

var (
	exitMu    sync.Mutex
	exitHooks []func()
)

// atExit registers f to run when Main ends (shared servers other than
// MariaDB stop there).
func atExit(f func()) {
	exitMu.Lock()
	defer exitMu.Unlock()
	exitHooks = append(exitHooks, f)
}

// MariaDB returns the URL (mysql://root@127.0.0.1:PORT/NAME) of a new, empty
// database on the test binary's shared MariaDB server, starting the server
// on first use.
func MariaDB(tb testing.TB) string {
	tb.Helper()
	if !mainUsed.Load() {
		tb.Fatalf("testenv.MariaDB: the package's tests must declare func TestMain(m *testing.M) { testenv.Main(m) } so the server is stopped at the end")
	}
	requireMariaDB(tb)
	sharedOnce.Do(func() { shared, sharedErr = startMariaDB() })
	if sharedErr != nil {
		tb.Fatalf("testenv: start MariaDB: %v", sharedErr)
	}
	return shared.Database(tb)
}

// MariaDBServerFor starts a MariaDB server for tb alone, removed when tb
// ends. Stop, Kill and Start let a test take the database away and bring it
// back on the same port with the same data.
func MariaDBServerFor(tb testing.TB) *MariaDBServer {
	tb.Helper()
	requireMariaDB(tb)
	s, err := startMariaDB()
	if err != nil {
		tb.Fatalf("testenv: start MariaDB: %v", err)
	}
	tb.Cleanup(s.remove)
	return s
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := FreeTCPPort()
	if err != nil {
		tb.Fatalf("testenv: free port: %v", err)
	}
	return port
}

// FreeTCPPort is FreePort for programs without a testing.TB (make bench,
// make scale).
func FreeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lookPath finds a MariaDB program, also in /usr/sbin, which is not on every
// user's PATH.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func requireMariaDB(tb testing.TB) {
	tb.Helper()
	for _, name := range []string{"mariadbd", "mariadb-install-db"} {
		if _, err := lookPath(name); err != nil {
			tb.Fatalf("testenv: %v: these tests need a real MariaDB; run `make test`, which installs mariadb-server", err)
		}
	}
}

// MariaDBServer is a throwaway MariaDB server listening on 127.0.0.1, as
// root without a password, with its data in a temporary directory.
type MariaDBServer struct {
	dir   string
	port  int
	pool  string // innodb-buffer-pool-size
	admin *sql.DB
	seq   atomic.Int64

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// startMariaDB creates a data directory and starts a server on it.
func startMariaDB() (*MariaDBServer, error) { return StartMariaDB("", "32M") }

// StartMariaDB starts a throwaway server for a command (make bench, make
// scale): its files in a new folder under parent (the system's temporary
// folder when ""), an InnoDB buffer pool of pool (such as "32M" or "2G").
// Remove stops it and deletes its files.
func StartMariaDB(parent, pool string) (*MariaDBServer, error) {
	dir, err := os.MkdirTemp(parent, "testenv-mariadb-")
	if err != nil {
		return nil, err
	}
	port, err := FreeTCPPort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &MariaDBServer{dir: dir, port: port, pool: pool}
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "tcp"
	cfg.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cfg.Timeout = 2 * time.Second
	cfg.Logger = log.New(io.Discard, "", 0) // stale connections after Stop are expected
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.admin = sql.OpenDB(connector)
	s.admin.SetMaxOpenConns(4)

	if err := s.install(); err != nil {
		s.remove()
		return nil, err
	}
	if err := s.Start(); err != nil {
		s.remove()
		return nil, err
	}
	if _, err := s.admin.Exec("CREATE DATABASE test"); err != nil {
		s.remove()
		return nil, fmt.Errorf("create database test: %w", err)
	}
	return s, nil
}

// serverOptions are shared by the bootstrap and the server, so the InnoDB
// files are made the size the server expects.
func (s *MariaDBServer) serverOptions() []string {
	return []string{
		"--no-defaults", // must come first
		"--datadir=" + filepath.Join(s.dir, "data"),
		"--user=root",
		"--skip-name-resolve",
		"--innodb-buffer-pool-size=" + s.pool,
		"--innodb-log-file-size=16M",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_general_ci",
	}
}

func (s *MariaDBServer) install() error {
	bin, err := lookPath("mariadb-install-db")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append(s.serverOptions(), "--auth-root-authentication-method=normal", "--skip-test-db")
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mariadb-install-db: %w\n%s", err, tail(out, 2000))
	}
	return nil
}

// Start starts the server (on its port, with its data) and waits until it
// accepts connections. Starting a running server does nothing.
func (s *MariaDBServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running() {
		return nil
	}
	bin, err := lookPath("mariadbd")
	if err != nil {
		return err
	}
	logPath := filepath.Join(s.dir, "error.log")
	args := append(s.serverOptions(),
		"--port="+strconv.Itoa(s.port),
		"--bind-address=127.0.0.1",
		"--socket="+filepath.Join(s.dir, "mysqld.sock"),
		"--pid-file="+filepath.Join(s.dir, "mariadbd.pid"),
		"--log-error="+logPath,
		"--tmpdir="+s.dir,
		"--skip-log-bin",
		"--innodb-flush-log-at-trx-commit=2",
		"--max-connections=1000",
	)
	cmd := exec.Command(bin, args...)
	// If the test binary dies without running Main's cleanup, so does the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mariadbd: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	// Ready when a real connection works.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := s.admin.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			logText, _ := os.ReadFile(logPath)
			return fmt.Errorf("mariadbd exited (%v) before accepting connections; log:\n%s", cmd.ProcessState, tail(logText, 3000))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop(syscall.SIGKILL)
			logText, _ := os.ReadFile(logPath)
			return fmt.Errorf("mariadbd not ready after 60s: %v; log:\n%s", err, tail(logText, 3000))
		}
	}
}

// Stop shuts the server down cleanly and waits until it has exited.
func (s *MariaDBServer) Stop() error { return s.stop(syscall.SIGTERM) }

// Kill kills the server (a crash: InnoDB recovers on the next Start) and
// waits until it has exited.
func (s *MariaDBServer) Kill() error { return s.stop(syscall.SIGKILL) }

func (s *MariaDBServer) stop(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running() {
		return nil
	}
	if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal mariadbd: %w", err)
	}
	select {
	case <-s.done:
		return nil
	case <-time.After(60 * time.Second):
	}
	s.cmd.Process.Kill()
	<-s.done
	return fmt.Errorf("mariadbd did not stop within 60s after %v; killed", sig)
}

func (s *MariaDBServer) running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Port returns the server's TCP port on 127.0.0.1; it stays the same across
// Stop and Start.
func (s *MariaDBServer) Port() int { return s.port }

// URL returns the URL of the server's database "test", made at its start.
func (s *MariaDBServer) URL() string { return s.url("test") }

func (s *MariaDBServer) url(db string) string {
	return fmt.Sprintf("mysql://root@127.0.0.1:%d/%s", s.port, db)
}

var unsafeName = regexp.MustCompile(`[^a-z0-9]+`)

// Database creates a new, empty database on the server and returns its URL.
// Its name is unique and derived from tb's name, for reading server logs.
func (s *MariaDBServer) Database(tb testing.TB) string {
	tb.Helper()
	name := strings.Trim(unsafeName.ReplaceAllString(strings.ToLower(tb.Name()), "_"), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t%d_%s", s.seq.Add(1), name)
	if _, err := s.admin.Exec("CREATE DATABASE `" + name + "`"); err != nil {
		tb.Fatalf("testenv: create database %s: %v", name, err)
	}
	return s.url(name)
}

// Remove kills the server and deletes its files.
func (s *MariaDBServer) Remove() { s.remove() }

// CreateDatabase makes database name and returns its URL.
func (s *MariaDBServer) CreateDatabase(name string) (string, error) {
	if _, err := s.admin.Exec("CREATE DATABASE `" + name + "`"); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.url(name), nil
}

// Status returns the server's global status counters named (SHOW GLOBAL
// STATUS), such as Com_stmt_execute: how make bench counts the statements
// a request costs.
func (s *MariaDBServer) Status(names ...string) (map[string]int64, error) {
	rows, err := s.admin.Query("SHOW GLOBAL STATUS")
	if err != nil {
		return nil, fmt.Errorf("global status: %w", err)
	}
	defer rows.Close()
	out := make(map[string]int64, len(names))
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return nil, fmt.Errorf("global status: %w", err)
		}
		if slices.Contains(names, name) {
			if out[name], err = strconv.ParseInt(value, 10, 64); err != nil {
				return nil, fmt.Errorf("global status %s: %w", name, err)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("global status: %w", err)
	}
	for _, name := range names {
		if _, ok := out[name]; !ok {
			return nil, fmt.Errorf("global status: no %s", name)
		}
	}
	return out, nil
}

// Dir is the folder of the server's files.
func (s *MariaDBServer) Dir() string { return s.dir }

// remove kills the server and deletes its files.
func (s *MariaDBServer) remove() {
	s.stop(syscall.SIGKILL)
	s.admin.Close()
	os.RemoveAll(s.dir)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// ReplaceBetween puts text between the marker lines start and end of the
// file at path: how make bench and make scale write their tables into the
// README.
func ReplaceBetween(path, start, end, text string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, start), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %s ... %s markers", path, start, end)
	}
	return os.WriteFile(path, []byte(s[:i+len(start)]+"\n"+text+s[j:]), 0o644)
}
