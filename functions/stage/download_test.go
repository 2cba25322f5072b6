package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// inProcess is the stage function's handler over fresh storage and an
// embedded store, served by httptest: for tests that change the package's
// own bounds.
func inProcess(t *testing.T) (*function.Function, *httptest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	source := filepath.Join(dir, "source")
	must(t, os.MkdirAll(source, 0o755))
	fn, handler := inProcessAPI(t, map[string]string{"SOURCE_STORAGE_PATH": source, "TARGET_STORAGE_PATH": filepath.Join(dir, "areas"),
		"DATABASE_URL": "sqlite://" + filepath.Join(dir, "staging.db"), "LOGGING_LEVEL": "WARNING", "LOG_TO_STORE": "false"})
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return fn, srv, source
}

// waitFailed polls the store until operation id has failed.
func waitFailed(t *testing.T, fn *function.Function, id string, within time.Duration) *staging.Operation {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		op, err := fn.Store.Get(context.Background(), id)
		if err == nil && op.Status == staging.StatusFailed {
			return op
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation %s: %+v %v, want failed within %s", id, op, err, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A client that reads nothing of its download is cut off after
// stallTimeout, and its operation fails, instead of holding its place in
// MAX_INFLIGHT for ever.
func TestStalledDownloadIsCutOff(t *testing.T) {
	defer func(d time.Duration) { stallTimeout = d }(stallTimeout)
	stallTimeout = 300 * time.Millisecond
	fn, srv, source := inProcess(t)
	f, err := os.Create(filepath.Join(source, "big.bin"))
	must(t, err)
	must(t, f.Truncate(256<<20)) // more than any socket buffers hold
	must(t, f.Close())
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	must(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /stage_data?method=direct_download&username=alice&local_path_on_storage=big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil) // the headers; the body is never read
	must(t, err)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	op := waitFailed(t, fn, resp.Header.Get("X-Operation-Id"), 20*stallTimeout+5*time.Second)
	if op.ErrorKind != staging.Canceled || op.BytesDone >= 256<<20 {
		t.Fatalf("%+v", op)
	}
}

// A Range outside the file is a 416 with a JSON detail, and its
// operation failed, not a success of the error text's length.
func TestRangeOutsideTheFile(t *testing.T) {
	fn, srv, source := inProcess(t)
	must(t, os.WriteFile(filepath.Join(source, "hello.txt"), []byte("hello, world"), 0o644))
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/stage_data?method=direct_download&username=alice&local_path_on_storage=hello.txt", nil)
	must(t, err)
	req.Header.Set("Range", "bytes=100-200")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	var body struct{ Detail string }
	must(t, json.NewDecoder(resp.Body).Decode(&body))
	const detail = "Range not satisfiable: the file has 12 bytes"
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Type") != "application/json" ||
		body.Detail != detail || resp.Header.Get("Content-Range") != "bytes */12" {
		t.Fatalf("%d %s %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body.Detail, resp.Header.Get("Content-Range"))
	}
	op := waitFailed(t, fn, resp.Header.Get("X-Operation-Id"), 5*time.Second)
	if op.ErrorReason != detail || op.BytesDone != 0 {
		t.Fatalf("%+v", op)
	}
}

// A download's name reaches every client: filename* (RFC 5987) for
// browsers and wget, after a plain ASCII filename for clients that read
// only that (curl -J); quotes, separators and line breaks stay inside the
// parameter.
func TestAttachmentName(t *testing.T) {
	for _, c := range []struct{ name, want string }{
		{"file.bin", `attachment; filename=file.bin`},
		{`a"b;c.txt`, `attachment; filename="a\"b;c.txt"`},
		{"héllo wörld.txt", `attachment; filename="h_llo w_rld.txt"; filename*=utf-8''h%C3%A9llo%20w%C3%B6rld.txt`},
		{"new\nline\r.txt", `attachment; filename=new_line_.txt; filename*=utf-8''new%0Aline%0D.txt`},
		{"rtl\u202egnp.exe", `attachment; filename=rtl_gnp.exe; filename*=utf-8''rtl%E2%80%AEgnp.exe`},
		{"bad\xff.txt", `attachment; filename=bad_.txt; filename*=utf-8''bad%FF.txt`},
	} {
		got := attachment(c.name)
		if got != c.want {
			t.Errorf("%q: %s, want %s", c.name, got, c.want)
		}
		disposition, params, err := mime.ParseMediaType(got)
		if err != nil || disposition != "attachment" || params["filename"] != c.name {
			t.Errorf("%q: %s reads as %s %q (%v)", c.name, got, disposition, params, err)
		}
	}
}
