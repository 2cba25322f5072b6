package deploytest

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// request is one request from outside the cluster and the function it must
// reach ("": none, the route answers 404).
type request struct {
	method, path, fn string
}

// publicRequests are what the public routes must do: the page (GET and HEAD
// on / only), its assets, the API page, the API and /logs reach their
// functions; the probes and anything else do not.
var publicRequests = []request{
	{"GET", "/", "stage"}, {"HEAD", "/", "stage"},
	{"POST", "/stage_data", "stage"}, {"GET", "/stage_data", "stage"}, {"POST", "/stage-data/", "stage"},
	{"GET", "/config", "stage"}, {"GET", "/config/allowed-methods", "stage"}, {"GET", "/operations", "stage"},
	{"GET", "/operations/0123", "stage"}, {"GET", "/openapi.json", "stage"}, {"GET", "/docs", "stage"},
	{"GET", "/docs/index.html", "stage"}, {"GET", "/browse", "stage"}, {"POST", "/create-file", "stage"},
	{"GET", "/assets/app.js", "stage"}, {"GET", "/logs", "logs"}, {"GET", "/logs/stream", "logs"},
	{"GET", "/healthz", ""}, {"GET", "/readyz", ""}, {"GET", "/elsewhere", ""},
}

// doorMethods are the requests on / that are not the page's: above all
// POST /, the functions' events door, which only the broker inside the
// cluster may use.
var doorMethods = []string{"POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// routeRule answers which rule of a Gateway API route takes a request, with
// the Gateway API's precedence among the matches that match it: an exact
// path, then the longest prefix (whole path elements), then a method match.
func routeRule(route *gatewayv1.HTTPRoute, method, path string) *gatewayv1.HTTPRouteRule {
	var best *gatewayv1.HTTPRouteRule
	bestScore := [3]int{-1, -1, -1}
	for i, rule := range route.Spec.Rules {
		for _, m := range rule.Matches {
			if m.Path == nil || m.Path.Value == nil || m.Path.Type == nil || len(m.Headers) > 0 || len(m.QueryParams) > 0 {
				continue
			}
			if m.Method != nil && string(*m.Method) != method {
				continue
			}
			v := *m.Path.Value
			score := [3]int{0, 0, 0}
			switch *m.Path.Type {
			case gatewayv1.PathMatchExact:
				if path != v {
					continue
				}
				score[0] = 1
			case gatewayv1.PathMatchPathPrefix:
				p := strings.TrimSuffix(v, "/")
				if !(path == v || path == p || strings.HasPrefix(path, p+"/")) {
					continue
				}
				score[1] = len(p)
			default:
				continue
			}
			if m.Method != nil {
				score[2] = 1
			}
			if score[0] > bestScore[0] || (score[0] == bestScore[0] && (score[1] > bestScore[1] || (score[1] == bestScore[1] && score[2] > bestScore[2]))) {
				best, bestScore = &route.Spec.Rules[i], score
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

// checkRoute checks the HTTPRoute as a Gateway routes requests: every
// public request to its function, on one host, through a granted backend,
// with the request timeout the Gateway API specifies (rules.timeouts.request;
// Envoy Gateway cuts at 15 s without it): the functions' limit, and none
// ("0s") for /logs, whose followed streams last as long as the client
// wants. No request on / other than GET and HEAD reaches any function: POST
// / is the functions' events door.
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
	for _, r := range publicRequests {
		rule := routeRule(route, r.method, r.path)
		want := ""
		if r.fn != "" {
			want = host(r.fn)
		}
		if got := ruleHost(rule); got != want {
			t.Errorf("%s: %s %s goes to %q, want %q", src, r.method, r.path, got, want)
			continue
		}
		if rule == nil {
			continue
		}
		timeout := strconv.Itoa(requestTimeout) + "s"
		if r.fn == "logs" {
			timeout = "0s"
		}
		if rule.Timeouts == nil || rule.Timeouts.Request == nil || string(*rule.Timeouts.Request) != timeout {
			t.Errorf("%s: %s %s: request timeout %v, want %s", src, r.method, r.path, rule.Timeouts, timeout)
		}
	}
	for _, m := range doorMethods {
		if rule := routeRule(route, m, "/"); rule != nil {
			t.Errorf("%s: %s / goes to %q: the events door must not be public", src, m, ruleHost(rule))
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
// (user-guide/ingress-path-matching, examples/rewrite) and its template
// writes locations (buildLocation). When an Ingress of the host has
// use-regex or rewrite-target, every path of the host, whatever its
// pathType, is a case-insensitive regular expression anchored at its start
// (location ~* "^path"), tried longest path first, the first match winning;
// rewrite-target then replaces the whole URI, $1... standing for the path's
// capture groups. Otherwise an Exact path is an exact location (= path),
// which wins; a Prefix path matches whole path elements and an
// ImplementationSpecific one is an nginx prefix, the longest winning.
// ingress-nginx matches no methods: the answer is the same for all.
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
	if !regex {
		for _, l := range locs {
			if l.pathType == "Exact" && path == l.path {
				return l.service, path
			}
		}
	}
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
		var match bool
		switch l.pathType {
		case "Exact":
			continue
		case "Prefix":
			match = path == l.path || path == pre || strings.HasPrefix(path, pre+"/")
		default:
			match = strings.HasPrefix(path, l.path)
		}
		if match {
			return l.service, path
		}
	}
	return "", ""
}

// pagePath is the page's own path, which takes GET and HEAD only: an
// ingress that cannot match methods sends / there.
const pagePath = "/index.html"

// checkIngress checks the Ingresses as ingress-nginx serves them: every
// public request reaches its function unchanged, but / reaches the stage
// function as the page's own path, so that no request on / (whatever its
// method: ingress-nginx matches none) reaches the events door; and the
// function may take the request timeout between two reads (a copy sends
// nothing until it is done); a followed log stream sends a keep-alive every
// 15 s. Without page, / reaches nothing.
func checkIngress(t *testing.T, src string, ins []*networkingv1.Ingress, service func(string) string, page bool) {
	t.Helper()
	for _, r := range publicRequests {
		svc, got := nginxRoute(ins, r.path)
		want, wantPath := "", ""
		if r.fn != "" {
			want, wantPath = service(r.fn), r.path
		}
		if r.path == "/" {
			wantPath = pagePath
			if !page {
				want, wantPath = "", ""
			}
		}
		if svc != want || got != wantPath {
			t.Errorf("%s: ingress-nginx sends %s %s to %q as %q, want %q as %q", src, r.method, r.path, svc, got, want, wantPath)
		}
	}
	if svc, got := nginxRoute(ins, "/"); svc == service("stage") && got == "/" {
		t.Errorf("%s: ingress-nginx sends every method on / to the stage function's /: POST / is its events door", src)
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
// chart's values (rewrite-target: / turned every path into /), and the
// exposure of the chart's own earlier default (/(.*) to the stage function,
// POST / included), so passing checkIngress means something.
func TestNginxRouteModel(t *testing.T) {
	pt := networkingv1.PathTypeImplementationSpecific
	path := func(p, svc string) networkingv1.HTTPIngressPath {
		return networkingv1.HTTPIngressPath{Path: p, PathType: &pt, Backend: networkingv1.IngressBackend{
			Service: &networkingv1.IngressServiceBackend{Name: svc}}}
	}
	ingress := func(rewrite string, paths ...networkingv1.HTTPIngressPath) *networkingv1.Ingress {
		in := &networkingv1.Ingress{}
		in.Annotations = map[string]string{"nginx.ingress.kubernetes.io/rewrite-target": rewrite}
		in.Spec.Rules = []networkingv1.IngressRule{{IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}}}}
		return in
	}
	earlier := ingress("/", path("/", "stage"), path("/logs", "logs"))
	for p, want := range map[string][2]string{"/stage_data": {"stage", "/"}, "/logs": {"logs", "/"}, "/assets/app.js": {"stage", "/"}} {
		if svc, got := nginxRoute([]*networkingv1.Ingress{earlier}, p); svc != want[0] || got != want[1] {
			t.Errorf("earlier values: %s goes to %s as %s, want %s as %s", p, svc, got, want[0], want[1])
		}
	}
	everything := ingress("/$1", path("/(.*)", "stage"), path("/(logs.*)", "logs"))
	if svc, got := nginxRoute([]*networkingv1.Ingress{everything}, "/"); svc != "stage" || got != "/" {
		t.Errorf("/(.*): / goes to %s as %s, want the stage function's events door", svc, got)
	}
	// An exact path under a rewrite is a regular expression, a prefix:
	// ingress-nginx's template writes ~* "^/" for it.
	exact := networkingv1.PathTypeExact
	page := ingress("/index.html", networkingv1.HTTPIngressPath{Path: "/", PathType: &exact,
		Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "stage"}}})
	if svc, got := nginxRoute([]*networkingv1.Ingress{page}, "/stage_data"); svc != "stage" || got != "/index.html" {
		t.Errorf("an Exact / under a rewrite: /stage_data goes to %s as %s, want stage as /index.html (a prefix)", svc, got)
	}
}

// TestIngressPageNotDoor sends what the chart's Ingresses make of the
// requests on / (ingress-nginx, which matches no methods) to the real stage
// function: GET and HEAD get the page, every other method 405 from the
// page's own path, while the same POST on / itself would have reached the
// events door.
func TestIngressPageNotDoor(t *testing.T) {
	objs := decodeAll(t, "chart", renderChart(t, baseValues()))
	ins := ingresses(objs)
	svc, upstream := nginxRoute(ins, "/")
	if svc != fullname("stage") || upstream != pagePath {
		t.Fatalf("/ goes to %s as %s, want the stage function's %s", svc, upstream, pagePath)
	}
	dir := t.TempDir()
	for _, d := range []string{"source", "areas"} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	f := testenv.StartFunction(t, "stage", map[string]string{"HOST": "127.0.0.1",
		"DATABASE_URL":        "sqlite://" + filepath.Join(dir, "staging.db"),
		"SOURCE_STORAGE_PATH": filepath.Join(dir, "source"), "TARGET_STORAGE_PATH": filepath.Join(dir, "areas")})
	do := func(method, path string) (int, string) {
		req, err := http.NewRequest(method, f.URL+path, strings.NewReader(`{"specversion":"1.0","id":"1","source":"/x","type":"org.skao.staging.request"}`))
		must(t, err)
		req.Header.Set("Content-Type", "application/cloudevents+json")
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type") + " " + string(b)
	}
	for _, m := range []string{"GET", "HEAD"} {
		if code, body := do(m, upstream); code != http.StatusOK || !strings.HasPrefix(body, "text/html") {
			t.Errorf("%s / through the Ingress (%s): %d %.80s, want the page", m, upstream, code, body)
		}
	}
	for _, m := range doorMethods {
		if code, body := do(m, upstream); code != http.StatusMethodNotAllowed {
			t.Errorf("%s / through the Ingress (%s): %d %.120s, want 405", m, upstream, code, body)
		}
	}
	// The door itself, had the Ingress passed / unchanged: it takes the
	// event (and answers this incomplete one with a 4xx), not 405.
	if code, body := do("POST", "/"); code == http.StatusMethodNotAllowed || code == http.StatusNotFound {
		t.Errorf("POST / on the function itself: %d %.120s: is it still the events door this test protects?", code, body)
	}
}
