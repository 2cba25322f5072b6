package main

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// A user whose storage.read scopes cover only some folders learns nothing
// of what lies outside them: a path there is refused alike whether it
// exists or not, is a file, a folder or a link, or is reached through a
// link inside a covered folder.
func TestScopesHideWhatLiesOutside(t *testing.T) {
	p := idp(t)
	s := startStage(t, oidcEnv(p, map[string]string{"AUTHZ_STORAGE_SCOPES": "true"}))
	s.write(t, "public/obs.fits", "public data")
	s.write(t, "private/bob/secret.fits", "bob's data")
	must(t, os.Symlink("../private/bob", filepath.Join(s.Source, "public/to-bob")))
	must(t, os.Symlink("/etc", filepath.Join(s.Source, "private/bob/out")))
	carol := login(t, p, "carol", "storage.read:/public")

	browse := func(dir string) *testenv.Response {
		return testenv.Do(t, http.MethodGet, s.URL+"/browse?path="+url.QueryEscape(dir), nil, bearer(carol)...)
	}
	stage := func(src string) *testenv.Response {
		return s.stageAs(t, carol, "carol", src, "x")
	}
	download := func(src string) *testenv.Response {
		return testenv.Do(t, http.MethodGet, s.URL+"/stage_data?method=direct_download&username=carol&local_path_on_storage="+url.QueryEscape(src), nil, bearer(carol)...)
	}
	for _, tc := range []struct {
		name, path string
		status     int
		detail     string
	}{
		{"browse a folder outside", "private/bob", 403, "The token does not allow browsing private/bob"},
		{"browse a missing folder outside", "private/alice", 403, "The token does not allow browsing private/alice"},
		{"browse a file outside", "private/bob/secret.fits", 403, "The token does not allow browsing private/bob/secret.fits"},
		{"browse a missing file outside", "private/bob/none.fits", 403, "The token does not allow browsing private/bob/none.fits"},
		{"browse a link outside leading out", "private/bob/out", 403, "The token does not allow browsing private/bob/out"},
		{"browse through a link, existing", "public/to-bob", 403, "The token does not allow browsing public/to-bob"},
		{"browse through a link, missing", "public/to-bob/none", 403, "The token does not allow browsing public/to-bob/none"},
		{"browse with .., missing", "public/../private/none", 403, "The token does not allow browsing public/../private/none"},
		{"browse own, missing", "public/none", 400, "Source path does not exist: public/none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := browse(tc.path)
			if r.Status != tc.status || r.Str("detail") != tc.detail {
				t.Errorf("%d %s, want %d %q", r.Status, r.Body, tc.status, tc.detail)
			}
		})
	}
	for _, tc := range []struct {
		name, path string
		status     int
		detail     string
	}{
		{"a file outside", "private/bob/secret.fits", 403, "The token does not allow reading private/bob/secret.fits"},
		{"a missing file outside", "private/bob/none.fits", 403, "The token does not allow reading private/bob/none.fits"},
		{"a link outside leading out", "private/bob/out", 403, "The token does not allow reading private/bob/out"},
		{"beyond a link outside leading out", "private/bob/out/passwd", 403, "The token does not allow reading private/bob/out/passwd"},
		{"through a link, existing", "public/to-bob/secret.fits", 403, "The token does not allow reading public/to-bob/secret.fits"},
		{"through a link, missing", "public/to-bob/none.fits", 403, "The token does not allow reading public/to-bob/none.fits"},
		{"own, missing", "public/none.fits", 400, "Source path does not exist: public/none.fits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for door, r := range map[string]*testenv.Response{"stage": stage(tc.path), "download": download(tc.path)} {
				if r.Status != tc.status || r.Str("detail") != tc.detail {
					t.Errorf("%s: %d %s, want %d %q", door, r.Status, r.Body, tc.status, tc.detail)
				}
			}
		})
	}
}

// A user's own event naming an operation (a hand-off) learns nothing of
// another user's operations: their ids are answered as unknown ones are,
// whatever their state, and nothing about them reaches the sender's log.
func TestHandoffsDoNotTellOthersOperations(t *testing.T) {
	p := idp(t)
	s := startStage(t, oidcEnv(p, nil))
	s.write(t, "data/file", "content")
	alice, bob := login(t, p, "alice"), login(t, p, "bob")
	finished := s.stageAs(t, bob, "bob", "data/file", "b").Str("id")
	pending := s.stageAs(t, bob, "bob", "data/file", "later", "Prefer", "respond-async").Str("id")
	const unknown = "01890a5d-ac96-774b-bcce-b302099a8057"
	for _, tc := range []struct{ name, id string }{
		{"unknown", unknown}, {"bob's finished", finished}, {"bob's pending", pending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := cetest.RequestEvent(t, "handoff-"+tc.id, staging.Request{Method: "local_copy", Username: "alice",
				Source: "data/file", Target: "b", OperationID: tc.id})
			status, answer := sendRawHeader(t, s.URL+"/", ev, bearer(alice)...)
			if status != 404 || !strings.Contains(answer, "Operation not found: "+tc.id) {
				t.Errorf("%d %s, want 404 Operation not found", status, answer)
			}
		})
	}
	logs := s.Logs()
	for _, id := range []string{finished, pending} {
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, id) && strings.Contains(line, `"username":"alice"`) {
				t.Errorf("alice's log names bob's operation: %s", line)
			}
		}
	}
}
