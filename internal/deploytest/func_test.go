package deploytest

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

// funcYAML follows the func.yaml schema of Knative's func CLI (spec
// version 0.36.0, schema/func_yaml-schema.json in knative/func), as far as
// these descriptors use it; unknown fields fail the strict decoding.
type funcYAML struct {
	SpecVersion string    `json:"specVersion"`
	Name        string    `json:"name"`
	Runtime     string    `json:"runtime"`
	Registry    string    `json:"registry,omitempty"`
	Image       string    `json:"image"`
	Namespace   string    `json:"namespace,omitempty"`
	Created     time.Time `json:"created"`
	Invoke      string    `json:"invoke,omitempty"`
	Run         struct {
		Envs []struct {
			Name  string `json:"name,omitempty"`
			Value string `json:"value"`
		} `json:"envs"`
		Volumes []struct {
			Secret                string `json:"secret,omitempty"`
			ConfigMap             string `json:"configMap,omitempty"`
			PersistentVolumeClaim *struct {
				ClaimName string `json:"claimName"`
				ReadOnly  bool   `json:"readOnly,omitempty"`
			} `json:"persistentVolumeClaim,omitempty"`
			Path string `json:"path"`
		} `json:"volumes"`
	} `json:"run"`
	Deploy struct {
		Namespace          string            `json:"namespace,omitempty"`
		Image              string            `json:"image,omitempty"`
		Annotations        map[string]string `json:"annotations,omitempty"`
		ServiceAccountName string            `json:"serviceAccountName,omitempty"`
		Options            struct {
			Scale *struct {
				Min         *int64   `json:"min,omitempty"`
				Max         *int64   `json:"max,omitempty"`
				Metric      string   `json:"metric,omitempty"`
				Target      *float64 `json:"target,omitempty"`
				Utilization *float64 `json:"utilization,omitempty"`
			} `json:"scale,omitempty"`
			Resources *struct {
				Requests *struct {
					CPU    string `json:"cpu,omitempty"`
					Memory string `json:"memory,omitempty"`
				} `json:"requests,omitempty"`
				Limits *struct {
					CPU         string `json:"cpu,omitempty"`
					Memory      string `json:"memory,omitempty"`
					Concurrency *int64 `json:"concurrency,omitempty"`
				} `json:"limits,omitempty"`
			} `json:"resources,omitempty"`
		} `json:"options"`
		Labels []struct {
			Key   string `json:"key"`
			Value string `json:"value"`
		} `json:"labels,omitempty"`
		HealthEndpoints struct {
			Liveness  string `json:"liveness"`
			Readiness string `json:"readiness"`
		} `json:"healthEndpoints"`
	} `json:"deploy"`
}

// funcTemplate is func's syntax for values taken from the cluster.
var funcTemplate = regexp.MustCompile(`^\{\{ (configMap|secret):([a-z0-9-]+)(?::([A-Za-z0-9_.-]+))? \}\}$`)

// TestFuncYAML checks the func descriptors: valid for func, one per
// function (no copy elsewhere to drift), deploy-only as they say (the images
// come from make images), and consistent with config/knative (the
// ConfigMap, Secrets and claims they use exist; the variables they set cover
// what the code reads; the same limits as its Knative Services).
func TestFuncYAML(t *testing.T) {
	root := repoRoot(t)
	objs := append(deployOverlay(t), knativeSecrets(t)...)
	cm, ok := find(objs, "v1", "ConfigMap", "staging-config")
	if !ok {
		t.Fatal("config/knative has no ConfigMap staging-config")
	}
	data := cm.Typed.(*corev1.ConfigMap).Data
	read := variablesRead(t)
	setAnywhere := map[string]bool{}

	if _, err := os.Stat(filepath.Join(root, "func.yaml")); err == nil {
		t.Error("a func.yaml at the top: one copy per function, in functions/<name>/")
	}
	for _, f := range functionNames {
		p := filepath.Join("functions", f, "func.yaml")
		raw, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatalf("%s: %v (every function needs a func.yaml)", p, err)
		}
		var fy funcYAML
		if err := yaml.UnmarshalStrict(raw, &fy); err != nil {
			t.Errorf("%s does not follow func's schema: %v", p, err)
			continue
		}
		if !bytes.Contains(raw, []byte("func deploy --build=false")) || !bytes.Contains(raw, []byte("`make images`")) {
			t.Errorf("%s does not say that it only deploys images made by make images", p)
		}
		if fy.Name != f || fy.Runtime != "go" || fy.SpecVersion == "" || fy.Created.IsZero() || fy.Image != "IMAGE-SET-BY-MAKE-DEPLOY/"+f {
			t.Errorf("%s: name %q runtime %q image %q specVersion %q created %v", p, fy.Name, fy.Runtime, fy.Image, fy.SpecVersion, fy.Created)
		}
		if !regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`).MatchString(fy.Name) {
			t.Errorf("%s: name %q is not a func name", p, fy.Name)
		}
		if s := fy.Deploy.Options.Scale; s == nil || s.Min == nil || *s.Min != 0 || s.Max == nil || *s.Max < 1 || s.Metric != "concurrency" {
			t.Errorf("%s: must scale to zero with a max and the concurrency metric", p)
		}
		if h := fy.Deploy.HealthEndpoints; h.Liveness != "/healthz" || h.Readiness != "/readyz" {
			t.Errorf("%s: health endpoints are %+v", p, h)
		}
		if ksvc, ok := find(objs, "serving.knative.dev/v1", "Service", f); ok {
			cc := ksvc.Typed.(*servingv1.Service).Spec.Template.Spec.ContainerConcurrency
			r := fy.Deploy.Options.Resources
			if r == nil || r.Limits == nil || r.Limits.Concurrency == nil || cc == nil || *r.Limits.Concurrency != *cc {
				t.Errorf("%s: concurrency limit differs from config/knative's containerConcurrency %v", p, cc)
			}
		}
		local := false
		for _, l := range fy.Deploy.Labels {
			local = local || (l.Key == "networking.knative.dev/visibility" && l.Value == "cluster-local")
		}
		if !local {
			t.Errorf("%s: not cluster-local: func would publish the function, POST / included, on Knative's external domain", p)
		}
		if fy.Deploy.ServiceAccountName != "staging" {
			t.Errorf("%s: serviceAccountName %q, want config/knative's staging", p, fy.Deploy.ServiceAccountName)
		}
		set := map[string]bool{}
		for _, e := range fy.Run.Envs {
			if m := funcTemplate.FindStringSubmatch(e.Value); m != nil {
				if m[1] == "configMap" && m[3] == "" && e.Name == "" {
					if m[2] != "staging-config" {
						t.Errorf("%s: takes ConfigMap %s, which config/knative does not define", p, m[2])
					}
					for k := range data {
						set[k] = true
					}
					continue
				}
				if m[1] == "secret" {
					s, ok := find(objs, "v1", "Secret", m[2])
					if !ok || s.Typed.(*corev1.Secret).StringData[m[3]] == "" && m[3] != "token" {
						t.Errorf("%s: %s reads key %q of Secret %s, which tools/knative-secrets.sh does not make", p, e.Name, m[3], m[2])
					}
				}
			} else if strings.Contains(e.Value, "{{") {
				t.Errorf("%s: %s: %q is not func's {{ configMap:... }} or {{ secret:... }}", p, e.Name, e.Value)
			}
			if e.Name == "" {
				t.Errorf("%s: an env without a name: %q", p, e.Value)
			}
			set[e.Name] = true
		}
		for _, v := range []string{"SOURCE_STORAGE_PATH", "TARGET_STORAGE_PATH", "DATABASE_URL"} {
			if !set[v] {
				t.Errorf("%s: %s is not set", p, v)
			}
		}
		mounted := map[string]bool{}
		for _, v := range fy.Run.Volumes {
			if v.Secret != "" {
				// The events secret, where EVENT_HMAC_SECRET_FILE reads it.
				s, ok := find(objs, "v1", "Secret", v.Secret)
				if !ok || f == "logs" || path.Join(v.Path, "hmac-secret") != data["EVENT_HMAC_SECRET_FILE"] || s.Typed.(*corev1.Secret).StringData["hmac-secret"] == "" {
					t.Errorf("%s: Secret %s at %s: want the events secret (make deploy's) where EVENT_HMAC_SECRET_FILE (%s) reads it", p, v.Secret, v.Path, data["EVENT_HMAC_SECRET_FILE"])
				}
				mounted[data["EVENT_HMAC_SECRET_FILE"]] = true
				continue
			}
			if v.PersistentVolumeClaim == nil {
				t.Errorf("%s: volume at %s is neither a claim nor the events secret", p, v.Path)
				continue
			}
			if _, ok := find(objs, "v1", "PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName); !ok {
				t.Errorf("%s: claim %s is not in config/knative", p, v.PersistentVolumeClaim.ClaimName)
			}
			mounted[v.Path] = true
		}
		if data["EVENT_AUTH"] == "hmac" && f != "logs" && !mounted[data["EVENT_HMAC_SECRET_FILE"]] {
			t.Errorf("%s: EVENT_AUTH=hmac, but the events secret (%s) is not mounted", p, data["EVENT_HMAC_SECRET_FILE"])
		}
		if f == "logs" {
			for _, e := range fy.Run.Envs {
				if e.Name == "EVENT_HMAC_SECRET_FILE" && e.Value != "" {
					t.Errorf("%s: the logs function reads an events secret", p)
				}
			}
		}
		for _, v := range []string{"SOURCE_STORAGE_PATH", "TARGET_STORAGE_PATH"} {
			if mounted[data[v]] != (f != "logs") {
				t.Errorf("%s: %s (%s) mounted: %v (the logs function reads only the store)", p, v, data[v], mounted[data[v]])
			}
		}
		for k := range set {
			setAnywhere[k] = true
		}
	}
	for v, file := range read {
		if _, ok := notSetByDeployments[v]; ok || strings.HasPrefix(v, "OTEL_") {
			continue
		}
		if !setAnywhere[v] {
			t.Errorf("%s (read in %s) is set by no func.yaml", v, file)
		}
	}
}
