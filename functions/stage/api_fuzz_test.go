package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// FuzzDecodeItems checks the body decoder of POST /stage_data: any data is
// refused as invalid with a detail, or gives 1 to maxBatch requests, a
// batch exactly when data is an array, a single item with its fields, and
// never a hand-off's operation id.
func FuzzDecodeItems(f *testing.F) {
	for _, seed := range []struct{ data, method string }{
		{`{"local_path_on_storage":"a","relative_path":"b"}`, "local_copy"},
		{`{"local_path_on_storage":"a"}`, "direct_download"},
		{`{"local_path_on_storage":"a"}`, "local_copy"},
		{`{"did":"user.jdoe:x.fits","relative_path":"b"}`, "local_copy"},
		{`[{"local_path_on_storage":"a","relative_path":"b"},{"relative_path":"c"}]`, "local_symlink"},
		{`[]`, "local_copy"}, {`null`, "local_copy"}, {` `, "local_copy"}, {`"x"`, "local_copy"},
		{`{"local_path_on_storage":1}`, "local_copy"}, {`[1,2]`, "local_copy"}, {`[` + strings.Repeat(`{},`, 1000) + `{}]`, "local_copy"},
		{strings.Repeat("[", 5000), "local_copy"}, {`{"local_path_on_storage":"\u0000","relative_path":"\ud800"}`, "x"},
	} {
		f.Add([]byte(seed.data), seed.method)
	}
	f.Fuzz(func(t *testing.T, data []byte, method string) {
		items, batch, err := decodeItems(json.RawMessage(data))
		if err != nil {
			var se *staging.Error
			if !errors.As(err, &se) || se.Kind != staging.Invalid || se.Detail == "" {
				t.Fatalf("decodeItems(%q): %v, want invalid with a detail", data, err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("decodeItems accepted invalid JSON %q", data)
		}
		if len(items) < 1 || len(items) > maxBatch {
			t.Fatalf("decodeItems(%q) gave %d items", data, len(items))
		}
		if isArray := bytes.TrimSpace(data)[0] == '['; batch != isArray {
			t.Fatalf("decodeItems(%q): batch %v", data, batch)
		}
		if !batch {
			var want struct {
				Source string `json:"local_path_on_storage"`
				Target string `json:"relative_path"`
				DID    string `json:"did"`
			}
			json.Unmarshal(data, &want)
			if it := items[0]; it.Source != want.Source || it.Target != want.Target || it.DID != want.DID || it.OperationID != "" {
				t.Fatalf("decodeItems(%q) = %+v", data, it)
			}
		}
		for _, it := range items {
			if it.OperationID != "" || it.EventID != "" {
				t.Fatalf("an HTTP item named an operation or an event: %+v", it)
			}
		}
	})
}

// FuzzStageRequest sends arbitrary queries and bodies to the stage
// function's routes, in process over an embedded SQLite store and real
// storage with links that lead out, and checks what every answer must be:
// never a 5xx, every error a JSON detail, nothing written outside the
// users' areas, the source untouched and no temporary file left behind.
func FuzzStageRequest(f *testing.F) {
	dir := f.TempDir()
	source, target, outside := filepath.Join(dir, "source"), filepath.Join(dir, "areas"), filepath.Join(dir, "outside")
	check := func(err error) {
		if err != nil {
			f.Fatal(err)
		}
	}
	for _, d := range []string{source + "/obs/tree/sub", target + "/alice", outside} {
		check(os.MkdirAll(d, 0o755))
	}
	for name, content := range map[string]string{"obs/a.txt": "a", "obs/tree/x": "x", "obs/tree/sub/y": "yy", "../outside/secret": "s"} {
		check(os.WriteFile(filepath.Join(source, name), []byte(content), 0o644))
	}
	check(os.Symlink("../outside/secret", filepath.Join(source, "escape")))
	check(os.Symlink("../../outside", filepath.Join(target, "alice", "out")))
	check(os.Symlink("../outside", filepath.Join(target, "mallory")))
	fn, handler := inProcessAPI(f, map[string]string{"SOURCE_STORAGE_PATH": source, "TARGET_STORAGE_PATH": target,
		"DATABASE_URL": "sqlite://" + filepath.Join(dir, "staging.db"), "LOG_TO_STORE": "false", "LOGGING_LEVEL": "ERROR",
		"ENABLE_FILE_CREATOR": "false"})
	sourceBefore, outsideBefore := tree(f, source), tree(f, outside)

	for _, seed := range []struct{ method, query, body string }{
		{"POST", "method=local_copy&username=alice", `{"data":{"local_path_on_storage":"obs/a.txt","relative_path":"a"}}`},
		{"POST", "method=local_symlink&username=alice", `{"data":{"local_path_on_storage":"obs/tree","relative_path":"t"}}`},
		{"POST", "method=local_copy&username=alice", `{"data":{"local_path_on_storage":"escape","relative_path":"e"}}`},
		{"POST", "method=local_copy&username=alice", `{"data":{"local_path_on_storage":"obs/a.txt","relative_path":"out/x"}}`},
		{"POST", "method=local_copy&username=mallory", `{"data":{"local_path_on_storage":"obs/a.txt","relative_path":"x"}}`},
		{"POST", "method=local_copy&username=..", `{"data":{"local_path_on_storage":"obs/a.txt","relative_path":"x"}}`},
		{"POST", "method=local_copy&username=alice", `{"data":[{"local_path_on_storage":"/etc","relative_path":"../x"},{"local_path_on_storage":"obs","relative_path":"o"}]}`},
		{"POST", "method=direct_download&username=alice", `{"data":{"local_path_on_storage":"obs/tree"}}`},
		{"GET", "method=direct_download&username=alice&local_path_on_storage=obs%2Fa.txt", ``},
		{"GET", "method=direct_download&username=alice&local_path_on_storage=%2e%2e%2foutside", ``},
		{"POST", "method=local_copy&method=local_symlink&username=alice;x", `{"data":{}}`},
		{"POST", "method=jupyter_copy&username=alice&jupyter_token=t", `{"data":{"local_path_on_storage":"obs","relative_path":"j"}}`},
		{"GET", "username=alice&status=running&limit=0", ``},
		{"GET", "limit=1001&status=x", ``},
		{"POST", "", `{"specversion":"1.0"}`},
	} {
		f.Add(seed.method, seed.query, []byte(seed.body))
	}
	paths := map[string]string{"POST": "/stage_data", "GET": "/stage_data"}
	f.Fuzz(func(t *testing.T, method, query string, body []byte) {
		for _, path := range []string{paths[method], "/operations", "/"} {
			if path == "" || (path != "/stage_data" && method != "GET" && path != "/") {
				continue
			}
			r := httptest.NewRequest(http.MethodGet, "/", bytes.NewReader(body))
			r.Method = method
			r.URL.Path, r.URL.RawQuery = path, query
			w := httptest.NewRecorder()
			handler.ServeHTTP(w, r)
			fn.Service.Shutdown(context.Background())
			if w.Code >= 500 {
				t.Fatalf("%s %s?%s %q: %d %s", method, path, query, body, w.Code, w.Body)
			}
			if w.Code >= 400 {
				var d struct{ Detail string }
				if err := json.Unmarshal(w.Body.Bytes(), &d); err != nil || d.Detail == "" {
					t.Fatalf("%s %s?%s %q: %d without a JSON detail: %s", method, path, query, body, w.Code, w.Body)
				}
			}
		}
		if got := tree(t, outside); !equalTrees(got, outsideBefore) {
			t.Fatalf("outside the roots changed: %v, was %v", got, outsideBefore)
		}
		if got := tree(t, source); !equalTrees(got, sourceBefore) {
			t.Fatalf("the source changed: %v, was %v", got, sourceBefore)
		}
		if left := testenv.Temps(target, ".skao-staging-"); len(left) > 0 {
			t.Fatalf("temporary files left: %v", left)
		}
	})
}

// tree lists the names, types and sizes under dir, not following links.
func tree(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, _ := d.Info()
		if info != nil {
			out[strings.TrimPrefix(p, dir)] = fmt.Sprint(info.Mode(), " ", info.Size())
		}
		return nil
	})
	return out
}

func equalTrees(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
