package deploytest

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// functionNames are the functions the deployments run.
var functionNames = []string{"stage", "jupyter", "logs"}

// notSetByDeployments are variables the code reads that the deployment
// files must not or need not set, with the reason.
var notSetByDeployments = map[string]string{
	"PORT":              "set by Knative (reserved there); the chart's Deployments set it explicitly",
	"HOST":              "for local runs; in a pod the functions listen on all interfaces",
	"K_SINK":            "injected by the SinkBinding (checked with the Eventing objects)",
	"EVENT_HMAC_SECRET": "a secret: deployments mount it as a file (EVENT_HMAC_SECRET_FILE)",
}

// optionalPrefixes are families of standard variables that are set only
// when an operator opts in (the chart's telemetry.otlpEndpoint).
var optionalPrefixes = []string{"OTEL_"}

// envRead finds the variables a Go source reads: through lib/config's
// get("NAME", ...) helpers or os.Getenv/LookupEnv.
var envRead = regexp.MustCompile(`\b(?:get|Getenv|LookupEnv)\("([A-Z][A-Z0-9_]*)"`)

// variablesRead scans the non-test sources of lib and functions, the code
// the images contain, for the environment variables they read.
func variablesRead(t *testing.T) map[string]string {
	root := repoRoot(t)
	vars := map[string]string{}
	for _, dir := range []string{"lib", "functions"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			for _, m := range envRead.FindAllSubmatch(src, -1) {
				vars[string(m[1])] = rel
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(vars) < 5 {
		t.Fatalf("found only %d environment variables in the code (%v): is the scan broken?", len(vars), vars)
	}
	return vars
}

// functionEnv returns, per function, the variables its container gets:
// env entries plus the keys of the ConfigMaps and Secrets it takes whole.
func functionEnv(objs []object, name func(string) string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, f := range functionNames {
		var spec *corev1.PodSpec
		if o, ok := find(objs, "apps/v1", "Deployment", name(f)); ok {
			spec = &o.Typed.(*appsv1.Deployment).Spec.Template.Spec
		} else if o, ok := find(objs, "serving.knative.dev/v1", "Service", name(f)); ok {
			spec = &o.Typed.(*servingv1.Service).Spec.Template.Spec.PodSpec
		} else {
			continue
		}
		set := map[string]bool{}
		for _, c := range spec.Containers {
			for _, e := range c.Env {
				set[e.Name] = true
			}
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil {
					if cm, ok := find(objs, "v1", "ConfigMap", e.ConfigMapRef.Name); ok {
						for k := range cm.Typed.(*corev1.ConfigMap).Data {
							set[e.Prefix+k] = true
						}
					}
				}
				if e.SecretRef != nil {
					if s, ok := find(objs, "v1", "Secret", e.SecretRef.Name); ok {
						for k := range s.Typed.(*corev1.Secret).StringData {
							set[e.Prefix+k] = true
						}
					}
				}
			}
		}
		out[f] = set
	}
	return out
}

// checkEnvironment is the cross-check between code and deployment: every
// variable the code reads is set for some function (the storage roots and
// the database for every function), and every ConfigMap key is a variable
// the code reads.
func checkEnvironment(t *testing.T, src string, objs []object, name func(string) string) {
	t.Helper()
	read := variablesRead(t)
	env := functionEnv(objs, name)
	if len(env) != len(functionNames) {
		t.Errorf("%s: found the containers of %d functions, want %v", src, len(env), functionNames)
	}
	for v, file := range read {
		if _, ok := notSetByDeployments[v]; ok || slices.ContainsFunc(optionalPrefixes, func(p string) bool { return strings.HasPrefix(v, p) }) {
			continue
		}
		setFor := []string{}
		for f, set := range env {
			if set[v] {
				setFor = append(setFor, f)
			}
		}
		if len(setFor) == 0 {
			t.Errorf("%s: %s (read in %s) is set for no function", src, v, file)
		}
	}
	for _, v := range []string{"SOURCE_STORAGE_PATH", "TARGET_STORAGE_PATH", "DATABASE_URL"} {
		for f, set := range env {
			if !set[v] {
				t.Errorf("%s: %s is not set for the %s function", src, v, f)
			}
		}
	}
	for f, set := range env {
		for v := range set {
			if _, reserved := notSetByDeployments[v]; reserved && v != "PORT" {
				t.Errorf("%s: the %s function sets %s, which is not the deployment's to set", src, f, v)
			}
		}
	}
	for _, o := range functionConfigMaps(objs, name) {
		for k := range o.Typed.(*corev1.ConfigMap).Data {
			if _, ok := read[k]; !ok {
				t.Errorf("%s: ConfigMap %s sets %s, which the code does not read", src, o.Name, k)
			}
		}
	}
}

// functionConfigMaps are the ConfigMaps the functions take whole (envFrom);
// others, such as the broker's, are not settings of the code.
func functionConfigMaps(objs []object, name func(string) string) []object {
	var out []object
	for _, f := range functionNames {
		spec := functionSpec(objs, name(f))
		if spec == nil {
			continue
		}
		for _, e := range spec.Containers[0].EnvFrom {
			if e.ConfigMapRef == nil {
				continue
			}
			if o, ok := find(objs, "v1", "ConfigMap", e.ConfigMapRef.Name); ok && !slices.ContainsFunc(out, func(x object) bool { return x.Name == o.Name }) {
				out = append(out, o)
			}
		}
	}
	return out
}
