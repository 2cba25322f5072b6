package reliability

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// TestFIFOFlood names FIFOs, a unix socket, a character device, a tree
// with a FIFO deep inside and links to FIFOs in 100 / 500 concurrent
// requests by every storage method. Opening a FIFO for reading waits for a
// writer, and none ever comes: a service that opens one hangs the request
// and holds a thread for good. Each request must be refused with 400 and a
// detail (or 429 by MAX_INFLIGHT) well within its client's timeout, while
// /healthz and an ordinary copy keep answering within a second; nothing
// appears in the user's area, no operation is left running, no thread is
// left waiting in the kernel (in an open or a read), and the process's open
// files come back to what an equal flood of ordinary refusals leaves.
//
// The thread count itself is recorded, not bounded: the Go runtime keeps
// the threads it made while syscalls blocked and parks them idle, so how
// many remain depends on scheduling, not on anything left waiting.
func TestFIFOFlood(t *testing.T) {
	n := size(100, 500)
	const answerWithin = 15 * time.Second // per request: later is a hang
	const probeBound = time.Second
	s := newSite(t, "")
	probeContent := randomBytes(4096)
	probeSrc := s.write(t, "plain/probe.txt", probeContent)

	// The special files. Nothing ever opens a FIFO for writing.
	mkfifo := func(rel string) {
		p := filepath.Join(s.Source, rel)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, syscall.Mkfifo(p, 0o644))
	}
	const fifos = 8
	for i := range fifos {
		mkfifo(fmt.Sprintf("special/p%d", i))
	}
	sock, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(s.Source, "special/sock"), Net: "unix"})
	must(t, err)
	defer sock.Close()
	s.write(t, "tree/top.txt", []byte("top"))
	s.write(t, "tree/a/b/c/data.txt", []byte("data"))
	mkfifo("tree/a/b/pipe")
	must(t, os.Symlink("p0", filepath.Join(s.Source, "special/to-pipe")))
	// Inside the folder, so the link is judged by what it names, not by
	// where it leads; the walk meets it before the FIFO itself.
	s.write(t, "linkdir/ok.txt", []byte("ok"))
	mkfifo("linkdir/z/fifo")
	must(t, os.Symlink("z/fifo", filepath.Join(s.Source, "linkdir/pipe")))
	specials := []struct{ what, src string }{
		{"FIFO", "special/p%d"},
		{"unix socket", "special/sock"},
		{"link to a FIFO", "special/to-pipe"},
	}
	// A character device like /dev/null (1:3) needs root to make; without
	// it only that case is left out.
	device := "a character device (1:3, made with mknod)"
	if os.Geteuid() != 0 {
		device = "(no character device: mknod needs root and this test runs as another user)"
	} else if err := unix.Mknod(filepath.Join(s.Source, "special/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		device = fmt.Sprintf("(no character device: mknod failed: %v)", err)
	} else {
		specials = append(specials, struct{ what, src string }{"character device", "special/null"})
	}
	t.Log(device)

	type kind struct{ name, method, src, verb string }
	var kinds []kind
	for _, sp := range specials {
		kinds = append(kinds,
			kind{sp.what + " by local_copy", "local_copy", sp.src, http.MethodPost},
			kind{sp.what + " by local_symlink", "local_symlink", sp.src, http.MethodPost},
			kind{sp.what + " by direct_download (GET)", "direct_download", sp.src, http.MethodGet},
			kind{sp.what + " by direct_download (POST)", "direct_download", sp.src, http.MethodPost})
	}
	kinds = append(kinds,
		kind{"tree with a FIFO inside by local_copy", "local_copy", "tree", http.MethodPost},
		kind{"tree with a FIFO inside as a tar (direct_download)", "direct_download", "tree", http.MethodGet},
		kind{"folder with a link to a FIFO by local_copy", "local_copy", "linkdir", http.MethodPost},
		kind{"folder with a link to a FIFO as a tar (direct_download)", "direct_download", "linkdir", http.MethodGet})

	p := s.start(t, nil)
	pid := p.Pid()
	newClient := func(timeout time.Duration) *http.Client {
		return &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	}
	ask := func(c *http.Client, method, src, verb string, i int) *answer {
		if strings.Contains(src, "%d") {
			src = fmt.Sprintf(src, i%fifos)
		}
		if verb == http.MethodGet {
			return call(c, verb, stageURL(p.URL, method, "flood")+"&local_path_on_storage="+url.QueryEscape(src), nil)
		}
		return call(c, verb, stageURL(p.URL, method, "flood"), stageBody(src, fmt.Sprintf("f%04d", i)))
	}
	// flood sends n requests at once and returns their answers.
	flood := func(c *http.Client, send func(i int) *answer) []*answer {
		out := make([]*answer, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				out[i] = send(i)
			}()
		}
		close(start)
		wg.Wait()
		return out
	}
	// settle closes the clients' idle connections and waits (up to 5 s)
	// for the process's open files to stop falling; it returns its threads
	// and open files.
	settle := func(clients ...*http.Client) (int, int, []string) {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
		last, stable := -1, 0
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && stable < 5; {
			time.Sleep(50 * time.Millisecond)
			if f := openFiles(t, pid); f == last {
				stable++
			} else {
				last, stable = f, 0
			}
		}
		return threads(t, pid), openFiles(t, pid), waitingThreads(t, pid)
	}
	threads0, files0 := threads(t, pid), openFiles(t, pid)

	// The baseline: an equal flood of ordinary refusals (missing sources).
	control := newClient(answerWithin)
	for i, a := range flood(control, func(i int) *answer {
		k := kinds[i%len(kinds)]
		return ask(control, k.method, "missing/"+strconv.Itoa(i), k.verb, i)
	}) {
		if a.Status != 400 && a.Status != 429 {
			t.Fatalf("control flood, %s of a missing path: %v", kinds[i%len(kinds)].method, a)
		}
	}
	threads1, files1, waiting1 := settle(control)
	source := snapshot(t, s.Source)

	// The flood, with probes beside it.
	floodClient, probeClient := newClient(answerWithin), newClient(5*time.Second)
	var answers []*answer
	done := make(chan struct{})
	began := time.Now()
	go func() {
		defer close(done)
		answers = flood(floodClient, func(i int) *answer {
			k := kinds[i%len(kinds)]
			return ask(floodClient, k.method, k.src, k.verb, i)
		})
	}()
	// A probe copy may be deferred by MAX_INFLIGHT (429 with Retry-After)
	// while the flood fills the process; it must still answer in time, and
	// some must stage.
	var health, copies latencies
	var probeErrs []string
	var staged []string // probe copies made
	deferredProbes := 0
	probe := func(k int) {
		h := call(probeClient, http.MethodGet, p.URL+"/healthz", nil)
		dst := fmt.Sprintf("c%04d", k)
		c := call(probeClient, http.MethodPost, stageURL(p.URL, "local_copy", "probe"), stageBody(probeSrc, dst))
		health, copies = append(health, h.Took), append(copies, c.Took)
		if h.Status != 200 {
			probeErrs = append(probeErrs, "/healthz: "+h.String())
		}
		switch {
		case c.Status == 200 && c.str("status") == "success":
			staged = append(staged, dst)
		case c.Status == 429 && c.Header.Get("Retry-After") != "":
			deferredProbes++
		default:
			probeErrs = append(probeErrs, "local_copy: "+c.String())
		}
	}
	peakThreads := 0
probing:
	for k := 0; ; k++ {
		peakThreads = max(peakThreads, threads(t, pid))
		probe(k)
		select {
		case <-done:
			break probing
		case <-time.After(10 * time.Millisecond):
		}
	}
	floodTook := time.Since(began)
	probes := len(copies)
	if len(staged) == 0 {
		t.Errorf("no probe copy staged during the flood (%d deferred 429)", deferredProbes)
	}
	// And once it is over, a copy stages at once.
	probe(probes)
	if len(staged) == 0 || staged[len(staged)-1] != fmt.Sprintf("c%04d", probes) {
		t.Errorf("a 4 KiB local_copy after the flood was not staged")
	}

	// Every request refused, none left waiting.
	type tally struct {
		refused, deferred int
		wrong             []string
	}
	byKind := map[string]*tally{}
	var slowest time.Duration
	refused, deferred, hung, other := 0, 0, 0, 0
	for i, a := range answers {
		k := kinds[i%len(kinds)]
		tl := byKind[k.name]
		if tl == nil {
			tl = &tally{}
			byKind[k.name] = tl
		}
		slowest = max(slowest, a.Took)
		var timeout net.Error
		switch {
		case a.Err != nil && errors.As(a.Err, &timeout) && timeout.Timeout():
			hung++
			tl.wrong = append(tl.wrong, fmt.Sprintf("no answer within %s: the request hangs (a FIFO opened for reading waits for a writer that never comes)", answerWithin))
		case a.Status == 400 && a.str("detail") != "":
			refused++
			tl.refused++
		case a.Status == 429 && a.Header.Get("Retry-After") != "" && a.str("detail") != "":
			deferred++
			tl.deferred++
		default:
			other++
			tl.wrong = append(tl.wrong, "answered "+clip(a.String(), 200))
		}
	}
	names := make([]string, 0, len(byKind))
	for name := range byKind {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if tl := byKind[name]; len(tl.wrong) > 0 {
			t.Errorf("%s: %d of %d requests not refused with 400 and a detail; the first: %s",
				name, len(tl.wrong), len(tl.wrong)+tl.refused+tl.deferred, tl.wrong[0])
		}
	}
	// A kind deferred by MAX_INFLIGHT is asked once more, alone: it must
	// then be refused.
	for _, k := range kinds {
		if tl := byKind[k.name]; tl != nil && tl.deferred > 0 {
			if a := ask(floodClient, k.method, k.src, k.verb, n); a.Status != 400 || a.str("detail") == "" {
				t.Errorf("%s, asked alone after a 429: %v", k.name, clip(a.String(), 200))
			}
		}
	}
	for _, e := range probeErrs[:min(len(probeErrs), 5)] {
		t.Errorf("probe during the flood: %s", e)
	}
	if m := health.percentile(100); m > probeBound {
		t.Errorf("/healthz took up to %s during the flood (bound %s)", ms(m), probeBound)
	}
	if m := copies.percentile(100); m > probeBound {
		t.Errorf("a 4 KiB local_copy took up to %s during the flood (bound %s)", ms(m), probeBound)
	}

	// Nothing made in the area, nothing left running or behind.
	var made []string
	filepath.WalkDir(s.userPath("flood", ""), func(path string, d fs.DirEntry, err error) error {
		if err == nil && path != s.userPath("flood", "") {
			info, _ := d.Info()
			made = append(made, fmt.Sprintf("%s (%v)", strings.TrimPrefix(path, s.Target+"/"), info.Mode()))
		}
		return nil
	})
	if len(made) > 0 {
		t.Errorf("%d names made in the flood's user area, e.g. %v", len(made), made[:min(len(made), 5)])
	}
	for _, dst := range staged {
		if got, err := os.ReadFile(s.userPath("probe", dst)); err != nil || !bytes.Equal(got, probeContent) {
			t.Errorf("probe copy %s: %d bytes (%v), want the source's", dst, len(got), err)
			break
		}
	}
	left := testenv.Temps(s.Target, ".skao-staging-")
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	sameSnapshot(t, "the source", source, snapshot(t, s.Source))
	running := 0
	for _, op := range s.operations(t) {
		if op.Status == staging.StatusRunning || op.Status == staging.StatusPending {
			running++
		}
	}
	if running > 0 {
		t.Errorf("%d operations left %s after every client had its answer or gave up", running, staging.StatusRunning)
	}

	// Threads and open files back to what the ordinary flood left.
	threads2, files2, waiting2 := settle(floodClient, probeClient)
	if len(waiting2) > len(waiting1) {
		t.Errorf("after the flood, %d threads wait in the kernel (%s); after an equal flood of ordinary refusals %d (%s)",
			len(waiting2), strings.Join(waiting2, ", "), len(waiting1), strings.Join(waiting1, ", "))
	}
	if files2 > files1+8 {
		t.Errorf("%d open files after the flood, %d after an equal flood of ordinary refusals", files2, files1)
	}
	record(t,
		fmt.Sprintf("%d requests at once naming FIFOs, a unix socket, a tree with a FIFO inside and links to FIFOs, %s, by local_copy, local_symlink and direct_download (file and tar), %d kinds: %d refused 400 with a detail, %d deferred 429, %d other answers, %d unanswered after %s; the slowest answer %s, all in %.1f s",
			n, device, len(kinds), refused, deferred, other, hung, answerWithin, ms(slowest), floodTook.Seconds()),
		fmt.Sprintf("meanwhile %d probes and one after the flood: /healthz p50 %s, max %s; a 4 KiB local_copy p50 %s, max %s (bound %s), %d staged, %d deferred 429",
			probes, ms(health.percentile(50)), ms(health.percentile(100)), ms(copies.percentile(50)), ms(copies.percentile(100)), ms(probeBound), len(staged), deferredProbes),
		fmt.Sprintf("threads: %d at the start, %d after an equal flood of missing paths, %d after this one (%d sampled at its peak), of which waiting in the kernel outside the Go runtime's idle waits: %d and %d; open files: %d, %d, %d",
			threads0, threads1, threads2, peakThreads, len(waiting1), len(waiting2), files0, files1, files2),
		fmt.Sprintf("afterwards: %d names in the flood's user area, %d temporary files, %d operations left running; the source unchanged", len(made), len(left), running))
}

// threads is the number of threads of process pid.
func threads(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			must(t, err)
			return n
		}
	}
	t.Fatalf("no Threads in /proc/%d/status", pid)
	return 0
}

// idleSyscalls are where the Go runtime parks a thread it has no work for
// (futex), waits for the network poller or sleeps: a thread in any of them
// is not held by a request.
var idleSyscalls = map[int]bool{
	unix.SYS_FUTEX:           true,
	unix.SYS_EPOLL_PWAIT:     true,
	unix.SYS_EPOLL_PWAIT2:    true,
	unix.SYS_NANOSLEEP:       true,
	unix.SYS_CLOCK_NANOSLEEP: true,
	unix.SYS_SCHED_YIELD:     true,
}

// waitingThreads names the threads of process pid that are blocked in a
// syscall other than the runtime's idle waits, as "tid in syscall N" (a
// thread opening a FIFO with no writer shows as openat, forever). It looks
// a few times and keeps the fewest, so a syscall that happens to be under
// way at one look is not mistaken for a thread held.
func waitingThreads(t *testing.T, pid int) []string {
	t.Helper()
	var fewest []string
	for look := range 5 {
		if look > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		must(t, err)
		var waiting []string
		for _, task := range tasks {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, task.Name()))
			if err != nil {
				continue // the thread has just exited
			}
			nr, _, _ := strings.Cut(strings.TrimSpace(string(data)), " ")
			n, err := strconv.Atoi(nr)
			if err != nil || n < 0 || idleSyscalls[n] { // "running", or not in a syscall
				continue
			}
			waiting = append(waiting, fmt.Sprintf("%s in syscall %d", task.Name(), n))
		}
		if look == 0 || len(waiting) < len(fewest) {
			fewest = waiting
		}
	}
	return fewest
}

// openFiles is the number of open file descriptors of process pid.
func openFiles(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	must(t, err)
	return len(fds)
}

// clip shortens s to n bytes for a message.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
