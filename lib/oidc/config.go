// Package oidc verifies the bearer JWT access tokens of the site's identity
// provider (SKA IAM, INDIGO IAM or any OpenID provider) for AUTH_MODE=oidc,
// with github.com/coreos/go-oidc/v3: the issuer's discovery document and
// JWKS, the token's signature (asymmetric algorithms only, a kid required),
// iss, aud and exp/nbf with a small leeway. A Verifier turns a token into an
// Identity: subject, username (from the token or, as INDIGO IAM tokens lack
// it, from the userinfo endpoint, cached), groups, admin, and the scopes,
// with the path semantics of the WLCG Common JWT Profile for storage.read.
//
// Nothing here reaches the identity provider at start-up: discovery happens
// at the first token and is retried, so a provider that is briefly
// unreachable costs a 503 on the requests of that moment, not a crash.
// Every refusal is one of the sentinel errors below, so a door maps
// ErrUnauthenticated to 401 and ErrUnavailable to 503. Tokens are never
// logged and never part of an error.
package oidc

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrUnauthenticated is what every refusal of a token is (errors.Is): the
// caller has not proved who they are (HTTP 401).
var ErrUnauthenticated = errors.New("oidc: token not accepted")

// ErrUnavailable means the token could not be checked: the identity
// provider's discovery, keys or userinfo did not answer as they should
// (HTTP 503). It is never an ErrUnauthenticated.
var ErrUnavailable = errors.New("oidc: identity provider unavailable")

// The reasons a token is refused; each one is an ErrUnauthenticated.
var (
	ErrNoToken          error = tokenError("no token")
	ErrMalformed        error = tokenError("malformed token")
	ErrSignature        error = tokenError("signature not verified")
	ErrWrongIssuer      error = tokenError("token from another issuer")
	ErrWrongAudience    error = tokenError("token for another audience")
	ErrExpired          error = tokenError("token expired")
	ErrNotYetValid      error = tokenError("token not valid yet")
	ErrNoUsername       error = tokenError("no username for the token")
	ErrUserinfoRefused  error = tokenError("the provider's userinfo endpoint refused the token")
	ErrBadStorageScopes error = tokenError("storage scope without an absolute path")
)

type tokenError string

func (e tokenError) Error() string { return "oidc: " + string(e) }

// Is makes every tokenError an ErrUnauthenticated.
func (e tokenError) Is(target error) bool { return target == ErrUnauthenticated }

// Defaults.
const (
	DefaultUsernameClaim = "preferred_username"
	// DefaultLeeway is the clock skew allowed on exp and nbf: the WLCG
	// Common JWT Profile's recommended allowance (section 4.3.1).
	DefaultLeeway = 60 * time.Second
	// MaxLeeway bounds OIDC_LEEWAY: more would keep expired tokens alive.
	MaxLeeway = 5 * time.Minute
	// NoLeeway as Config.Leeway allows no clock skew at all (zero means
	// DefaultLeeway).
	NoLeeway time.Duration = -1
)

// DefaultGroupsClaims are the claims read for groups when GroupsClaim is
// empty, in this order: the WLCG profile's, then the common one.
var DefaultGroupsClaims = []string{"wlcg.groups", "groups"}

// DefaultSigningAlgs are the signature algorithms accepted by default: the
// asymmetric ones. HMAC (HS*) and "none" are never accepted.
var DefaultSigningAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config says which tokens to accept. Zero values mean the defaults given.
// The variables named are those the service's configuration reads into it
// (OIDC_ADMIN_GROUPS a comma-separated or JSON list, OIDC_LEEWAY a Go
// duration, AUTHZ_STORAGE_SCOPES true or false); NewVerifier checks the
// values.
type Config struct {
	// IssuerURL is the iss tokens must carry, exactly (OIDC_ISSUER_URL);
	// its discovery document is at IssuerURL/.well-known/openid-configuration.
	// It must be https, except on a loopback address. It may be empty when
	// DiscoveryURL is set: the document's issuer is then expected.
	IssuerURL string
	// DiscoveryURL, when set, is where the discovery document is fetched
	// instead (e.g. the in-cluster API server for Kubernetes
	// service-account tokens).
	DiscoveryURL string
	// JWKSURL, when set, replaces the document's jwks_uri.
	JWKSURL string
	// Audience is the aud tokens must contain (OIDC_AUDIENCE). Required.
	Audience string
	// UsernameClaim names the username (OIDC_USERNAME_CLAIM), default
	// preferred_username. A token without it is completed from userinfo.
	UsernameClaim string
	// GroupsClaim names the groups claim (OIDC_GROUPS_CLAIM); empty: the
	// first of DefaultGroupsClaims the token has.
	GroupsClaim string
	// AdminGroups make a user an admin (OIDC_ADMIN_GROUPS), compared
	// exactly as the claim spells them, e.g. /ska/staging-admins.
	AdminGroups []string
	// StorageScopes turns on the WLCG capability checks
	// (AUTHZ_STORAGE_SCOPES): a token with a storage.* scope that has no
	// absolute path is refused, as the profile requires.
	StorageScopes bool
	// Leeway is the clock skew allowed on exp and nbf (OIDC_LEEWAY),
	// zero for DefaultLeeway, NoLeeway for none; at most MaxLeeway.
	Leeway time.Duration
	// SigningAlgs accepted, default DefaultSigningAlgs.
	SigningAlgs []string
	// HTTPClient reaches the provider; default one with a 10 s timeout.
	HTTPClient *http.Client
	// KeyRefreshInterval is the least time between two fetches of the JWKS
	// for a key it does not know yet (default 5 s): tokens with made-up key
	// ids must not make the service hammer the provider. A token signed by
	// a key just published waits for the next allowed fetch.
	KeyRefreshInterval time.Duration
	// KeyCacheTTL is how long fetched keys are used before being fetched
	// again (default 1 h, the profile's minimum cache time): a key the
	// provider withdrew stops verifying after at most this long and the
	// fetch it then starts, in the background: requests do not wait for
	// it. When the provider cannot be reached the keys are used for up to
	// 48 h more.
	KeyCacheTTL time.Duration
	// UserinfoCacheSize bounds the cached userinfo answers (default 4096);
	// UserinfoCacheTTL is how long one is kept (default 5 min, never beyond
	// its token's exp).
	UserinfoCacheSize int
	UserinfoCacheTTL  time.Duration
}

func (c Config) withDefaults() Config {
	if c.UsernameClaim == "" {
		c.UsernameClaim = DefaultUsernameClaim
	}
	switch c.Leeway {
	case 0:
		c.Leeway = DefaultLeeway
	case NoLeeway:
		c.Leeway = 0
	}
	if len(c.SigningAlgs) == 0 {
		c.SigningAlgs = DefaultSigningAlgs
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.KeyRefreshInterval <= 0 {
		c.KeyRefreshInterval = 5 * time.Second
	}
	if c.KeyCacheTTL <= 0 {
		c.KeyCacheTTL = time.Hour
	}
	if c.UserinfoCacheSize <= 0 {
		c.UserinfoCacheSize = 4096
	}
	if c.UserinfoCacheTTL <= 0 {
		c.UserinfoCacheTTL = 5 * time.Minute
	}
	return c
}

func (c Config) validate() error {
	if c.IssuerURL == "" && c.DiscoveryURL == "" {
		return errors.New("oidc: no issuer URL")
	}
	for _, u := range []string{c.IssuerURL, c.DiscoveryURL, c.JWKSURL} {
		if u == "" {
			continue
		}
		if err := checkURL(u); err != nil {
			return fmt.Errorf("oidc: %w", err)
		}
	}
	if c.Audience == "" {
		return errors.New("oidc: no audience")
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		return fmt.Errorf("oidc: leeway %s: want 0 to %s", c.Leeway, MaxLeeway)
	}
	for _, a := range c.SigningAlgs {
		if a == "none" || strings.HasPrefix(a, "HS") {
			return fmt.Errorf("oidc: signing algorithm %q: only asymmetric algorithms are accepted", a)
		}
	}
	return nil
}

// checkURL accepts an absolute https URL, or http on a loopback address
// (tests, a local provider): tokens and keys must not travel in clear.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an absolute URL without query", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("%q: https is required (http only on a loopback address)", raw)
}
