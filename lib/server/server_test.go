package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// get sends method to url as the kubelet does (probe) or as a client does.
func get(t *testing.T, method, url string, probe bool, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if probe {
		req.Header.Set("User-Agent", "kube-probe/1.34")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Liveness stays up while the database is away, readiness follows it, for
// the kubelet's probes (which Knative's drainer answers) as for clients;
// on SIGTERM readiness turns false and the server drains.
func TestProbesAndDrain(t *testing.T) {
	var dbDown atomic.Bool
	dbDown.Store(true)
	ctx, stop := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- RunContext(ctx, Options{Host: "127.0.0.1", Port: 0, Logger: slog.Default(), DrainTimeout: 5 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "handled") }),
			Ready: func(context.Context) error {
				if dbDown.Load() {
					return errors.New("dial tcp 10.0.0.7:3306: connection refused")
				}
				return nil
			},
			Listening: func(a net.Addr) { addr <- a }})
	}()
	url := "http://" + (<-addr).String()
	for _, probe := range []bool{true, false} {
		if s, _ := get(t, "GET", url+"/healthz", probe); s != 200 {
			t.Errorf("liveness (probe %v) with the database away: %d", probe, s)
		}
		s, body := get(t, "GET", url+"/readyz", probe)
		if s != 503 || strings.Contains(body, "10.0.0.7") {
			t.Errorf("readiness (probe %v) with the database away: %d %s", probe, s, body)
		}
	}
	dbDown.Store(false)
	if s, _ := get(t, "GET", url+"/readyz", true); s != 200 {
		t.Errorf("readiness with the database back: %d", s)
	}
	// A browser's cross-origin POST is refused; a plain client's passes.
	if s, body := get(t, "POST", url+"/x", false, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"); s != 403 || !strings.Contains(body, "Cross-origin request refused") {
		t.Errorf("cross-origin POST: %d %s", s, body)
	}
	if s, body := get(t, "POST", url+"/x", false); s != 200 || body != "handled" {
		t.Errorf("plain POST: %d %s", s, body)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("drain: %v", err)
	}
}
