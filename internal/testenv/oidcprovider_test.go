package testenv

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// jwtParts decodes a JWT's header and claims without checking anything.
func jwtParts(t *testing.T, raw string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS (%d parts)", len(parts))
	}
	for i, out := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
	}
	return header, claims
}

func testOIDCConfig() OIDCConfig {
	return OIDCConfig{
		Users: []OIDCUser{{ID: "u-1", Username: "alice", Password: "alice-pw", Groups: []string{"/ska/staff"},
			Scopes: []string{"storage.read:/alice"}}},
		Clients: []OIDCClient{
			{ID: "web", RedirectURIs: []string{"http://127.0.0.1:1/callback"}, Audience: []string{"staging"},
				GroupsClaims: []string{"wlcg.groups"}},
			{ID: "svc", Secret: "svc-secret", Subject: "system:serviceaccount:ns:sender", Audience: []string{"staging"},
				Scopes: []string{"storage.read:/"}, AccessTokenLifetime: 2 * time.Minute},
		},
	}
}

func TestOIDCProvider(t *testing.T) {
	p := OIDCProviderFor(t, testOIDCConfig())

	r := Do(t, http.MethodGet, p.Issuer+"/.well-known/openid-configuration", nil)
	if r.Status != http.StatusOK || r.Str("issuer") != p.Issuer || r.Str("jwks_uri") != p.Issuer+"/keys" {
		t.Fatalf("discovery: %d %s", r.Status, r.Body)
	}

	// A user's token through the login page: JWT, RS256, aud with the
	// configured audience, groups, the entitled scope only, no username.
	tok := p.Login(t, "web", "alice", "alice-pw", "openid", "profile", "storage.read:/alice", "storage.read:/bob")
	h, c := jwtParts(t, tok.AccessToken)
	if h["alg"] != "RS256" || h["kid"] == "" {
		t.Fatalf("header %v", h)
	}
	if c["iss"] != p.Issuer || c["sub"] != "u-1" || c["scope"] != "openid profile storage.read:/alice" {
		t.Fatalf("claims %v", c)
	}
	if aud, _ := c["aud"].([]any); !slices.Contains(aud, any("staging")) || !slices.Contains(aud, any("web")) {
		t.Fatalf("aud %v", c["aud"])
	}
	if g, _ := c["wlcg.groups"].([]any); len(g) != 1 || g[0] != "/ska/staff" {
		t.Fatalf("wlcg.groups %v", c["wlcg.groups"])
	}
	if _, ok := c["preferred_username"]; ok {
		t.Fatalf("preferred_username in the access token: %v", c)
	}
	r = Do(t, http.MethodGet, p.Issuer+"/userinfo", nil, "Authorization", "Bearer "+tok.AccessToken)
	if r.Status != http.StatusOK || r.Str("preferred_username") != "alice" || r.Str("sub") != "u-1" {
		t.Fatalf("userinfo: %d %s", r.Status, r.Body)
	}
	if n := p.Requests(t, "/userinfo"); n != 1 {
		t.Fatalf("userinfo served %d times, want 1", n)
	}

	// A page on another origin may call the token endpoint (CORS), as
	// the browser's code exchange does.
	req, _ := http.NewRequest(http.MethodOptions, p.Issuer+"/oauth/token", nil)
	req.Header.Set("Origin", "http://127.0.0.1:1")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if o := resp.Header.Get("Access-Control-Allow-Origin"); o != "http://127.0.0.1:1" {
		t.Fatalf("CORS preflight on the token endpoint: %s, Allow-Origin %q", resp.Status, o)
	}

	// A client acting for itself.
	cc := p.ClientCredentials(t, "svc", "storage.read:/")
	_, c = jwtParts(t, cc.AccessToken)
	if c["sub"] != "system:serviceaccount:ns:sender" || c["scope"] != "storage.read:/" {
		t.Fatalf("client credentials claims %v", c)
	}
	if exp, iat := c["exp"].(float64), c["iat"].(float64); exp-iat != 120 {
		t.Fatalf("lifetime %vs, want 120", exp-iat)
	}

	// Rotation: a new kid signs, the old key stays published until retired.
	h0, _ := jwtParts(t, cc.AccessToken)
	kid := p.RotateKey(t, false)
	h1, _ := jwtParts(t, p.ClientCredentials(t, "svc").AccessToken)
	if h1["kid"] != kid || kid == h0["kid"] {
		t.Fatalf("after rotation kid %v, want new %v (was %v)", h1["kid"], kid, h0["kid"])
	}
	if kids := jwksKids(t, p); !slices.Contains(kids, kid) || !slices.Contains(kids, h0["kid"].(string)) {
		t.Fatalf("JWKS kids %v", kids)
	}
	kid2 := p.RotateKey(t, true)
	if kids := jwksKids(t, p); !slices.Equal(kids, []string{kid2}) {
		t.Fatalf("JWKS kids after retiring %v, want only %s", kids, kid2)
	}

	// The clock: tokens born expired, or not valid yet.
	p.SetClock(t, -time.Hour)
	_, c = jwtParts(t, p.ClientCredentials(t, "svc").AccessToken)
	if exp := time.Unix(int64(c["exp"].(float64)), 0); time.Until(exp) > -50*time.Minute {
		t.Fatalf("exp %v with the clock an hour back", exp)
	}
	p.SetClock(t, time.Hour)
	_, c = jwtParts(t, p.ClientCredentials(t, "svc").AccessToken)
	if nbf := time.Unix(int64(c["nbf"].(float64)), 0); time.Until(nbf) < 50*time.Minute {
		t.Fatalf("nbf %v with the clock an hour ahead", nbf)
	}
	p.SetClock(t, 0)

	// Down and back on the same port, with the same keys.
	issuer := p.Issuer
	p.Stop()
	if _, err := http.Get(issuer + "/keys"); err == nil {
		t.Fatal("the provider still answers after Stop")
	}
	p.Start()
	if p.Issuer != issuer || !slices.Equal(jwksKids(t, p), []string{kid2}) {
		t.Fatalf("after restart issuer %s kids %v, want %s [%s]", p.Issuer, jwksKids(t, p), issuer, kid2)
	}

	// Another provider is another issuer with keys of its own.
	q := OIDCProviderFor(t, testOIDCConfig())
	if q.Issuer == p.Issuer || slices.Contains(jwksKids(t, q), kid2) {
		t.Fatalf("second provider %s shares issuer or keys with %s", q.Issuer, p.Issuer)
	}
}

func TestOIDCProviderRefusals(t *testing.T) {
	p := OIDCProviderFor(t, testOIDCConfig())
	// Wrong password: the form comes back with an error, no code.
	r := Do(t, http.MethodPost, p.Issuer+"/login", "id=nope&username=alice&password=wrong",
		"Content-Type", "application/x-www-form-urlencoded")
	if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), `id="error"`) {
		t.Fatalf("bad login: %d %s", r.Status, r.Body)
	}
	// A public client cannot use client credentials; a wrong secret is refused.
	for _, auth := range [][2]string{{"web", ""}, {"svc", "wrong"}} {
		req, _ := http.NewRequest(http.MethodPost, p.Issuer+"/oauth/token", strings.NewReader("grant_type=client_credentials"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(auth[0], auth[1])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("client credentials for %s with secret %q accepted", auth[0], auth[1])
		}
	}
	// A public client must use PKCE: a code got without a challenge is
	// refused at the token endpoint; with a challenge, a wrong verifier is.
	web := p.client(t, "web")
	code, hc := p.authorizationCode(t, web, "alice", "alice-pw", "", nil)
	if resp, err := hc.Do(p.codeRequest(t, web, code, "")); err != nil || resp.StatusCode == http.StatusOK {
		t.Fatalf("code without PKCE exchanged: %v %v", resp, err)
	}
	verifier := "a-verifier-of-forty-three-characters-or-more"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	code, hc = p.authorizationCode(t, web, "alice", "alice-pw", challenge, nil)
	if resp, err := hc.Do(p.codeRequest(t, web, code, "another-verifier-of-forty-three-characters-")); err != nil || resp.StatusCode == http.StatusOK {
		t.Fatalf("code exchanged with a wrong verifier: %v %v", resp, err)
	}
	code, hc = p.authorizationCode(t, web, "alice", "alice-pw", challenge, nil)
	if tok := p.exchangeCode(t, hc, web, code, verifier); tok.AccessToken == "" {
		t.Fatal("no access token")
	}
}

func jwksKids(t *testing.T, p *OIDCProvider) []string {
	t.Helper()
	r := Do(t, http.MethodGet, p.Issuer+"/keys", nil)
	var set struct{ Keys []struct{ Kid string } }
	if err := json.Unmarshal(r.Body, &set); err != nil {
		t.Fatalf("JWKS: %v: %s", err, r.Body)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	slices.Sort(kids)
	return kids
}
