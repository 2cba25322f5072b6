package main

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
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
