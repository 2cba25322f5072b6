package main

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/jupyterhub"
)

// TestStoppedServerAnswers: once a user's server is stopped (its control
// panel, an idle culler), the hub answers in its place on /user/<name>/:
// a redirect for a GET (which, followed, ends in a 404 that reads as a
// missing file) and 405 for the methods that write. The client does not
// follow the redirect, and jupyter_copy tells both as a server that is not
// running (see TestContentsErrorStatus), not as a missing file or a
// request the server refused.
func TestStoppedServerAnswers(t *testing.T) {
	hub := testenv.Hub(t)
	user := hub.NewHubUser(t, "stopped", false)
	hub.StartServer(t, user)
	c, err := jupyterhub.New(hub.URL)
	must(t, err)
	ctx := context.Background()
	access := c.ServerAccess(hub.StagingToken, user, 0, "stopped server test")
	defer access.Close(ctx)
	contents := c.Contents("/user/"+user+"/", access)
	if _, err := contents.Get(ctx, "", false); err != nil {
		t.Fatalf("running server: %v", err)
	}
	hub.StopServer(t, user)
	if _, err := contents.Get(ctx, "missing.txt", false); jupyterhub.StatusOf(err) != http.StatusFound {
		t.Fatalf("GET on a stopped server: %v, want the hub's 302 unfollowed", err)
	}
	if _, err := contents.Upload(ctx, "f.txt", bytes.NewReader([]byte("f")), 1, 0, func(int64) {}); jupyterhub.StatusOf(err) != http.StatusMethodNotAllowed {
		t.Fatalf("PUT on a stopped server: %v, want 405", err)
	}
}
