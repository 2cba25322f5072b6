package deploytest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// leaf is one value of values.yaml: its path and its default.
type leaf struct {
	path []any // string keys and int indexes
	def  any
}

func (l leaf) String() string {
	var b strings.Builder
	for _, p := range l.path {
		switch p := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(p.(string))
		}
	}
	return b.String()
}

func leaves(v any, path []any) []leaf {
	switch v := v.(type) {
	case map[string]any:
		var out []leaf
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, leaves(v[k], append(slices.Clone(path), k))...)
		}
		return out
	case []any:
		if len(v) > 0 {
			if _, ok := v[0].(map[string]any); ok {
				var out []leaf
				for i, e := range v {
					out = append(out, leaves(e, append(slices.Clone(path), i))...)
				}
				return out
			}
		}
	}
	return []leaf{{path: path, def: v}}
}

// withValue returns a deep copy of values with the value at path replaced.
func withValue(values map[string]any, path []any, v any) map[string]any {
	var cp map[string]any
	data, _ := json.Marshal(values)
	_ = json.Unmarshal(data, &cp)
	var cur any = cp
	for i, p := range path { // an empty path only copies
		last := i == len(path)-1
		switch p := p.(type) {
		case string:
			m := cur.(map[string]any)
			if last {
				m[p] = v
			} else {
				if m[p] == nil {
					m[p] = map[string]any{}
				}
				cur = m[p]
			}
		case int:
			s := cur.([]any)
			if last {
				s[p] = v
			} else {
				cur = s[p]
			}
		}
	}
	return cp
}

// merge returns a deep copy of base with over's maps merged in, as helm
// merges a values file over the chart's values.
func merge(base, over map[string]any) map[string]any {
	out := withValue(base, nil, nil)
	for k, v := range over {
		if m, ok := v.(map[string]any); ok {
			if b, ok := out[k].(map[string]any); ok {
				out[k] = merge(b, m)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// leafContext gives the other values under which a value takes effect.
func leafContext(key string) map[string]any {
	// A fixed password: a generated one differs at every render.
	ctx := map[string]any{"mysql": map[string]any{"password": "fixed-for-the-test"}}
	set := func(path string, v any) {
		parts := []any{}
		for _, p := range strings.Split(path, ".") {
			parts = append(parts, p)
		}
		ctx = withValue(ctx, parts, v)
	}
	for _, area := range []string{"source", "userArea"} {
		for _, typ := range []string{"nfs", "ceph"} {
			if strings.HasPrefix(key, "storage."+area+"."+typ+".") && !strings.HasSuffix(key, ".enabled") {
				set("storage."+area+".type", typ)
				set("storage."+area+"."+typ+".enabled", true)
				set("storage."+area+".local.enabled", false)
				if typ == "ceph" {
					set("storage."+area+".ceph.clusterID", "site-ceph")
					set("storage."+area+".ceph.key", "AQB-key==")
				}
			}
		}
		if key == "storage."+area+".ceph.enabled" {
			set("storage."+area+".ceph.clusterID", "site-ceph")
			set("storage."+area+".ceph.key", "AQB-key==")
		}
		if key == "storage."+area+".type" || key == "storage."+area+".local.enabled" {
			set("storage."+area+".nfs.enabled", true)
		}
		if key == "storage."+area+".local.enabled" {
			set("storage."+area+".type", "nfs")
		}
	}
	switch {
	case key == "knative.eventing.rucioSenders":
		set("knative.enabled", true)
		set("config.events.auth", "oidc")
	case strings.HasPrefix(key, "knative.eventing.kafka.") && key != "knative.eventing.kafka.bootstrapServers":
		set("knative.enabled", true)
	case key == "knative.eventing.kafka.bootstrapServers":
		set("knative.enabled", true)
		set("knative.eventing.brokerClass", "Kafka")
	case strings.HasPrefix(key, "knative.") && key != "knative.enabled":
		set("knative.enabled", true)
	case key == "mysql.enabled":
		set("externalDatabase.url", "mysql://u:p@db:3306/staging")
	case key == "externalDatabase.url":
		set("mysql.enabled", false)
		set("externalDatabase.url", "mysql://u:p@db:3306/staging")
	case key == "externalDatabase.existingSecret" || key == "externalDatabase.existingSecretKey":
		set("mysql.enabled", false)
		set("externalDatabase.existingSecret", "site-db")
	case key == "functions.logs.enabled" || key == "functions.jupyter.enabled":
		set("ingress.enabled", false) // the ingress refuses paths to a disabled function
	case key == "jupyterhub.existingSecretKey":
		set("jupyterhub.existingSecret", "site-hub")
	case key == "config.events.existingSecretKey":
		set("config.events.existingSecret", "site-events")

	case key == "podDisruptionBudget.maxUnavailable" || strings.HasPrefix(key, "autoscaling.target"):
		// rendered in Deployment mode, the default
	}
	return ctx
}

// changedValue is the value a leaf is set to: a recognisable sentinel where
// any string or number will do, a valid other choice where not (the
// schema's enums and patterns, and values only visible derived).
func changedValue(key string, def any, n int) (v any, sentinel string) {
	s := fmt.Sprintf("zq%dzq", n)
	switch {
	case key == "storage.source.type", key == "storage.userArea.type":
		return "nfs", ""
	case key == "externalDatabase.url":
		return "mysql://" + s + ":p@db:3306/staging", s
	case key == "externalDatabase.existingSecret":
		return s, s
	case key == "config.allowedMethods":
		return []any{"local_copy"}, ""
	case key == "ingress.tls":
		return []any{map[string]any{"hosts": []any{s}, "secretName": s}}, s
	case strings.HasSuffix(key, ".digest"):
		return digest(7900 + n), digest(7900 + n)
	case key == "config.stagedOwner":
		return "65532:100", ""
	case key == "logging.level":
		return "DEBUG", ""
	case key == "config.stagedFileMode":
		return "0400", ""
	case key == "config.stagedDirMode":
		return "0500", ""
	case key == "config.authMode":
		return "jupyterhub", ""
	case key == "config.events.auth":
		return "none", ""
	case key == "config.events.hmacSecret":
		return strings.Repeat(s, 6), s
	case key == "config.events.oidcIssuer":
		return "https://" + s, s
	case key == "knative.eventing.rucioSenders":
		return []any{"system:serviceaccount:rucio:" + s}, s
	case key == "config.maxPathDepth":
		return 37, "37"
	case key == "service.type":
		return "NodePort", ""
	case key == "image.pullPolicy":
		return "Always", ""
	case strings.HasSuffix(key, ".pathType"):
		return "Prefix", ""
	case strings.HasSuffix(key, "].function"):
		return map[string]string{"stage": "jupyter", "logs": "stage"}[def.(string)], ""
	case key == "topologySpread.whenUnsatisfiable":
		return "DoNotSchedule", ""
	case key == "knative.eventing.brokerClass":
		return "Kafka", ""
	case key == "knative.eventing.channel":
		return "InMemoryChannel", ""
	case key == "knative.eventing.backoffPolicy":
		return "linear", ""
	case key == "knative.eventing.backoffDelay":
		return fmt.Sprintf("PT%dS", 7900+n), fmt.Sprintf("PT%dS", 7900+n)
	case strings.Contains(key, "Percentage"), strings.HasPrefix(key, "knative.containerConcurrency."):
		return 37, ""
	case key == "mysql.startupSeconds":
		return 79000 + 10*n, fmt.Sprint(7900 + n) // the startup probe's failureThreshold
	case key == "config.copyWorkers" || key == "replicaCount" || strings.HasSuffix(key, "replicaCount"):
		return 7900 + n, fmt.Sprint(7900 + n)
	}
	switch d := def.(type) {
	case bool:
		return !d, ""
	case float64, int:
		return 7900 + n, fmt.Sprint(7900 + n)
	case []any:
		if strings.HasSuffix(key, "supplementalGroups") {
			return []any{7900 + n}, fmt.Sprint(7900 + n)
		}
		return []any{s}, s
	case string:
		if regexp.MustCompile(`^[0-9]+[smh]$`).MatchString(d) { // a duration
			return fmt.Sprintf("%dh", 7900+n), fmt.Sprintf("%dh", 7900+n)
		}
		if strings.HasPrefix(d, "/") {
			return "/" + s, s
		}
		return s, s
	}
	return s, s
}

// renderedText is what a changed value must show up in: the rendered
// manifests and the decoded data of their Secrets (other objects are not
// decoded: a changed value may well be an invalid quantity).
func renderedText(t *testing.T, out []byte) string {
	var b strings.Builder
	b.Write(out)
	for _, doc := range strings.Split(string(out), "\n---") {
		var s corev1.Secret
		if err := yaml.Unmarshal([]byte(doc), &s); err != nil || s.Kind != "Secret" {
			continue
		}
		for _, v := range s.Data {
			b.WriteString("\n" + string(v))
		}
	}
	return b.String()
}

// chartValues reads the chart's values.yaml.
func chartValues(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	return values
}

// TestChartValuesTakeEffect is the cross-check between values and templates:
// every value of values.yaml, changed, changes the rendered objects, and a
// changed string or number shows up in them.
func TestChartValuesTakeEffect(t *testing.T) {
	values := chartValues(t)
	all := leaves(values, nil)
	if len(all) < 50 {
		t.Fatalf("only %d values found", len(all))
	}
	for n, l := range all {
		key := l.String()
		t.Run(key, func(t *testing.T) {
			t.Parallel()
			ctx := merge(merge(values, baseValues()), leafContext(key))
			base := renderChart(t, ctx)
			v, sentinel := changedValue(key, l.def, n)
			changed := renderChart(t, withValue(ctx, l.path, v))
			if string(base) == string(changed) {
				t.Fatalf("setting %s to %v changes nothing that is rendered", key, v)
			}
			if sentinel != "" && !strings.Contains(renderedText(t, changed), sentinel) {
				t.Fatalf("setting %s to %v does not reach any rendered object", key, v)
			}
		})
	}
}

// TestChartReadme: the chart's README.md describes every value of
// values.yaml, with its default, and no value that is gone.
func TestChartReadme(t *testing.T) {
	root := repoRoot(t)
	values := chartValues(t)
	readme, err := os.ReadFile(filepath.Join(root, chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // key -> default as written
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\| [a-z]+ \\| `([^`]*)` \\|").FindAllStringSubmatch(string(readme), -1) {
		rows[m[1]] = strings.ReplaceAll(m[2], `\|`, "|") // a | in a table cell is written \|
	}
	for _, l := range leaves(values, nil) {
		key := readmeKey(l.path)
		def, _ := json.Marshal(l.def)
		got, ok := rows[key]
		if !ok {
			t.Errorf("the chart's README.md does not describe %s", key)
			continue
		}
		var a, b any
		if json.Unmarshal([]byte(got), &a) != nil || json.Unmarshal(def, &b) != nil || fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("the chart's README.md gives %s the default %s, values.yaml %s", key, got, def)
		}
		delete(rows, key)
	}
	for key := range rows {
		t.Errorf("the chart's README.md describes %s, which values.yaml does not have", key)
	}
}

// readmeKey writes a value's path as the README does: keys with dots quoted.
func readmeKey(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch p := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			if strings.Contains(p, ".") {
				p = `"` + p + `"`
			}
			b.WriteString(p)
		}
	}
	return b.String()
}
