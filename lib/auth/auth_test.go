package auth

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/jupyterhub"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestToken(t *testing.T) {
	for _, tc := range []struct{ header, fallback, want string }{
		{"token abc", "", "abc"},
		{"Bearer abc", "x", "abc"},
		{"bearer  abc ", "", "abc"},
		{"", "fromquery", "fromquery"},
		{"Basic dXNlcjpwYXNz", "fromquery", "fromquery"},
		{"token ", "fromquery", "fromquery"},
		{"abc", "", ""},
	} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		if got := Token(r, tc.fallback); got != tc.want {
			t.Errorf("Authorization %q, fallback %q: %q, want %q", tc.header, tc.fallback, got, tc.want)
		}
	}
}

func TestNoneAllowsEveryone(t *testing.T) {
	var a *Authorizer = ForMode("none", nil)
	if a.Enabled() || a.Authorize(context.Background(), "", "anyone") != nil {
		t.Fatal("AUTH_MODE=none refused a request")
	}
}

// TestAuthorize asks a real hub: the owner and an admin pass, others get
// 403, unknown tokens 401, and a hub that is down 503 (unless the answer is
// cached).
func TestAuthorize(t *testing.T) {
	hub := testenv.HubFor(t)
	client, err := jupyterhub.New(hub.URL)
	if err != nil {
		t.Fatal(err)
	}
	a := ForMode("jupyterhub", client)
	owner, admin, other := hub.NewHubUser(t, "owner", false), hub.NewHubUser(t, "boss", true), hub.NewHubUser(t, "other", false)
	ownerTok, adminTok, otherTok := hub.UserToken(t, owner), hub.UserToken(t, admin), hub.UserToken(t, other)
	ctx := context.Background()
	for _, tc := range []struct {
		name, token string
		status      int
	}{
		{"owner", ownerTok, 0},
		{"admin", adminTok, 0},
		{"another user", otherTok, http.StatusForbidden},
		{"no token", "", http.StatusUnauthorized},
		{"unknown token", "0123456789abcdef", http.StatusUnauthorized},
		{"service token (no user)", hub.Token, http.StatusForbidden},
	} {
		err := a.Authorize(ctx, tc.token, owner)
		status := 0
		if err != nil {
			status, _ = staging.StatusOf(err)
		}
		if status != tc.status {
			t.Errorf("%s: status %d (%v), want %d", tc.name, status, err, tc.status)
		}
		if err != nil && tc.token != "" && strings.Contains(err.Error(), tc.token) {
			t.Errorf("%s: the error shows the token", tc.name)
		}
	}
	hub.Stop()
	if err := a.Authorize(ctx, ownerTok, owner); err != nil {
		t.Errorf("cached owner refused while the hub is down: %v", err)
	}
	fresh := New(client, time.Minute)
	if status, _ := staging.StatusOf(fresh.Authorize(ctx, ownerTok, owner)); status != http.StatusServiceUnavailable {
		t.Errorf("hub down: status %d, want 503", status)
	}
}
