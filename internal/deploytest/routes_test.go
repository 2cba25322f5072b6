package deploytest

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// publicPaths are where the public routes lead.
var publicPaths = map[string]string{
	"/": "stage", "/stage_data": "stage", "/stage-data/": "stage", "/config": "stage",
	"/config/allowed-methods": "stage", "/operations": "stage", "/operations/0123": "stage",
	"/openapi.json": "stage", "/docs": "stage", "/docs/index.html": "stage", "/browse": "stage",
	"/create-file": "stage", "/assets/app.js": "stage", "/logs": "logs", "/logs/stream": "logs",
}

// routeRule answers which rule of a Gateway API route takes path, with the
// Gateway API's precedence: an exact match, then the longest prefix (whole
// path elements).
func routeRule(route *gatewayv1.HTTPRoute, path string) *gatewayv1.HTTPRouteRule {
	var best *gatewayv1.HTTPRouteRule
	bestLen, exact := -1, false
	for i, rule := range route.Spec.Rules {
		for _, m := range rule.Matches {
			if m.Path == nil || m.Path.Value == nil || m.Path.Type == nil {
				continue
			}
			v := *m.Path.Value
			switch *m.Path.Type {
			case gatewayv1.PathMatchExact:
				if path == v && !exact {
					best, exact = &route.Spec.Rules[i], true
				}
			case gatewayv1.PathMatchPathPrefix:
				p := strings.TrimSuffix(v, "/")
				if !exact && (path == v || path == p || strings.HasPrefix(path, p+"/")) && len(p) > bestLen {
					best, bestLen = &route.Spec.Rules[i], len(p)
				}
			}
		}
	}
	return best
}

// ruleHost is the host a rule rewrites to (the function's cluster-local name).
func ruleHost(rule *gatewayv1.HTTPRouteRule) string {
	if rule == nil {
		return ""
	}
	for _, f := range rule.Filters {
		if f.URLRewrite != nil && f.URLRewrite.Hostname != nil {
			if f.URLRewrite.Path != nil {
				return "path rewritten: " + string(*f.URLRewrite.Hostname)
			}
			return string(*f.URLRewrite.Hostname)
		}
	}
	return ""
}

// checkRoute checks the HTTPRoute: every public path to its function, on
// one host, through a granted backend, with the request timeout the
// Gateway API specifies (rules.timeouts.request; Envoy Gateway cuts at 15 s
// without it): the functions' limit, and none ("0s") for /logs, whose
// followed streams last as long as the client wants.
func checkRoute(t *testing.T, src string, objs []object, host func(string) string) {
	t.Helper()
	routes := byKind(objs, "gateway.networking.k8s.io/v1", "HTTPRoute")
	if len(routes) != 1 {
		t.Fatalf("%s: want one HTTPRoute, have %d", src, len(routes))
	}
	route := routes[0].Typed.(*gatewayv1.HTTPRoute)
	if len(route.Spec.Hostnames) != 1 {
		t.Errorf("%s: the route serves %d hosts, want one", src, len(route.Spec.Hostnames))
	}
	for path, f := range publicPaths {
		rule := routeRule(route, path)
		if got := ruleHost(rule); got != host(f) {
			t.Errorf("%s: %s goes to %q, want %q", src, path, got, host(f))
			continue
		}
		want := strconv.Itoa(requestTimeout) + "s"
		if f == "logs" {
			want = "0s"
		}
		if rule.Timeouts == nil || rule.Timeouts.Request == nil || string(*rule.Timeouts.Request) != want {
			t.Errorf("%s: %s: request timeout %v, want %s", src, path, rule.Timeouts, want)
		}
	}
	grants := byKind(objs, "gateway.networking.k8s.io/v1beta1", "ReferenceGrant")
	for _, rule := range route.Spec.Rules {
		for _, b := range rule.BackendRefs {
			if b.Namespace == nil {
				continue
			}
			granted := false
			for _, g := range grants {
				rg := g.Typed.(*gatewayv1beta1.ReferenceGrant)
				granted = granted || (rg.Namespace == string(*b.Namespace) && len(rg.Spec.To) > 0 && rg.Spec.To[0].Name != nil && string(*rg.Spec.To[0].Name) == string(b.Name))
			}
			if !granted {
				t.Errorf("%s: the route sends to %s/%s without a ReferenceGrant there", src, *b.Namespace, b.Name)
			}
		}
	}
}

// nginxRoute answers where ingress-nginx sends a request for path and which
// path the backend receives, as ingress-nginx documents it
// (user-guide/ingress-path-matching, examples/rewrite). When an Ingress of
// the host has use-regex or rewrite-target, every path of the host is a
// case-insensitive regular expression anchored at its start (location ~*
// "^path"), tried longest path first, the first match winning; rewrite-
// target then replaces the whole URI, $1... standing for the path's capture
// groups. Otherwise a Prefix path matches whole path elements and an
// ImplementationSpecific one is an nginx prefix, the longest winning.
func nginxRoute(ins []*networkingv1.Ingress, path string) (service, upstream string) {
	type loc struct {
		path, pathType, service, rewrite string
	}
	var locs []loc
	regex := false
	for _, in := range ins {
		a := in.Annotations
		rewrite := a["nginx.ingress.kubernetes.io/rewrite-target"]
		regex = regex || rewrite != "" || a["nginx.ingress.kubernetes.io/use-regex"] == "true"
		for _, r := range in.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				pt := "Prefix"
				if p.PathType != nil {
					pt = string(*p.PathType)
				}
				locs = append(locs, loc{p.Path, pt, p.Backend.Service.Name, rewrite})
			}
		}
	}
	sort.SliceStable(locs, func(i, j int) bool { return len(locs[i].path) > len(locs[j].path) })
	for _, l := range locs {
		if regex {
			re, err := regexp.Compile("(?i)^" + l.path)
			if err != nil {
				return "invalid path " + l.path, ""
			}
			m := re.FindStringSubmatchIndex(path)
			if m == nil {
				continue
			}
			if l.rewrite == "" {
				return l.service, path
			}
			return l.service, string(re.ExpandString(nil, l.rewrite, path, m))
		}
		pre := strings.TrimSuffix(l.path, "/")
		match := strings.HasPrefix(path, l.path)
		if l.pathType == "Prefix" {
			match = path == l.path || path == pre || strings.HasPrefix(path, pre+"/")
		}
		if match {
			return l.service, path
		}
	}
	return "", ""
}

// checkIngress checks the Ingress as ingress-nginx serves it: every public
// path reaches its function unchanged, and the function may take the
// request timeout between two reads (a copy sends nothing until it is
// done); a followed log stream sends a keep-alive every 15 s.
func checkIngress(t *testing.T, src string, ins []*networkingv1.Ingress, service func(string) string) {
	t.Helper()
	for path, f := range publicPaths {
		svc, got := nginxRoute(ins, path)
		if svc != service(f) || got != path {
			t.Errorf("%s: ingress-nginx sends %s to %s as %q, want %s as %s", src, path, svc, got, service(f), path)
		}
	}
	for _, in := range ins {
		for _, k := range []string{"proxy-read-timeout", "proxy-send-timeout"} {
			v, err := strconv.Atoi(in.Annotations["nginx.ingress.kubernetes.io/"+k])
			if err != nil || v < requestTimeout {
				t.Errorf("%s: Ingress %s: %s %q, want at least %d", src, in.Name, k, in.Annotations["nginx.ingress.kubernetes.io/"+k], requestTimeout)
			}
		}
	}
}

// TestNginxRouteModel: the model above finds the defect of the earlier
// chart's values (rewrite-target: / turned every path into /), so passing
// checkIngress means something.
func TestNginxRouteModel(t *testing.T) {
	pt := networkingv1.PathTypeImplementationSpecific
	path := func(p, svc string) networkingv1.HTTPIngressPath {
		return networkingv1.HTTPIngressPath{Path: p, PathType: &pt, Backend: networkingv1.IngressBackend{
			Service: &networkingv1.IngressServiceBackend{Name: svc}}}
	}
	earlier := &networkingv1.Ingress{}
	earlier.Annotations = map[string]string{"nginx.ingress.kubernetes.io/rewrite-target": "/"}
	earlier.Spec.Rules = []networkingv1.IngressRule{{IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
		Paths: []networkingv1.HTTPIngressPath{path("/", "stage"), path("/logs", "logs")}}}}}
	for p, want := range map[string][2]string{"/stage_data": {"stage", "/"}, "/logs": {"logs", "/"}, "/assets/app.js": {"stage", "/"}} {
		if svc, got := nginxRoute([]*networkingv1.Ingress{earlier}, p); svc != want[0] || got != want[1] {
			t.Errorf("earlier values: %s goes to %s as %s, want %s as %s", p, svc, got, want[0], want[1])
		}
	}
}
