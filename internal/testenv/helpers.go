package testenv

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Response is an HTTP answer read whole, with its JSON object decoded when
// the answer is JSON.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

// Str returns a string field of the JSON answer, or "".
func (r *Response) Str(key string) string {
	v, _ := r.JSON[key].(string)
	return v
}

// Body is a request body: a string or []byte as is, anything else as JSON,
// nil for none.
func Body(body any) (io.Reader, error) {
	switch b := body.(type) {
	case nil:
		return nil, nil
	case string:
		return strings.NewReader(b), nil
	case []byte:
		return bytes.NewReader(b), nil
	}
	buf, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(buf), nil
}

// Do sends a request and reads the answer, failing tb on transport errors.
// body is sent as is when it is a string or []byte, else as JSON; header
// holds name, value pairs.
func Do(tb testing.TB, method, url string, body any, header ...string) *Response {
	tb.Helper()
	rd, err := Body(body)
	if err != nil {
		tb.Fatal(err)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	out := &Response{Status: resp.StatusCode, Header: resp.Header}
	if out.Body, err = io.ReadAll(resp.Body); err != nil {
		tb.Fatal(err)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(out.Body, &out.JSON); err != nil {
			tb.Fatalf("%s %s: answer is not a JSON object: %v: %s", method, url, err, out.Body)
		}
	}
	return out
}

// WaitFor polls cond every millisecond or two until it holds, failing tb
// after timeout.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// NoHang fails the test if fn does not return within five seconds, for
// what must never block: opening a FIFO for reading waits for a writer for
// ever.
func NoHang(tb testing.TB, what string, fn func()) {
	tb.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		tb.Fatalf("%s did not return: it blocks", what)
	}
}

// RandomFile writes size bytes of random-looking data quickly (one random
// MiB repeated) to path and returns their sha256.
func RandomFile(tb testing.TB, path string, size int64) [32]byte {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	rand.Read(block)
	h := sha256.New()
	w := io.MultiWriter(f, h)
	for n := int64(0); n < size; n += int64(len(block)) {
		if _, err := w.Write(block[:min(int64(len(block)), size-n)]); err != nil {
			tb.Fatal(err)
		}
	}
	return [32]byte(h.Sum(nil))
}

// FileSum is the sha256 of a file's content.
func FileSum(tb testing.TB, path string) [32]byte {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		tb.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// Temps lists the names under dir that start with prefix (the service's
// temporary outputs), not looking inside folders named in skip.
func Temps(dir, prefix string, skip ...string) []string {
	var found []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		for _, s := range skip {
			if d.IsDir() && d.Name() == s {
				return filepath.SkipDir
			}
		}
		if strings.HasPrefix(d.Name(), prefix) {
			found = append(found, p)
		}
		return nil
	})
	return found
}
