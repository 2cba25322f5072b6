package auth

import (
	"context"
	"errors"

	"github.com/ska-telescope/skao-staging-service/lib/oidc"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// OIDC is AUTH_MODE=oidc: a bearer JWT access token of the site's identity
// provider says who the caller is; its groups may make them an admin, and
// with storage scopes on, its storage.read scopes bound what they may read.
type OIDC struct {
	verifier      *oidc.Verifier
	storageScopes bool
}

// NewOIDC returns an Authenticator verifying tokens with v; storageScopes
// makes the token's storage.read scopes the limit of what may be read
// (AUTHZ_STORAGE_SCOPES).
func NewOIDC(v *oidc.Verifier, storageScopes bool) *OIDC {
	return &OIDC{verifier: v, storageScopes: storageScopes}
}

// Caller is anonymous without a token; a token that is not accepted is
// Unauthenticated (with why, in words safe to show), and a provider that
// cannot be asked Unavailable.
func (a *OIDC) Caller(ctx context.Context, token string) (staging.Caller, error) {
	if token == "" {
		return staging.Caller{}, nil
	}
	id, err := a.verifier.Verify(ctx, token)
	if err != nil {
		return staging.Caller{}, oidcError(err)
	}
	c := staging.Caller{Name: id.Username, Admin: id.Admin, Token: token}
	if a.storageScopes {
		c.Reads = id
	}
	return c, nil
}

// oidcError says why a token was not taken, never what it held.
func oidcError(err error) error {
	switch {
	case errors.Is(err, oidc.ErrUnavailable):
		return staging.Wrap(staging.Unavailable, "Cannot check the token: the identity provider is unreachable", err)
	case errors.Is(err, oidc.ErrExpired):
		return staging.Wrap(staging.Unauthenticated, "The access token has expired", err)
	case errors.Is(err, oidc.ErrNotYetValid):
		return staging.Wrap(staging.Unauthenticated, "The access token is not valid yet", err)
	case errors.Is(err, oidc.ErrWrongAudience):
		return staging.Wrap(staging.Unauthenticated, "The access token is not meant for this service", err)
	case errors.Is(err, oidc.ErrWrongIssuer):
		return staging.Wrap(staging.Unauthenticated, "The access token is from another identity provider", err)
	case errors.Is(err, oidc.ErrNoUsername):
		return staging.Wrap(staging.Unauthenticated, "The access token does not say who the user is", err)
	case errors.Is(err, oidc.ErrBadStorageScopes):
		return staging.Wrap(staging.Unauthenticated, "The access token has storage scopes without a path", err)
	}
	return staging.Wrap(staging.Unauthenticated, "The access token is not accepted", err)
}
