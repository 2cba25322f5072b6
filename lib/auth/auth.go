// Package auth is the optional authentication of callers through JupyterHub
// (AUTH_MODE=jupyterhub): a staging request must carry a hub token, the hub
// says whose it is, and only that user or a hub admin may stage into the
// user's area. Answers are cached briefly; tokens are kept only as hashes
// and never logged or returned.
package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/jupyterhub"
)

// Authorizer checks callers. A nil *Authorizer allows everyone
// (AUTH_MODE=none).
type Authorizer struct {
	hub *jupyterhub.Client
	ttl time.Duration
	max int

	mu    sync.Mutex
	cache map[[32]byte]owner
}

type owner struct {
	name    string
	admin   bool
	expires time.Time
}

// New returns an Authorizer asking hub, caching each token's owner for ttl
// (30 s when 0).
func New(hub *jupyterhub.Client, ttl time.Duration) *Authorizer {
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	return &Authorizer{hub: hub, ttl: ttl, max: 4096, cache: map[[32]byte]owner{}}
}

// Enabled reports whether callers are checked.
func (a *Authorizer) Enabled() bool { return a != nil }

// Authorize allows the request when token belongs to username or to a hub
// admin: 401 without a token or with one the hub does not know, 403 for
// someone else's area, 503 when the hub cannot be asked.
func (a *Authorizer) Authorize(ctx context.Context, token, username string) error {
	if a == nil {
		return nil
	}
	if token == "" {
		return staging.Errorf(http.StatusUnauthorized, "A JupyterHub token is required: send Authorization: token <token> or jupyter_token")
	}
	who, err := a.owner(ctx, token)
	if err != nil {
		return err
	}
	if who.name != username && !who.admin {
		return staging.Errorf(http.StatusForbidden, "User %s may not stage data for user %s", who.name, username)
	}
	return nil
}

func (a *Authorizer) owner(ctx context.Context, token string) (owner, error) {
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	a.mu.Lock()
	o, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(o.expires) {
		return o, nil
	}
	u, err := a.hub.Whoami(ctx, token)
	if err != nil {
		switch status := jupyterhub.StatusOf(err); {
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			return owner{}, staging.Wrap(http.StatusUnauthorized, "JupyterHub does not accept the token", err)
		case errors.Is(err, jupyterhub.ErrUnreachable):
			return owner{}, staging.Wrap(http.StatusServiceUnavailable, "Cannot check the token: JupyterHub is unreachable", err)
		default:
			return owner{}, staging.Wrap(http.StatusServiceUnavailable, "Cannot check the token with JupyterHub", err)
		}
	}
	o = owner{name: u.Name, admin: u.Admin, expires: now.Add(a.ttl)}
	if u.Kind != "user" {
		o.name = u.Kind + ":" + u.Name // a service is nobody's user area
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
	a.cache[key] = o
	return o, nil
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

// ForMode returns the Authorizer for AUTH_MODE: nil (everyone allowed) for
// "none", one asking hub for "jupyterhub".
func ForMode(mode string, hub *jupyterhub.Client) *Authorizer {
	if mode != "jupyterhub" || hub == nil {
		return nil
	}
	return New(hub, 0)
}
