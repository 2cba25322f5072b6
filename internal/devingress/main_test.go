package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
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
	ingress := httptest.NewServer(loopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
