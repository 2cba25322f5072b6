package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

func TestStageLocalCopyAndSymlink(t *testing.T) {
	s := startStage(t, nil)
	s.write(t, "obs/vis.dat", "visibilities")
	s.write(t, "tree/a.txt", "a")
	s.write(t, "tree/sub/b.txt", "bb")

	for _, path := range []string{"/stage_data", "/stage_data/", "/stage-data", "/stage-data/"} {
		t.Run("copy via "+path, func(t *testing.T) {
			dst := "copies/" + strings.ReplaceAll(path, "/", "_") + ".dat"
			r := testenv.Do(t, http.MethodPost, s.URL+path+"?method=local_copy&username=alice",
				map[string]any{"data": map[string]string{"local_path_on_storage": "obs/vis.dat", "relative_path": dst}})
			expect(t, r, 200, "message", "Data staged for user alice with method local_copy")
			if r.Str("status") != "success" || r.Str("id") == "" {
				t.Fatalf("answer %s", r.Body)
			}
			got, err := os.ReadFile(s.userPath("alice", dst))
			must(t, err)
			if string(got) != "visibilities" {
				t.Fatalf("staged content %q", got)
			}
			info, err := os.Stat(s.userPath("alice", dst))
			must(t, err)
			src, _ := os.Stat(filepath.Join(s.Source, "obs/vis.dat"))
			if info.Mode().Perm() != 0o440 || !info.ModTime().Equal(src.ModTime()) {
				t.Fatalf("mode %v mtime %v, want 0440 and %v", info.Mode(), info.ModTime(), src.ModTime())
			}
			op := s.operation(t, r.Str("id"))
			if op["status"] != "success" || op["bytes"] != float64(12) || op["method"] != "local_copy" ||
				op["relative_path"] != dst || op["finished_at"] == nil {
				t.Fatalf("operation record %v", op)
			}
		})
	}

	t.Run("absolute source under the root", func(t *testing.T) {
		r := s.stageOne(t, "local_copy", "alice", filepath.Join(s.Source, "obs/vis.dat"), "abs.dat")
		expect(t, r, 200, "message", "Data staged for user alice with method local_copy")
	})

	t.Run("same content again is already available", func(t *testing.T) {
		r := s.stageOne(t, "local_copy", "alice", "obs/vis.dat", "abs.dat")
		expect(t, r, 200, "message", "Data already available at abs.dat")
	})

	t.Run("directory", func(t *testing.T) {
		r := s.stageOne(t, "local_copy", "bob", "tree", "mytree")
		expect(t, r, 200, "message", "Data staged for user bob with method local_copy")
		b, err := os.ReadFile(s.userPath("bob", "mytree/sub/b.txt"))
		must(t, err)
		info, _ := os.Stat(s.userPath("bob", "mytree/sub"))
		if string(b) != "bb" || info.Mode().Perm() != 0o550 {
			t.Fatalf("tree copy: %q, dir mode %v", b, info.Mode())
		}
		r = s.stageOne(t, "local_copy", "bob", "tree", "mytree")
		expect(t, r, 200, "message", "Data already available at mytree")
	})

	t.Run("symlink", func(t *testing.T) {
		before, _ := os.Stat(filepath.Join(s.Source, "obs/vis.dat"))
		r := s.stageOne(t, "local_symlink", "carol", "obs/vis.dat", "links/vis")
		expect(t, r, 200, "message", "Data staged for user carol with method local_symlink")
		link, err := os.Readlink(s.userPath("carol", "links/vis"))
		must(t, err)
		if link != filepath.Join(s.Source, "obs/vis.dat") {
			t.Fatalf("link points to %s", link)
		}
		after, _ := os.Stat(filepath.Join(s.Source, "obs/vis.dat"))
		if before.Mode() != after.Mode() {
			t.Fatalf("source mode changed from %v to %v", before.Mode(), after.Mode())
		}
		r = s.stageOne(t, "local_symlink", "carol", "obs/vis.dat", "links/vis")
		expect(t, r, 200, "message", "Data already available at links/vis")
	})
}

func TestSymlinkTargetRoot(t *testing.T) {
	s := startStage(t, map[string]string{"SYMLINK_TARGET_ROOT": "/mnt/storage_a"})
	s.write(t, "x/file", "f")
	r := s.stageOne(t, "local_symlink", "alice", "x/file", "file")
	expect(t, r, 200, "status", "success")
	link, err := os.Readlink(s.userPath("alice", "file"))
	must(t, err)
	if link != "/mnt/storage_a/x/file" {
		t.Fatalf("link %s, want /mnt/storage_a/x/file", link)
	}
}

func TestErrors(t *testing.T) {
	s := startStage(t, map[string]string{"ALLOWED_METHODS": `["local_copy","direct_download"]`})
	s.write(t, "data/file", "content")
	outside := t.TempDir()
	must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644))
	must(t, os.Symlink(outside, filepath.Join(s.Source, "escape")))
	must(t, os.MkdirAll(s.userPath("alice", ""), 0o755))
	must(t, os.Symlink(outside, s.userPath("alice", "out")))
	must(t, os.WriteFile(s.userPath("alice", "taken"), []byte("other"), 0o644))
	must(t, os.Symlink("/etc/hostname", s.userPath("alice", "taken-link")))

	item := func(src, dst string) map[string]any {
		return map[string]any{"data": map[string]string{"local_path_on_storage": src, "relative_path": dst}}
	}
	url := s.URL + "/stage_data?method=local_copy&username=alice"
	cases := []struct {
		name   string
		method string
		url    string
		body   any
		status int
		detail string
	}{
		{"unknown method", "POST", s.URL + "/stage_data?method=teleport&username=alice", item("data/file", "x"), 400, "Invalid staging method: teleport"},
		{"method not allowed here", "POST", s.URL + "/stage_data?method=local_symlink&username=alice", item("data/file", "x"), 400, "Invalid staging method: local_symlink"},
		{"missing source", "POST", url, item("data/nope", "x"), 400, "Source path does not exist: data/nope"},
		{"source with ..", "POST", url, item("../secret", "x"), 403, ""},
		{"source deep ..", "POST", url, item("data/../../secret", "x"), 403, ""},
		{"absolute source outside", "POST", url, item(filepath.Join(outside, "secret"), "x"), 403, ""},
		{"source through symlink", "POST", url, item("escape/secret", "x"), 403, ""},
		{"target with ..", "POST", url, item("data/file", "../bob/x"), 403, ""},
		{"absolute target", "POST", url, item("data/file", "/tmp/x"), 403, ""},
		{"target through symlink", "POST", url, item("data/file", "out/x"), 403, ""},
		{"different file at target", "POST", url, item("data/file", "taken"), 409, "A different file or link already exists at taken"},
		{"link at target", "POST", url, item("data/file", "taken-link"), 409, ""},
		{"body over 1 MiB", "POST", url, `{"data":{"local_path_on_storage":"` + strings.Repeat("a", 1<<20) + `","relative_path":"x"}}`, 413, ""},
		{"malformed JSON", "POST", url, `{"data":`, 422, ""},
		{"no data", "POST", url, `{}`, 422, "data is required"},
		{"data not an object", "POST", url, `{"data":"file"}`, 422, ""},
		{"missing source field", "POST", url, `{"data":{"relative_path":"x"}}`, 422, "local_path_on_storage is required"},
		{"missing target field", "POST", url, `{"data":{"local_path_on_storage":"data/file"}}`, 422, "relative_path is required"},
		{"missing method", "POST", s.URL + "/stage_data?username=alice", item("data/file", "x"), 422, ""},
		{"missing username", "POST", s.URL + "/stage_data?method=local_copy", item("data/file", "x"), 422, ""},
		{"bad username", "POST", s.URL + "/stage_data?method=local_copy&username=a/b", item("data/file", "x"), 422, ""},
		{"username with ..", "POST", s.URL + "/stage_data?method=local_copy&username=a..b", item("data/file", "x"), 422, ""},
		{"username starting with a dot", "POST", s.URL + "/stage_data?method=local_copy&username=.alice", item("data/file", "x"), 422, ""},
		{"empty batch", "POST", url, `{"data":[]}`, 422, ""},
		{"batch over 1000", "POST", url, map[string]any{"data": make([]map[string]string, 1001)}, 422, ""},
		{"unknown route", "GET", s.URL + "/nowhere", nil, 404, ""},
		{"wrong HTTP method", "DELETE", s.URL + "/stage_data", nil, 405, ""},
		{"wrong HTTP method on config", "POST", s.URL + "/config", nil, 405, ""},
		{"GET with another method", "GET", s.URL + "/stage_data?method=local_copy&username=alice&local_path_on_storage=data/file", nil, 422, ""},
		{"unknown operation", "GET", s.URL + "/operations/nope", nil, 404, "Operation not found: nope"},
		{"bad operations filter", "GET", s.URL + "/operations?status=done", nil, 422, ""},
		{"bad operations limit", "GET", s.URL + "/operations?limit=0", nil, 422, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := s.countOperations(t)
			r := testenv.Do(t, c.method, c.url, c.body)
			if r.Status != c.status {
				t.Fatalf("status %d, want %d: %s", r.Status, c.status, r.Body)
			}
			if r.Str("detail") == "" {
				t.Fatalf("no detail in %s", r.Body)
			}
			if c.detail != "" && r.Str("detail") != c.detail {
				t.Fatalf("detail %q, want %q", r.Str("detail"), c.detail)
			}
			// Refusals that name a user, a method and an item are recorded.
			after := s.countOperations(t)
			if recorded := c.status == 400 || c.status == 403 || c.status == 409; recorded != (after == before+1) {
				t.Fatalf("records before %d after %d for a %d", before, after, c.status)
			}
		})
	}
	if b, _ := os.ReadFile(s.userPath("alice", "taken")); string(b) != "other" {
		t.Fatalf("the file in the way was changed: %q", b)
	}
	if left := testenv.Temps(s.Target, ".skao-staging-"); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
		t.Fatal("something was written outside the user area")
	}
}

func TestBatch(t *testing.T) {
	s := startStage(t, nil)
	s.write(t, "a", "A")
	s.write(t, "b", "B")
	items := []map[string]string{
		{"local_path_on_storage": "a", "relative_path": "one/a"},
		{"local_path_on_storage": "b", "relative_path": "one/b"},
	}
	r := testenv.Do(t, http.MethodPost, s.URL+"/stage_data?method=local_copy&username=alice", map[string]any{"data": items})
	expect(t, r, 200, "status", "success")

	items = append(items, map[string]string{"local_path_on_storage": "missing", "relative_path": "one/c"},
		map[string]string{"relative_path": "one/d"})
	r = testenv.Do(t, http.MethodPost, s.URL+"/stage_data?method=local_copy&username=alice", map[string]any{"data": items})
	expect(t, r, 207, "status", "partial")
	results := r.JSON["results"].([]any)
	want := []struct{ status, text string }{
		{"success", "Data already available at one/a"},
		{"success", "Data already available at one/b"},
		{"failed", "Source path does not exist: missing"},
		{"failed", "local_path_on_storage is required"},
	}
	for i, w := range want {
		res := results[i].(map[string]any)
		text, _ := res["message"].(string)
		if w.status == "failed" {
			text, _ = res["detail"].(string)
		}
		if res["status"] != w.status || text != w.text {
			t.Fatalf("result %d = %v, want %v", i, res, w)
		}
	}
	if results[2].(map[string]any)["id"] == nil {
		t.Fatal("a refused item has no operation id")
	}

	r = testenv.Do(t, http.MethodPost, s.URL+"/stage_data?method=local_copy&username=alice",
		map[string]any{"data": []map[string]string{{"local_path_on_storage": "zz", "relative_path": "x"}}})
	expect(t, r, 207, "status", "failed")
}

func TestDirectDownload(t *testing.T) {
	s := startStage(t, nil)
	content := strings.Repeat("0123456789", 1000)
	s.write(t, "big/file.bin", content)
	s.write(t, "big/dir/x.txt", "x")
	s.write(t, "big/dir/deeper/y.txt", "yy")

	t.Run("POST", func(t *testing.T) {
		r := s.stageOne(t, "direct_download", "alice", "big/file.bin", "")
		if r.Status != 200 || string(r.Body) != content {
			t.Fatalf("status %d, %d bytes", r.Status, len(r.Body))
		}
		h := r.Header
		if h.Get("Content-Type") != "application/octet-stream" || h.Get("Content-Disposition") != `attachment; filename=file.bin` ||
			h.Get("Content-Length") != fmt.Sprint(len(content)) {
			t.Fatalf("headers %v", h)
		}
		op := s.waitOperation(t, h.Get("X-Operation-Id"))
		if op["status"] != "success" || op["bytes_done"] != float64(len(content)) {
			t.Fatalf("operation %v", op)
		}
	})
	t.Run("GET link with Range", func(t *testing.T) {
		r := testenv.Do(t, http.MethodGet, s.URL+"/stage_data?method=direct_download&username=alice&local_path_on_storage=big/file.bin", nil, "Range", "bytes=10-19")
		if r.Status != 206 || string(r.Body) != "0123456789" || r.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(content)) {
			t.Fatalf("status %d body %q headers %v", r.Status, r.Body, r.Header)
		}
	})
	// A multi-range answer's part headers are not the file's: progress
	// never passes the file's size.
	t.Run("GET link with ranges", func(t *testing.T) {
		small := "abcdef"
		s.write(t, "big/small.bin", small)
		r := testenv.Do(t, http.MethodGet, s.URL+"/stage_data?method=direct_download&username=alice&local_path_on_storage=big/small.bin", nil, "Range", "bytes=0-1,3-4")
		if r.Status != 206 || !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/byteranges") {
			t.Fatalf("status %d headers %v", r.Status, r.Header)
		}
		op := s.waitOperation(t, r.Header.Get("X-Operation-Id"))
		if op["status"] != "success" || op["bytes_done"].(float64) > op["bytes"].(float64) {
			t.Fatalf("operation %v", op)
		}
	})
	t.Run("directory as tar", func(t *testing.T) {
		r := testenv.Do(t, http.MethodGet, s.URL+"/stage_data?method=direct_download&username=alice&local_path_on_storage=big/dir", nil)
		if r.Status != 200 || r.Header.Get("Content-Type") != "application/x-tar" || r.Header.Get("Content-Disposition") != "attachment; filename=dir.tar" {
			t.Fatalf("status %d headers %v", r.Status, r.Header)
		}
		files := map[string]string{}
		tr := tar.NewReader(bytes.NewReader(r.Body))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			must(t, err)
			b, _ := io.ReadAll(tr)
			if h.Typeflag == tar.TypeReg {
				files[h.Name] = string(b)
			}
		}
		if len(files) != 2 || files["dir/x.txt"] != "x" || files["dir/deeper/y.txt"] != "yy" {
			t.Fatalf("tar holds %v", files)
		}
	})
	t.Run("refused", func(t *testing.T) {
		r := testenv.Do(t, http.MethodGet, s.URL+"/stage_data?method=direct_download&username=alice&local_path_on_storage=../etc/passwd", nil)
		expect(t, r, 403, "", "")
		r = testenv.Do(t, http.MethodGet, s.URL+"/stage_data?method=direct_download&username=alice&local_path_on_storage=nope", nil)
		expect(t, r, 400, "detail", "Source path does not exist: nope")
	})
}

func TestAsyncInProcess(t *testing.T) {
	s := startStage(t, nil)
	s.write(t, "tree/a", strings.Repeat("a", 1<<20))
	s.write(t, "tree/b", "b")
	r := s.stageOne(t, "local_copy", "alice", "tree", "async-tree", "Prefer", "respond-async")
	expect(t, r, 202, "status", "pending")
	if r.Header.Get("Location") != "/operations/"+r.Str("id") {
		t.Fatalf("Location %q", r.Header.Get("Location"))
	}
	op := s.waitOperation(t, r.Str("id"))
	if op["status"] != "success" || op["bytes"] != float64(1<<20+1) || op["bytes_done"] != op["bytes"] {
		t.Fatalf("operation %v", op)
	}
	if b, _ := os.ReadFile(s.userPath("alice", "async-tree/b")); string(b) != "b" {
		t.Fatal("async copy missing")
	}
	// Refusals are answered at once, not accepted.
	r = s.stageOne(t, "local_copy", "alice", "nope", "x", "Prefer", "respond-async")
	expect(t, r, 400, "detail", "Source path does not exist: nope")
}

func TestConfigOperationsHealth(t *testing.T) {
	s := startStage(t, map[string]string{"ALLOWED_METHODS": "local_copy, direct_download"})
	for _, p := range []string{"/config", "/config/"} {
		r := testenv.Do(t, http.MethodGet, s.URL+p, nil)
		expect(t, r, 200, "source_storage_path", s.Source)
		if r.Str("target_storage_path") != s.Target || fmt.Sprint(r.JSON["allowed_methods"]) != "[local_copy direct_download]" || r.Str("auth_mode") != "none" || len(r.JSON) != 5 {
			t.Fatalf("config %s", r.Body)
		}
	}
	for _, p := range []string{"/config/allowed-methods", "/config/allowed-methods/"} {
		r := testenv.Do(t, http.MethodGet, s.URL+p, nil)
		if r.Status != 200 || fmt.Sprint(r.JSON["allowed_methods"]) != "[local_copy direct_download]" {
			t.Fatalf("%s: %s", p, r.Body)
		}
	}
	s.write(t, "f", "x")
	s.stageOne(t, "local_copy", "alice", "f", "1")
	time.Sleep(2 * time.Millisecond)
	s.stageOne(t, "local_copy", "bob", "f", "1")
	s.stageOne(t, "local_copy", "bob", "nope", "2")
	r := testenv.Do(t, http.MethodGet, s.URL+"/operations?username=bob", nil)
	ops := r.JSON["operations"].([]any)
	if len(ops) != 2 || ops[0].(map[string]any)["status"] != "failed" || ops[1].(map[string]any)["status"] != "success" {
		t.Fatalf("bob's operations, newest first: %s", r.Body)
	}
	first := ops[0].(map[string]any)
	for _, k := range []string{"id", "method", "username", "local_path_on_storage", "relative_path", "status", "error_reason", "bytes", "bytes_done", "created_at", "finished_at"} {
		if _, ok := first[k]; !ok {
			t.Fatalf("operation lacks %s: %v", k, first)
		}
	}
	if first["error_reason"] != "Source path does not exist: nope" {
		t.Fatalf("error_reason %v", first["error_reason"])
	}
	r = testenv.Do(t, http.MethodGet, s.URL+"/operations?status=success&limit=1", nil)
	if ops := r.JSON["operations"].([]any); len(ops) != 1 || ops[0].(map[string]any)["username"] != "bob" {
		t.Fatalf("status filter with limit: %s", r.Body)
	}
	expect(t, testenv.Do(t, http.MethodGet, s.URL+"/healthz", nil), 200, "", "")
	expect(t, testenv.Do(t, http.MethodGet, s.URL+"/readyz", nil), 200, "", "")
}

func TestCreateFile(t *testing.T) {
	s := startStage(t, nil)
	r := testenv.Do(t, http.MethodPost, s.URL+"/create-file", map[string]string{"filename": "made/by/page.txt", "content": "hi"})
	expect(t, r, 200, "message", "File created at made/by/page.txt")
	b, err := os.ReadFile(filepath.Join(s.Source, "made/by/page.txt"))
	must(t, err)
	if string(b) != "hi" {
		t.Fatalf("content %q", b)
	}
	r = testenv.Do(t, http.MethodPost, s.URL+"/create-file", map[string]string{"filename": "made/by/page.txt", "content": "again"})
	expect(t, r, 409, "", "")
	r = testenv.Do(t, http.MethodPost, s.URL+"/create-file", map[string]string{"filename": "../escape.txt", "content": "x"})
	expect(t, r, 403, "", "")
	r = testenv.Do(t, http.MethodPost, s.URL+"/create-file", map[string]string{"content": "x"})
	expect(t, r, 422, "", "")

	off := startStage(t, map[string]string{"ENABLE_FILE_CREATOR": "false"})
	r = testenv.Do(t, http.MethodPost, off.URL+"/create-file", map[string]string{"filename": "a", "content": "x"})
	expect(t, r, 404, "", "")
}

func TestStagedOwner(t *testing.T) {
	s := startStage(t, map[string]string{"STAGED_OWNER": "4321:4322"})
	s.write(t, "d/f", "x")
	r := s.stageOne(t, "local_copy", "alice", "d", "owned")
	expect(t, r, 200, "status", "success")
	for _, p := range []string{"owned", "owned/f"} {
		info, err := os.Lstat(s.userPath("alice", p))
		must(t, err)
		if uid, gid := ownerOf(info); uid != 4321 || gid != 4322 {
			t.Fatalf("%s owned by %d:%d", p, uid, gid)
		}
	}
	u := startStage(t, map[string]string{"STAGED_OWNER": "user"})
	u.write(t, "f", "x")
	r = u.stageOne(t, "local_copy", "no-such-user-here", "f", "x")
	expect(t, r, 400, "", "")
	if !strings.Contains(r.Str("detail"), "no-such-user-here") {
		t.Fatalf("detail %q does not name the user", r.Str("detail"))
	}
	r = u.stageOne(t, "local_copy", "root", "f", "x")
	expect(t, r, 200, "status", "success")
}

func TestBadConfigurationFailsStart(t *testing.T) {
	bin := testenvBinary(t)
	for name, env := range map[string][]string{
		"SOURCE_STORAGE_PATH": {"TARGET_STORAGE_PATH=/tmp/x"},
		"ALLOWED_METHODS":     {"SOURCE_STORAGE_PATH=/tmp", "TARGET_STORAGE_PATH=/tmp/x", "ALLOWED_METHODS=teleport"},
		"LOGGING_LEVEL":       {"SOURCE_STORAGE_PATH=/tmp", "TARGET_STORAGE_PATH=/tmp/x", "LOGGING_LEVEL=loud"},
		"DATABASE_URL":        {"SOURCE_STORAGE_PATH=/tmp", "TARGET_STORAGE_PATH=/tmp/x", "DATABASE_URL=postgres://x"},
		"STAGED_OWNER":        {"SOURCE_STORAGE_PATH=/tmp", "TARGET_STORAGE_PATH=/tmp/x", "STAGED_OWNER=nobody:"},
		"EVENT_AUTH": {"SOURCE_STORAGE_PATH=/tmp", "TARGET_STORAGE_PATH=/tmp/x", "AUTH_MODE=jupyterhub",
			"JUPYTERHUB_URL=http://127.0.0.1:9", "K_SINK=http://127.0.0.1:9"},
		"OIDC_AUDIENCE": {"SOURCE_STORAGE_PATH=/tmp", "TARGET_STORAGE_PATH=/tmp/x", "AUTH_MODE=oidc", "OIDC_ISSUER_URL=https://iam.example.org/"},
	} {
		out, err := runWithEnv(bin, env)
		if err == nil || !strings.Contains(out, name) {
			t.Errorf("%s: exit %v, output %s", name, err, out)
		}
	}
}
