package oidc

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Identity is who a verified access token speaks for.
type Identity struct {
	Issuer   string
	Subject  string
	Username string
	Groups   []string
	Admin    bool // in one of the configured admin groups
	// Scopes are the token's scope claim (space-separated), or its scp.
	Scopes []string
	Expiry time.Time
}

// Verifier turns users' bearer access tokens into identities. Safe for
// concurrent use.
type Verifier struct {
	tokens *TokenVerifier
	cfg    Config
	cache  *userinfoCache
}

// NewVerifier checks cfg and returns a Verifier; it does not reach the
// provider yet.
func NewVerifier(cfg Config) (*Verifier, error) {
	tv, err := NewTokenVerifier(cfg)
	if err != nil {
		return nil, err
	}
	cfg = tv.cfg
	return &Verifier{tokens: tv, cfg: cfg,
		cache: &userinfoCache{max: cfg.UserinfoCacheSize, ttl: cfg.UserinfoCacheTTL, m: map[[32]byte]userinfo{}}}, nil
}

// Discover fetches the provider's discovery document if not done yet.
func (v *Verifier) Discover(ctx context.Context) error { return v.tokens.Discover(ctx) }

// Verify checks the access token raw and says whose it is. The username
// comes from the token, or from the provider's userinfo endpoint when the
// token lacks it; so do the groups when admin groups are configured and the
// token carries none. Errors are ErrUnavailable or ErrUnauthenticated
// reasons.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Identity, error) {
	tok, d, err := v.tokens.verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	id := &Identity{Issuer: tok.Issuer, Subject: tok.Subject, Expiry: tok.Expiry}
	if _, err := tok.Claim(v.cfg.UsernameClaim, &id.Username); err != nil {
		return nil, err
	}
	groups, found, err := v.groups(tok.stringsClaim)
	if err != nil {
		return nil, err
	}
	id.Groups = groups
	if id.Username == "" || (!found && len(v.cfg.AdminGroups) > 0) {
		info, err := v.userinfo(ctx, raw, tok, d)
		if err != nil {
			return nil, err
		}
		if id.Username == "" {
			id.Username = info.username
		}
		if !found {
			id.Groups = info.groups
		}
	}
	if id.Username == "" {
		return nil, fmt.Errorf("%w: neither the token nor userinfo has %s", ErrNoUsername, v.cfg.UsernameClaim)
	}
	if id.Scopes, err = scopes(tok); err != nil {
		return nil, err
	}
	if v.cfg.StorageScopes {
		if err := checkStorageScopes(id.Scopes); err != nil {
			return nil, err
		}
	}
	for _, g := range id.Groups {
		if slices.Contains(v.cfg.AdminGroups, g) {
			id.Admin = true
		}
	}
	return id, nil
}

// groups reads the configured groups claim, or the first of the default
// ones present, through get.
func (v *Verifier) groups(get func(string) ([]string, bool, error)) ([]string, bool, error) {
	names := DefaultGroupsClaims
	if v.cfg.GroupsClaim != "" {
		names = []string{v.cfg.GroupsClaim}
	}
	for _, name := range names {
		if g, ok, err := get(name); ok || err != nil {
			return g, ok, err
		}
	}
	return nil, false, nil
}

// scopes reads scope (a space-separated string, or a list), else scp.
func scopes(tok *Token) ([]string, error) {
	for _, name := range []string{"scope", "scp"} {
		list, ok, err := tok.stringsClaim(name)
		if err != nil {
			return nil, err
		}
		if ok {
			var out []string
			for _, s := range list {
				out = append(out, strings.Fields(s)...)
			}
			return out, nil
		}
	}
	return nil, nil
}

var errNoUserinfo = errors.New("the provider has no userinfo endpoint")

// userinfo is what the provider's userinfo endpoint says about a token.
type userinfo struct {
	username string
	groups   []string
	expires  time.Time
	seq      uint64 // set by the cache
}

func (v *Verifier) userinfo(ctx context.Context, raw string, tok *Token, d *discovered) (userinfo, error) {
	key := sha256.Sum256([]byte(raw))
	if u, ok := v.cache.get(key); ok {
		return u, nil
	}
	if d.userinfoURL == "" {
		return userinfo{}, fmt.Errorf("%w: %v", ErrUnavailable, errNoUserinfo)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.userinfoURL, nil)
	if err != nil {
		return userinfo{}, fmt.Errorf("%w: userinfo: %v", ErrUnavailable, err)
	}
	req.Header.Set("Authorization", "Bearer "+raw)
	req.Header.Set("Accept", "application/json")
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return userinfo{}, fmt.Errorf("%w: userinfo: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case err != nil:
		return userinfo{}, fmt.Errorf("%w: userinfo: %v", ErrUnavailable, err)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return userinfo{}, fmt.Errorf("%w: %s", ErrUserinfoRefused, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return userinfo{}, fmt.Errorf("%w: userinfo: %s", ErrUnavailable, resp.Status)
	}
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(body, &claims); err != nil {
		return userinfo{}, fmt.Errorf("%w: userinfo is not a JSON object: %v", ErrUnavailable, err)
	}
	// OpenID Connect Core 5.3.2: userinfo about someone else must not be used.
	var sub string
	if json.Unmarshal(claims["sub"], &sub) != nil || sub != tok.Subject {
		return userinfo{}, fmt.Errorf("%w: userinfo is about subject %q, the token about %q", ErrUserinfoRefused, sub, tok.Subject)
	}
	var u userinfo
	if raw, ok := claims[v.cfg.UsernameClaim]; ok {
		if err := json.Unmarshal(raw, &u.username); err != nil {
			return userinfo{}, fmt.Errorf("%w: userinfo %s is not a string", ErrUnavailable, v.cfg.UsernameClaim)
		}
	}
	u.groups, _, err = v.groups(func(name string) ([]string, bool, error) {
		raw, ok := claims[name]
		if !ok || string(raw) == "null" {
			return nil, false, nil
		}
		return decodeStrings(name, raw)
	})
	if err != nil {
		return userinfo{}, err
	}
	u.expires = time.Now().Add(v.cfg.UserinfoCacheTTL)
	if tok.Expiry.Before(u.expires) {
		u.expires = tok.Expiry
	}
	v.cache.put(key, u)
	return u, nil
}

// userinfoCache keeps userinfo answers by token hash (tokens themselves are
// never kept), each until its expiry, at most max of them.
type userinfoCache struct {
	max int
	ttl time.Duration

	mu  sync.Mutex
	m   map[[32]byte]userinfo
	seq uint64 // insertion order, to evict the older of equal expiries
}

func (c *userinfoCache) get(key [32]byte) (userinfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, ok := c.m[key]
	if ok && time.Now().After(u.expires) {
		delete(c.m, key)
		return userinfo{}, false
	}
	return u, ok
}

func (c *userinfoCache) put(key [32]byte, u userinfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Full: drop what has expired, then, if need be, the entry that
		// expires first.
		now := time.Now()
		for k, e := range c.m {
			if now.After(e.expires) {
				delete(c.m, k)
			}
		}
		for len(c.m) >= c.max {
			var first [32]byte
			var oldest *userinfo
			for k, e := range c.m {
				if oldest == nil || e.expires.Before(oldest.expires) || (e.expires.Equal(oldest.expires) && e.seq < oldest.seq) {
					first, oldest = k, &e
				}
			}
			delete(c.m, first)
		}
	}
	c.seq++
	u.seq = c.seq
	c.m[key] = u
}

func (c *userinfoCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
