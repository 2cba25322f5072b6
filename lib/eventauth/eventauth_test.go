package eventauth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/oidc"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	typeRequest = "org.skao.staging.request"
	typeRucio   = "io.rucio.transfer-done"
	stageAud    = "serving.knative.dev/service/skao/stage"
	trigger     = "system:serviceaccount:skao:stage-requests-oidc-eventing.knative.dev-trigger"
	rucioSource = "system:serviceaccount:rucio:transfer-events"
	rogue       = "system:serviceaccount:default:some-pod"
)

// receiver is a function's CloudEvents door reduced to the sender check:
// it answers 200 with the sender, or the status a door would map the
// error to.
func receiver(t *testing.T, v *Verifier) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		s, err := v.Verify(r.Context(), r.Header, ev)
		switch {
		case errors.Is(err, ErrUnavailable):
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case errors.Is(err, ErrUnauthenticated):
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case errors.Is(err, ErrForbidden):
			http.Error(w, err.Error(), http.StatusForbidden)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			json.NewEncoder(w).Encode(s)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// deliver sends ev as a broker does (binary mode, or structured), with the
// given Authorization header if any, and returns the status and body.
func deliver(t *testing.T, url string, ev event.Event, structured bool, authorization string) (int, string) {
	t.Helper()
	var body string
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			resp.Body = io.NopCloser(strings.NewReader(body))
		}
		return resp, err
	})}
	c, err := cloudevents.NewClientHTTP(cehttp.WithClient(*hc))
	if err != nil {
		t.Fatal(err)
	}
	ctx := cloudevents.ContextWithTarget(context.Background(), url)
	if structured {
		ctx = cloudevents.WithEncodingStructured(ctx)
	}
	if authorization != "" {
		ctx = cehttp.WithCustomHeader(ctx, http.Header{"Authorization": {authorization}})
	}
	res := c.Send(ctx, ev)
	var hr *cehttp.Result
	if !cloudevents.ResultAs(res, &hr) {
		t.Fatalf("no HTTP result: %v", res)
	}
	return hr.StatusCode, strings.TrimSpace(body)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// eventTime is when newEvent's events were made.
var eventTime = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

func newEvent(id, typ string) event.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(id)
	ev.SetSource("/rucio/rse/SITE")
	ev.SetType(typ)
	ev.SetSubject("obs/vis.ms")
	ev.SetTime(eventTime)
	ev.SetExtension(ExtMethod, "local_copy")
	ev.SetData(cloudevents.ApplicationJSON, map[string]string{"method": "local_copy", "username": "alice",
		"local_path_on_storage": "obs/vis.ms", "relative_path": "vis.ms"})
	return ev
}

// issuerConfig makes the test provider play the cluster's service-account
// issuer: each client is a service account getting tokens for an audience.
func issuerConfig() testenv.OIDCConfig {
	return testenv.OIDCConfig{Clients: []testenv.OIDCClient{
		{ID: "trigger", Secret: "trigger-secret", Subject: trigger, Audience: []string{stageAud}},
		{ID: "rucio", Secret: "rucio-secret", Subject: rucioSource, Audience: []string{stageAud}},
		{ID: "rogue", Secret: "rogue-secret", Subject: rogue, Audience: []string{stageAud}},
		{ID: "for-logs", Secret: "logs-secret", Subject: trigger, Audience: []string{"serving.knative.dev/service/skao/logs"}},
	}}
}

func oidcVerifier(t *testing.T, issuer string) *Verifier {
	t.Helper()
	senders, err := ParseSenders(typeRequest + "=" + trigger + "," + rucioSource + ";" + typeRucio + "=" + rucioSource)
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(Config{Mode: ModeOIDC, Issuer: issuer, Audience: stageAud, Senders: senders})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestOIDCSenders(t *testing.T) {
	p := testenv.OIDCProviderFor(t, issuerConfig())
	other := testenv.OIDCProviderFor(t, issuerConfig())
	url := receiver(t, oidcVerifier(t, p.Issuer))
	bearer := func(client string) string { return "Bearer " + p.ClientCredentials(t, client).AccessToken }

	p.SetClock(t, -time.Hour)
	expired := "Bearer " + p.ClientCredentials(t, "trigger").AccessToken
	p.SetClock(t, 0)

	for _, tc := range []struct {
		name, typ, auth string
		status          int
		want            string // in the answer
	}{
		{"the trigger sends a request", typeRequest, bearer("trigger"), 200, `"Subject":"` + trigger + `"`},
		{"rucio sends a request", typeRequest, bearer("rucio"), 200, `"Subject":"` + rucioSource + `"`},
		{"rucio sends a transfer-done", typeRucio, bearer("rucio"), 200, `"Mode":"oidc"`},
		{"the trigger may not send a transfer-done", typeRucio, bearer("trigger"), 403, "may not send"},
		{"another pod may not send anything", typeRequest, bearer("rogue"), 403, rogue},
		{"a type nobody may send", "org.example.other", bearer("rucio"), 403, "may not send"},
		{"no token", typeRequest, "", 401, "no sender credential"},
		{"not a bearer token", typeRequest, "Basic dHJpZ2dlcjp0cmlnZ2VyLXNlY3JldA==", 401, "no sender credential"},
		{"garbage", typeRequest, "Bearer garbage", 401, "no sender credential"},
		{"a token for another function", typeRequest, bearer("for-logs"), 401, "another audience"},
		{"a token from another issuer", typeRequest, "Bearer " + other.ClientCredentials(t, "trigger").AccessToken, 401, "no sender credential"},
		{"an expired token", typeRequest, expired, 401, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, structured := range []bool{false, true} {
				status, body := deliver(t, url, newEvent("e-1", tc.typ), structured, tc.auth)
				if status != tc.status || !strings.Contains(body, tc.want) {
					t.Fatalf("structured=%v: %d %q, want %d with %q", structured, status, body, tc.status, tc.want)
				}
				if tc.auth != "" && strings.Contains(body, strings.TrimPrefix(tc.auth, "Bearer ")) {
					t.Fatalf("the answer contains the token: %s", body)
				}
			}
		})
	}
}

func TestOIDCIssuerUnavailable(t *testing.T) {
	p := testenv.OIDCProviderFor(t, issuerConfig())
	tok := "Bearer " + p.ClientCredentials(t, "trigger").AccessToken
	p.Stop()
	v := oidcVerifier(t, p.Issuer) // no provider needed to start
	if err := v.Discover(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Discover: %v, want ErrUnavailable", err)
	}
	url := receiver(t, v)
	if status, body := deliver(t, url, newEvent("e-2", typeRequest), false, tok); status != 503 {
		t.Fatalf("issuer down: %d %s, want 503", status, body)
	}
	p.Start()
	testenv.WaitFor(t, 5*time.Second, "the issuer to be used again", func() bool {
		status, _ := deliver(t, url, newEvent("e-2", typeRequest), false, tok)
		return status == 200
	})
}

func TestVerifyErrorsWrapTheReason(t *testing.T) {
	p := testenv.OIDCProviderFor(t, issuerConfig())
	v := oidcVerifier(t, p.Issuer)
	ev := newEvent("e-3", typeRequest)
	h := http.Header{"Authorization": {"Bearer " + p.ClientCredentials(t, "for-logs").AccessToken}}
	_, err := v.Verify(context.Background(), h, &ev)
	if !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, oidc.ErrWrongAudience) || errors.Is(err, ErrForbidden) {
		t.Fatalf("wrong audience: %v", err)
	}
	h.Set("Authorization", "Bearer "+p.ClientCredentials(t, "rogue").AccessToken)
	s, err := v.Verify(context.Background(), h, &ev)
	if !errors.Is(err, ErrForbidden) || errors.Is(err, ErrUnauthenticated) || s.Subject != rogue {
		t.Fatalf("rogue: %+v %v (the sender is returned with ErrForbidden, for the log)", s, err)
	}
}

func TestModeNone(t *testing.T) {
	v, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ev := newEvent("e", typeRequest)
	if s, err := v.Verify(context.Background(), http.Header{}, &ev); err != nil || s.Mode != ModeNone || v.Mode() != ModeNone {
		t.Fatalf("%+v %v", s, err)
	}
}

func TestInClusterIssuerNeedsThePodCredentials(t *testing.T) {
	_, err := New(Config{Mode: ModeOIDC, Audience: stageAud, Senders: Senders{typeRequest: {trigger}},
		ServiceAccountDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "CA") {
		t.Fatalf("in-cluster issuer without a service-account CA: %v", err)
	}
	for issuer, want := range map[string]bool{
		"https://kubernetes.default.svc":               true,
		"https://kubernetes.default.svc.cluster.local": true,
		"https://kubernetes.default.svc:443":           true,
		"https://oidc.example.org":                     false,
		"https://kubernetes.default.svc.example.org":   true,
	} {
		if got := isInCluster(issuer); got != want {
			t.Errorf("isInCluster(%s) = %v", issuer, got)
		}
	}
}

func TestNewChecksTheConfig(t *testing.T) {
	secret := []byte(strings.Repeat("s", 32))
	allow := func(s string) Senders {
		x, err := ParseSenders(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	for _, tc := range []struct {
		cfg  Config
		want string // an error containing this, or "" for none
	}{
		{Config{}, ""},
		{Config{Mode: ModeNone}, ""},
		{Config{Mode: ModeOIDC, Issuer: "https://issuer.example.org", Audience: "a", Senders: allow("*=" + trigger)}, ""},
		{Config{Mode: ModeOIDC, Issuer: "https://issuer.example.org", Senders: allow("*=" + trigger)}, "EVENT_OIDC_AUDIENCE"},
		{Config{Mode: ModeOIDC, Issuer: "https://issuer.example.org", Audience: "a"}, "EVENT_SENDERS"},
		{Config{Mode: ModeOIDC, Issuer: "https://issuer.example.org", Audience: "a", Senders: allow("*=hmac")}, "mode is oidc"},
		{Config{Mode: ModeOIDC, Issuer: "http://issuer.example.org", Audience: "a", Senders: allow("*=" + trigger)}, "https"},
		{Config{Mode: ModeHMAC, HMACSecrets: [][]byte{secret}}, ""},
		{Config{Mode: ModeHMAC, HMACSecrets: [][]byte{secret}, Senders: allow(typeRequest + "=hmac")}, ""},
		{Config{Mode: ModeHMAC}, "EVENT_HMAC_SECRET"},
		{Config{Mode: ModeHMAC, HMACSecrets: [][]byte{[]byte("short")}}, "at least 32"},
		{Config{Mode: ModeHMAC, HMACSecrets: [][]byte{secret}, Senders: allow("*=" + trigger)}, "only sender"},
		{Config{Mode: ModeHMAC, HMACSecrets: [][]byte{secret}, MaxAge: -time.Hour}, "EVENT_MAX_AGE"},
		{Config{Mode: "jwt"}, "not none, oidc or hmac"},
	} {
		v, err := New(tc.cfg)
		switch {
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error about %s", tc.cfg, err, tc.want)
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case err != nil && strings.Contains(err.Error(), string(secret)):
			t.Errorf("an error shows the secret: %v", err)
		case err == nil && tc.cfg.Mode == ModeHMAC:
			ev := newEvent("x", typeRucio)
			ev.SetTime(time.Now())
			if err := Sign(&ev, secret); err != nil {
				t.Fatal(err)
			}
			_, err := v.Verify(context.Background(), http.Header{}, &ev)
			if allowed := tc.cfg.Senders == nil; allowed != (err == nil) {
				t.Errorf("%+v: a signed %s: %v", tc.cfg, typeRucio, err)
			}
		}
	}
}

func TestParseSecrets(t *testing.T) {
	a, b := strings.Repeat("a", 32), strings.Repeat("b", 40)
	got, err := ParseSecrets([]byte("\n  " + a + "  \n\n" + b + "\n"))
	if err != nil || len(got) != 2 || string(got[0]) != a || string(got[1]) != b {
		t.Fatalf("%q %v", got, err)
	}
	for _, bad := range []string{"", "\n \n", "short", a + "\nshort"} {
		if _, err := ParseSecrets([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		} else if strings.Contains(err.Error(), "short") || strings.Contains(err.Error(), a) {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
	// Signer is the first secret, in mode hmac only.
	if s := (Config{Mode: ModeHMAC, HMACSecrets: got}).Signer(); string(s) != a {
		t.Errorf("Signer %q", s)
	}
	if s := (Config{Mode: ModeOIDC, HMACSecrets: got}).Signer(); s != nil {
		t.Errorf("Signer in mode oidc %q", s)
	}
}

func TestParseSenders(t *testing.T) {
	s, err := ParseSenders(" org.skao.staging.request = " + trigger + " , " + rucioSource + " ;\n" +
		typeRucio + "=" + rucioSource + ";;\n*=hmac\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != "*=hmac;"+typeRucio+"="+rucioSource+";"+typeRequest+"="+trigger+","+rucioSource {
		t.Fatalf("String() = %s", got)
	}
	for _, tc := range []struct {
		typ, subject string
		want         bool
	}{
		{typeRequest, trigger, true},
		{typeRequest, rucioSource, true},
		{typeRucio, rucioSource, true},
		{typeRucio, trigger, false},
		{"other", HMACSubject, true}, // "*"
		{"other", trigger, false},
		{typeRequest, "", false},
	} {
		if got := s.Allows(tc.typ, tc.subject); got != tc.want {
			t.Errorf("Allows(%s, %s) = %v", tc.typ, tc.subject, got)
		}
	}
	for _, bad := range []string{
		"",
		";\n",
		typeRequest,
		typeRequest + "=",
		"=" + trigger,
		typeRequest + "=" + trigger + ";" + typeRequest + "=" + rucioSource,
		typeRequest + "=" + trigger + "," + trigger,
		typeRequest + "=alice",
		typeRequest + "=system:serviceaccount:skao",
		typeRequest + "=system:serviceaccount::name",
		typeRequest + "=system:serviceaccount:Skao:name",
		typeRequest + "=system:serviceaccount:skao:name:extra",
		typeRequest + "=system:serviceaccount:" + strings.Repeat("a", 64) + ":name",
		"org skao=" + trigger,
		"*.request=" + trigger,
		typeRequest + "=" + trigger + ",",
	} {
		if s, err := ParseSenders(bad); err == nil {
			t.Errorf("%q accepted as %v", bad, s)
		}
	}
}
