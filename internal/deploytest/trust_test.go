package deploytest

import (
	"net/http"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"knative.dev/pkg/kmeta"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/ska-telescope/skao-staging-service/lib/eventauth"
)

// eventPolicy follows the fields of Knative Eventing's EventPolicy
// (eventing.knative.dev/v1alpha1, its CRD in eventing-crds/eventpolicy.yaml):
// which senders may post to which Eventing resources, and which events.
type eventPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		To []struct {
			Ref      *kReference           `json:"ref,omitempty"`
			Selector *metav1.LabelSelector `json:"selector,omitempty"`
		} `json:"to,omitempty"`
		From []struct {
			Ref *kReference `json:"ref,omitempty"`
			Sub *string     `json:"sub,omitempty"`
		} `json:"from,omitempty"`
		Filters []policyFilter `json:"filters,omitempty"`
	} `json:"spec"`
}

// policyFilter is one of Eventing's SubscriptionsAPI filters, as far as the
// deployments use them: exact attributes, and any of such.
type policyFilter struct {
	Exact map[string]string `json:"exact,omitempty"`
	Any   []policyFilter    `json:"any,omitempty"`
	All   []policyFilter    `json:"all,omitempty"`
}

// passes reports whether an event of type typ passes every filter (no
// filter passes everything), for the filters the deployments use.
func passes(filters []policyFilter, typ string) bool {
	for _, f := range filters {
		if !f.pass(typ) {
			return false
		}
	}
	return true
}

func (f policyFilter) pass(typ string) bool {
	for k, v := range f.Exact {
		if k != "type" || v != typ {
			return false
		}
	}
	if len(f.Any) > 0 && !slices.ContainsFunc(f.Any, func(g policyFilter) bool { return g.pass(typ) }) {
		return false
	}
	return !slices.ContainsFunc(f.All, func(g policyFilter) bool { return !g.pass(typ) })
}

// The event types the functions take and send, and Rucio's.
const (
	typeRequest      = "org.skao.staging.request"
	typeCompleted    = "org.skao.staging.completed"
	typeFailed       = "org.skao.staging.failed"
	typeTransferDone = "io.rucio.transfer-done"
)

var eventTypes = []string{typeRequest, typeCompleted, typeFailed, typeTransferDone}

// eventingIdentity is the subject of the OIDC service account Knative
// Eventing makes for one of its objects (pkg/auth/serviceaccount.go,
// GetOIDCServiceAccountNameForResource): kmeta.ChildName of the object's
// name and "-oidc-<group>-<kind>", in lower case; long names are shortened
// with a hash.
func eventingIdentity(ns, group, kind, name string) string {
	return "system:serviceaccount:" + ns + ":" + strings.ToLower(kmeta.ChildName(name, "-oidc-"+group+"-"+kind))
}

// effectiveEnv is a container's environment as the kubelet makes it: the
// ConfigMaps it takes whole, then its env entries, which win. Values from
// Secrets and fields stand as "<from>".
func effectiveEnv(objs []object, c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.EnvFrom {
		if e.ConfigMapRef != nil {
			if cm, ok := find(objs, "v1", "ConfigMap", e.ConfigMapRef.Name); ok {
				for k, v := range cm.Typed.(*corev1.ConfigMap).Data {
					env[e.Prefix+k] = v
				}
			}
		}
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil {
			env[e.Name] = "<from>"
		}
	}
	return env
}

// mountedVolume is the volume that holds file in a pod, and the file's
// path within it.
func mountedVolume(spec *corev1.PodSpec, c *corev1.Container, file string) (*corev1.Volume, string) {
	for _, m := range c.VolumeMounts {
		if path.Dir(file) != path.Clean(m.MountPath) {
			continue
		}
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == m.Name {
				return &spec.Volumes[i], path.Base(file)
			}
		}
	}
	return nil, ""
}

// checkEventAuth checks who may send events, as the deployment sets it up
// (README.md, Authentication and authorization): one EVENT_AUTH for all
// functions, never none.
//
//   - hmac: the functions that take or send events (stage, jupyter) read
//     the secret from a file of a mounted Secret, whose value is one the
//     functions accept; logs, which does neither, does not get it.
//   - oidc (Knative Eventing's sender identity): each Trigger names its
//     subscriber's EVENT_OIDC_AUDIENCE as the audience; EVENT_SENDERS allows
//     each Trigger's identity, as Eventing names it, to send the events it
//     delivers, and the functions' own service account the hand-offs the
//     stage function sends the jupyter function (with the token it holds
//     for the Broker, so the jupyter function's audience is the Broker's);
//     EVENT_TOKEN_FILE is a projected token for the Broker's audience; the
//     API token and CA the verifier reads the issuer's keys with are
//     mounted; the settings are ones lib/eventauth accepts; and
//     EventPolicies let the functions, the Triggers' replies and the Rucio
//     bridge post to the Broker what each sends, and nothing else.
func checkEventAuth(t *testing.T, src string, objs []object, name func(string) string, ns string) {
	t.Helper()
	cms := functionConfigMaps(objs, name)
	if len(cms) != 1 {
		t.Fatalf("%s: the functions take %d ConfigMaps", src, len(cms))
	}
	mode := cms[0].Typed.(*corev1.ConfigMap).Data["EVENT_AUTH"]
	type fnEnv struct {
		spec *corev1.PodSpec
		c    *corev1.Container
		env  map[string]string
	}
	fns := map[string]fnEnv{}
	for _, f := range functionNames {
		spec := functionSpec(objs, name(f))
		if spec == nil {
			continue
		}
		c := &spec.Containers[0]
		fns[f] = fnEnv{spec, c, effectiveEnv(objs, c)}
		if got := fns[f].env["EVENT_AUTH"]; got != mode {
			t.Errorf("%s: %s: EVENT_AUTH %q, the others %q", src, f, got, mode)
		}
	}
	switch mode {
	case eventauth.ModeHMAC:
		for f, fe := range fns {
			file := fe.env["EVENT_HMAC_SECRET_FILE"]
			if f == "logs" {
				if file != "" {
					t.Errorf("%s: logs reads an events secret (%s): it neither takes nor sends events", src, file)
				}
				continue
			}
			v, key := mountedVolume(fe.spec, fe.c, file)
			if v == nil || v.Secret == nil {
				t.Errorf("%s: %s: EVENT_HMAC_SECRET_FILE=%q is not a file of a mounted Secret", src, f, file)
				continue
			}
			var secretKey string
			for _, item := range v.Secret.Items {
				if item.Path == key {
					secretKey = item.Key
				}
			}
			if secretKey == "" {
				t.Errorf("%s: %s: no key of Secret %s is mounted as %s", src, f, v.Secret.SecretName, key)
				continue
			}
			if s, ok := find(objs, "v1", "Secret", v.Secret.SecretName); ok {
				value := s.Typed.(*corev1.Secret).Data[secretKey]
				if value == nil {
					value = []byte(s.Typed.(*corev1.Secret).StringData[secretKey])
				}
				// tools/knative-secrets.sh makes it when it runs.
				if m := regexp.MustCompile(`od -An -N([0-9]+) `).FindSubmatch(value); m != nil {
					if n, _ := strconv.Atoi(string(m[1])); n < eventauth.MinSecretBytes {
						t.Errorf("%s: the events secret is made of %d random bytes, fewer than %d", src, n, eventauth.MinSecretBytes)
					}
				} else if _, err := eventauth.ParseSecrets(value); err != nil {
					t.Errorf("%s: Secret %s key %s: %v", src, v.Secret.SecretName, secretKey, err)
				}
			}
		}
	case eventauth.ModeOIDC:
		checkOIDCSenders(t, src, objs, ns, func(f string) (*corev1.PodSpec, *corev1.Container, map[string]string) {
			fe := fns[f]
			return fe.spec, fe.c, fe.env
		}, name)
	default:
		t.Errorf("%s: EVENT_AUTH %q: the deployment must check who sends events (hmac or oidc)", src, mode)
	}
}

func checkOIDCSenders(t *testing.T, src string, objs []object, ns string,
	fn func(string) (*corev1.PodSpec, *corev1.Container, map[string]string), name func(string) string) {
	t.Helper()
	brokers := byKind(objs, "eventing.knative.dev/v1", "Broker")
	if len(brokers) != 1 {
		t.Fatalf("%s: %d Brokers", src, len(brokers))
	}
	brokerName := brokers[0].Name
	// Eventing's audience of a Broker (pkg/auth/audience.go, GetAudience).
	brokerAudience := "eventing.knative.dev/broker/" + ns + "/" + brokerName
	_, _, stageEnv := fn("stage")
	senders, err := eventauth.ParseSenders(stageEnv["EVENT_SENDERS"])
	if err != nil {
		t.Fatalf("%s: EVENT_SENDERS: %v", src, err)
	}
	spec, _, _ := fn("stage")
	functionsSA := "system:serviceaccount:" + ns + ":" + spec.ServiceAccountName
	for _, f := range []string{"stage", "jupyter"} {
		spec, c, env := fn(f)
		if env["EVENT_SENDERS"] != stageEnv["EVENT_SENDERS"] {
			t.Errorf("%s: %s has other EVENT_SENDERS than stage", src, f)
		}
		aud := env["EVENT_OIDC_AUDIENCE"]
		if _, err := eventauth.New(eventauth.Config{Mode: eventauth.ModeOIDC, Issuer: env["EVENT_OIDC_ISSUER"], Audience: aud,
			Senders: senders, HTTPClient: http.DefaultClient}); err != nil {
			t.Errorf("%s: %s: the functions refuse these settings: %v", src, f, err)
		}
		// The token its own events carry: for the Broker, of its pods' account.
		v, file := mountedVolume(spec, c, env["EVENT_TOKEN_FILE"])
		var token *corev1.ServiceAccountTokenProjection
		if v != nil && v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil && s.ServiceAccountToken.Path == file {
					token = s.ServiceAccountToken
				}
			}
		}
		if token == nil || token.Audience != brokerAudience {
			t.Errorf("%s: %s: EVENT_TOKEN_FILE=%q is not a projected service-account token for the Broker's audience %s (%+v)",
				src, f, env["EVENT_TOKEN_FILE"], brokerAudience, token)
		}
		// What the verifier reaches the in-cluster issuer with.
		api, _ := mountedVolume(spec, c, eventauth.ServiceAccountDir+"/token")
		files := map[string]bool{}
		if api != nil && api.Projected != nil {
			for _, s := range api.Projected.Sources {
				if s.ServiceAccountToken != nil && s.ServiceAccountToken.Audience == "" {
					files[s.ServiceAccountToken.Path] = true
				}
				if s.ConfigMap != nil && s.ConfigMap.Name == "kube-root-ca.crt" {
					for _, item := range s.ConfigMap.Items {
						files[item.Path] = item.Key == "ca.crt"
					}
				}
			}
		}
		if !files["token"] || !files["ca.crt"] {
			t.Errorf("%s: %s: no API token and cluster CA at %s: the verifier cannot read the issuer's keys", src, f, eventauth.ServiceAccountDir)
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: %s: the pod mounts the default token as well", src, f)
		}
	}
	_, _, jupyterEnv := fn("jupyter")
	if jupyterEnv["EVENT_OIDC_AUDIENCE"] != brokerAudience {
		t.Errorf("%s: the jupyter function's audience %q: the stage function's hand-offs carry a token for the Broker (%s)",
			src, jupyterEnv["EVENT_OIDC_AUDIENCE"], brokerAudience)
	}
	if !senders.Allows(typeRequest, functionsSA) {
		t.Errorf("%s: EVENT_SENDERS does not let the functions (%s) hand requests to each other", src, functionsSA)
	}

	// Each Trigger: its subscriber's audience, and its identity allowed.
	triggers := byKind(objs, "eventing.knative.dev/v1", "Trigger")
	var triggerNames []string
	for _, o := range triggers {
		tr := o.Typed.(*trigger)
		triggerNames = append(triggerNames, tr.Name)
		var f string
		for _, g := range functionNames {
			if tr.Spec.Subscriber.Ref != nil && tr.Spec.Subscriber.Ref.Name == name(g) {
				f = g
			}
		}
		if f == "" {
			t.Errorf("%s: Trigger %s delivers to no function", src, tr.Name)
			continue
		}
		_, _, env := fn(f)
		if tr.Spec.Subscriber.Audience == "" || tr.Spec.Subscriber.Audience != env["EVENT_OIDC_AUDIENCE"] {
			t.Errorf("%s: Trigger %s: subscriber audience %q, but %s's EVENT_OIDC_AUDIENCE is %q", src, tr.Name, tr.Spec.Subscriber.Audience, f, env["EVENT_OIDC_AUDIENCE"])
		}
		sub := eventingIdentity(ns, "eventing.knative.dev", "Trigger", tr.Name)
		typ := tr.Spec.Filter.Attributes["type"]
		if !senders.Allows(typ, sub) {
			t.Errorf("%s: Trigger %s delivers %s as %s, which EVENT_SENDERS does not allow (%s)", src, tr.Name, typ, sub, senders)
		}
		for _, other := range eventTypes {
			if other != typ && senders.Allows(other, sub) {
				t.Errorf("%s: EVENT_SENDERS lets Trigger %s (%s) send %s, which it does not deliver", src, tr.Name, sub, other)
			}
		}
	}

	// Who may post what to the Broker.
	may := map[string][]string{} // subject (or trigger:<name>) -> types
	refs := map[string]bool{}
	for _, o := range byKind(objs, "eventing.knative.dev/v1alpha1", "EventPolicy") {
		p := o.Typed.(*eventPolicy)
		if len(p.Spec.To) != 1 || p.Spec.To[0].Ref == nil || p.Spec.To[0].Ref.Kind != "Broker" || p.Spec.To[0].Ref.Name != brokerName {
			t.Errorf("%s: EventPolicy %s applies to %+v, not the Broker %s alone", src, p.Name, p.Spec.To, brokerName)
		}
		var allowed []string
		for _, typ := range eventTypes {
			if passes(p.Spec.Filters, typ) {
				allowed = append(allowed, typ)
			}
		}
		for _, from := range p.Spec.From {
			var who string
			switch {
			case from.Sub != nil:
				who = *from.Sub
				if strings.HasSuffix(who, "*") {
					t.Errorf("%s: EventPolicy %s lets a pattern post (%s)", src, p.Name, who)
				}
			case from.Ref != nil && from.Ref.Kind == "Trigger":
				who = "trigger:" + from.Ref.Name
				refs[from.Ref.Name] = true
			default:
				t.Errorf("%s: EventPolicy %s: a sender %+v", src, p.Name, from)
				continue
			}
			// Eventing stops at the first policy that names a subject.
			if _, dup := may[who]; dup {
				t.Errorf("%s: %s is in two EventPolicies: Eventing would only read the first", src, who)
			}
			may[who] = allowed
		}
	}
	want := map[string][]string{functionsSA: {typeRequest, typeCompleted, typeFailed}}
	for _, n := range triggerNames {
		want["trigger:"+n] = []string{typeCompleted, typeFailed}
	}
	for who, types := range may {
		if strings.HasPrefix(who, "system:serviceaccount:") && who != functionsSA {
			want[who] = []string{typeTransferDone} // the Rucio bridge
		}
		if !slices.Equal(types, want[who]) {
			t.Errorf("%s: the EventPolicies let %s post %v to the Broker, want %v", src, who, types, want[who])
		}
	}
	for who := range want {
		if _, ok := may[who]; !ok {
			t.Errorf("%s: no EventPolicy lets %s post to the Broker", src, who)
		}
	}
}

// checkNetworkPolicy checks that only the functions reach MySQL: one
// NetworkPolicy selects MySQL's pods for ingress, on its port only, from
// pods of this namespace that its selectors match: every function's (as
// their workloads label them; Knative adds serving.knative.dev labels to a
// revision's pods), and not MySQL's own, the storage Job's, the dead-letter
// sink's, or any other pod's.
func checkNetworkPolicy(t *testing.T, src string, objs []object, name func(string) string) {
	t.Helper()
	nps := byKind(objs, "networking.k8s.io/v1", "NetworkPolicy")
	if len(nps) != 1 {
		t.Fatalf("%s: %d NetworkPolicies, want MySQL's", src, len(nps))
	}
	np := nps[0].Typed.(*networkingv1.NetworkPolicy)
	sts := byKind(objs, "apps/v1", "StatefulSet")[0].Typed.(*appsv1.StatefulSet)
	mysqlPods := labels.Set(sts.Spec.Template.Labels)
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil || sel.Empty() || !sel.Matches(mysqlPods) {
		t.Fatalf("%s: NetworkPolicy %s does not select MySQL's pods (%v)", src, np.Name, err)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(np.Spec.Ingress) != 1 {
		t.Fatalf("%s: NetworkPolicy %s: want one ingress rule (policy types %v)", src, np.Name, np.Spec.PolicyTypes)
	}
	rule := np.Spec.Ingress[0]
	if len(rule.Ports) != 1 || rule.Ports[0].Port == nil || rule.Ports[0].Port.IntValue() != 3306 ||
		rule.Ports[0].Protocol == nil || *rule.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("%s: NetworkPolicy %s opens %+v, want TCP 3306 only", src, np.Name, rule.Ports)
	}
	var peers []labels.Selector
	for _, p := range rule.From {
		if p.NamespaceSelector != nil || p.IPBlock != nil || p.PodSelector == nil {
			t.Errorf("%s: NetworkPolicy %s lets in %+v: pods of this namespace only", src, np.Name, p)
			continue
		}
		s, err := metav1.LabelSelectorAsSelector(p.PodSelector)
		if err != nil || s.Empty() {
			t.Errorf("%s: NetworkPolicy %s: a peer selecting every pod (%v)", src, np.Name, err)
			continue
		}
		peers = append(peers, s)
	}
	reaches := func(l labels.Set) bool {
		return slices.ContainsFunc(peers, func(s labels.Selector) bool { return s.Matches(l) })
	}
	// Knative's labels on a revision's pods, beside the template's.
	knativePod := func(ksvc string, template map[string]string) labels.Set {
		l := labels.Set{"serving.knative.dev/service": ksvc, "serving.knative.dev/configuration": ksvc,
			"serving.knative.dev/revision": ksvc + "-00001", "app": ksvc + "-00001"}
		for k, v := range template {
			l[k] = v
		}
		return l
	}
	for _, f := range functionNames {
		var pod labels.Set
		if o, ok := find(objs, "apps/v1", "Deployment", name(f)); ok {
			pod = labels.Set(o.Typed.(*appsv1.Deployment).Spec.Template.Labels)
		} else if o, ok := find(objs, "serving.knative.dev/v1", "Service", name(f)); ok {
			pod = knativePod(name(f), o.Typed.(*servingv1.Service).Spec.Template.Labels)
		}
		if !reaches(pod) {
			t.Errorf("%s: the %s function's pods (%v) cannot reach MySQL", src, f, pod)
		}
	}
	others := map[string]labels.Set{"MySQL's own pods": mysqlPods, "a stranger": {"app": "stranger"}}
	for _, o := range byKind(objs, "batch/v1", "Job") {
		others["Job "+o.Name] = labels.Set(o.Typed.(*batchv1.Job).Spec.Template.Labels)
	}
	for _, o := range byKind(objs, "serving.knative.dev/v1", "Service") {
		if !slices.ContainsFunc(functionNames, func(f string) bool { return name(f) == o.Name }) {
			others["Knative Service "+o.Name] = knativePod(o.Name, o.Typed.(*servingv1.Service).Spec.Template.Labels)
		}
	}
	for what, l := range others {
		if reaches(l) {
			t.Errorf("%s: %s (%v) may reach MySQL", src, what, l)
		}
	}
}
