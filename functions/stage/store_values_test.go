package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// storeBackends are the two databases the function may keep its records in.
var storeBackends = []struct {
	name string
	url  func(t *testing.T) string
}{
	{"sqlite", func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "staging.db") }},
	{"mariadb", func(t *testing.T) string { return testenv.MariaDB(t) }},
}

// inProcessOn is the stage function in this process over fresh storage
// (with an RSE) and the database at databaseURL.
func inProcessOn(t *testing.T, databaseURL string) (*function.Function, *httptest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	source := filepath.Join(dir, "source")
	must(t, os.MkdirAll(filepath.Join(source, "rse"), 0o755))
	fn, handler := inProcessAPI(t, map[string]string{"SOURCE_STORAGE_PATH": source, "TARGET_STORAGE_PATH": filepath.Join(dir, "areas"),
		"DATABASE_URL": databaseURL, "LOGGING_LEVEL": "WARNING", "LOG_TO_STORE": "false",
		"RUCIO_RSE": "SKAO_SITE", "RUCIO_RSE_ROOT": filepath.Join(source, "rse")})
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return fn, srv, source
}

func postJSON(t *testing.T, u string, body any) (int, map[string]any) {
	t.Helper()
	b, err := json.Marshal(body)
	must(t, err)
	resp, err := http.Post(u, "application/json", bytes.NewReader(b))
	must(t, err)
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestDIDsWithSpacesRefused: a DID with a space or a control character is
// 422 naming did, and nothing is recorded. MariaDB's utf8mb4_bin is a PAD
// SPACE collation: "skao:late.dat " was recorded as waiting (202), and a
// transfer of skao:late.dat then completed it with that replica.
func TestDIDsWithSpacesRefused(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			fn, srv, _ := inProcessOn(t, b.url(t))
			for _, did := range []string{"skao:late.dat ", "skao:late.dat\t", " skao:late.dat", "skao:late .dat",
				"skao :late.dat", "skao:late.dat\x00", "skao:late.dat\u00a0", "skao:late.dat\u2028"} {
				t.Run(url.QueryEscape(did), func(t *testing.T) {
					status, out := postJSON(t, srv.URL+"/stage_data?method=local_copy&username=alice",
						map[string]any{"data": map[string]string{"did": did, "relative_path": "late.dat"}})
					if status != http.StatusUnprocessableEntity || out["detail"] != "did contains a space or a control character" {
						t.Fatalf("%q: %d %v, want 422 naming did", did, status, out)
					}
				})
			}
			ops, err := fn.Store.List(context.Background(), staging.Filter{})
			if err != nil || len(ops) != 0 {
				t.Fatalf("recorded %d operations (%v), want none", len(ops), err)
			}
		})
	}
}

// TestReadsNeverMatchPaddedNames: an operation id with trailing spaces is
// not found (MariaDB found "<id> " as <id>: 200), and a caller whose name
// from its token is not a username ("alice ", as a hub or an identity
// provider may answer) is refused before the store is asked, which on
// MariaDB listed alice's operations.
func TestReadsNeverMatchPaddedNames(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			fn, srv, source := inProcessOn(t, b.url(t))
			must(t, os.WriteFile(filepath.Join(source, "f.txt"), []byte("data"), 0o644))
			status, out := postJSON(t, srv.URL+"/stage_data?method=local_copy&username=alice",
				map[string]any{"data": map[string]string{"local_path_on_storage": "f.txt", "relative_path": "f.txt"}})
			if status != http.StatusOK {
				t.Fatalf("stage: %d %v", status, out)
			}
			id, _ := out["id"].(string)

			for _, c := range []struct{ name, id string }{
				{"trailing spaces", id + "   "}, {"trailing tab", id + "\t"}, {"NUL", id + "\x00"}, {"not UTF-8", id + "\xff"},
			} {
				t.Run("GET "+c.name, func(t *testing.T) {
					resp, err := http.Get(srv.URL + "/operations/" + url.PathEscape(c.id))
					must(t, err)
					resp.Body.Close()
					if resp.StatusCode != http.StatusNotFound {
						t.Fatalf("GET /operations/%q: %d, want 404", c.id, resp.StatusCode)
					}
				})
			}

			for _, name := range []string{"alice ", "alice  ", "alice\x00", "al\xffice", "service:alice"} {
				t.Run("list as "+url.QueryEscape(name), func(t *testing.T) {
					ops, err := fn.Service.Operations(context.Background(), staging.Caller{Name: name}, staging.Filter{})
					if k, _ := staging.KindOf(err); k != staging.Forbidden {
						t.Fatalf("caller %q: %d operations, %v; want forbidden", name, len(ops), err)
					}
				})
			}
			if ops, err := fn.Service.Operations(context.Background(), staging.Caller{Name: "alice"}, staging.Filter{}); err != nil || len(ops) != 1 {
				t.Fatalf("alice's own: %d operations, %v", len(ops), err)
			}
		})
	}
}

// TestRefusalNamingBytesNotUTF8: a request refused for a file whose name
// is not UTF-8 (a link inside the folder to copy, leading out of the
// storage, found as the copy runs) is recorded with that name made text
// (U+FFFD), as the answer shows it. MariaDB refused the reason's bytes:
// the outcome was retried for 10 s as if the database were away, the
// client got 503 "Database unavailable", and the record stayed running;
// SQLite kept the bytes, which no JSON answer can name.
func TestRefusalNamingBytesNotUTF8(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			fn, srv, source := inProcessOn(t, b.url(t))
			dir := filepath.Join(source, "tree")
			must(t, os.MkdirAll(dir, 0o755))
			must(t, os.WriteFile(filepath.Join(dir, "ok.txt"), []byte("data"), 0o644))
			must(t, os.Symlink("/etc", filepath.Join(dir, "out\xff")))
			status, out := postJSON(t, srv.URL+"/stage_data?method=local_copy&username=alice",
				map[string]any{"data": map[string]string{"local_path_on_storage": "tree", "relative_path": "tree"}})
			const detail = "Source folder holds a link leading outside it: tree/out\uFFFD"
			if status != http.StatusForbidden || out["detail"] != detail {
				t.Fatalf("stage: %d %v, want 403 %q", status, out, detail)
			}
			ops, err := fn.Store.List(context.Background(), staging.Filter{Username: "alice"})
			if err != nil || len(ops) != 1 || ops[0].Status != staging.StatusFailed || ops[0].ErrorReason != detail {
				t.Fatalf("records %+v (%v), want the refusal with reason %q", ops, err, detail)
			}
		})
	}
}
