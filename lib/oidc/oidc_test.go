package oidc

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const audience = "staging-api"

// providerConfig is a site's identity provider as the tests need it: users
// with and without admin rights and storage scopes, and clients shaped like
// SKA IAM's (no username in the token) and others.
func providerConfig() testenv.OIDCConfig {
	return testenv.OIDCConfig{
		Users: []testenv.OIDCUser{
			{ID: "8c2f-alice", Username: "alice", Password: "alice-pw", Groups: []string{"/ska", "/ska/staging-users"},
				Scopes: []string{"storage.read:/alice", "storage.read:/shared/"}},
			{ID: "0d1e-root", Username: "root", Password: "root-pw", Groups: []string{"/ska", "/ska/staging-admins"}},
			{ID: "77aa-carol", Username: "carol", Password: "carol-pw", Scopes: []string{"storage.read"}},
		},
		Clients: []testenv.OIDCClient{
			// Like SKA IAM: aud the API, groups in wlcg.groups, the
			// username only from userinfo.
			{ID: "staging-web", RedirectURIs: []string{"http://127.0.0.1:1/callback"}, Audience: []string{audience},
				GroupsClaims: []string{"wlcg.groups"}},
			// The username in the token, groups in "groups".
			{ID: "staging-named", RedirectURIs: []string{"http://127.0.0.1:1/callback"}, Audience: []string{audience},
				UsernameInToken: true, GroupsClaims: []string{"groups"}},
			// The username in the token, no groups (userinfo has them).
			{ID: "staging-plain", Secret: "plain-secret", RedirectURIs: []string{"http://127.0.0.1:1/callback"},
				Audience: []string{audience}, UsernameInToken: true},
			// A robot with its own token: no username anywhere.
			{ID: "staging-robot", Secret: "robot-secret", Audience: []string{audience}, Scopes: []string{"storage.read:/"}},
			// Another application of the same site: not our audience.
			{ID: "other-app", Secret: "other-secret", UsernameInToken: true},
		},
	}
}

func newVerifier(t *testing.T, p *testenv.OIDCProvider, change func(*Config)) *Verifier {
	t.Helper()
	cfg := Config{IssuerURL: p.Issuer, Audience: audience, AdminGroups: []string{"/ska/staging-admins"}}
	if change != nil {
		change(&cfg)
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyUsers(t *testing.T) {
	p := testenv.OIDCProviderFor(t, providerConfig())
	v := newVerifier(t, p, nil)
	for _, tc := range []struct {
		name, client, user, pass string
		scopes                   []string
		want                     Identity
		userinfoCalls            int
	}{
		{name: "username from userinfo, groups from wlcg.groups", client: "staging-web", user: "alice", pass: "alice-pw",
			scopes: []string{"openid", "profile", "storage.read:/alice"},
			want: Identity{Subject: "8c2f-alice", Username: "alice", Groups: []string{"/ska", "/ska/staging-users"},
				Scopes: []string{"openid", "profile", "storage.read:/alice"}},
			userinfoCalls: 1},
		{name: "username and groups from the token, admin by group", client: "staging-named", user: "root", pass: "root-pw",
			want: Identity{Subject: "0d1e-root", Username: "root", Groups: []string{"/ska", "/ska/staging-admins"}, Admin: true,
				Scopes: []string{"openid", "profile"}},
			userinfoCalls: 0},
		{name: "groups from userinfo when the token has none and admins are configured", client: "staging-plain", user: "root", pass: "root-pw",
			want: Identity{Subject: "0d1e-root", Username: "root", Groups: []string{"/ska", "/ska/staging-admins"}, Admin: true,
				Scopes: []string{"openid", "profile"}},
			userinfoCalls: 1},
		{name: "scopes not entitled are not granted", client: "staging-named", user: "alice", pass: "alice-pw",
			scopes: []string{"openid", "profile", "storage.read:/", "storage.read:/shared/"},
			want: Identity{Subject: "8c2f-alice", Username: "alice", Groups: []string{"/ska", "/ska/staging-users"},
				Scopes: []string{"openid", "profile", "storage.read:/shared/"}},
			userinfoCalls: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := p.Login(t, tc.client, tc.user, tc.pass, tc.scopes...)
			before := p.Requests(t, "/userinfo")
			id, err := v.Verify(context.Background(), tok.AccessToken)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got := p.Requests(t, "/userinfo") - before; got != tc.userinfoCalls {
				t.Errorf("userinfo asked %d times, want %d", got, tc.userinfoCalls)
			}
			tc.want.Issuer = p.Issuer
			tc.want.Expiry = id.Expiry
			if id.Expiry.Before(time.Now()) || id.Expiry.After(time.Now().Add(6*time.Minute)) {
				t.Errorf("expiry %v, want within the token's 5 minutes", id.Expiry)
			}
			if fmt.Sprint(*id) != fmt.Sprint(tc.want) {
				t.Errorf("identity\n got %+v\nwant %+v", *id, tc.want)
			}
		})
	}
}

func TestUserinfoCache(t *testing.T) {
	p := testenv.OIDCProviderFor(t, providerConfig())
	v := newVerifier(t, p, func(c *Config) { c.UserinfoCacheSize = 2 })
	ctx := context.Background()
	tokens := make([]string, 3)
	for i := range tokens {
		tokens[i] = p.Login(t, "staging-web", "alice", "alice-pw").AccessToken
	}
	calls := func() int { return p.Requests(t, "/userinfo") }

	for range 3 {
		if _, err := v.Verify(ctx, tokens[0]); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls(); n != 1 {
		t.Fatalf("userinfo asked %d times for one token verified 3 times, want 1", n)
	}
	// Entries live no longer than their token.
	key := sha256Key(tokens[0])
	tok, err := v.tokens.Verify(ctx, tokens[0])
	if err != nil {
		t.Fatal(err)
	}
	if u, ok := v.cache.get(key); !ok || u.expires.After(tok.Expiry) || u.username != "alice" {
		t.Fatalf("cache entry %+v (found %v), token expires %v", u, ok, tok.Expiry)
	}
	// Bounded: a third token pushes one out.
	for _, tk := range tokens[1:] {
		if _, err := v.Verify(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	if n, size := calls(), v.cache.len(); n != 3 || size != 2 {
		t.Fatalf("after 3 tokens: %d userinfo calls, %d cached; want 3 and 2", n, size)
	}
	if _, err := v.Verify(ctx, tokens[0]); err != nil {
		t.Fatal(err)
	}
	if n := calls(); n != 4 {
		t.Fatalf("the evicted token was not asked again: %d calls, want 4", n)
	}
}

func TestUserinfoTTLBoundedByExpiry(t *testing.T) {
	c := &userinfoCache{max: 10, ttl: time.Hour, m: map[[32]byte]userinfo{}}
	k := sha256Key("t")
	c.put(k, userinfo{username: "x", expires: time.Now().Add(-time.Second)})
	if _, ok := c.get(k); ok {
		t.Fatal("an entry past its expiry was answered")
	}
	if c.len() != 0 {
		t.Fatal("an expired entry was kept")
	}
}

func TestRobotWithoutUsername(t *testing.T) {
	p := testenv.OIDCProviderFor(t, providerConfig())
	v := newVerifier(t, p, nil)
	tok := p.ClientCredentials(t, "staging-robot", "storage.read:/")
	_, err := v.Verify(context.Background(), tok.AccessToken)
	if !errors.Is(err, ErrNoUsername) || !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("robot token without a username: %v, want ErrNoUsername", err)
	}
	// Its username claim can be configured, though: sub.
	v = newVerifier(t, p, func(c *Config) { c.UsernameClaim = "sub" })
	id, err := v.Verify(context.Background(), tok.AccessToken)
	if err != nil || id.Username != "staging-robot" || !id.CanRead("anything/at/all", false) {
		t.Fatalf("robot by sub: %+v, %v", id, err)
	}
}

func TestKeyRotation(t *testing.T) {
	p := testenv.OIDCProviderFor(t, providerConfig())
	v := newVerifier(t, p, nil)
	ctx := context.Background()
	old := p.Login(t, "staging-named", "alice", "alice-pw").AccessToken
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatal(err)
	}
	if n := p.Requests(t, "/keys"); n != 1 {
		t.Fatalf("keys fetched %d times, want 1", n)
	}
	p.RotateKey(t, false)
	rotated := p.Login(t, "staging-named", "alice", "alice-pw").AccessToken
	if kidOf(t, rotated) == kidOf(t, old) {
		t.Fatal("the provider did not sign with a new key")
	}
	start := time.Now()
	if _, err := v.Verify(ctx, rotated); err != nil {
		t.Fatalf("token signed by the new key: %v", err)
	}
	t.Logf("new key verified after %v (throttle %v)", time.Since(start).Round(time.Millisecond), v.cfg.KeyRefreshInterval)
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatalf("token signed by the old, still published key: %v", err)
	}
	if n := p.Requests(t, "/keys"); n != 2 {
		t.Fatalf("keys fetched %d times, want 2", n)
	}

	// Once the provider withdraws the old key, its tokens stop verifying
	// when the cached keys are due (KeyCacheTTL) and fetched again.
	v2 := newVerifier(t, p, func(c *Config) { c.KeyCacheTTL = 500 * time.Millisecond; c.KeyRefreshInterval = 100 * time.Millisecond })
	if _, err := v2.Verify(ctx, old); err != nil {
		t.Fatal(err)
	}
	p.RotateKey(t, true)
	time.Sleep(600 * time.Millisecond)
	testenv.WaitFor(t, 5*time.Second, "the withdrawn key to stop verifying", func() bool {
		_, err := v2.Verify(ctx, old)
		return errors.Is(err, ErrSignature)
	})
	if _, err := v2.Verify(ctx, p.Login(t, "staging-named", "alice", "alice-pw").AccessToken); err != nil {
		t.Fatalf("token of the current key: %v", err)
	}
}

// Forged tokens naming keys the provider never had must not make the
// verifier fetch the JWKS for each of them.
func TestUnknownKeysDoNotFloodTheProvider(t *testing.T) {
	p := testenv.OIDCProviderFor(t, providerConfig())
	v := newVerifier(t, p, nil)
	ctx := context.Background()
	if _, err := v.Verify(ctx, p.Login(t, "staging-named", "alice", "alice-pw").AccessToken); err != nil {
		t.Fatal(err)
	}
	key := rsaKey(t)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		forged := sign(t, key, jose.RS256, fmt.Sprintf("made-up-%d", i), validClaims(p.Issuer, audience))
		wg.Go(func() { _, errs[i] = v.Verify(ctx, forged) })
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrSignature) {
			t.Fatalf("forged token %d: %v, want ErrSignature", i, err)
		}
	}
	if n := p.Requests(t, "/keys"); n != 2 {
		t.Fatalf("keys fetched %d times for 20 forged tokens, want 2 (the first use, then one refresh)", n)
	}
}

func TestTokenTimes(t *testing.T) {
	p := testenv.OIDCProviderFor(t, providerConfig())
	v := newVerifier(t, p, nil) // leeway 60 s
	for _, tc := range []struct {
		name   string
		offset time.Duration // the provider's clock; tokens live 5 minutes
		want   error
	}{
		{"expired an hour ago", -time.Hour, ErrExpired},
		{"expired 30s ago, within the leeway", -5*time.Minute - 30*time.Second, nil},
		{"expired 2 minutes ago", -7 * time.Minute, ErrExpired},
		{"valid from in an hour", time.Hour, ErrNotYetValid},
		{"valid from in 30s, within the leeway", 30 * time.Second, nil},
		{"valid from in 2 minutes", 2 * time.Minute, ErrNotYetValid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.SetClock(t, tc.offset)
			tok := p.Login(t, "staging-named", "alice", "alice-pw").AccessToken
			_, err := v.Verify(context.Background(), tok)
			if !errors.Is(err, tc.want) || (tc.want != nil && !errors.Is(err, ErrUnauthenticated)) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
	p.SetClock(t, 0)
}

func TestWrongAudienceAndIssuer(t *testing.T) {
	p := testenv.OIDCProviderFor(t, providerConfig())
	other := testenv.OIDCProviderFor(t, providerConfig())
	v := newVerifier(t, p, nil)
	ctx := context.Background()

	if _, err := v.Verify(ctx, p.ClientCredentials(t, "other-app").AccessToken); !errors.Is(err, ErrWrongAudience) {
		t.Fatalf("token for another audience: %v, want ErrWrongAudience", err)
	}
	keysBefore := p.Requests(t, "/keys")
	if _, err := v.Verify(ctx, other.Login(t, "staging-named", "alice", "alice-pw").AccessToken); !errors.Is(err, ErrWrongIssuer) {
		t.Fatalf("token from another issuer: %v, want ErrWrongIssuer", err)
	}
	// A verifier without a configured issuer (it takes the discovery
	// document's) refuses it as well.
	v2 := newVerifier(t, p, func(c *Config) { c.IssuerURL, c.DiscoveryURL = "", p.Issuer })
	if _, err := v2.Verify(ctx, other.Login(t, "staging-named", "alice", "alice-pw").AccessToken); !errors.Is(err, ErrWrongIssuer) {
		t.Fatalf("token from another issuer (issuer from discovery): %v, want ErrWrongIssuer", err)
	}
	if n := p.Requests(t, "/keys") - keysBefore; n != 0 {
		t.Fatalf("foreign tokens made the verifier fetch keys %d times", n)
	}
	// The other issuer's key with our issuer's name and key id: the
	// signature gives it away.
	kid := kidOf(t, p.Login(t, "staging-named", "alice", "alice-pw").AccessToken)
	forged := sign(t, rsaKey(t), jose.RS256, kid, validClaims(p.Issuer, audience))
	if _, err := v.Verify(ctx, forged); !errors.Is(err, ErrSignature) {
		t.Fatalf("token signed by another key under our kid: %v, want ErrSignature", err)
	}
}

func TestMalformedAndForgedTokens(t *testing.T) {
	p := testenv.OIDCProviderFor(t, providerConfig())
	v := newVerifier(t, p, nil)
	ctx := context.Background()
	good := p.Login(t, "staging-named", "alice", "alice-pw").AccessToken
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatal(err)
	}
	kid := kidOf(t, good)
	parts := strings.Split(good, ".")

	// The provider's public key, as an HMAC secret: the classic
	// algorithm-confusion attack on verifiers that let the token choose.
	var jwks struct{ Keys []jose.JSONWebKey }
	if err := json.Unmarshal(testenv.Do(t, http.MethodGet, p.Issuer+"/keys", nil).Body, &jwks); err != nil || len(jwks.Keys) == 0 {
		t.Fatalf("JWKS: %v", err)
	}
	der, err := x509.MarshalPKIXPublicKey(jwks.Keys[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	claims := validClaims(p.Issuer, audience)
	tampered := map[string]any{}
	for k, val := range claims {
		tampered[k] = val
	}
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(b, &tampered)
	tampered["preferred_username"] = "root"
	tb, _ := json.Marshal(tampered)

	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"empty", "", ErrNoToken},
		{"garbage", "not a token", ErrMalformed},
		{"three empty parts", "..", ErrMalformed},
		{"alg none", unsigned(t, map[string]any{"alg": "none", "kid": kid}, claims), ErrMalformed},
		{"HS256 with the public key as secret", sign(t, pubPEM, jose.HS256, kid, claims), ErrMalformed},
		{"no kid", sign(t, rsaKey(t), jose.RS256, "", claims), ErrMalformed},
		{"payload changed, signature kept", parts[0] + "." + base64.RawURLEncoding.EncodeToString(tb) + "." + parts[2], ErrSignature},
		{"signature cut", parts[0] + "." + parts[1] + ".", ErrSignature},
		{"huge", parts[0] + "." + strings.Repeat("A", maxTokenBytes) + "." + parts[2], ErrMalformed},
		{"claims not JSON", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("[1,2")) + "." + parts[2], ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(ctx, tc.token)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrUnavailable) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Fatalf("the error contains the token: %v", err)
			}
			for _, part := range strings.Split(tc.token, ".") {
				if len(part) > 16 && strings.Contains(err.Error(), part) {
					t.Fatalf("the error contains part of the token: %v", err)
				}
			}
		})
	}
}

func TestIssuerUnreachableThenBack(t *testing.T) {
	p := testenv.OIDCProviderFor(t, providerConfig())
	tok := p.Login(t, "staging-web", "alice", "alice-pw").AccessToken
	p.Stop()
	// Start-up does not need the provider.
	v := newVerifier(t, p, nil)
	ctx := context.Background()
	if err := v.Discover(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Discover with the provider down: %v, want ErrUnavailable", err)
	}
	_, err := v.Verify(ctx, tok)
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Verify with the provider down: %v, want ErrUnavailable only", err)
	}
	// A garbage token is still refused as such, without the provider.
	if _, err := v.Verify(ctx, "garbage"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage with the provider down: %v", err)
	}
	p.Start()
	var id *Identity
	testenv.WaitFor(t, 5*time.Second, "the verifier to use the provider again", func() bool {
		id, err = v.Verify(ctx, tok)
		return err == nil
	})
	if id.Username != "alice" {
		t.Fatalf("identity %+v", id)
	}

	// Discovered, then the provider goes away: a known key still verifies
	// (the username is cached), userinfo for a new token cannot be asked.
	tok2 := p.Login(t, "staging-web", "alice", "alice-pw").AccessToken
	p.Stop()
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("cached key and userinfo with the provider down: %v", err)
	}
	if _, err := v.Verify(ctx, tok2); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("userinfo with the provider down: %v, want ErrUnavailable", err)
	}
}

func TestStorageScopeChecks(t *testing.T) {
	p := testenv.OIDCProviderFor(t, providerConfig())
	ctx := context.Background()
	// carol's IdP grants a storage scope without a path: the profile says
	// such a token must be refused, when capabilities are used at all.
	tok := p.Login(t, "staging-named", "carol", "carol-pw", "openid", "profile", "storage.read").AccessToken
	if _, err := newVerifier(t, p, func(c *Config) { c.StorageScopes = true }).Verify(ctx, tok); !errors.Is(err, ErrBadStorageScopes) {
		t.Fatalf("pathless storage scope with AUTHZ_STORAGE_SCOPES: %v, want ErrBadStorageScopes", err)
	}
	id, err := newVerifier(t, p, nil).Verify(ctx, tok)
	if err != nil {
		t.Fatalf("pathless storage scope without AUTHZ_STORAGE_SCOPES: %v", err)
	}
	if id.CanRead("carol", true) || !id.HasStorageScopes() {
		t.Fatalf("a pathless scope covers something: %+v", id)
	}
	// alice's scopes work through a real token.
	tok = p.Login(t, "staging-web", "alice", "alice-pw", "openid", "profile", "storage.read:/alice", "storage.read:/shared/").AccessToken
	id, err = newVerifier(t, p, func(c *Config) { c.StorageScopes = true }).Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if !id.CanRead("alice/obs/vis.ms", false) || id.CanRead("bob/x", false) || !id.CanRead("shared", true) || id.CanRead("shared", false) {
		t.Fatalf("scopes %v read wrongly", id.Scopes)
	}
}

// Helpers to make tokens the provider never issued.

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func validClaims(issuer, aud string) map[string]any {
	now := time.Now()
	return map[string]any{"iss": issuer, "aud": aud, "sub": "8c2f-alice", "preferred_username": "alice",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
}

func sign(t *testing.T, key any, alg jose.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func unsigned(t *testing.T, header, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
}

func kidOf(t *testing.T, raw string) string {
	t.Helper()
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

func sha256Key(raw string) [32]byte { return sha256.Sum256([]byte(raw)) }
