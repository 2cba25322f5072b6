package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/config"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
)

// webFiles is the page at / and the /docs page with their assets: plain
// HTML, CSS and JavaScript, nothing to build and nothing fetched from
// elsewhere (web/docs holds a vendored Swagger UI, see web/docs/VERSION).
//
//go:embed web
var webFiles embed.FS

// Content-Security-Policy of the two pages: everything comes from this
// origin, so a page that tried to reach a CDN would fail in the browser
// tests (the page may also reach the identity provider: pagePolicy).
// Swagger UI sets inline styles, hence 'unsafe-inline' for styles on /docs
// only.
const (
	pageCSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
	docsCSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

// pagePolicy is the page's Content-Security-Policy under c: with
// AUTH_MODE=oidc the page also reaches the identity provider (its discovery
// document, token and userinfo endpoints), so connect-src adds exactly the
// issuer's origin. Going to the provider's login page is a top-level
// navigation, which the policy does not restrict.
func pagePolicy(c *config.Config) string {
	if c.AuthMode != "oidc" {
		return pageCSP
	}
	origin, ok := originOf(c.OIDC.IssuerURL)
	if !ok {
		return pageCSP
	}
	return pageCSP + "; connect-src 'self' " + origin
}

// originOf is the origin (scheme://host[:port]) of an http(s) URL, if it is
// one that can stand in a policy as it is.
func originOf(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return "", false
	}
	host := strings.ToLower(u.Host)
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune(".-:[]", r)) {
			return "", false
		}
	}
	return u.Scheme + "://" + host, true
}

// webRoutes adds the browser's routes: the page, its assets, the source
// browser, the OpenAPI description and the interactive API page.
func (a *api) webRoutes(m *httpx.Mux) {
	pageCSP := pagePolicy(a.f.Config)
	files := &staticFiles{}
	if a.f.Config.EnableFileCreator {
		// The page shows its file creator only when the route exists.
		page, _ := files.get("index.html")
		files.content.Store("index.html", bytes.Replace(page, []byte(`data-file-creator="false"`), []byte(`data-file-creator="true"`), 1))
	}
	m.Route(http.MethodGet, "/", files.page("index.html", pageCSP))
	// The same page under a path of its own, which takes GET and HEAD only:
	// an ingress that cannot match methods (ingress-nginx) sends `/` here,
	// so that `POST /`, the events door, is never reached from outside.
	m.Route(http.MethodGet, "/index.html", files.page("index.html", pageCSP))
	// The page's assets; the API page at /docs and /docs/ with its assets
	// under the same prefix, which the cluster's route sends here.
	m.Files("/assets/{file...}", files.dir("", pageCSP))
	m.Files("/docs", files.page("docs/index.html", docsCSP))
	m.Files("/docs/{file...}", files.dir("docs/", docsCSP))
	m.Route(http.MethodGet, "/browse", a.browse)
	m.Route(http.MethodGet, "/openapi.json", serveOpenAPI)
}

// staticFiles serves the embedded web/ files with strong ETags (a hash of
// the content), so browsers revalidate cheaply and never run stale code.
// Files are read, and their hashes computed, on first use, not at start: a
// cold start should not pay for copying the API page's 1.7 MB bundle.
type staticFiles struct {
	content sync.Map // path under web/ -> []byte
	etags   sync.Map // path -> ETag
}

// get returns the content of name, a file under web/ (never a folder).
func (s *staticFiles) get(name string) ([]byte, bool) {
	if b, ok := s.content.Load(name); ok {
		return b.([]byte), true
	}
	if !fs.ValidPath(name) {
		return nil, false
	}
	b, err := webFiles.ReadFile(path.Join("web", name))
	if err != nil {
		return nil, false // missing, or a folder
	}
	v, _ := s.content.LoadOrStore(name, b)
	return v.([]byte), true
}

// etag is the ETag of name's content b.
func (s *staticFiles) etag(name string, b []byte) string {
	if e, ok := s.etags.Load(name); ok {
		return e.(string)
	}
	sum := sha256.Sum256(b)
	e := `"` + hex.EncodeToString(sum[:16]) + `"`
	s.etags.Store(name, e)
	return e
}

// dir serves the files under prefix in web/ by their {file} path: files
// only, no directory listings.
func (s *staticFiles) dir(prefix, csp string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := prefix + r.PathValue("file")
		if name == "docs/" {
			name = "docs/index.html"
		}
		if strings.HasSuffix(name, ".html") {
			s.page(name, csp)(w, r) // a page's headers, whatever its path
			return
		}
		s.serve(w, r, name)
	}
}

func (s *staticFiles) serve(w http.ResponseWriter, r *http.Request, name string) {
	b, ok := s.get(name)
	if !ok {
		httpx.JSON(w, http.StatusNotFound, httpx.Detail{Detail: "Not found: " + r.URL.Path})
		return
	}
	h := w.Header()
	h.Set("ETag", s.etag(name, b))
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	if strings.HasSuffix(name, ".txt") || !strings.Contains(name, ".") {
		h.Set("Content-Type", "text/plain; charset=utf-8") // licence texts
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

// page serves one HTML file of web/ under its own route and policy.
func (s *staticFiles) page(name, csp string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("Referrer-Policy", "no-referrer")
		s.serve(w, r, name)
	}
}
