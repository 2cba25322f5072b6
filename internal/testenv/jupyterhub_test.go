package testenv

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestJupyterHub checks the harness against the real hub: users, tokens,
// servers with their workspace in Home, and a hub that stops and comes back
// with its users.
func TestJupyterHub(t *testing.T) {
	h := HubFor(t)
	user := h.NewHubUser(t, "harness", false)
	if again := h.NewHubUser(t, "harness", false); again == user {
		t.Fatalf("NewHubUser gave %s twice", user)
	}
	status, b, err := h.call(http.MethodGet, "/hub/api/user", h.UserToken(t, user), nil)
	var who struct {
		Name  string `json:"name"`
		Admin bool   `json:"admin"`
	}
	if err != nil || status != http.StatusOK || json.Unmarshal(b, &who) != nil || who.Name != user || who.Admin {
		t.Fatalf("token owner: %d %s %v", status, b, err)
	}
	if h.ServerRunning(t, user) {
		t.Fatal("a new user's server is running")
	}
	h.StartServer(t, user)
	status, b, err = h.api(http.MethodPut, "/user/"+user+"/api/contents/probe.txt",
		map[string]any{"type": "file", "format": "text", "content": "probe"})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("contents API: %d %s %v", status, b, err)
	}
	if got, err := os.ReadFile(filepath.Join(h.Home(user), "probe.txt")); err != nil || string(got) != "probe" {
		t.Fatalf("workspace holds %q, %v", got, err)
	}
	h.StopServer(t, user)

	h.Stop()
	if _, _, err := h.api(http.MethodGet, "/hub/api/", nil); err == nil {
		t.Fatal("the hub answers after Stop")
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	if status, b, _ := h.api(http.MethodGet, "/hub/api/users/"+user, nil); status != http.StatusOK {
		t.Fatalf("user lost across a restart: %d %s", status, b)
	}
}
