package reliability

import (
	"context"
	"errors"
	"fmt"
	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// TestKilledMidCopy kills a function (SIGKILL) in the middle of a large
// copy: nothing may appear under the target's name; after a restart the
// operation is recorded as failed, its temporary file (where the copy had
// a name at all) is removed, and a retry stages the right content.
func TestKilledMidCopy(t *testing.T) {
	bytes := size[int64](128<<20, 1<<30)
	s := newSite(t, testenv.MariaDB(t))
	p := s.start(t, map[string]string{"OPERATION_LEASE": "1s"})
	sum := testenv.RandomFile(t, filepath.Join(s.Source, "huge.bin"), bytes)
	target := s.userPath("alice", "in/huge.bin")
	go call(client, http.MethodPost, stageURL(p.URL, "local_copy", "alice"), stageBody("huge.bin", "in/huge.bin"))
	// Kill once a good part is copied, so the copy is cut in its middle.
	// The copy is a file without a name (O_TMPFILE) or, where the
	// filesystem cannot make one, under a temporary name.
	var copied int64
	testenv.WaitFor(t, 60*time.Second, "the copy to be under way", func() bool {
		writing := p.Unpublished(s.Target, ".skao-staging-")
		if len(writing) != 1 {
			return false
		}
		info, err := os.Stat(writing[0])
		if err == nil {
			copied = info.Size()
		}
		return err == nil && copied >= bytes/8
	})
	p.Kill()
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("something is under the target's name after the kill: %v", err)
	}
	left := testenv.Temps(s.Target, ".skao-staging-")
	t.Logf("the killed copy left %d temporary files (none when it had no name)", len(left))
	for _, f := range left {
		if info, _ := os.Stat(f); info == nil || info.Size() >= bytes {
			t.Fatalf("the copy was not cut short: %v", info)
		}
	}

	restarted := time.Now()
	p.Restart()
	// The sweep removes the temporary file, then records the operation.
	var ops []staging.Operation
	testenv.WaitFor(t, 30*time.Second, "the sweep to remove any temporary file and record the operation", func() bool {
		ops = s.operations(t)
		return len(testenv.Temps(s.Target, ".skao-staging-")) == 0 && len(ops) == 1 && ops[0].Status.Finished()
	})
	swept := time.Since(restarted)
	if len(ops) != 1 || ops[0].Status != staging.StatusFailed || !strings.HasPrefix(ops[0].ErrorReason, "Interrupted") {
		t.Fatalf("the killed operation is recorded as %+v", ops)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("something is under the target's name after the restart: %v", err)
	}
	retry := time.Now()
	r := call(client, http.MethodPost, stageURL(p.URL, "local_copy", "alice"), stageBody("huge.bin", "in/huge.bin"))
	if r.Status != 200 || r.str("message") != "Data staged for user alice with method local_copy" {
		t.Fatalf("retry: %v", r)
	}
	if testenv.FileSum(t, target) != sum {
		t.Fatal("the retried copy differs from the source")
	}
	record(t, fmt.Sprintf("%d MiB copy killed at %d MiB copied; temporary files left: %d (the sweep removes any); operation marked failed %.1f s after the restart (OPERATION_LEASE=1s); retry staged it in %.1f s with the right sha256",
		bytes>>20, copied>>20, len(left), swept.Seconds(), time.Since(retry).Seconds()))
}

// TestSIGTERMDuringLoad stops a function with SIGTERM while clients keep
// sending: requests in flight (a large copy among them) finish and are
// answered, readiness turns 503, new connections are refused, the process
// exits 0, and nothing is lost: every answered success is on disk and in
// the store, and no request that got no answer left a trace.
func TestSIGTERMDuringLoad(t *testing.T) {
	s := newSite(t, testenv.MariaDB(t))
	p := s.start(t, nil)
	for i := range 20 {
		s.write(t, fmt.Sprintf("small/%d", i), []byte(strings.Repeat(fmt.Sprint(i), 2048)))
	}
	sum := testenv.RandomFile(t, filepath.Join(s.Source, "big.bin"), size[int64](128<<20, 512<<20))
	// One connection per request, so a request is either sent on a
	// connection the server accepted or refused outright.
	noReuse := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	type sent struct {
		dst string
		ans *answer
	}
	var (
		mu      sync.Mutex
		all     []sent
		stopped atomic.Bool
		n       atomic.Int64
		wg      sync.WaitGroup
	)
	big := make(chan *answer, 1)
	go func() {
		big <- call(noReuse, http.MethodPost, stageURL(p.URL, "local_copy", "alice"), stageBody("big.bin", "big.bin"))
	}()
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				dst := fmt.Sprintf("c%d/%d", c, i)
				a := call(noReuse, http.MethodPost, stageURL(p.URL, "local_copy", "bob"), stageBody(fmt.Sprintf("small/%d", i%20), dst))
				n.Add(1)
				mu.Lock()
				all = append(all, sent{dst, a})
				mu.Unlock()
				if a.Err != nil && stopped.Load() {
					return
				}
			}
		}()
	}
	testenv.WaitFor(t, 60*time.Second, "the big copy to start and some load", func() bool { return len(p.Unpublished(s.Target, ".skao-staging-")) > 0 && n.Load() > 100 })
	p.Signal(syscall.SIGTERM)
	stopped.Store(true)
	sawNotReady := false
	for {
		r := call(noReuse, http.MethodGet, p.URL+"/readyz", nil)
		if r.Err != nil {
			break
		}
		sawNotReady = sawNotReady || r.Status == http.StatusServiceUnavailable
	}
	bigAnswer := <-big
	wg.Wait()
	if err := p.Wait(60 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if !sawNotReady {
		t.Error("/readyz never answered 503 while draining")
	}
	if bigAnswer.Status != 200 || bigAnswer.str("message") != "Data staged for user alice with method local_copy" {
		t.Fatalf("the copy in flight: %v", bigAnswer)
	}
	if testenv.FileSum(t, s.userPath("alice", "big.bin")) != sum {
		t.Fatal("the copy in flight differs from the source")
	}

	ops := s.operations(t)
	byTarget := map[string]staging.Operation{}
	for _, op := range ops {
		if !op.Status.Finished() {
			t.Errorf("operation without an outcome after shutdown: %+v", op)
		}
		byTarget[op.Username+"/"+op.RelativePath] = op
	}
	answered, refused, reset := 0, 0, 0
	for _, x := range all {
		op, recorded := byTarget["bob/"+x.dst]
		_, statErr := os.Lstat(s.userPath("bob", x.dst))
		if x.ans.Err != nil {
			// Refused at connect once the listener is closed; or reset,
			// unread, when the listener closed with the connection still
			// in its accept queue (the kernel resets those).
			switch {
			case errors.Is(x.ans.Err, syscall.ECONNREFUSED):
				refused++
			case errors.Is(x.ans.Err, syscall.ECONNRESET), errors.Is(x.ans.Err, io.EOF):
				reset++
			default:
				t.Errorf("%s: not refused cleanly: %v", x.dst, x.ans.Err)
			}
			if recorded || statErr == nil {
				t.Errorf("%s got no answer but left a record (%v) or a file (%v)", x.dst, recorded, statErr)
			}
			continue
		}
		answered++
		if x.ans.Status != 200 || !recorded || op.Status != staging.StatusSuccess || statErr != nil {
			t.Errorf("%s: answer %v, record %v %s, file %v", x.dst, x.ans, recorded, op.Status, statErr)
		}
	}
	if len(ops) != answered+1 {
		t.Errorf("%d records for %d answered requests and the big copy", len(ops), answered)
	}
	if left := testenv.Temps(s.Target, ".skao-staging-"); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	record(t, fmt.Sprintf("SIGTERM with a %d MiB copy and 8 clients in flight: the copy finished (200, right sha256); %d requests answered 200 and recorded; %d refused at connect and %d reset unread from the accept queue, none with a record or a file; /readyz 503 while draining; exit status 0",
		size(128, 512), answered, refused, reset))
}

// TestDatabaseStoppedDuringLoad stops MariaDB under load: requests answer
// 503 "Database unavailable" within a second and stage nothing, /readyz
// says not ready, and when MariaDB returns the same processes serve again
// by themselves.
func TestDatabaseStoppedDuringLoad(t *testing.T) {
	db := testenv.MariaDBServerFor(t)
	s := newSite(t, db.Database(t))
	// A short lease, so operations cut off by the outage are swept soon.
	env := map[string]string{"OPERATION_LEASE": "1s"}
	procs := []*testenv.Process{s.start(t, env), s.start(t, env)}
	pids := []int{procs[0].Pid(), procs[1].Pid()}
	for i := range 10 {
		s.write(t, fmt.Sprintf("f/%d", i), []byte(strings.Repeat("x", 4096+i)))
	}
	phase := size(time.Second, 5*time.Second)

	type sent struct {
		dst, src   string
		start, end time.Time
		ans        *answer
	}
	var (
		mu   sync.Mutex
		all  []sent
		done atomic.Bool
		wg   sync.WaitGroup
	)
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !done.Load(); i++ {
				dst, src := fmt.Sprintf("c%d/%d", c, i), fmt.Sprintf("f/%d", i%10)
				start := time.Now()
				a := call(client, http.MethodPost, stageURL(procs[c%2].URL, "local_copy", "alice"), stageBody(src, dst))
				mu.Lock()
				all = append(all, sent{dst, src, start, time.Now(), a})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(phase) // load before the outage
	must(t, db.Stop())
	down := time.Now()
	for _, p := range procs {
		if r := call(client, http.MethodGet, p.URL+"/readyz", nil); r.Status != http.StatusServiceUnavailable {
			t.Errorf("/readyz with the database down: %v", r)
		}
	}
	time.Sleep(phase) // the outage
	restart := time.Now()
	must(t, db.Start())
	up := time.Now()
	var recovered time.Duration
	testenv.WaitFor(t, 30*time.Second, "a staged request after the database returned", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, x := range all {
			if x.start.After(up) && x.ans.Status == 200 {
				recovered = x.end.Sub(up)
				return true
			}
		}
		return false
	})
	time.Sleep(phase) // load after the outage
	done.Store(true)
	wg.Wait()
	for i, p := range procs {
		if r := call(client, http.MethodGet, p.URL+"/readyz", nil); r.Status != 200 || p.Pid() != pids[i] {
			t.Errorf("process %d after the outage: /readyz %v, pid %d (was %d)", i, r, p.Pid(), pids[i])
		}
	}

	var during latencies
	before, after, straddling := 0, 0, 0
	for _, x := range all {
		switch {
		case x.end.Before(down) && x.start.Before(down) && x.ans.Status == 200:
			before++
		case x.start.After(down) && x.end.Before(restart):
			during = append(during, x.ans.Took)
			if x.ans.Status != http.StatusServiceUnavailable || x.ans.str("detail") != "Database unavailable" {
				t.Errorf("%s during the outage: %v", x.dst, x.ans)
			}
			if x.ans.Took > time.Second {
				t.Errorf("%s during the outage answered after %s", x.dst, x.ans.Took)
			}
			if _, err := os.Lstat(s.userPath("alice", x.dst)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s staged without a record", x.dst)
			}
		case x.start.After(up.Add(recovered)):
			after++
			if x.ans.Status != 200 {
				t.Errorf("%s after recovery: %v", x.dst, x.ans)
			}
		default:
			straddling++
		}
	}
	if len(during) == 0 || before == 0 || after == 0 {
		t.Fatalf("%d requests before, %d during, %d after the outage: the load did not cover it", before, len(during), after)
	}
	// Once operations cut off by the outage are swept, the store and the
	// disk agree: a success record for every file, a file for every one.
	var ops []staging.Operation
	testenv.WaitFor(t, 30*time.Second, "every operation to have an outcome", func() bool {
		ops = s.operations(t)
		for _, op := range ops {
			if !op.Status.Finished() {
				return false
			}
		}
		return true
	})
	success := map[string]bool{}
	for _, op := range ops {
		if op.Status == staging.StatusSuccess {
			success[op.RelativePath] = true
			if _, err := os.Lstat(s.userPath("alice", op.RelativePath)); err != nil {
				t.Errorf("success recorded for %s, but: %v", op.RelativePath, err)
			}
		}
	}
	disagree, late := 0, 0
	for _, x := range all {
		_, err := os.Lstat(s.userPath("alice", x.dst))
		onDisk := err == nil
		if onDisk && success[x.dst] && x.ans.Status == http.StatusServiceUnavailable {
			// Staged while the database went away: answered 503, recorded
			// once it was back; a retry finds the data there.
			late++
			r := call(client, http.MethodPost, stageURL(procs[0].URL, "local_copy", "alice"), stageBody(x.src, x.dst))
			if r.Status != 200 || r.str("message") != "Data already available at "+x.dst {
				t.Errorf("%s: retry after a late record: %v", x.dst, r)
			}
			continue
		}
		if onDisk != success[x.dst] || (x.ans.Status == 200) != onDisk {
			disagree++
			if op := findOp(ops, x.dst); op != nil {
				t.Errorf("%s: answer %v, on disk %v, record %s %q", x.dst, x.ans, onDisk, op.Status, op.ErrorReason)
			} else {
				t.Errorf("%s: answer %v, on disk %v, no record", x.dst, x.ans, onDisk)
			}
		}
	}
	if left := testenv.Temps(s.Target, ".skao-staging-"); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	record(t, fmt.Sprintf("MariaDB stopped for %s under 8 clients and 2 processes: %d requests answered 503 \"Database unavailable\" (p50 %s, max %s, none staged); /readyz 503 on both",
		phase, len(during), ms(during.percentile(50)), ms(during.percentile(100))),
		fmt.Sprintf("first success %s after MariaDB was back, same processes; %d requests before, %d after, %d around the stop and start moments",
			ms(recovered), before, after, straddling),
		fmt.Sprintf("afterwards: %d records, all with an outcome; %d staged just as the database went away, answered 503 and recorded as success once it was back; %d other disagreements between answers, records and files", len(ops), late, disagree))
}

func findOp(ops []staging.Operation, rel string) *staging.Operation {
	for i := range ops {
		if ops[i].RelativePath == rel {
			return &ops[i]
		}
	}
	return nil
}

// TestTargetFilesystemFull stages into a user area on a small tmpfs: a
// file and a directory too large for it are answered 507 with a detail,
// their temporary output is removed, what was there is intact, and staging
// that fits still works.
func TestTargetFilesystemFull(t *testing.T) {
	s := newSite(t, "")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", s.Target).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs on the target (needs root, as make test runs): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", s.Target).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	p := s.start(t, nil)
	s.write(t, "keep.txt", []byte("keep me"))
	testenv.RandomFile(t, filepath.Join(s.Source, "big.bin"), 16<<20)
	for i := range 3 {
		testenv.RandomFile(t, filepath.Join(s.Source, fmt.Sprintf("tree/part%d", i), "data"), 4<<20)
	}
	for _, user := range []string{"alice", "bob"} {
		if r := call(client, http.MethodPost, stageURL(p.URL, "local_copy", user), stageBody("keep.txt", "keep.txt")); r.Status != 200 {
			t.Fatalf("stage keep.txt: %v", r)
		}
	}
	before := snapshot(t, s.Target)
	var fs0 syscall.Statfs_t
	must(t, syscall.Statfs(s.Target, &fs0))

	for _, c := range []struct{ src, dst string }{{"big.bin", "big.bin"}, {"tree", "tree"}, {"big.bin", "deep/er/big.bin"}} {
		r := call(client, http.MethodPost, stageURL(p.URL, "local_copy", "alice"), stageBody(c.src, c.dst))
		if r.Status != http.StatusInsufficientStorage || r.str("detail") != "No space left in the user area" {
			t.Errorf("%s: %v, want 507 No space left in the user area", c.src, r)
		}
		if _, err := os.Lstat(s.userPath("alice", c.dst)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: something is under the target's name: %v", c.dst, err)
		}
		if left := testenv.Temps(s.Target, ".skao-staging-"); len(left) > 0 {
			t.Errorf("%s: temporary output left: %v", c.src, left)
		}
		if op := lastOperation(t, p.URL, "alice"); op["status"] != "failed" || op["error_reason"] != "No space left in the user area" {
			t.Errorf("%s recorded as %v", c.src, op)
		}
	}
	os.RemoveAll(s.userPath("alice", "deep")) // the folders made for the last case
	sameSnapshot(t, "the user areas", before, snapshot(t, s.Target))
	var fs1 syscall.Statfs_t
	must(t, syscall.Statfs(s.Target, &fs1))
	if fs1.Bfree != fs0.Bfree {
		t.Errorf("free blocks %d after the refusals, %d before: space was not given back", fs1.Bfree, fs0.Bfree)
	}
	if r := call(client, http.MethodPost, stageURL(p.URL, "local_copy", "alice"), stageBody("tree/part0", "part0")); r.Status != 200 {
		t.Errorf("a copy that fits after the refusals: %v", r)
	}
	record(t, "8 MiB tmpfs as TARGET_STORAGE_PATH: a 16 MiB file, a 12 MiB directory and a file under new folders each answered 507 \"No space left in the user area\", recorded as failed; no temporary output, free space back to what it was, other files intact; a 4 MiB copy succeeded afterwards")
}

// lastOperation is the newest operation record of a user, via the API.
func lastOperation(t *testing.T, base, user string) map[string]any {
	t.Helper()
	r := call(client, http.MethodGet, base+"/operations?limit=1&username="+user, nil)
	ops, _ := r.JSON["operations"].([]any)
	if len(ops) == 0 {
		t.Fatalf("no operation for %s: %v", user, r)
	}
	op, _ := ops[0].(map[string]any)
	return op
}

// TestEventDeliveredFiveTimes delivers the same CloudEvent five times at
// once, spread over two replicas sharing MariaDB and over both modes, then
// five times more in sequence: one copy, one record, ten identical answers.
// A refused event redelivered likewise keeps its one record and its status.
func TestEventDeliveredFiveTimes(t *testing.T) {
	s := newSite(t, testenv.MariaDB(t))
	procs := []*testenv.Process{s.start(t, nil), s.start(t, nil)}
	sum := testenv.RandomFile(t, filepath.Join(s.Source, "ev/data.bin"), 32<<20)
	ce, err := cloudevents.NewClientHTTP()
	must(t, err)
	deliver := func(i int, ev cloudevents.Event) (int, string) {
		ctx := cloudevents.ContextWithTarget(context.Background(), procs[i%2].URL+"/")
		if i%3 == 0 {
			ctx = cloudevents.WithEncodingStructured(ctx)
		}
		reply, res := ce.Request(ctx, ev)
		var hr *cehttp.Result
		if !cloudevents.ResultAs(res, &hr) {
			return 0, res.Error()
		}
		if reply == nil {
			return hr.StatusCode, ""
		}
		var d events.ReplyData
		reply.DataAs(&d)
		return hr.StatusCode, reply.ID() + " " + reply.Type() + " " + d.ID + " " + d.Message
	}
	newEvent := func(id, src string) cloudevents.Event {
		return cetest.RequestEvent(t, id, staging.Request{Method: "local_copy", Username: "alice",
			Source: src, Target: "from-event.bin"})
	}
	for _, c := range []struct {
		name, id, src string
		status        int
	}{{"staged", "delivery-1", "ev/data.bin", 200}, {"refused", "delivery-2", "../outside/secret", 403}} {
		t.Run(c.name, func(t *testing.T) {
			ev := newEvent(c.id, c.src)
			answers := make([]string, 10)
			statuses := make([]int, 10)
			var wg sync.WaitGroup
			for i := range 5 {
				wg.Add(1)
				go func() { defer wg.Done(); statuses[i], answers[i] = deliver(i, ev) }()
			}
			wg.Wait()
			for i := 5; i < 10; i++ {
				statuses[i], answers[i] = deliver(i, ev)
			}
			for i := range answers {
				if statuses[i] != c.status || answers[i] != answers[0] {
					t.Errorf("delivery %d: %d %q, first %d %q", i, statuses[i], answers[i], statuses[0], answers[0])
				}
			}
		})
	}
	ops := s.operations(t)
	if len(ops) != 2 {
		t.Fatalf("%d records for two events delivered ten times each: %+v", len(ops), ops)
	}
	if testenv.FileSum(t, s.userPath("alice", "from-event.bin")) != sum {
		t.Fatal("the staged file differs from the source")
	}
	entries, _ := os.ReadDir(s.userPath("alice", ""))
	if len(entries) != 1 || len(testenv.Temps(s.Target, ".skao-staging-")) > 0 {
		t.Fatalf("the user area holds %v", entries)
	}
	record(t, "two events (one staged, one refused 403) each delivered 5 times at once over 2 replicas and both modes, then 5 times in sequence: 10 identical answers each, 2 records, one copy")
}
