package auth

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/jupyterhub"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
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

func TestNoneTrustsEveryone(t *testing.T) {
	c, err := None{}.Caller(context.Background(), "")
	if err != nil || !c.Admin {
		t.Fatalf("AUTH_MODE=none: %+v %v, want the trusted caller", c, err)
	}
}

// TestJupyterHubCaller asks a real hub whose tokens are whose: the owner
// acts for themselves, an admin for anyone, others are refused by the
// pipeline's rule; unknown tokens are unauthenticated, and a hub that is
// down is unavailable (unless the answer is cached).
func TestJupyterHubCaller(t *testing.T) {
	hub := testenv.HubFor(t)
	client, err := jupyterhub.New(hub.URL)
	if err != nil {
		t.Fatal(err)
	}
	a := NewJupyterHub(client, "staging", 0)
	owner, admin, other := hub.NewHubUser(t, "owner", false), hub.NewHubUser(t, "boss", true), hub.NewHubUser(t, "other", false)
	ownerTok, adminTok, otherTok := hub.UserToken(t, owner), hub.UserToken(t, admin), hub.UserToken(t, other)
	// Tokens the hub made for other uses: to identify their owner only (as
	// through OAuth to another service), or to act in the owner's server.
	identify := func(user string) string { return hub.UserTokenWith(t, user, []string{"read:users:name!user=" + user}) }
	servers := func(user string) string { return hub.UserTokenWith(t, user, []string{"access:servers!user=" + user}) }
	ctx := context.Background()
	for _, tc := range []struct {
		name, token string
		status      int // of authenticating, then of acting for owner
	}{
		{"owner", ownerTok, 0},
		{"admin", adminTok, 0},
		{"owner's identify-only token", identify(owner), http.StatusForbidden},
		{"admin's identify-only token", identify(admin), http.StatusForbidden},
		{"owner's token for their servers", servers(owner), 0},
		{"admin's token without admin scopes", servers(admin), http.StatusForbidden},
		{"admin's token with admin scopes only", hub.UserTokenWith(t, admin, []string{"admin:users"}), 0},
		{"another user", otherTok, http.StatusForbidden},
		{"no token", "", http.StatusUnauthorized},
		{"unknown token", "0123456789abcdef", http.StatusUnauthorized},
		{"service token (no user)", hub.Token, http.StatusForbidden},
	} {
		c, err := a.Caller(ctx, tc.token)
		if err == nil {
			err = staging.AuthorizeRead(c, owner)
		}
		status := 0
		if err != nil {
			status, _ = httpx.Status(err)
		}
		if status != tc.status {
			t.Errorf("%s: status %d (%v), want %d", tc.name, status, err, tc.status)
		}
		if err != nil && tc.token != "" && strings.Contains(err.Error(), tc.token) {
			t.Errorf("%s: the error shows the token", tc.name)
		}
	}
	hub.Stop()
	if c, err := a.Caller(ctx, ownerTok); err != nil || c.Name != owner || c.Token != ownerTok {
		t.Errorf("cached owner while the hub is down: %+v %v", c, err)
	}
	fresh := NewJupyterHub(client, "staging", time.Minute)
	if _, err := fresh.Caller(ctx, ownerTok); func() int { s, _ := httpx.Status(err); return s }() != http.StatusServiceUnavailable {
		t.Errorf("hub down: %v, want 503", err)
	}
}

// Tokens the cache does not know are asked about at most maxHubChecks at
// once: beyond, while the hub is slow to answer, 429, not one more
// connection to the hub each.
func TestJupyterHubChecksBounded(t *testing.T) {
	release := make(chan struct{})
	var asked atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		<-release // a hub that takes its time
		w.WriteHeader(http.StatusForbidden)
	}))
	defer slow.Close()
	defer close(release)
	client, err := jupyterhub.New(slow.URL)
	if err != nil {
		t.Fatal(err)
	}
	a := NewJupyterHub(client, "", 0)
	for i := range maxHubChecks {
		go a.Caller(context.Background(), fmt.Sprintf("token-%d", i))
	}
	testenv.WaitFor(t, 10*time.Second, "every place taken", func() bool { return asked.Load() == maxHubChecks })
	_, err = a.Caller(context.Background(), "one more")
	if k, _ := staging.KindOf(err); k != staging.TooMany {
		t.Fatalf("with %d checks in flight: %v, want too many", maxHubChecks, err)
	}
	if asked.Load() != maxHubChecks {
		t.Fatalf("the hub was asked %d times", asked.Load())
	}
}

// A question to the hub is answered promptly, whatever the token or the
// hub: a token too long to be the hub's is refused without asking (the
// real hub answers 431 to one over its header limit, which read as the hub
// failing), and a hub that starts an answer and never ends it costs a 503
// after the check's timeout, not the whole of the client's patience.
func TestJupyterHubAnswersPromptly(t *testing.T) {
	hub := testenv.HubFor(t)
	endless := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"name":`))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer endless.Close()
	for _, tc := range []struct {
		name, hubURL, token string
		status              int
	}{
		{"an unknown token", hub.URL, "0123456789abcdef", http.StatusUnauthorized},
		{"a token of 64 KiB", hub.URL, strings.Repeat("a", 64<<10), http.StatusUnauthorized},
		{"a token of 900 KiB", hub.URL, strings.Repeat("a", 900<<10), http.StatusUnauthorized},
		{"a hub that never finishes its answer", endless.URL, "0123456789abcdef", http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := jupyterhub.New(tc.hubURL)
			if err != nil {
				t.Fatal(err)
			}
			a := NewJupyterHub(client, "staging", 0)
			a.timeout = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			_, err = a.Caller(ctx, tc.token)
			took := time.Since(start)
			if status, _ := httpx.Status(err); status != tc.status {
				t.Errorf("status %d (%v), want %d", status, err, tc.status)
			}
			if took > 2*time.Second {
				t.Errorf("answered after %v", took.Round(time.Millisecond))
			}
			if err != nil && len(tc.token) > 16 && strings.Contains(err.Error(), tc.token[:16]) {
				t.Errorf("the error shows the token")
			}
		})
	}
}
