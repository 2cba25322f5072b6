package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/server"
)

func TestRoutesByLongestPrefix(t *testing.T) {
	backend := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name+" "+r.URL.Path)
		}))
	}
	stage, logs := backend("stage"), backend("logs")
	defer stage.Close()
	defer logs.Close()
	routes, err := parseRoutes("/=" + stage.URL + "; /logs=" + logs.URL)
	if err != nil {
		t.Fatal(err)
	}
	ingress := httptest.NewServer(handler(routes))
	defer ingress.Close()
	for path, want := range map[string]string{
		"/logs": "logs /logs", "/logs/": "logs /logs/", "/logsx": "stage /logsx",
		"/stage_data": "stage /stage_data", "/": "stage /",
	} {
		resp, err := http.Get(ingress.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Errorf("%s went to %q, want %q", path, b, want)
		}
	}
	if _, err := parseRoutes("logs=nowhere"); err == nil {
		t.Error("a bad route was accepted")
	}
}

// On loopback the ingress answers only requests naming this machine: a
// page whose name was pointed at 127.0.0.1 (DNS rebinding) is refused.
func TestLoopbackOnly(t *testing.T) {
	ingress := httptest.NewServer(server.LoopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served")
	})))
	defer ingress.Close()
	for host, want := range map[string]int{
		"": http.StatusOK, "localhost:8000": http.StatusOK, "LOCALHOST": http.StatusOK, "app.localhost:8000": http.StatusOK,
		"127.0.0.1:8000": http.StatusOK, "127.1.2.3": http.StatusOK, "[::1]:8000": http.StatusOK,
		"attacker.example:8000": http.StatusMisdirectedRequest, "localhost.attacker.example": http.StatusMisdirectedRequest,
		"10.0.0.1:8000": http.StatusMisdirectedRequest, "127.0.0.1.nip.io": http.StatusMisdirectedRequest,
	} {
		req, err := http.NewRequest("GET", ingress.URL+"/browse", nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %q: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

// A function's answer to a body that never arrives in full (its 408 after
// READ_TIMEOUT) reaches the client at once, as the function sent it,
// instead of waiting for the rest of the body that will not come.
func TestAnswerBeforeTheWholeBody(t *testing.T) {
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			w.WriteHeader(http.StatusRequestTimeout)
			io.WriteString(w, `{"detail":"Request body not received in time"}`)
			return
		}
		io.WriteString(w, "whole body")
	}))
	backend.Config.ReadTimeout = 300 * time.Millisecond
	backend.Start()
	defer backend.Close()
	routes, err := parseRoutes("/=" + backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	ingress := httptest.NewServer(handler(routes))
	defer ingress.Close()

	conn, err := net.Dial("tcp", ingress.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /stage_data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"data\"")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer from the ingress: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "not received in time") {
		t.Errorf("answer %d %q, want the function's 408", resp.StatusCode, b)
	}

	// A body sent whole still reaches the function, and a connection
	// keeps serving requests.
	resp, err = http.Post(ingress.URL+"/stage_data", "application/json", strings.NewReader(`{"data": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "whole body" {
		t.Errorf("whole body: %d %q", resp.StatusCode, b)
	}
}
