package deploytest

import (
	"net/url"
	"regexp"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// expandedEnv is a container's env entries as the kubelet makes them: values
// from the rendered Secrets' keys, and $(VAR) references to earlier entries
// replaced by their values (once: what a value brings in is not expanded).
func expandedEnv(t *testing.T, objs []object, c *corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			k := e.ValueFrom.SecretKeyRef
			o, ok := find(objs, "v1", "Secret", k.Name)
			if !ok {
				t.Fatalf("%s: Secret %s is not rendered", e.Name, k.Name)
			}
			v, ok := o.Typed.(*corev1.Secret).Data[k.Key]
			if !ok {
				t.Fatalf("%s: Secret %s has no key %s", e.Name, k.Name, k.Key)
			}
			env[e.Name] = string(v)
		case e.ValueFrom == nil:
			env[e.Name] = ref.ReplaceAllStringFunc(e.Value, func(m string) string {
				if v, ok := env[ref.FindStringSubmatch(m)[1]]; ok {
					return v
				}
				return m
			})
		}
	}
	return env
}

// TestChartMySQLPassword: any mysql.password reaches MySQL as it is and the
// functions' DATABASE_URL percent-encoded, so that the URL (read as
// lib/store reads it, with net/url) gives back the password and the chart's
// MySQL as the host; so does a user name with characters a URL reserves.
func TestChartMySQLPassword(t *testing.T) {
	for _, tc := range []struct{ user, password string }{
		{"staging", "p@ss/w:rd"},
		{"staging", "a b+c%d?e#f[g]h$(DB_NAME)i'j\"k\\l;m&n=o,é€"},
		{"site ops+1@x", "plain-Pass_word.1~"},
	} {
		values := merge(baseValues(), map[string]any{"mysql": map[string]any{"username": tc.user, "password": tc.password}})
		objs := decodeAll(t, tc.password, renderChart(t, values))
		sts, _ := find(objs, "apps/v1", "StatefulSet", fullname("mysql"))
		mysql := expandedEnv(t, objs, &sts.Typed.(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0])
		if mysql["MYSQL_PASSWORD"] != tc.password || mysql["MYSQL_USER"] != tc.user {
			t.Errorf("%q: MySQL gets the user %q and password %q", tc.password, mysql["MYSQL_USER"], mysql["MYSQL_PASSWORD"])
		}
		for _, f := range functionNames {
			raw := expandedEnv(t, objs, &functionSpec(objs, fullname(f)).Containers[0])["DATABASE_URL"]
			u, err := url.Parse(raw)
			if err != nil {
				t.Errorf("%s, password %q: DATABASE_URL does not parse: %v", f, tc.password, err)
				continue
			}
			pass, _ := u.User.Password()
			if u.Scheme != "mysql" || u.User.Username() != tc.user || pass != tc.password || u.Hostname() != fullname("mysql") ||
				u.Port() != "3306" || u.Path != "/staging" || u.RawQuery != "" || u.Fragment != "" {
				t.Errorf("%s, password %q: DATABASE_URL %q gives user %q, password %q, host %q, port %q, path %q",
					f, tc.password, raw, u.User.Username(), pass, u.Hostname(), u.Port(), u.Path)
			}
		}
	}
}
