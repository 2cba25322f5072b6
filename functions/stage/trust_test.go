package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/eventauth"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// The service as an attacker on the same network tries it, against the
// stage function with the site's identity provider (a real OpenID
// provider, tools/oidcprovider) and signed events.

const (
	audience  = "skao-staging"
	adminsGrp = "/ska/staging-admins"
	hmacKey   = "0123456789abcdef0123456789abcdef-test-secret"
)

// idp is the site's identity provider for these tests: alice and bob,
// admin in the admins group, carol whose token carries capability scopes;
// the "cli" client gets INDIGO-like tokens (no username: userinfo has it).
func idp(t *testing.T) *testenv.OIDCProvider {
	return testenv.OIDCProviderFor(t, testenv.OIDCConfig{
		Users: []testenv.OIDCUser{
			{ID: "u-alice", Username: "alice", Password: "alice-pw"},
			{ID: "u-bob", Username: "bob", Password: "bob-pw"},
			{ID: "u-admin", Username: "admin", Password: "admin-pw", Groups: []string{adminsGrp}},
			{ID: "u-carol", Username: "carol", Password: "carol-pw", Scopes: []string{"storage.read:/public"}},
		},
		Clients: []testenv.OIDCClient{
			{ID: "cli", Secret: "cli-secret", RedirectURIs: []string{"http://127.0.0.1:1/cb"}, Audience: []string{audience},
				GroupsClaims: []string{"wlcg.groups"}},
			{ID: "elsewhere", Secret: "x-secret", RedirectURIs: []string{"http://127.0.0.1:1/cb"}, Audience: []string{"another-service"}},
			{ID: "trigger", Secret: "trigger-secret", Subject: "system:serviceaccount:skao-staging:trigger", Audience: []string{audience}},
			{ID: "rogue", Secret: "rogue-secret", Subject: "system:serviceaccount:skao-staging:rogue", Audience: []string{audience}},
		},
	})
}

// login is a user's bearer token for the stage function.
func login(t *testing.T, p *testenv.OIDCProvider, user string, scopes ...string) string {
	return p.Login(t, "cli", user, user+"-pw", append([]string{"openid", "profile"}, scopes...)...).AccessToken
}

func oidcEnv(p *testenv.OIDCProvider, extra map[string]string) map[string]string {
	env := map[string]string{"AUTH_MODE": "oidc", "OIDC_ISSUER_URL": p.Issuer, "OIDC_AUDIENCE": audience,
		"OIDC_ADMIN_GROUPS": adminsGrp, "OIDC_CLIENT_ID": "page"}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

func (s *stack) stageAs(t *testing.T, token, user, src, dst string, header ...string) *testenv.Response {
	t.Helper()
	return s.stageOne(t, "local_copy", user, src, dst, append(bearer(token), header...)...)
}

// AUTH_MODE=oidc: tokens from the site's provider, verified against its
// discovery and keys; a user acts for themselves, an admin for anyone.
func TestOIDCAuthentication(t *testing.T) {
	p := idp(t)
	s := startStage(t, oidcEnv(p, nil))
	s.write(t, "data/file", "content")
	alice, admin := login(t, p, "alice"), login(t, p, "admin")

	expect(t, s.stageAs(t, alice, "alice", "data/file", "mine"), 200, "status", "success")
	expect(t, s.stageAs(t, alice, "bob", "data/file", "theirs"), 403, "detail", "User alice may not stage data for user bob")
	expect(t, s.stageAs(t, admin, "bob", "data/file", "for-bob"), 200, "status", "success")
	expect(t, s.stageOne(t, "local_copy", "alice", "data/file", "anon"), 401, "detail", "Authentication is required")

	other := testenv.OIDCProviderFor(t, p.Config) // another issuer with the same users
	expired := func() string {
		p.SetClock(t, -time.Hour)
		defer p.SetClock(t, 0)
		return login(t, p, "alice")
	}()
	for _, tc := range []struct{ name, token, detail string }{
		{"garbage", "not-a-jwt", "The access token is not accepted"},
		{"expired", expired, "The access token has expired"},
		{"another audience", p.Login(t, "elsewhere", "alice", "alice-pw", "openid").AccessToken, "The access token is not meant for this service"},
		{"another issuer", other.Login(t, "cli", "alice", "alice-pw", "openid").AccessToken, ""},
	} {
		r := s.stageAs(t, tc.token, "alice", "data/file", "x-"+tc.name)
		if r.Status != 401 || (tc.detail != "" && r.Str("detail") != tc.detail) || strings.Contains(string(r.Body), tc.token) {
			t.Errorf("%s: %d %s", tc.name, r.Status, r.Body)
		}
	}
	// The provider rotates its key: tokens of the new key verify.
	p.RotateKey(t, false)
	expect(t, s.stageAs(t, login(t, p, "alice"), "alice", "data/file", "after-rotation"), 200, "status", "success")
	if _, err := os.Lstat(s.userPath("alice", "x-expired")); !os.IsNotExist(err) {
		t.Fatal("staged with a refused token")
	}
}

// Every read is scoped to the caller (admins read everything), the file
// creator is an admin's, and /config shows the server's paths to admins
// only.
func TestReadsAreScopedToTheCaller(t *testing.T) {
	p := idp(t)
	s := startStage(t, oidcEnv(p, nil))
	s.write(t, "data/file", "content")
	alice, bob, admin := login(t, p, "alice"), login(t, p, "bob"), login(t, p, "admin")
	mine := s.stageAs(t, alice, "alice", "data/file", "a").Str("id")
	theirs := s.stageAs(t, bob, "bob", "data/file", "b").Str("id")

	for _, tc := range []struct {
		name, url string
		token     string
		status    int
		has, not  string
	}{
		{"list, anonymous", "/operations", "", 401, "", ""},
		{"list, own", "/operations", alice, 200, mine, theirs},
		{"list, another's", "/operations?username=bob", alice, 403, "", ""},
		{"list, admin", "/operations", admin, 200, theirs, ""},
		{"one, own", "/operations/" + mine, alice, 200, mine, ""},
		{"one, another's", "/operations/" + theirs, alice, 404, "", ""},
		{"one, anonymous", "/operations/" + mine, "", 401, "", ""},
		{"browse, anonymous", "/browse", "", 401, "", ""},
		{"browse", "/browse?path=data", alice, 200, "file", ""},
		{"config, anonymous", "/config", "", 200, `"auth_mode":"oidc"`, "storage_path"},
		{"config, user", "/config", alice, 200, `"client_id":"page"`, "storage_path"},
		{"config, admin", "/config", admin, 200, "source_storage_path", ""},
	} {
		var h []string
		if tc.token != "" {
			h = bearer(tc.token)
		}
		r := testenv.Do(t, http.MethodGet, s.URL+tc.url, nil, h...)
		if r.Status != tc.status || !strings.Contains(string(r.Body), tc.has) || (tc.not != "" && strings.Contains(string(r.Body), tc.not)) {
			t.Errorf("%s: %d %s", tc.name, r.Status, r.Body)
		}
	}
	create := func(token string) *testenv.Response {
		var h []string
		if token != "" {
			h = bearer(token)
		}
		return testenv.Do(t, http.MethodPost, s.URL+"/create-file", map[string]string{"filename": "new-" + token[:min(len(token), 8)], "content": "x"}, h...)
	}
	expect(t, create(""), 401, "", "")
	expect(t, create(alice), 403, "detail", "Only an administrator may do this")
	expect(t, create(admin), 200, "status", "success")
}

// AUTHZ_STORAGE_SCOPES: a token's storage.read scopes bound what its user
// may stage and browse, judged by where a path really leads, so a link in
// a covered folder cannot reach beyond it.
func TestStorageScopes(t *testing.T) {
	p := idp(t)
	s := startStage(t, oidcEnv(p, map[string]string{"AUTHZ_STORAGE_SCOPES": "true"}))
	s.write(t, "public/obs.fits", "public data")
	s.write(t, "private/secret.fits", "private data")
	must(t, os.Symlink("../private/secret.fits", filepath.Join(s.Source, "public/link")))
	carol := login(t, p, "carol", "storage.read:/public")
	noScope := login(t, p, "carol")

	expect(t, s.stageAs(t, carol, "carol", "public/obs.fits", "ok"), 200, "status", "success")
	expect(t, s.stageAs(t, carol, "carol", "private/secret.fits", "no"), 403, "detail", "The token does not allow reading private/secret.fits")
	expect(t, s.stageAs(t, carol, "carol", "public/link", "via-link"), 403, "detail", "The token does not allow reading public/link")
	expect(t, s.stageAs(t, noScope, "carol", "public/obs.fits", "unscoped"), 403, "", "")
	r := testenv.Do(t, http.MethodGet, s.URL+"/stage_data?method=direct_download&username=carol&local_path_on_storage=private/secret.fits", nil, bearer(carol)...)
	expect(t, r, 403, "", "")
	// Browsing shows what leads to readable data only.
	r = testenv.Do(t, http.MethodGet, s.URL+"/browse", nil, bearer(carol)...)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"public"`) || strings.Contains(string(r.Body), "private") {
		t.Fatalf("browse root: %d %s", r.Status, r.Body)
	}
	expect(t, testenv.Do(t, http.MethodGet, s.URL+"/browse?path=private", nil, bearer(carol)...), 403, "", "")
	for _, name := range []string{"no", "via-link", "unscoped"} {
		if _, err := os.Lstat(s.userPath("carol", name)); !os.IsNotExist(err) {
			t.Errorf("%s staged beyond the token's scopes", name)
		}
	}
}

// AUTH_MODE=none is one trusted user on a private network: a function
// says so at start when it listens beyond loopback.
func TestOpenModeWarnsBeyondLoopback(t *testing.T) {
	const warning = "AUTH_MODE=none: anyone who can reach this function may stage and read for any user"
	if logs := startStage(t, map[string]string{"HOST": ""}).Logs(); !strings.Contains(logs, warning) {
		t.Errorf("listening on all interfaces without a warning:\n%s", logs)
	}
	if logs := startStage(t, map[string]string{"HOST": "127.0.0.1"}).Logs(); strings.Contains(logs, warning) {
		t.Errorf("a warning on loopback:\n%s", logs)
	}
}

// A browser's cross-origin POST (a form on another site) is refused; the
// service's own page and clients that are not browsers work.
func TestCrossSiteRequestsRefused(t *testing.T) {
	s := startStage(t, nil)
	s.write(t, "f", "x")
	body := `{"data":{"local_path_on_storage":"f","relative_path":"x"}}`
	for _, tc := range []struct {
		name   string
		header []string
		status int
	}{
		{"a form on another site", []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site", "Content-Type", "text/plain"}, 403},
		{"another site, no fetch metadata", []string{"Origin", "https://evil.example"}, 403},
		{"the service's own page", []string{"Origin", s.URL, "Sec-Fetch-Site", "same-origin"}, 200},
		{"curl", nil, 200},
	} {
		for _, path := range []string{"/stage_data?method=local_copy&username=alice", "/create-file"} {
			b := body
			if path == "/create-file" {
				b = `{"filename":"made-` + strings.ReplaceAll(tc.name, " ", "-") + `","content":"x"}`
			}
			r := testenv.Do(t, http.MethodPost, s.URL+path, b, tc.header...)
			if r.Status != tc.status {
				t.Errorf("%s, %s: %d %s", tc.name, path, r.Status, r.Body)
			}
		}
	}
}

// Events only from who may send them: with EVENT_AUTH=oidc an event must
// carry a token of the senders' issuer from a sender allowed to send its
// type; a Rucio completion is a trusted sender's, never anonymous.
func TestEventSenders(t *testing.T) {
	p := idp(t)
	// The cluster's service-account issuer, whose tokens Knative Eventing
	// attaches: another issuer than the users' provider.
	cluster := idp(t)
	r := startRucio(t, oidcEnv(p, map[string]string{"EVENT_AUTH": "oidc", "EVENT_OIDC_ISSUER": cluster.Issuer,
		"EVENT_OIDC_AUDIENCE": audience, "K_SINK": "",
		"EVENT_SENDERS": "org.skao.staging.request=system:serviceaccount:skao-staging:trigger;" +
			"io.rucio.transfer-done=system:serviceaccount:skao-staging:trigger"}))
	r.write(t, "ev/file", "event data")
	trigger, rogue := cluster.ClientCredentials(t, "trigger").AccessToken, cluster.ClientCredentials(t, "rogue").AccessToken
	alice := login(t, p, "alice")
	send := func(ev cloudevents.Event, token string) (int, string) {
		var h []string
		if token != "" {
			h = bearer(token)
		}
		return sendRawHeader(t, r.URL+"/", ev, h...)
	}
	req := func(id, user string) cloudevents.Event {
		return cetest.RequestEvent(t, id, staging.Request{Method: "local_copy", Username: user, Source: "ev/file", Target: id})
	}
	for _, tc := range []struct {
		name   string
		ev     cloudevents.Event
		token  string
		status int
	}{
		{"the trigger, for any user", req("e1", "bob"), trigger, 200},
		{"another pod", req("e2", "bob"), rogue, 403},
		{"nobody", req("e3", "bob"), "", 401},
		{"a user, for themselves", req("e4", "alice"), alice, 200},
		{"a user, for another", req("e5", "bob"), alice, 403},
	} {
		if status, answer := send(tc.ev, tc.token); status != tc.status {
			t.Errorf("%s: %d %s", tc.name, status, answer)
		}
	}
	// A transfer-done from nobody, or from a user, completes nothing.
	res := r.stageDIDAs(t, alice, "alice", "skao:present.dat", "waits")
	expect(t, res, 202, "status", "pending")
	r.placeReplica(t, "skao:present.dat", helloContent)
	done := transferDone("t1", "skao", "present.dat", "SKAO_SITE", "", len(helloContent))
	for _, token := range []string{"", alice, rogue} {
		if status, _ := send(done, token); status != 401 && status != 403 {
			t.Errorf("transfer-done with %.10q: %d", token, status)
		}
	}
	if op := r.operationAs(t, alice, res.Str("id")); op["status"] != "pending" {
		t.Fatalf("an unauthorised transfer-done changed the record: %v", op)
	}
	if status, answer := send(done, trigger); status != 200 || !strings.Contains(answer, "completed") {
		t.Fatalf("transfer-done from the trigger: %d %s", status, answer)
	}
}

// Operation takeover: a hand-off is honoured only for its own pending
// operation, whoever sends it; the record and the DID wait stay as they
// were. With signed events (EVENT_AUTH=hmac) the async hand-off through the
// broker works, and an unsigned copy of it is refused.
func TestHandoffCannotTakeOverOperations(t *testing.T) {
	for _, mode := range []string{"none", "oidc"} {
		t.Run(mode, func(t *testing.T) {
			b := startBroker(t) // accepts, delivers nothing until told
			env := map[string]string{"K_SINK": b.URL, "EVENT_AUTH": "hmac", "EVENT_HMAC_SECRET": hmacKey}
			var p *testenv.OIDCProvider
			if mode == "oidc" {
				p = idp(t)
				env = oidcEnv(p, env)
			}
			r := startRucio(t, env)
			r.write(t, "ev/file", "x")
			token := func(user string) string {
				if p == nil {
					return ""
				}
				return login(t, p, user)
			}
			alice, mallory := token("alice"), token("bob")
			var ah []string
			if alice != "" {
				ah = bearer(alice)
			}
			pending := r.stageOne(t, "local_copy", "alice", "ev/file", "async", append(ah, "Prefer", "respond-async")...)
			expect(t, pending, 202, "status", "pending")
			waiting := r.stageDIDAs(t, alice, "alice", "skao:late.dat", "late")
			expect(t, waiting, 202, "status", "pending")
			handoff := b.events()[0]

			for _, id := range []string{pending.Str("id"), waiting.Str("id")} {
				forged := staging.Request{Method: "local_copy", Username: "bob", Source: "ev/file", Target: "stolen", OperationID: id}
				ev := cetest.RequestEvent(t, "forged-"+id, forged)
				var h []string
				if mallory != "" {
					h = bearer(mallory)
				}
				// A user's own hand-off finds no operation of another's.
				if status, answer := sendRawHeader(t, r.URL+"/", ev, h...); status != 404 && status != 401 {
					t.Errorf("forged hand-off of %s: %d %s", id, status, answer)
				}
				// Signed by the right key but for another user's paths:
				// the sender is trusted, the operation still must match.
				must(t, eventauth.Sign(&ev, []byte(hmacKey)))
				if status, answer := sendRawHeader(t, r.URL+"/", ev); status != 403 {
					t.Errorf("signed forged hand-off of %s: %d %s", id, status, answer)
				}
			}
			// An unsigned copy of the real hand-off is refused, with no
			// user's token or with the attacker's.
			unsigned := handoff.Clone()
			unsigned.SetExtension(eventauth.ExtSignature, nil) // nil removes it
			if status, _ := sendRawHeader(t, r.URL+"/", unsigned); status != 401 {
				t.Errorf("unsigned hand-off: %d", status)
			}
			for _, id := range []string{pending.Str("id"), waiting.Str("id")} {
				if op := r.operationAs(t, alice, id); op["status"] != "pending" || op["username"] != "alice" {
					t.Fatalf("record changed: %v", op)
				}
			}
			if _, err := os.Lstat(r.userPath("bob", "stolen")); !os.IsNotExist(err) {
				t.Fatal("the attacker's staging ran")
			}
			// The broker delivers the real, signed hand-off: it completes.
			b.deliverTo(r.URL + "/")
			status, _ := sendRawHeader(t, r.URL+"/", handoff)
			if status != 200 {
				t.Fatalf("signed hand-off: %d", status)
			}
			if op := r.operationAs(t, alice, pending.Str("id")); op["status"] != "success" {
				t.Fatalf("hand-off did not complete: %v", op)
			}
			if _, err := os.Stat(r.userPath("alice", "async")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// operationAs fetches one operation with a user's token ("" without).
func (s *stack) operationAs(t *testing.T, token, id string) map[string]any {
	t.Helper()
	var h []string
	if token != "" {
		h = bearer(token)
	}
	r := testenv.Do(t, http.MethodGet, s.URL+"/operations/"+id, nil, h...)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /operations/%s: %d %s", id, r.Status, r.Body)
	}
	return r.JSON
}

func (r *rucioStack) stageDIDAs(t *testing.T, token, user, did, dst string) *testenv.Response {
	body := map[string]any{"data": map[string]string{"did": did, "relative_path": dst}}
	var h []string
	if token != "" {
		h = bearer(token)
	}
	return testenv.Do(t, http.MethodPost, r.URL+"/stage_data?method=local_copy&username="+user, body, h...)
}

// sendRawHeader delivers ev in binary mode with extra headers and returns
// the status and the answer's body.
func sendRawHeader(t *testing.T, url string, ev cloudevents.Event, header ...string) (int, string) {
	t.Helper()
	req, err := cehttp.NewHTTPRequestFromEvent(t.Context(), url, ev)
	must(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}
