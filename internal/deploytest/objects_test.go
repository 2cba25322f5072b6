package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	servingconfig "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"
)

// repoRoot is the repository's top directory.
func repoRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// tool finds a command-line tool that `make test` installs into ./bin.
// A missing tool fails the test: these checks must run, never be skipped.
func tool(t testing.TB, name string) string {
	p := filepath.Join(repoRoot(t), "bin", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s is not installed: run `make test` (scripts/install-test-deps.sh installs it into ./bin)", name)
	return ""
}

// run runs a tool and returns its standard output; a failure fails the test
// with the tool's standard error.
func run(t testing.TB, dir, name string, args ...string) []byte {
	t.Helper()
	out, err := tryRun(dir, tool(t, name), args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func tryRun(dir, path string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// object is one decoded manifest: its raw YAML, its identity, and its typed
// value (a pointer to a Kubernetes, Knative or Gateway API Go type, or to
// one of the Eventing types in eventing_test.go).
type object struct {
	APIVersion, Kind, Namespace, Name string
	Raw                               []byte
	Typed                             any
	Meta                              *metav1.ObjectMeta
}

func (o object) String() string { return o.Kind + " " + o.Name }

// newTyped maps apiVersion and kind to the Go type a manifest must decode into.
func newTyped(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "batch/v1 Job":
		return &batchv1.Job{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "v1 PersistentVolume":
		return &corev1.PersistentVolume{}, nil
	case "v1 PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "networking.k8s.io/v1 Ingress":
		return &networkingv1.Ingress{}, nil
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "serving.knative.dev/v1 Service":
		return &servingv1.Service{}, nil
	case "gateway.networking.k8s.io/v1 Gateway":
		return &gatewayv1.Gateway{}, nil
	case "gateway.networking.k8s.io/v1 HTTPRoute":
		return &gatewayv1.HTTPRoute{}, nil
	case "gateway.networking.k8s.io/v1beta1 ReferenceGrant":
		return &gatewayv1beta1.ReferenceGrant{}, nil
	case "eventing.knative.dev/v1 Broker":
		return &broker{}, nil
	case "eventing.knative.dev/v1 Trigger":
		return &trigger{}, nil
	case "sources.knative.dev/v1 SinkBinding":
		return &sinkBinding{}, nil
	case "eventing.knative.dev/v1alpha1 EventPolicy":
		return &eventPolicy{}, nil
	}
	return nil, fmt.Errorf("no Go type known for apiVersion %q kind %q", apiVersion, kind)
}

// decodeAll splits a multi-document YAML stream and decodes every document
// strictly: unknown or duplicate fields are errors.
func decodeAll(t testing.TB, src string, data []byte) []object {
	t.Helper()
	var objs []object
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		var head struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Metadata   metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s: %v\n%s", src, err, doc)
		}
		if head.Kind == "" && head.APIVersion == "" {
			continue // an empty document (comments only)
		}
		typed, err := newTyped(head.APIVersion, head.Kind)
		if err != nil {
			t.Errorf("%s: %s %q: %v", src, head.Kind, head.Metadata.Name, err)
			continue
		}
		if err := yaml.UnmarshalStrict(doc, typed); err != nil {
			t.Errorf("%s: %s %q does not decode strictly into %T: %v", src, head.Kind, head.Metadata.Name, typed, err)
			continue
		}
		if head.Metadata.Name == "" {
			t.Errorf("%s: a %s without a name", src, head.Kind)
		}
		objs = append(objs, object{APIVersion: head.APIVersion, Kind: head.Kind, Namespace: head.Metadata.Namespace,
			Name: head.Metadata.Name, Raw: doc, Typed: typed, Meta: metaOf(typed)})
	}
	return objs
}

func metaOf(typed any) *metav1.ObjectMeta {
	if o, ok := typed.(metav1.ObjectMetaAccessor); ok {
		return o.GetObjectMeta().(*metav1.ObjectMeta)
	}
	return nil
}

// byKind returns the objects of one kind (and apiVersion group, as
// "Service" exists in core and in Knative).
func byKind(objs []object, apiVersion, kind string) []object {
	var out []object
	for _, o := range objs {
		if o.APIVersion == apiVersion && o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func find(objs []object, apiVersion, kind, name string) (object, bool) {
	for _, o := range byKind(objs, apiVersion, kind) {
		if o.Name == name {
			return o, true
		}
	}
	return object{}, false
}

// knativeFeatures are the Knative Serving feature flags README.md tells
// operators to turn on in config-features (TestReadmeKnativeFeatures).
var knativeFeatures = []string{
	"kubernetes.podspec-persistent-volume-claim",
	"kubernetes.podspec-persistent-volume-write",
	"kubernetes.podspec-securitycontext",
	"kubernetes.podspec-topologyspreadconstraints",
}

// knativeContext is the configuration Knative Serving validates with: its
// defaults plus the feature flags the README tells operators to turn on.
func knativeContext() context.Context {
	cfg := servingconfig.FromContextOrDefaults(context.Background()).DeepCopy()
	data := map[string]string{}
	for _, f := range knativeFeatures {
		data[f] = "enabled"
	}
	features, err := servingconfig.NewFeaturesConfigFromMap(data)
	if err != nil {
		panic(err)
	}
	cfg.Features = features
	return servingconfig.ToContext(context.Background(), cfg)
}

// validateKnative runs Knative Serving's defaulting and validation, as its
// admission webhook does, on every Knative Service.
func validateKnative(t testing.TB, src string, objs []object) {
	t.Helper()
	for _, o := range byKind(objs, "serving.knative.dev/v1", "Service") {
		svc := o.Typed.(*servingv1.Service).DeepCopy()
		ctx := knativeContext()
		svc.SetDefaults(ctx)
		if err := svc.Validate(ctx); err != nil {
			t.Errorf("%s: Knative Service %s is invalid: %v", src, o.Name, err)
		}
	}
}

// podSpecs returns the pod spec of every workload, keyed by its object.
func podSpecs(objs []object) map[string]*corev1.PodSpec {
	out := map[string]*corev1.PodSpec{}
	for _, o := range objs {
		switch v := o.Typed.(type) {
		case *appsv1.Deployment:
			out[o.String()] = &v.Spec.Template.Spec
		case *appsv1.StatefulSet:
			out[o.String()] = &v.Spec.Template.Spec
		case *batchv1.Job:
			out[o.String()] = &v.Spec.Template.Spec
		case *servingv1.Service:
			out["Knative "+o.String()] = &v.Spec.Template.Spec.PodSpec
		}
	}
	return out
}

// checkReferences checks that what pods, services and routes point at is
// among the objects: mounted volumes, claims, ConfigMaps and Secrets (with
// their keys), Service selectors, Deployment selectors, HPA targets,
// Ingress backends. external lists Secrets that exist outside the objects.
func checkReferences(t testing.TB, src string, objs []object, external ...string) {
	t.Helper()
	secretKeys := map[string]map[string]bool{}
	for _, o := range byKind(objs, "v1", "Secret") {
		s := o.Typed.(*corev1.Secret)
		keys := map[string]bool{}
		for k := range s.StringData {
			keys[k] = true
		}
		for k := range s.Data {
			keys[k] = true
		}
		secretKeys[o.Name] = keys
	}
	hasSecret := func(name, key string) bool {
		for _, e := range external {
			if e == name {
				return true
			}
		}
		keys, ok := secretKeys[name]
		return ok && (key == "" || keys[key])
	}
	hasConfigMap := func(name, key string) bool {
		o, ok := find(objs, "v1", "ConfigMap", name)
		if !ok {
			return false
		}
		_, has := o.Typed.(*corev1.ConfigMap).Data[key]
		return key == "" || has
	}
	for name, spec := range podSpecs(objs) {
		volumes := map[string]bool{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = true
			if c := v.PersistentVolumeClaim; c != nil {
				if _, ok := find(objs, "v1", "PersistentVolumeClaim", c.ClaimName); !ok {
					t.Errorf("%s: %s mounts claim %q, which is not defined", src, name, c.ClaimName)
				}
			}
			if s := v.Secret; s != nil {
				if len(s.Items) == 0 && !hasSecret(s.SecretName, "") {
					t.Errorf("%s: %s mounts Secret %q, which is not defined", src, name, s.SecretName)
				}
				for _, item := range s.Items {
					if !hasSecret(s.SecretName, item.Key) {
						t.Errorf("%s: %s mounts key %q of Secret %q, which is not defined", src, name, item.Key, s.SecretName)
					}
				}
			}
			if p := v.Projected; p != nil {
				for _, src2 := range p.Sources {
					// kube-root-ca.crt is in every namespace (Kubernetes puts it there).
					if c := src2.ConfigMap; c != nil && c.Name != "kube-root-ca.crt" {
						for _, item := range c.Items {
							if !hasConfigMap(c.Name, item.Key) {
								t.Errorf("%s: %s projects key %q of ConfigMap %q, which is not defined", src, name, item.Key, c.Name)
							}
						}
					}
				}
			}
		}
		for _, c := range append(spec.InitContainers, spec.Containers...) {
			for _, m := range c.VolumeMounts {
				if !volumes[m.Name] && !isClaimTemplate(objs, name, m.Name) {
					t.Errorf("%s: %s container %s mounts volume %q, which the pod does not have", src, name, c.Name, m.Name)
				}
			}
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil && !hasConfigMap(e.ConfigMapRef.Name, "") {
					t.Errorf("%s: %s takes its environment from ConfigMap %q, which is not defined", src, name, e.ConfigMapRef.Name)
				}
				if e.SecretRef != nil && !hasSecret(e.SecretRef.Name, "") {
					t.Errorf("%s: %s takes its environment from Secret %q, which is not defined", src, name, e.SecretRef.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil && !hasSecret(r.Name, r.Key) {
					t.Errorf("%s: %s env %s reads key %q of Secret %q, which is not defined", src, name, e.Name, r.Key, r.Name)
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil && !hasConfigMap(r.Name, r.Key) {
					t.Errorf("%s: %s env %s reads key %q of ConfigMap %q, which is not defined", src, name, e.Name, r.Key, r.Name)
				}
			}
		}
	}
	for _, o := range byKind(objs, "apps/v1", "Deployment") {
		d := o.Typed.(*appsv1.Deployment)
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: %s: its selector does not select its own pods (%v)", src, o, err)
		}
	}
	for _, o := range byKind(objs, "v1", "Service") {
		s := o.Typed.(*corev1.Service)
		if len(s.Spec.Selector) == 0 {
			continue
		}
		matched := false
		for _, o := range objs {
			var l map[string]string
			switch v := o.Typed.(type) {
			case *appsv1.Deployment:
				l = v.Spec.Template.Labels
			case *appsv1.StatefulSet:
				l = v.Spec.Template.Labels
			default:
				continue
			}
			matched = matched || labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(l))
		}
		if !matched {
			t.Errorf("%s: %s selects no pods", src, o)
		}
	}
	for _, o := range byKind(objs, "autoscaling/v2", "HorizontalPodAutoscaler") {
		h := o.Typed.(*autoscalingv2.HorizontalPodAutoscaler)
		if _, ok := find(objs, "apps/v1", h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name); !ok {
			t.Errorf("%s: %s scales %s %q, which is not defined", src, o, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas || len(h.Spec.Metrics) == 0 {
			t.Errorf("%s: %s: replicas or metrics are wrong", src, o)
		}
	}
	for _, o := range byKind(objs, "networking.k8s.io/v1", "Ingress") {
		in := o.Typed.(*networkingv1.Ingress)
		for _, r := range in.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				svc, ok := find(objs, "v1", "Service", p.Backend.Service.Name)
				if !ok {
					t.Errorf("%s: %s routes %s to Service %q, which is not defined", src, o, p.Path, p.Backend.Service.Name)
					continue
				}
				found := false
				for _, port := range svc.Typed.(*corev1.Service).Spec.Ports {
					found = found || port.Name == p.Backend.Service.Port.Name || (port.Port == p.Backend.Service.Port.Number && port.Port != 0)
				}
				if !found {
					t.Errorf("%s: %s routes %s to a port Service %q does not have", src, o, p.Path, svc.Name)
				}
			}
		}
	}
}

// isClaimTemplate reports whether volume is one of a StatefulSet's claim templates.
func isClaimTemplate(objs []object, workload, volume string) bool {
	for _, o := range byKind(objs, "apps/v1", "StatefulSet") {
		if o.String() != workload {
			continue
		}
		for _, c := range o.Typed.(*appsv1.StatefulSet).Spec.VolumeClaimTemplates {
			if c.Name == volume {
				return true
			}
		}
	}
	return false
}
