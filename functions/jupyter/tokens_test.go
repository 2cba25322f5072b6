package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
)

// TestServiceTokenNeverReachesServer: with a service token of exactly the
// scopes the README asks for (no access:servers), the user's server (the
// user's own code) records the Authorization headers it receives. The service token,
// and a jupyter_token of someone else, never arrive there; a token owned by
// the user, minted for their server only, does, and is deleted afterwards.
func TestServiceTokenNeverReachesServer(t *testing.T) {
	hub := testenv.Hub(t)
	s := startStack(t, hub, nil, nil)
	user := hub.NewHubUser(t, "spied", false)
	log := filepath.Join(t.TempDir(), "authorization.log")
	hub.RecordAuthorization(t, user, log)
	hub.StartServer(t, user)
	received := func() string {
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatalf("the server recorded nothing: %v", err)
		}
		return string(b)
	}
	minted := func() int {
		n := 0
		for _, tok := range hub.Tokens(t, user) {
			if tok["note"] == methods.MintedTokenNote {
				n++
			}
		}
		return n
	}

	s.write(t, "tree/a.txt", []byte("a"))
	s.write(t, "tree/sub/b.txt", []byte("bb"))
	expect(t, s.stage(t, user, "tree", "with-service/tree", ""), http.StatusOK, "status", "success")
	if b, err := os.ReadFile(filepath.Join(hub.Home(user), "with-service/tree/sub/b.txt")); err != nil || string(b) != "bb" {
		t.Fatalf("workspace holds %q, %v", b, err)
	}
	got := received()
	if !strings.Contains(got, "token ") {
		t.Fatalf("the server recorded no token at all (the recording does not work?): %q", got)
	}
	if strings.Contains(got, hub.StagingToken) || strings.Contains(got, hub.Token) {
		t.Fatal("the service token reached the user's server")
	}
	if n := minted(); n != 0 {
		t.Fatalf("%d minted tokens left after the staging", n)
	}

	// A hub admin staging for the user with their own token: it never
	// reaches the user's server either.
	admin := hub.NewHubUser(t, "spiedadmin", true)
	adminTok := hub.UserToken(t, admin)
	src := s.write(t, "admin.txt", []byte("from the admin"))
	expect(t, s.stage(t, user, src, "admin.txt", "&jupyter_token="+adminTok), http.StatusOK, "status", "success")
	if got := received(); strings.Contains(got, adminTok) || strings.Contains(got, hub.StagingToken) {
		t.Fatal("the admin's token or the service token reached the user's server")
	}
	if n := minted(); n != 0 {
		t.Fatalf("%d minted tokens left after the staging", n)
	}

	// A non-admin's token for someone else is refused.
	other := hub.NewHubUser(t, "spiedother", false)
	otherTok := hub.UserToken(t, other)
	expect(t, s.stage(t, user, src, "other.txt", "&jupyter_token="+otherTok), http.StatusForbidden,
		"detail", "jupyter_token belongs to "+other+", not "+user)
	if strings.Contains(received(), otherTok) {
		t.Fatal("someone else's token reached the user's server")
	}

	// An admin's token made only to identify them (as one the hub gives
	// another service) acts as nobody's admin: refused too.
	identifyTok := hub.UserTokenWith(t, admin, []string{"read:users:name!user=" + admin})
	expect(t, s.stage(t, user, src, "identify.txt", "&jupyter_token="+identifyTok), http.StatusForbidden,
		"detail", "jupyter_token belongs to "+admin+", not "+user)
	if got := received(); strings.Contains(got, identifyTok) || strings.Contains(got, hub.StagingToken) {
		t.Fatal("the admin's identify-only token or the service token reached the user's server")
	}

	// The user's own token is theirs to send to their server.
	ownTok := hub.UserToken(t, user)
	own := s.write(t, "own.txt", []byte("own"))
	expect(t, s.stage(t, user, own, "own.txt", "&jupyter_token="+ownTok), http.StatusOK, "status", "success")

	// Without a service token, an admin's token for someone else is refused.
	bare := startStack(t, hub, nil, map[string]string{"JUPYTERHUB_API_TOKEN": ""})
	bsrc := bare.write(t, "admin.txt", []byte("from the admin"))
	expect(t, bare.stage(t, user, bsrc, "bare.txt", "&jupyter_token="+adminTok), http.StatusForbidden,
		"detail", "jupyter_token belongs to "+admin+", not "+user)
	if got := received(); strings.Contains(got, adminTok) || strings.Contains(got, hub.StagingToken) {
		t.Fatal("the admin's token or the service token reached the user's server")
	}
}
