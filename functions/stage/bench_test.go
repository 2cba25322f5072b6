package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/telemetry"
)

// BenchmarkLocalCopy64KiB is make bench's row 3 in process, for profiles
// of what a small request costs besides its copy:
//
//	go test -run '^$' -bench LocalCopy64KiB -benchtime 5000x -cpu 8 \
//	    -cpuprofile cpu.out -blockprofile block.out -mutexprofile mutex.out ./functions/stage
//
// Each op of local_copy is one request of a 64 KiB file over keep-alive
// HTTP, from GOMAXPROCS clients (-cpu), to the stage function's handler
// over an embedded SQLite store, as the binary serves it. local_symlink is
// the same request without the copy (a link instead), healthz the HTTP
// round trip alone: the differences say what the copy and what the
// pipeline and its records cost. BENCH_LOGGING_LEVEL=INFO (the default is
// WARNING) logs each request as row 6 does, and BENCH_LOG_TO_STORE=false
// keeps those records out of the store.
func BenchmarkLocalCopy64KiB(b *testing.B) {
	dir := b.TempDir()
	source, target := filepath.Join(dir, "source"), filepath.Join(dir, "areas")
	must(b, os.MkdirAll(filepath.Join(source, "small"), 0o755))
	content := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	files := 2000
	for i := range files {
		must(b, os.WriteFile(filepath.Join(source, fmt.Sprintf("small/f%05d", i)), content, 0o644))
	}
	_, handler := inProcessAPI(b, map[string]string{"SOURCE_STORAGE_PATH": source, "TARGET_STORAGE_PATH": target,
		"DATABASE_URL": "sqlite://" + filepath.Join(dir, "staging.db"), "LOGGING_LEVEL": envOr("BENCH_LOGGING_LEVEL", "WARNING"), "LOG_TO_STORE": envOr("BENCH_LOG_TO_STORE", "true")})
	srv := httptest.NewServer(telemetry.Handler(handler))
	defer srv.Close()
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: transport}
	defer transport.CloseIdleConnections()
	var n atomic.Int64
	for _, method := range []string{"local_copy", "local_symlink", "healthz"} {
		b.Run(method, func(b *testing.B) {
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := benchRequest(client, srv.URL, method, n.Add(1), files); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// benchRequest sends request i of the benchmark.
func benchRequest(client *http.Client, base, method string, i int64, files int) error {
	if method == "healthz" {
		resp, err := client.Get(base + "/healthz")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
	body := fmt.Sprintf(`{"data":{"local_path_on_storage":"small/f%05d","relative_path":"c/%d"}}`, i%int64(files), i)
	resp, err := client.Post(base+"/stage_data?method="+method+"&username=bench", "application/json", bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", method, resp.StatusCode)
	}
	return nil
}

// envOr returns the environment variable k, or d when it is unset or empty.
func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}
