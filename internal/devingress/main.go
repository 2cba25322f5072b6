// Command devingress is the local stand-in for the cluster's ingress in
// `make run`: one port, paths routed to the functions as the ingress routes
// them. Routes come from INGRESS_ROUTES, "prefix=url" pairs separated by
// ";", longest prefix first wins; e.g. "/logs=http://127.0.0.1:8102;/=http://127.0.0.1:8101".
package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/server"
)

type route struct {
	prefix string
	proxy  *httputil.ReverseProxy
}

func main() {
	routes, err := parseRoutes(os.Getenv("INGRESS_ROUTES"))
	if err != nil {
		slog.Error("INGRESS_ROUTES", "error", err)
		os.Exit(1)
	}
	host := os.Getenv("HOST")
	h := handler(routes)
	if server.IsLoopback(host) {
		h = server.LoopbackOnly(h)
	}
	addr := net.JoinHostPort(host, os.Getenv("PORT"))
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	slog.Info("ingress listening", "addr", addr)
	if err := srv.ListenAndServe(); err != nil {
		slog.Error("ingress", "error", err)
		os.Exit(1)
	}
}

func parseRoutes(spec string) ([]route, error) {
	var routes []route
	for _, part := range strings.Split(spec, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		prefix, target, ok := strings.Cut(strings.TrimSpace(part), "=")
		u, err := url.Parse(strings.TrimSpace(target))
		if !ok || err != nil || u.Host == "" || !strings.HasPrefix(prefix, "/") {
			return nil, fmt.Errorf("%q is not prefix=url", part)
		}
		p := httputil.NewSingleHostReverseProxy(u)
		p.FlushInterval = -1 // stream downloads and server-sent events as they come
		routes = append(routes, route{prefix: strings.TrimSpace(prefix), proxy: p})
	}
	if len(routes) == 0 {
		return nil, fmt.Errorf("no routes")
	}
	sort.Slice(routes, func(i, j int) bool { return len(routes[i].prefix) > len(routes[j].prefix) })
	return routes, nil
}

// handler sends each request to the route with the longest matching prefix;
// a prefix matches the path itself and everything below it.
func handler(routes []route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, rt := range routes {
			p := strings.TrimSuffix(rt.prefix, "/")
			if rt.prefix == "/" || r.URL.Path == p || strings.HasPrefix(r.URL.Path, p+"/") {
				serve(rt.proxy, w, r)
				return
			}
		}
		http.NotFound(w, r)
	})
}

// serve proxies r, letting the function's answer out while the client is
// still sending the body (the function's 408 after READ_TIMEOUT, say):
// the server cannot write an answer while the proxy is blocked reading a
// body that does not come, so the body's reads are ended first.
func serve(proxy http.Handler, w http.ResponseWriter, r *http.Request) {
	if r.ContentLength == 0 {
		proxy.ServeHTTP(w, r)
		return
	}
	body := &eofBody{ReadCloser: r.Body}
	r.Body = body
	proxy.ServeHTTP(&earlyAnswer{ResponseWriter: w, body: body}, r)
}

// eofBody notes when its reader reached the end of the body.
type eofBody struct {
	io.ReadCloser
	eof atomic.Bool
}

func (b *eofBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

// earlyAnswer ends the reads of a body not read whole before an answer is
// written; the connection then closes after the answer. Once the body was
// read whole nothing is changed (the server watches the connection for the
// client leaving, which a deadline would take for a leave).
type earlyAnswer struct {
	http.ResponseWriter
	body *eofBody
}

func (w *earlyAnswer) WriteHeader(code int) {
	if code >= 200 && !w.body.eof.Load() {
		http.NewResponseController(w.ResponseWriter).SetReadDeadline(time.Now())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *earlyAnswer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
