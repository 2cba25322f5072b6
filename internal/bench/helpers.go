package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// user is the username every request stages for.
const user = "bench"

// bench is the run's workload and working directory.
type bench struct {
	sizes
	root  string // repository root
	stage string // bin/stage
	dir   string // temporary working directory, removed by close
	src   string // SOURCE_STORAGE_PATH
	dst   string // TARGET_STORAGE_PATH
	big   string // the big file, relative to src, once made
	// manyMade: the tree of rows 9 to 11 is under src/million.
	manyMade bool
}

func newBench(sz sizes) (*bench, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	stage := filepath.Join(root, "bin", "stage")
	if _, err := os.Stat(stage); err != nil {
		return nil, fmt.Errorf("stage binary: %w (run make build first)", err)
	}
	dir, err := workDir(root)
	if err != nil {
		return nil, err
	}
	b := &bench{sizes: sz, root: root, stage: stage, dir: dir,
		src: filepath.Join(dir, "source"), dst: filepath.Join(dir, "target")}
	for _, d := range []string{b.src, b.dst, filepath.Join(dir, "db"), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.close()
			return nil, fmt.Errorf("working directory: %w", err)
		}
	}
	logf("working in %s", dir)
	return b, nil
}

func (b *bench) close() {
	if b.manyMade { // a million files: removed in parallel first
		if err := testenv.RemoveTree(filepath.Join(b.src, "million"), 4); err != nil {
			logf("warning: %v", err)
		}
	}
	if err := removeAll(b.dir); err != nil {
		logf("warning: %v", err)
	}
}

// workDir makes the temporary working directory: in the system's temporary
// folder when it is on the repository's filesystem (out of reach of a
// concurrent `make clean`), else under the repository's .data.
func workDir(root string) (string, error) {
	parent := filepath.Join(root, ".data")
	var r, t syscall.Stat_t
	if syscall.Stat(root, &r) == nil && syscall.Stat(os.TempDir(), &t) == nil && r.Dev == t.Dev {
		parent = os.TempDir()
	} else if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	dir, err := os.MkdirTemp(parent, "skao-bench-")
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	return dir, nil
}

// repoRoot is the nearest directory up from the current one holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root: no go.mod above the current directory")
		}
		dir = parent
	}
}

// staged is where the service puts relative path rel.
func (b *bench) staged(rel string) string { return filepath.Join(b.dst, user, rel) }

// bigSource makes the big file (once) and returns its path relative to src.
func (b *bench) bigSource() (string, error) {
	if b.big == "" {
		logf("writing a %s file", mib(b.bigSize))
		if err := writeRandom(filepath.Join(b.src, "big.bin"), b.bigSize, 1); err != nil {
			return "", err
		}
		syscall.Sync() // no writeback of it during the measures
		b.big = "big.bin"
	}
	return b.big, nil
}

// logf prints progress to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// --- processes ---

// proc is a server started by the bench.
type proc struct {
	name string
	cmd  *exec.Cmd
	url  string // http://127.0.0.1:PORT
	log  string // its stdout and stderr
	done chan struct{}
	// started is just before the exec.
	started time.Time
	err     error // of Wait, once done is closed
}

// startProc starts bin with env (and PORT) without waiting for it.
func startProc(name, bin, logPath string, env ...string) (*proc, error) {
	port, err := testenv.FreeTCPPort()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(env, "PORT="+strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, url: "http://127.0.0.1:" + strconv.Itoa(port), log: logPath, done: make(chan struct{})}
	p.started = started
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// startStage starts the stage function on a fresh SQLite file named after
// name and waits until it is ready.
func (b *bench) startStage(ctx context.Context, name string) (*proc, error) {
	p, err := startProc(name, b.stage, filepath.Join(b.dir, "logs", name+".log"), b.stageEnv(name)...)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, 30*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// stageEnv is the stage function's whole environment: nothing is inherited.
func (b *bench) stageEnv(dbName string) []string {
	return []string{
		"SOURCE_STORAGE_PATH=" + b.src,
		"TARGET_STORAGE_PATH=" + b.dst,
		"DATABASE_URL=sqlite://" + filepath.Join(b.dir, "db", dbName+".db"),
		"LOGGING_LEVEL=WARNING",
	}
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := p.alive(ctx); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s%s", p.name, timeout, p.logTail())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// alive fails when the process has exited or ctx is done.
func (p *proc) alive(ctx context.Context) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v%s", p.name, p.err, p.logTail())
	default:
	}
	return ctx.Err()
}

// stop sends SIGTERM and waits (killing it after 30 s). Ending by SIGTERM
// itself is fine: the baseline server does not handle it.
func (p *proc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("stop %s: killed after 30 s without exiting on SIGTERM", p.name)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	if p.err != nil {
		return fmt.Errorf("stop %s: %v%s", p.name, p.err, p.logTail())
	}
	return nil
}

// stopOrWarn stops p, reporting a failure to stop on stderr.
func (p *proc) stopOrWarn() {
	if err := p.stop(); err != nil {
		logf("warning: %v", err)
	}
}

// logTail is the end of the process's output, for error messages.
func (p *proc) logTail() string {
	data, err := os.ReadFile(p.log)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return ""
	}
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return "; its output ends with:\n" + string(data)
}

// vmHWM is the peak resident set size of process pid, in bytes.
func vmHWM(pid int) (int64, error) { return vmStatus(pid, "VmHWM:") }

// vmStatus is a size in bytes from process pid's /proc status, by its
// field name ("VmHWM:", "VmRSS:").
func vmStatus(pid int, field string) (int64, error) {
	name := strings.TrimSuffix(field, ":")
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read %s: %q: %w", name, line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("read %s: not in /proc/%d/status", name, pid)
}

// --- HTTP ---

// stageBody is the JSON body of a local_copy request.
func stageBody(src, rel string) []byte {
	body, _ := json.Marshal(map[string]map[string]string{"data": {"local_path_on_storage": src, "relative_path": rel}})
	return body
}

// localCopy asks the service at base to stage src to rel and checks the
// answer is 200 with status success, the file copied (not found in place).
func localCopy(ctx context.Context, c *http.Client, base, src, rel string) error {
	u := base + "/stage_data?method=local_copy&username=" + user
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(stageBody(src, rel)))
	if err != nil {
		return fmt.Errorf("local_copy %s: %w", src, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("local_copy %s: %w", src, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("local_copy %s: read answer: %w", src, err)
	}
	var answer struct{ Status, Message string }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &answer) != nil || answer.Status != "success" {
		return fmt.Errorf("local_copy %s: %s: %s", src, resp.Status, bytes.TrimSpace(body))
	}
	// A target already in place is a success that copies nothing: a
	// measure that met one would time no copy at all.
	if strings.HasPrefix(answer.Message, "Data already available") {
		return fmt.Errorf("local_copy %s to %s: nothing copied: %s", src, rel, answer.Message)
	}
	return nil
}

// download fetches src by direct_download and returns the bytes received.
func download(ctx context.Context, base, src string) (int64, error) {
	u := base + "/stage_data?method=direct_download&username=" + user + "&local_path_on_storage=" + url.QueryEscape(src)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("direct_download %s: %w", src, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("direct_download %s: %w", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 2000))
		return 0, fmt.Errorf("direct_download %s: %s: %s", src, resp.Status, bytes.TrimSpace(body))
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, fmt.Errorf("direct_download %s: after %d bytes: %w", src, n, err)
	}
	return n, nil
}

// --- files ---

// writeRandom writes size pseudo-random bytes drawn from seed to path.
func writeRandom(path string, size int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rng := rand.NewChaCha8(key)
	_, err = io.CopyN(f, rng, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readFile reads path once, to have it in the page cache.
func readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("warm %s: %w", path, err)
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		return fmt.Errorf("warm %s: %w", path, err)
	}
	return nil
}

// removeAll removes path, making read-only folders (staged ones are 0500)
// writable first, then syncs so the next measure starts with no writeback
// pending.
func removeAll(path string) error {
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	syscall.Sync()
	return nil
}

// command runs a program, with its output in the error.
func command(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// --- measuring ---

// alternate runs service and baseline once each unmeasured (a warm-up:
// in a VM the first use of fresh page-cache memory is much slower), then
// reps times each in the order S B B S S B ..., so neither always goes
// first. Each returns a value in unit; alternate returns the medians.
func alternate(what string, reps int, unit string, service, baseline func(i int) (float64, error)) (float64, float64, error) {
	var svc, base []float64
	for i := range reps + 1 {
		order := []string{"service", "baseline"}
		if i%2 == 0 {
			order[0], order[1] = order[1], order[0]
		}
		for _, side := range order {
			f, values := service, &svc
			if side == "baseline" {
				f, values = baseline, &base
			}
			v, err := f(i)
			if err != nil {
				return 0, 0, fmt.Errorf("%s, %s run %d: %w", what, side, i, err)
			}
			if i == 0 {
				logf("%s: %s warm-up: %.1f %s", what, side, v, unit)
				continue
			}
			logf("%s: %s run %d/%d: %.1f %s", what, side, i, reps, v, unit)
			*values = append(*values, v)
		}
	}
	return median(svc), median(base), nil
}

// takeTurns runs n items of work by the baseline and by the service in
// four rounds of a quarter each, in the order B S S B B S S B, and returns
// each side's total time and the service's errors (a baseline error ends
// it). Small files cost what the filesystem's state makes them cost: on
// ext4 without a journal, allocating an inode skips the inodes of its
// folder's block group deleted in the last minutes, reading each: 4,000
// files made in each of four new folders, one folder after the other, went
// at 1,227 to 19,190 files/s. Callers give both sides one folder; taking
// turns gives them the same drift in time.
func takeTurns(what string, n int, baseline, service func(first, last int) (time.Duration, []error)) (baseTime, svcTime time.Duration, errs []error, err error) {
	const rounds = 4
	for r := range rounds {
		first, last := r*n/rounds, (r+1)*n/rounds
		sides := []string{"baseline", "service"}
		if r%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			logf("%s: round %d/%d, %s: items %d to %d", what, r+1, rounds, side, first, last-1)
			if side == "baseline" {
				d, berrs := baseline(first, last)
				if len(berrs) > 0 {
					return 0, 0, nil, fmt.Errorf("%s baseline: %d failed, the first: %w", what, len(berrs), berrs[0])
				}
				baseTime += d
				continue
			}
			d, serrs := service(first, last)
			svcTime += d
			errs = append(errs, serrs...)
		}
	}
	return baseTime, svcTime, errs, nil
}

// parallel calls f(0) to f(n-1) on workers goroutines and returns the
// elapsed time and the errors.
func parallel(ctx context.Context, n, workers int, f func(i int) error) (time.Duration, []error) {
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return time.Since(start), errs
}

// --- numbers ---

// timed runs f and returns how long it took.
func timed(f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	return time.Since(start), err
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// perSecond is n per second over d.
func perSecond(n float64, d time.Duration) float64 { return n / d.Seconds() }

// commas formats x rounded to an integer with thousands separators.
func commas(x float64) string {
	s := strconv.FormatInt(int64(x+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// mib formats a byte count in GiB or MiB.
func mib(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
