package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/store"
)

// TestRecordBloat fills the store with the largest records a request can
// leave (refusals with 4096-byte paths), offers paths of a megabyte (refused
// unrecorded), and adds records of a megabyte each as an earlier version
// wrote them; then readers walk /operations page by page in parallel while
// the web page's poll runs. Every page stays within its byte bound, the
// pages together hold every record once, the poll gets 304 while nothing
// changes, and the function's memory stays flat.
func TestRecordBloat(t *testing.T) {
	s := newSite(t, "")
	p := s.start(t, nil)
	refused, huge, legacy := size(100, 1000), size(20, 100), size(10, 50)
	readers, readFor := 6, size(3*time.Second, 20*time.Second)

	// Refusals with the longest paths a request may name: recorded.
	long := func(i int) string {
		path := fmt.Sprintf("missing-%06d", i)
		for len(path)+1+255 < 4096 {
			path += "/" + strings.Repeat("d", 200)
		}
		return path + "/" + strings.Repeat("x", 4096-len(path)-1)
	}
	for i := range refused {
		a := call(client, "POST", stageURL(p.URL, "local_copy", "bloat"), stageBody(long(i), long(i)))
		if a.Status != 400 && a.Status != 403 {
			t.Fatalf("refusal %d: %s", i, a)
		}
	}
	// Paths of a megabyte: 422, not recorded.
	mb := strings.Repeat("a/", 500_000)
	for i := range huge {
		a := call(client, "POST", stageURL(p.URL, "local_copy", "bloat"), stageBody(mb+strconv.Itoa(i), "x"))
		if a.Status != 422 && a.Status != 413 {
			t.Fatalf("1 MB path %d: %s", i, a)
		}
	}
	// Records as an earlier version left them: a megabyte of path and of
	// reason each, straight into the store.
	db, err := store.Open(context.Background(), s.DatabaseURL)
	must(t, err)
	for range legacy {
		now := time.Now().UTC()
		must(t, db.Create(context.Background(), &staging.Operation{ID: staging.NewID(), Method: "local_copy",
			Username: "bloat", LocalPathOnStorage: mb, RelativePath: mb, Status: staging.StatusFailed,
			ErrorKind: staging.Rejected, ErrorReason: "Source path does not exist: " + mb,
			CreatedAt: now, UpdatedAt: now, FinishedAt: &now}))
	}
	db.Close()
	total := refused + legacy
	idle, err := vmHWM(p.Pid())
	must(t, err)

	// Readers walk every page, as fast as they can, in parallel.
	var pages, bytesRead, biggest atomic.Int64
	var mu sync.Mutex
	var problems []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	deadline := time.Now().Add(readFor)
	var wg sync.WaitGroup
	walks := make([]int, readers)
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				seen := map[string]bool{}
				cursor := ""
				for {
					u := p.URL + "/operations?limit=1000&username=bloat"
					if cursor != "" {
						u += "&cursor=" + url.QueryEscape(cursor)
					}
					a := call(client, "GET", u, nil)
					if a.Status != 200 {
						fail("page: %s", a)
						return
					}
					pages.Add(1)
					bytesRead.Add(int64(len(a.Body)))
					for n := biggest.Load(); int64(len(a.Body)) > n && !biggest.CompareAndSwap(n, int64(len(a.Body))); n = biggest.Load() {
					}
					var page struct {
						Operations []staging.Operation `json:"operations"`
						Next       *string             `json:"next"`
					}
					if err := json.Unmarshal(a.Body, &page); err != nil {
						fail("page: %v", err)
						return
					}
					for _, op := range page.Operations {
						if seen[op.ID] {
							fail("operation %s on two pages", op.ID)
						}
						seen[op.ID] = true
					}
					if page.Next == nil {
						break
					}
					cursor = *page.Next
				}
				if len(seen) != total {
					fail("a walk found %d operations, want %d", len(seen), total)
				}
				walks[r]++
			}
		}()
	}
	// Meanwhile the web page polls its first 50 with the ETag it got.
	polls, notModified := 0, 0
	etag := ""
	for time.Now().Before(deadline) {
		a := call(client, "GET", p.URL+"/operations?limit=50&username=bloat", nil, "If-None-Match", etag)
		polls++
		switch {
		case a.Status == 304 && len(a.Body) == 0:
			notModified++
		case a.Status == 200 && etag == "":
			etag = a.Header.Get("ETag")
		default:
			fail("poll with an unchanged page: %s", a)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	peak, err := vmHWM(p.Pid())
	must(t, err)
	for _, pr := range problems {
		t.Error(pr)
	}
	allWalks := 0
	for _, w := range walks {
		allWalks += w
	}
	if b := biggest.Load(); b > staging.MaxPageBytes+4<<10 {
		t.Errorf("a page of %d bytes, bound %d", b, staging.MaxPageBytes)
	}
	if polls > 2 && notModified < polls-2 {
		t.Errorf("web page poll: %d of %d answered 304", notModified, polls)
	}
	if peak > 96<<20 {
		t.Errorf("peak RSS %d MiB while reading", peak>>20)
	}
	record(t,
		fmt.Sprintf("%d refusals with 4096-byte paths recorded, %d requests with 1 MB paths refused unrecorded (422), %d records of 2 MB each written as an earlier version did",
			refused, huge, legacy),
		fmt.Sprintf("%d readers walked every page of /operations?limit=1000 for %s: %d complete walks, %d pages, %.1f MiB read; largest page %d bytes (bound %d), every record once per walk",
			readers, readFor, allWalks, pages.Load(), float64(bytesRead.Load())/(1<<20), biggest.Load(), staging.MaxPageBytes),
		fmt.Sprintf("the web page's poll with If-None-Match: %d of %d answered 304 with no body", notModified, polls),
		fmt.Sprintf("stage function's peak RSS (VmHWM) %.1f MiB before the readers, %.1f MiB after", float64(idle)/(1<<20), float64(peak)/(1<<20)))
}

// vmHWM is the peak resident set size of process pid, in bytes.
func vmHWM(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
