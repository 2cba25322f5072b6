package oidc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// maxTokenBytes bounds what is parsed: real access tokens are a few KiB.
const maxTokenBytes = 16 << 10

// discoveryRetry is how long a failed discovery is answered from memory
// before the next attempt, so that requests arriving while the provider is
// unreachable do not each wait for a connection.
const discoveryRetry = time.Second

// TokenVerifier checks JWTs of one issuer: signature, iss, aud, exp and
// nbf. It is what Verifier builds on, and what verifies other JWT bearers
// (e.g. Kubernetes service-account tokens). Safe for concurrent use.
type TokenVerifier struct {
	cfg  Config
	algs []jose.SignatureAlgorithm

	disc     atomic.Pointer[discovered]
	mu       sync.Mutex // one discovery at a time
	failedAt time.Time
	failErr  error
}

// discovered is what the discovery document said.
type discovered struct {
	issuer      string
	userinfoURL string
	verifier    *gooidc.IDTokenVerifier
}

// Token is a verified JWT.
type Token struct {
	Issuer   string
	Subject  string
	Audience []string
	Expiry   time.Time
	IssuedAt time.Time
	claims   map[string]json.RawMessage
}

// Claim decodes the claim name into v, reporting whether the token has it.
func (t *Token) Claim(name string, v any) (bool, error) {
	raw, ok := t.claims[name]
	if !ok || string(raw) == "null" {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("%w: claim %s: %v", ErrMalformed, name, err)
	}
	return true, nil
}

// NewTokenVerifier checks cfg and returns a verifier; it does not reach the
// provider (that happens at the first token, or at Discover).
func NewTokenVerifier(cfg Config) (*TokenVerifier, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	v := &TokenVerifier{cfg: cfg}
	for _, a := range cfg.SigningAlgs {
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	return v, nil
}

// Discover fetches the discovery document now if it has not been yet: a
// function may call it at start to warm up or for readiness, without
// failing when the provider is briefly unreachable.
func (v *TokenVerifier) Discover(ctx context.Context) error {
	_, err := v.discover(ctx)
	return err
}

// Issuer is the iss the tokens must carry, as the discovery document names
// it (discovering it if not done yet).
func (v *TokenVerifier) Issuer(ctx context.Context) (string, error) {
	d, err := v.discover(ctx)
	if err != nil {
		return "", err
	}
	return d.issuer, nil
}

// UnverifiedIssuer reads the iss of a JWT without checking anything: only
// to tell which verifier a token is for, never to trust it.
func UnverifiedIssuer(raw string) string {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return ""
	}
	return c.Iss
}

func (v *TokenVerifier) discover(ctx context.Context) (*discovered, error) {
	if d := v.disc.Load(); d != nil {
		return d, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if d := v.disc.Load(); d != nil {
		return d, nil
	}
	if v.failErr != nil && time.Since(v.failedAt) < discoveryRetry {
		return nil, v.failErr
	}
	d, err := v.fetchDiscovery(ctx)
	if err != nil {
		err = fmt.Errorf("%w: discovery: %v", ErrUnavailable, err)
		if ctx.Err() == nil { // the provider's failure, not this caller's
			v.failErr, v.failedAt = err, time.Now()
		}
		return nil, err
	}
	v.disc.Store(d)
	return d, nil
}

func (v *TokenVerifier) fetchDiscovery(ctx context.Context) (*discovered, error) {
	base, expected := v.cfg.IssuerURL, v.cfg.IssuerURL
	if v.cfg.DiscoveryURL != "" {
		// The document may name another issuer than the URL it is fetched
		// from (e.g. the in-cluster API server); it is checked below.
		base = v.cfg.DiscoveryURL
	}
	meta, err := v.getDiscovery(ctx, strings.TrimSuffix(base, "/")+"/.well-known/openid-configuration")
	if err != nil {
		return nil, err
	}
	if expected == "" {
		expected = meta.Issuer
	}
	if meta.Issuer != expected || expected == "" {
		return nil, fmt.Errorf("the document at %s names issuer %q, want %q", base, meta.Issuer, expected)
	}
	jwks := meta.JWKSURI
	if v.cfg.JWKSURL != "" {
		jwks = v.cfg.JWKSURL
	}
	if err := checkURL(jwks); err != nil {
		return nil, fmt.Errorf("jwks_uri: %w", err)
	}
	if meta.Userinfo != "" {
		if err := checkURL(meta.Userinfo); err != nil {
			return nil, fmt.Errorf("userinfo_endpoint: %w", err)
		}
	}
	keys := &keySet{url: jwks, client: v.cfg.HTTPClient, algs: v.algs,
		minInterval: v.cfg.KeyRefreshInterval, ttl: v.cfg.KeyCacheTTL}
	// go-oidc checks the signature (through keys) and iss; aud, exp and
	// nbf are checked in Verify, with this package's leeway and errors.
	verifier := gooidc.NewVerifier(expected, keys, &gooidc.Config{
		SkipClientIDCheck:    true,
		SkipExpiryCheck:      true,
		SupportedSigningAlgs: v.cfg.SigningAlgs,
	})
	return &discovered{issuer: expected, userinfoURL: meta.Userinfo, verifier: verifier}, nil
}

// maxDiscovery bounds the discovery document read: real ones are a few KiB,
// and go-oidc's NewProvider reads any size into memory (and into its error).
const maxDiscovery = 1 << 20

type discoveryDocument struct {
	Issuer   string `json:"issuer"`
	JWKSURI  string `json:"jwks_uri"`
	Userinfo string `json:"userinfo_endpoint"`
}

func (v *TokenVerifier) getDiscovery(ctx context.Context, addr string) (*discoveryDocument, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", addr, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDiscovery+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	if len(body) > maxDiscovery {
		return nil, fmt.Errorf("%s: the document is larger than %d bytes", addr, maxDiscovery)
	}
	var meta discoveryDocument
	if err := json.Unmarshal(body, &meta); err != nil {
		return nil, fmt.Errorf("%s: not a discovery document: %w", addr, err)
	}
	return &meta, nil
}

// Verify checks raw and returns its claims. Its errors are ErrUnavailable
// or one of the ErrUnauthenticated reasons; they never contain the token.
func (v *TokenVerifier) Verify(ctx context.Context, raw string) (*Token, error) {
	tok, _, err := v.verify(ctx, raw)
	return tok, err
}

func (v *TokenVerifier) verify(ctx context.Context, raw string) (*Token, *discovered, error) {
	if raw == "" {
		return nil, nil, ErrNoToken
	}
	if len(raw) > maxTokenBytes {
		return nil, nil, fmt.Errorf("%w: over %d bytes", ErrMalformed, maxTokenBytes)
	}
	// Look before checking, to refuse what cannot be one of the issuer's
	// tokens without reaching the provider: not a JWS, an algorithm not
	// accepted (none, HS256), no key id, another issuer.
	jws, err := jose.ParseSigned(raw, v.algs)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(jws.Signatures) != 1 || jws.Signatures[0].Header.KeyID == "" {
		return nil, nil, fmt.Errorf("%w: one signature with a key id (kid) is required", ErrMalformed)
	}
	var unverified struct {
		Issuer string `json:"iss"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &unverified); err != nil {
		return nil, nil, fmt.Errorf("%w: claims are not a JSON object: %v", ErrMalformed, err)
	}
	if v.cfg.IssuerURL != "" && unverified.Issuer != v.cfg.IssuerURL {
		return nil, nil, fmt.Errorf("%w: %q", ErrWrongIssuer, unverified.Issuer)
	}
	d, err := v.discover(ctx)
	if err != nil {
		return nil, nil, err
	}
	if unverified.Issuer != d.issuer {
		return nil, nil, fmt.Errorf("%w: %q", ErrWrongIssuer, unverified.Issuer)
	}

	st := &verifyState{jws: jws}
	idt, err := d.verifier.Verify(context.WithValue(ctx, stateKey{}, st), raw)
	if err != nil {
		if st.err != nil {
			return nil, nil, st.err
		}
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}

	tok := &Token{Issuer: idt.Issuer, Subject: idt.Subject, Audience: idt.Audience, Expiry: idt.Expiry, IssuedAt: idt.IssuedAt}
	if err := idt.Claims(&tok.claims); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := v.checkClaims(tok); err != nil {
		return nil, nil, err
	}
	return tok, d, nil
}

func (v *TokenVerifier) checkClaims(tok *Token) error {
	now := time.Now()
	if tok.Subject == "" {
		return fmt.Errorf("%w: no sub", ErrMalformed)
	}
	if tok.Expiry.IsZero() {
		return fmt.Errorf("%w: no exp", ErrMalformed)
	}
	if !slices.Contains(tok.Audience, v.cfg.Audience) {
		return fmt.Errorf("%w: aud %q does not contain %q", ErrWrongAudience, tok.Audience, v.cfg.Audience)
	}
	if now.After(tok.Expiry.Add(v.cfg.Leeway)) {
		return fmt.Errorf("%w: at %s", ErrExpired, tok.Expiry.UTC().Format(time.RFC3339))
	}
	var nbf json.Number
	if ok, err := tok.Claim("nbf", &nbf); err != nil {
		return err
	} else if ok {
		secs, err := nbf.Float64()
		if err != nil {
			return fmt.Errorf("%w: nbf %q", ErrMalformed, nbf)
		}
		if t := time.Unix(int64(secs), 0); now.Add(v.cfg.Leeway).Before(t) {
			return fmt.Errorf("%w: not before %s", ErrNotYetValid, t.UTC().Format(time.RFC3339))
		}
	}
	// WLCG profile 4.3.3: a token whose major version this code does not
	// know must be refused; newer minor versions are compatible.
	var ver string
	if ok, err := tok.Claim("wlcg.ver", &ver); err != nil {
		return err
	} else if ok && !strings.HasPrefix(ver, "1.") {
		return fmt.Errorf("%w: WLCG token profile version %q is not 1.x", ErrMalformed, ver)
	}
	return nil
}

// stringsClaim reads a claim that is a list of strings or a single string.
func (t *Token) stringsClaim(name string) ([]string, bool, error) {
	raw, ok := t.claims[name]
	if !ok || string(raw) == "null" {
		return nil, false, nil
	}
	return decodeStrings(name, raw)
}

func decodeStrings(name string, raw json.RawMessage) ([]string, bool, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, true, fmt.Errorf("%w: claim %s: %v", ErrMalformed, name, err)
		}
		return []string{s}, true, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, true, fmt.Errorf("%w: claim %s is not a list of strings", ErrMalformed, name)
	}
	return list, true, nil
}
