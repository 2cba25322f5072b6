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
