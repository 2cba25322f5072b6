package auth

import (
	"context"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/oidc"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

const oidcAudience = "staging-api"

// TestOIDCCaller: what AUTH_MODE=oidc makes of a bearer token, against a
// real provider: who the caller is, whether an admin, what their storage
// scopes let them read, and each refusal in its exact words, which name
// the reason and never the token.
func TestOIDCCaller(t *testing.T) {
	p := testenv.OIDCProviderFor(t, testenv.OIDCConfig{
		Users: []testenv.OIDCUser{
			{ID: "8c2f-alice", Username: "alice", Password: "alice-pw", Groups: []string{"/ska"},
				Scopes: []string{"storage.read:/alice"}},
			{ID: "0d1e-root", Username: "root", Password: "root-pw", Groups: []string{"/ska", "/ska/staging-admins"}},
		},
		Clients: []testenv.OIDCClient{
			{ID: "staging-named", RedirectURIs: []string{"http://127.0.0.1:1/callback"}, Audience: []string{oidcAudience},
				UsernameInToken: true, GroupsClaims: []string{"groups"}},
			{ID: "other-app", Secret: "other-secret", UsernameInToken: true},
		},
	})
	verifier := func(storageScopes bool) *oidc.Verifier {
		v, err := oidc.NewVerifier(oidc.Config{IssuerURL: p.Issuer, Audience: oidcAudience,
			AdminGroups: []string{"/ska/staging-admins"}, StorageScopes: storageScopes})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ctx := context.Background()
	alice := p.Login(t, "staging-named", "alice", "alice-pw", "openid", "profile", "storage.read:/alice").AccessToken
	root := p.Login(t, "staging-named", "root", "root-pw").AccessToken

	t.Run("no token is anonymous", func(t *testing.T) {
		c, err := NewOIDC(verifier(false), false).Caller(ctx, "")
		if err != nil || c.Name != "" || c.Admin {
			t.Fatalf("caller %+v, %v; want anonymous", c, err)
		}
	})
	t.Run("a user, an admin by group", func(t *testing.T) {
		a := NewOIDC(verifier(false), false)
		c, err := a.Caller(ctx, alice)
		if err != nil || c.Name != "alice" || c.Admin || c.Token != alice || c.Reads != nil {
			t.Fatalf("alice: %+v, %v", c, err)
		}
		c, err = a.Caller(ctx, root)
		if err != nil || c.Name != "root" || !c.Admin {
			t.Fatalf("root: %+v, %v", c, err)
		}
	})
	t.Run("storage scopes bound reads when on", func(t *testing.T) {
		c, err := NewOIDC(verifier(true), true).Caller(ctx, alice)
		if err != nil || c.Reads == nil {
			t.Fatalf("alice with storage scopes: %+v, %v", c, err)
		}
		if !c.Reads.CanRead("alice/obs/vis.ms", false) || c.Reads.CanRead("bob/x", false) {
			t.Fatal("storage.read:/alice read wrongly")
		}
	})

	for _, tc := range []struct {
		name   string
		token  func(t *testing.T) string
		kind   staging.Kind
		detail string
	}{
		{"a token for another audience", func(t *testing.T) string { return p.ClientCredentials(t, "other-app").AccessToken },
			staging.Unauthenticated, "The access token is not meant for this service"},
		{"a token from another issuer", func(t *testing.T) string {
			other := testenv.OIDCProviderFor(t, testenv.OIDCConfig{Users: []testenv.OIDCUser{{ID: "x", Username: "alice", Password: "pw"}},
				Clients: []testenv.OIDCClient{{ID: "staging-named", RedirectURIs: []string{"http://127.0.0.1:1/callback"},
					Audience: []string{oidcAudience}, UsernameInToken: true}}})
			return other.Login(t, "staging-named", "alice", "pw").AccessToken
		}, staging.Unauthenticated, "The access token is from another identity provider"},
		{"not a token", func(*testing.T) string { return "not-a-jwt" },
			staging.Unauthenticated, "The access token is not accepted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := tc.token(t)
			_, err := NewOIDC(verifier(false), false).Caller(ctx, token)
			kind, detail := staging.KindOf(err)
			if kind != tc.kind || detail != tc.detail {
				t.Fatalf("refusal %v %q (%v), want %v %q", kind, detail, err, tc.kind, tc.detail)
			}
		})
	}

	t.Run("an expired token", func(t *testing.T) {
		p.SetClock(t, -10*time.Minute) // tokens live 5 minutes: this one ended 5 minutes ago
		defer p.SetClock(t, 0)
		token := p.Login(t, "staging-named", "alice", "alice-pw").AccessToken
		_, err := NewOIDC(verifier(false), false).Caller(ctx, token)
		if kind, detail := staging.KindOf(err); kind != staging.Unauthenticated || detail != "The access token has expired" {
			t.Fatalf("refusal %v %q (%v)", kind, detail, err)
		}
	})
	t.Run("a provider that cannot be asked", func(t *testing.T) {
		// A new verifier has neither the discovery document nor the keys,
		// so a token sends it to the provider.
		v := verifier(false)
		p.Stop()
		defer p.Start()
		_, err := NewOIDC(v, false).Caller(ctx, alice)
		if kind, detail := staging.KindOf(err); kind != staging.Unavailable ||
			detail != "Cannot check the token: the identity provider is unreachable" {
			t.Fatalf("refusal %v %q (%v)", kind, detail, err)
		}
	})
}
