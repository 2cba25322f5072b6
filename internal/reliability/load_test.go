package reliability

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// expectation is what one staged item must leave behind.
type expectation struct {
	user, rel, src string
	link           bool
}

// TestLoad sends a mix of local_copy, local_symlink, direct_download,
// duplicate and batch requests from many clients to two stage functions
// sharing one MariaDB, then checks that the store and the disk agree
// exactly: every success has its file with the right content, every record
// its outcome, nothing else is in the users' areas and no temporary file
// is left.
func TestLoad(t *testing.T) {
	requests, clients := size(2000, 20000), size(8, 32)
	const nFiles, nDup, batchLen = 200, 50, 4
	s := newSite(t, testenv.MariaDB(t))
	// Room for every client's batch on one process: this test checks
	// that the store and the disk agree, not the limit of work in flight.
	room := map[string]string{"MAX_INFLIGHT": fmt.Sprint(max(64, clients*batchLen))}
	a, b := s.start(t, room), s.start(t, room)
	procs := []*testenv.Process{a, b}

	contents := make([][]byte, nFiles)
	for i := range contents {
		contents[i] = randomBytes(1024 + rand.IntN(63*1024))
		s.write(t, fmt.Sprintf("load/f%03d", i), contents[i])
	}
	srcOf := func(k int) string { return fmt.Sprintf("load/f%03d", k) }
	idx := map[string]int{}
	for k := range nFiles {
		idx[srcOf(k)] = k
	}

	var (
		mu       sync.Mutex
		expected []expectation // items that must be on disk
		items    atomic.Int64  // records the store must hold
		errs     []string
		kinds    = map[string]latencies{}
		all      latencies
		next     atomic.Int64
		dupStage atomic.Int64 // duplicates answered "staged" (not "already available")
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, fmt.Sprintf(format, args...))
	}
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= requests {
					return
				}
				p := procs[(i+c)%2]
				user := fmt.Sprintf("u%02d", i%32)
				k := rand.IntN(nFiles)
				var kind string
				var ans *answer
				var exp []expectation
				switch r := i % 20; {
				case r < 8:
					kind = "local_copy"
					dst := fmt.Sprintf("c/%d", i)
					ans = call(client, http.MethodPost, stageURL(p.URL, kind, user), stageBody(srcOf(k), dst))
					exp = []expectation{{user, dst, srcOf(k), false}}
					if ans.Status != 200 || ans.str("message") != "Data staged for user "+user+" with method local_copy" {
						fail("%s %s: %v", kind, dst, ans)
					}
				case r < 11:
					kind = "local_symlink"
					dst := fmt.Sprintf("l/%d", i)
					ans = call(client, http.MethodPost, stageURL(p.URL, kind, user), stageBody(srcOf(k), dst))
					exp = []expectation{{user, dst, srcOf(k), true}}
					if ans.Status != 200 || ans.str("status") != "success" {
						fail("%s %s: %v", kind, dst, ans)
					}
				case r < 15:
					kind = "direct_download"
					ans = call(client, http.MethodGet, stageURL(p.URL, kind, user)+"&local_path_on_storage="+srcOf(k), nil)
					if ans.Err != nil || ans.Status != 200 || !bytes.Equal(ans.Body, contents[k]) {
						fail("%s %s: status %d, %d bytes, err %v", kind, srcOf(k), ans.Status, len(ans.Body), ans.Err)
					}
				case r < 18:
					kind = "duplicate"
					k = (i / 20) % nDup
					dst := fmt.Sprintf("dup/%d", k)
					ans = call(client, http.MethodPost, stageURL(p.URL, "local_copy", "dupuser"), stageBody(srcOf(k), dst))
					exp = []expectation{{"dupuser", dst, srcOf(k), false}}
					switch msg := ans.str("message"); {
					case ans.Status == 200 && msg == "Data staged for user dupuser with method local_copy":
						dupStage.Add(1)
					case ans.Status == 200 && msg == "Data already available at "+dst:
					default:
						fail("%s %s: %v", kind, dst, ans)
					}
				default:
					kind = "batch"
					var data []map[string]string
					for j := range batchLen {
						src, dst := srcOf((k+j)%nFiles), fmt.Sprintf("b/%d/%d", i, j)
						data = append(data, map[string]string{"local_path_on_storage": src, "relative_path": dst})
						exp = append(exp, expectation{user, dst, src, false})
					}
					ans = call(client, http.MethodPost, stageURL(p.URL, "local_copy", user), map[string]any{"data": data})
					if ans.Status != 200 || ans.str("status") != "success" {
						fail("%s %d: %v", kind, i, ans)
					}
				}
				n := int64(len(exp))
				if kind == "direct_download" {
					n = 1
				}
				items.Add(n)
				mu.Lock()
				expected = append(expected, exp...)
				kinds[kind] = append(kinds[kind], ans.Took)
				all = append(all, ans.Took)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, e := range errs[:min(len(errs), 10)] {
		t.Errorf("unexpected answer: %s", e)
	}

	// The store and the disk agree.
	ops := s.operations(t)
	if int64(len(ops)) != items.Load() {
		t.Errorf("%d operation records for %d staged items", len(ops), items.Load())
	}
	notFinished, failed, staged := 0, 0, 0
	for _, op := range ops {
		switch op.Status {
		case staging.StatusSuccess:
			if strings.HasPrefix(op.Message, "Data staged") && op.Username == "dupuser" {
				staged++
			}
		case staging.StatusFailed:
			failed++
		default:
			notFinished++
		}
	}
	if notFinished > 0 || failed > 0 {
		t.Errorf("%d records without an outcome, %d failed", notFinished, failed)
	}
	if int64(staged) != dupStage.Load() || staged != min(nDup, requests/20) {
		t.Errorf("duplicates: %d records and %d answers say staged, want one per target (%d)", staged, dupStage.Load(), min(nDup, requests/20))
	}
	want := map[string]expectation{}
	for _, e := range expected {
		want[filepath.Join(e.user, e.rel)] = e
	}
	var mismatches []string
	for key, e := range want {
		p := filepath.Join(s.Target, key)
		if e.link {
			if l, err := os.Readlink(p); err != nil || l != filepath.Join(s.Source, e.src) {
				mismatches = append(mismatches, fmt.Sprintf("%s: link %q %v", key, l, err))
			}
			continue
		}
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, contents[idx[e.src]]) {
			mismatches = append(mismatches, fmt.Sprintf("%s: %d bytes, %v", key, len(got), err))
		}
	}
	extra := 0
	filepath.WalkDir(s.Target, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(s.Target, p)
			if _, ok := want[rel]; !ok {
				extra++
				mismatches = append(mismatches, "unexpected "+rel)
			}
		}
		return nil
	})
	for _, m := range mismatches[:min(len(mismatches), 10)] {
		t.Errorf("disk and store disagree: %s", m)
	}
	left := testenv.Temps(s.Target, ".skao-staging-")
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	lines := []string{
		fmt.Sprintf("%d requests (%d staged items) from %d clients to 2 stage processes sharing one MariaDB, in %.1f s: **%.0f requests/s**",
			requests, items.Load(), clients, elapsed.Seconds(), float64(requests)/elapsed.Seconds()),
		fmt.Sprintf("errors: **%d**; latency p50 **%s**, p99 **%s**, max %s", len(errs), ms(all.percentile(50)), ms(all.percentile(99)), ms(all.percentile(100))),
	}
	for _, k := range []string{"local_copy", "local_symlink", "direct_download", "duplicate", "batch"} {
		l := kinds[k]
		lines = append(lines, fmt.Sprintf("%s: %d requests, p50 %s, p99 %s", k, len(l), ms(l.percentile(50)), ms(l.percentile(99))))
	}
	lines = append(lines, fmt.Sprintf("afterwards: %d records, %d without an outcome, %d failed; %d files and links checked, %d mismatches, %d unexpected, %d temporary files",
		len(ops), notFinished, failed, len(want), len(mismatches)-extra, extra, len(left)))
	record(t, lines...)
}
