// Package auth establishes who is asking, from the credential a door found
// (AUTH_MODE): nobody in particular but trusted (none), or the owner of a
// JupyterHub token (jupyterhub). It only authenticates; what a caller may
// do is decided by the staging pipeline. Tokens are kept only as hashes and
// never logged or returned.
package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/jupyterhub"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Authenticator establishes the caller from a token ("" when the request
// carried none).
type Authenticator interface {
	Caller(ctx context.Context, token string) (staging.Caller, error)
}

// None is AUTH_MODE=none: one trusted user on a private network, who may
// act for anyone.
type None struct{}

func (None) Caller(context.Context, string) (staging.Caller, error) { return staging.Trusted, nil }

// JupyterHub is AUTH_MODE=jupyterhub: the hub says whose a token is and
// what it may do. A token acts for its owner if it may act in their Jupyter
// servers or was issued for this service (jupyterhub.User.MayActFor); a hub
// admin's token with admin scopes (ActsAsAdmin), even without those, may act
// for anyone. Answers are cached
// for a while.
type JupyterHub struct {
	hub     *jupyterhub.Client
	service string
	ttl     time.Duration
	max     int
	timeout time.Duration // of one question to the hub

	mu     sync.Mutex
	cache  map[[32]byte]owner
	asking chan struct{} // a place per question to the hub in flight
}

// maxHubChecks bounds the tokens asked about at once: a flood of tokens
// the cache does not know is answered 429 here, not passed on to the hub
// one connection each.
const maxHubChecks = 32

// hubCheckTimeout bounds one question to the hub: a hub slow to answer
// costs a 503 after this long, not a request held, with one of the
// maxHubChecks places, for as long as its client waits (the hub client
// itself waits minutes for answers, as uploads need).
const hubCheckTimeout = 10 * time.Second

// maxHubToken bounds what is taken for a hub token (the hub's own are a
// few dozen characters): a longer one is refused here, not sent to the hub
// in a header it refuses as too large (431), which would read as the hub
// failing (503).
const maxHubToken = 4 << 10

type owner struct {
	caller  staging.Caller
	expires time.Time
}

// NewJupyterHub returns an Authenticator asking hub, caching each token's
// owner for ttl (30 s when 0). service is this service's name at the hub
// (JUPYTERHUB_SERVICE_NAME, "" when it is not one): tokens issued for it
// are accepted too.
func NewJupyterHub(hub *jupyterhub.Client, service string, ttl time.Duration) *JupyterHub {
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	return &JupyterHub{hub: hub, service: service, ttl: ttl, max: 4096, timeout: hubCheckTimeout,
		cache: map[[32]byte]owner{}, asking: make(chan struct{}, maxHubChecks)}
}

// Caller is anonymous without a token; a token the hub does not know is
// Unauthenticated, one that may not act for its owner here Forbidden, and a
// hub that cannot be asked Unavailable.
func (a *JupyterHub) Caller(ctx context.Context, token string) (staging.Caller, error) {
	if token == "" {
		return staging.Caller{}, nil
	}
	if len(token) > maxHubToken {
		return staging.Caller{}, staging.Errorf(staging.Unauthenticated, "JupyterHub does not accept the token: it is over %d bytes", maxHubToken)
	}
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	a.mu.Lock()
	o, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(o.expires) {
		return o.caller, nil
	}
	select {
	case a.asking <- struct{}{}:
		defer func() { <-a.asking }()
	default:
		return staging.Caller{}, staging.Errorf(staging.TooMany, "Too many tokens being checked with JupyterHub: try again shortly")
	}
	askCtx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	u, err := a.hub.Whoami(askCtx, token)
	if err != nil {
		switch status := jupyterhub.StatusOf(err); {
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			return staging.Caller{}, staging.Wrap(staging.Unauthenticated, "JupyterHub does not accept the token", err)
		case errors.Is(err, jupyterhub.ErrUnreachable):
			return staging.Caller{}, staging.Wrap(staging.Unavailable, "Cannot check the token: JupyterHub is unreachable", err)
		default:
			return staging.Caller{}, staging.Wrap(staging.Unavailable, "Cannot check the token with JupyterHub", err)
		}
	}
	if !u.MayActFor(a.service) && !u.ActsAsAdmin() {
		return staging.Caller{}, staging.Errorf(staging.Forbidden, "This JupyterHub token only identifies %s: use a token "+
			"from the hub's Token page, which may act in %s's servers (scope access:servers)", u.Who(), u.Who())
	}
	c := staging.Caller{Name: u.Name, Admin: u.ActsAsAdmin(), Token: token}
	if u.Kind != "user" {
		c.Name = u.Kind + ":" + u.Name // a service is nobody's user area
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= a.max {
		// Full: drop what has expired, or everything if nothing has.
		for k, v := range a.cache {
			if now.After(v.expires) {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= a.max {
			clear(a.cache)
		}
	}
	a.cache[key] = owner{caller: c, expires: now.Add(a.ttl)}
	return c, nil
}

// Token is the caller's token: the Authorization header ("token <t>" or
// "Bearer <t>"), else fallback (a request's jupyter_token).
func Token(r *http.Request, fallback string) string {
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	if scheme, t, ok := strings.Cut(h, " "); ok && (strings.EqualFold(scheme, "token") || strings.EqualFold(scheme, "bearer")) {
		if t = strings.TrimSpace(t); t != "" {
			return t
		}
	}
	return fallback
}
