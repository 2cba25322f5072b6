package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// Async with a DID whose replica is there: the request is resolved at
// admission and handed on resolved, in this process or through a broker,
// and stages the replica; the record keeps its source.
func TestAsyncByDIDEndToEnd(t *testing.T) {
	for _, via := range []string{"in process", "broker"} {
		t.Run(via, func(t *testing.T) {
			env := map[string]string{"K_SINK": ""} // no broker: run in this process
			var b *broker
			if via == "broker" {
				b = startBroker(t)
				env["K_SINK"] = b.URL
			}
			r := startRucio(t, env)
			if b != nil {
				b.deliverTo(r.URL + "/")
			}
			r.placeReplica(t, "skao:present.dat", helloContent)
			body := map[string]any{"data": map[string]string{"did": "skao:present.dat", "relative_path": "async/hello.txt"}}
			res := testenv.Do(t, http.MethodPost, r.URL+"/stage_data?method=local_copy&username=alice", body, "Prefer", "respond-async")
			expect(t, res, 202, "status", "pending")
			op := r.waitOperation(t, res.Str("id"))
			if op["status"] != "success" || op["did"] != "skao:present.dat" ||
				op["local_path_on_storage"] != filepath.Join("rse", replicaPaths["skao:present.dat"]) {
				t.Fatalf("operation %v", op)
			}
			if got, _ := os.ReadFile(r.userPath("alice", "async/hello.txt")); string(got) != helloContent {
				t.Fatalf("staged %q", got)
			}
		})
	}
}

// A download slower than several leases (a client reading at a limited
// rate) keeps its operation running, its bytes_done growing while it
// streams, then records success; it is never reported failed in between.
func TestSlowDownloadKeepsItsLease(t *testing.T) {
	t.Parallel()
	const (
		size     = 48 << 20 // more than the socket buffers hold
		lasting  = 30 * time.Second
		lease    = "2s"
		chunk    = 64 << 10
		interval = lasting / (size / chunk)
	)
	s := startStage(t, map[string]string{"OPERATION_LEASE": lease})
	f, err := os.Create(filepath.Join(s.Source, "big.bin"))
	must(t, err)
	must(t, f.Truncate(size))
	must(t, f.Close())

	resp, err := http.Get(s.URL + "/stage_data?method=direct_download&username=alice&local_path_on_storage=big.bin")
	must(t, err)
	defer resp.Body.Close()
	id := resp.Header.Get("X-Operation-Id")
	if resp.StatusCode != 200 || id == "" {
		t.Fatalf("download answered %d, operation %q", resp.StatusCode, id)
	}
	read := make(chan int64)
	go func() {
		var n int64
		buf := make([]byte, chunk)
		for {
			time.Sleep(interval)
			m, err := io.ReadFull(resp.Body, buf)
			n += int64(m)
			if err != nil {
				read <- n
				return
			}
		}
	}()
	var seen []int64
	watch := time.NewTicker(time.Second)
	defer watch.Stop()
	for done := false; !done; {
		select {
		case n := <-read:
			if n != size {
				t.Fatalf("read %d bytes of %d", n, size)
			}
			done = true
		case <-watch.C:
			// Running while it streams; once everything is sent (the
			// client still reads what the socket buffers hold), success.
			op := s.operation(t, id)
			sent := int64(op["bytes_done"].(float64))
			if op["status"] != "running" && !(op["status"] == "success" && sent == size) {
				t.Fatalf("after %d s of streaming the operation is %v", len(seen)+1, op)
			}
			seen = append(seen, sent)
		}
	}
	op := s.waitOperation(t, id)
	if op["status"] != "success" || op["bytes_done"] != float64(size) {
		t.Fatalf("finished operation %v", op)
	}
	// Progress shows while it streams: bytes_done never goes back, and
	// grows over the download, not only at its end.
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Fatalf("bytes_done went back: %v", seen)
		}
	}
	if len(seen) < 20 || seen[len(seen)/2] == 0 || seen[len(seen)/2] >= size || seen[len(seen)-1] <= seen[len(seen)/4] {
		t.Fatalf("bytes_done seen each second: %v", seen)
	}
	t.Logf("bytes_done each second over %d s: %v", len(seen), seen)
}
