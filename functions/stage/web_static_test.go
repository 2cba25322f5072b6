package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/config"
	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
)

// TestWebRoutes checks the embedded files' routes: types, policies,
// revalidation, and no directory listings.
func TestWebRoutes(t *testing.T) {
	m := httpx.NewMux()
	(&api{f: &function.Function{Config: &config.Config{}}}).webRoutes(m)
	get := func(path string, header ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		w := httptest.NewRecorder()
		m.ServeHTTP(w, r)
		return w
	}
	tests := []struct {
		path        string
		status      int
		contentType string
		csp, body   string
	}{
		{"/", 200, "text/html; charset=utf-8", "default-src 'self'", `<script type="module" src="/assets/app.js">`},
		{"/index.html", 200, "text/html; charset=utf-8", "default-src 'self'", `<script type="module" src="/assets/app.js">`},
		{"/assets/index.html", 200, "text/html; charset=utf-8", "default-src 'self'", `<script type="module" src="/assets/app.js">`},
		{"/assets/app.js", 200, "text/javascript; charset=utf-8", "", "EventSource"},
		{"/assets/style.css", 200, "text/css; charset=utf-8", "", "@media"},
		{"/docs", 200, "text/html; charset=utf-8", "style-src 'self' 'unsafe-inline'", `src="/docs/swagger-ui-bundle.js"`},
		{"/docs/", 200, "text/html; charset=utf-8", "style-src 'self' 'unsafe-inline'", `id="swagger-ui"`},
		{"/docs/index.html", 200, "text/html; charset=utf-8", "style-src 'self' 'unsafe-inline'", `id="swagger-ui"`},
		{"/docs/swagger-ui-bundle.js", 200, "text/javascript; charset=utf-8", "", "SwaggerUIBundle"},
		{"/docs/swagger-ui.css", 200, "text/css; charset=utf-8", "", ".swagger-ui"},
		{"/docs/LICENSE", 200, "text/plain; charset=utf-8", "", "Apache License"},
		{"/docs/VERSION", 200, "text/plain; charset=utf-8", "", "swagger-ui-dist 5.35.0"},
		{"/openapi.json", 200, "application/json", "", `"openapi": "3.0.3"`},
		{"/assets/", 404, "application/json", "", `"detail"`},
		{"/assets/docs", 404, "application/json", "", `"detail"`},
		{"/assets/missing.js", 404, "application/json", "", `"detail"`},
		{"/assets/web.go", 404, "application/json", "", `"detail"`},
		{"/docs/missing.js", 404, "application/json", "", `"detail"`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			w := get(tt.path)
			h := w.Header()
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if h.Get("Content-Type") != tt.contentType || !strings.Contains(h.Get("Content-Security-Policy"), tt.csp) ||
				!strings.Contains(w.Body.String(), tt.body) {
				t.Fatalf("type %q csp %q body %.200q; want %q, %q, %q", h.Get("Content-Type"),
					h.Get("Content-Security-Policy"), w.Body.String(), tt.contentType, tt.csp, tt.body)
			}
			// Every page leaks nothing of its address to what it links to
			// or loads (a sign-in's code while the page reads it).
			if strings.HasPrefix(tt.contentType, "text/html") && h.Get("Referrer-Policy") != "no-referrer" {
				t.Fatalf("Referrer-Policy %q, want no-referrer", h.Get("Referrer-Policy"))
			}
			if tt.status == http.StatusOK && tt.path != "/openapi.json" {
				etag := h.Get("ETag")
				if etag == "" || h.Get("Cache-Control") != "no-cache" {
					t.Fatalf("ETag %q Cache-Control %q", etag, h.Get("Cache-Control"))
				}
				if again := get(tt.path, "If-None-Match", etag); again.Code != http.StatusNotModified {
					t.Fatalf("revalidation: %d, want 304", again.Code)
				}
			}
		})
	}
}

// TestPageOwnPath: the page is also served at /index.html, with the same
// policies, and that path takes GET and HEAD only: an ingress that cannot
// match methods sends `/` there, and a POST meets 405, never the events door.
func TestPageOwnPath(t *testing.T) {
	m := httpx.NewMux()
	(&api{f: &function.Function{Config: &config.Config{}}}).webRoutes(m)
	do := func(method, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		m.ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(`{"specversion":"1.0"}`)))
		return w
	}
	root, own := do(http.MethodGet, "/"), do(http.MethodGet, "/index.html")
	if own.Code != 200 || own.Body.String() != root.Body.String() || own.Header().Get("Referrer-Policy") != "no-referrer" ||
		own.Header().Get("Content-Security-Policy") != root.Header().Get("Content-Security-Policy") {
		t.Fatalf("/index.html: %d %v, want the page as at / (%v)", own.Code, own.Header(), root.Header())
	}
	if w := do(http.MethodHead, "/index.html"); w.Code != 200 {
		t.Errorf("HEAD /index.html: %d", w.Code)
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		if w := do(method, "/index.html"); w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /index.html: %d Allow %q, want 405 with GET, HEAD", method, w.Code, w.Header().Get("Allow"))
		}
	}
}

// TestPagePolicySignIn checks the page's Content-Security-Policy with
// AUTH_MODE=oidc: connect-src adds exactly the identity provider's origin,
// and the rest of the policy stays as it is, on the page and on /docs.
func TestPagePolicySignIn(t *testing.T) {
	for _, tt := range []struct {
		mode, issuer, want string
	}{
		{"none", "", pageCSP},
		{"jupyterhub", "", pageCSP},
		{"oidc", "https://IAM.example.org/realms/ska/", pageCSP + "; connect-src 'self' https://iam.example.org"},
		{"oidc", "https://iam.example.org:8443", pageCSP + "; connect-src 'self' https://iam.example.org:8443"},
		{"oidc", "http://127.0.0.1:4444/", pageCSP + "; connect-src 'self' http://127.0.0.1:4444"},
		{"oidc", "https://iam.example.org'; script-src *", pageCSP}, // nothing that is not an origin gets in
	} {
		c := &config.Config{AuthMode: tt.mode, OIDC: config.OIDC{IssuerURL: tt.issuer}}
		m := httpx.NewMux()
		(&api{f: &function.Function{Config: c}}).webRoutes(m)
		for path, want := range map[string]string{"/": tt.want, "/docs": docsCSP} {
			w := httptest.NewRecorder()
			m.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
			if got := w.Header().Get("Content-Security-Policy"); got != want {
				t.Errorf("%s %q, %s: policy %q, want %q", tt.mode, tt.issuer, path, got, want)
			}
		}
	}
}
