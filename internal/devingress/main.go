// Command devingress is the local stand-in for the cluster's ingress in
// `make run`: one port, paths routed to the functions as the ingress routes
// them. Routes come from INGRESS_ROUTES, "prefix=url" pairs separated by
// ";", longest prefix first wins; e.g. "/logs=http://127.0.0.1:8102;/=http://127.0.0.1:8101".
package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
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
	addr := net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT"))
	srv := &http.Server{Addr: addr, Handler: handler(routes), ReadHeaderTimeout: 10 * time.Second}
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
				rt.proxy.ServeHTTP(w, r)
				return
			}
		}
		http.NotFound(w, r)
	})
}
