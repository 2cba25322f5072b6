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

// TestStoppingEndsLongResponses: on SIGTERM, Stopping ends a long-lived
// response (a log stream) at once, while a request in flight (a staging)
// still finishes and the drain waits for it.
func TestStoppingEndsLongResponses(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	stopping, release := make(chan struct{}), make(chan struct{})
	entered := make(chan string, 2)
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- RunContext(ctx, Options{Host: "127.0.0.1", Port: 0, Logger: slog.Default(), DrainTimeout: 10 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- r.URL.Path
				if r.URL.Path == "/stream" {
					<-stopping
					io.WriteString(w, "ended")
					return
				}
				<-release
				io.WriteString(w, "finished")
			}),
			Stopping:  func() { close(stopping) },
			Listening: func(a net.Addr) { addr <- a }})
	}()
	url := "http://" + (<-addr).String()
	type answer struct {
		status int
		body   string
	}
	answers := map[string]chan answer{"/stream": make(chan answer, 1), "/staging": make(chan answer, 1)}
	for path, ch := range answers {
		go func() {
			resp, err := http.Get(url + path)
			if err != nil {
				ch <- answer{0, err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			ch <- answer{resp.StatusCode, string(b)}
		}()
	}
	<-entered
	<-entered
	stop()
	select {
	case a := <-answers["/stream"]:
		if a.status != 200 || a.body != "ended" {
			t.Errorf("the stream: %d %s", a.status, a.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream was not ended 10 s after SIGTERM")
	}
	select {
	case err := <-done:
		t.Fatalf("the server stopped (%v) before the staging in flight finished", err)
	default:
	}
	close(release)
	if a := <-answers["/staging"]; a.status != 200 || a.body != "finished" {
		t.Errorf("the staging in flight: %d %s", a.status, a.body)
	}
	if err := <-done; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// Every answer is nosniff, whoever writes it: a handler's download or
// JSON, the cross-origin refusal, the probes. A browser then never renders
// markup sniffed in an answer as a page of the service's origin.
func TestAnswersAreNosniff(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	addr := make(chan net.Addr, 1)
	go RunContext(ctx, Options{Host: "127.0.0.1", Port: 0, Logger: slog.Default(), DrainTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			io.WriteString(w, "<html><script>alert(document.domain)</script>")
		}),
		Listening: func(a net.Addr) { addr <- a }})
	url := "http://" + (<-addr).String()
	for _, c := range []struct {
		method, path string
		header       []string
	}{
		{"GET", "/download", nil},
		{"POST", "/stage_data", []string{"Sec-Fetch-Site", "cross-site"}},
		{"GET", "/healthz", nil},
		{"GET", "/readyz", nil},
	} {
		req, err := http.NewRequest(c.method, url+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(c.header); i += 2 {
			req.Header.Set(c.header[i], c.header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s: %d with X-Content-Type-Options %q, want nosniff", c.method, c.path, resp.StatusCode, got)
		}
	}
}

// A function listening on loopback (as make run starts each one, beside
// its ingress) answers only requests whose Host names this machine: a
// page whose name is pointed at 127.0.0.1 (DNS rebinding) gets 421 on the
// function's own port as on the ingress's. Listening on every interface,
// as in a pod, any Host is served.
func TestLoopbackListenerRefusesOtherHosts(t *testing.T) {
	for _, tt := range []struct {
		listen string
		hosts  map[string]int
	}{
		{"127.0.0.1", map[string]int{"127.0.0.1:8001": 200, "localhost:8001": 200, "[::1]:8001": 200,
			"evil.example:8001": http.StatusMisdirectedRequest, "127.0.0.1.nip.io": http.StatusMisdirectedRequest}},
		{"", map[string]int{"evil.example:8001": 200, "stage.skao.example": 200}},
	} {
		ctx, stop := context.WithCancel(context.Background())
		addr := make(chan net.Addr, 1)
		go RunContext(ctx, Options{Host: tt.listen, Port: 0, Logger: slog.Default(), DrainTimeout: 5 * time.Second,
			Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
			Listening: func(a net.Addr) { addr <- a }})
		_, port, _ := net.SplitHostPort((<-addr).String())
		for host, want := range tt.hosts {
			req, err := http.NewRequest("GET", "http://127.0.0.1:"+port+"/browse", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("listening on %q, Host %s: %d, want %d", tt.listen, host, resp.StatusCode, want)
			}
		}
		stop()
	}
}
