package methods

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/jupyterhub"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// fakeJupyter is a hub whose user alice has a ready server, and that
// server's contents API over an in-memory workspace, as notebook 6.4
// answers it: a PUT of a file saves it (chunk 1 starts it, later chunks
// append), a PUT of a folder makes it, a PATCH renames and never
// replaces (409), a DELETE removes. Its rename has notebook 6.4's bug: the
// new path, cut at the length of the server's root directory (rootLen),
// is "hidden" when the cut lands on a dot, and the server then fails
// (500).
type fakeJupyter struct {
	rootLen int
	// rename, if set, answers a rename with its status instead (0: go on);
	// put answers a write of a file's chunk (0 for a plain save).
	rename func(f *fakeJupyter, from, to string) int
	put    func(p string, chunk int) int

	mu       sync.Mutex
	files    map[string][]byte // nil: a folder
	requests []string          // "METHOD path"
	minted   map[string]string // live tokens minted for alice's server, by id
	nMinted  int
	badAuth  []string // Authorization headers of contents requests that were not a live minted token
}

func newFakeJupyter(t *testing.T, rootLen int) (*fakeJupyter, *jupyterhub.Client) {
	f := &fakeJupyter{rootLen: rootLen, files: map[string][]byte{"": nil}, minted: map[string]string{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	hub, err := jupyterhub.New(srv.URL)
	must(t, err)
	return f, hub
}

func (f *fakeJupyter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	answer := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	fail := func(status int, msg string) { answer(status, map[string]string{"message": msg}) }
	if r.URL.Path == "/hub/api/users/alice" && r.Method == http.MethodGet {
		answer(200, map[string]any{"name": "alice", "kind": "user",
			"servers": map[string]any{"": map[string]any{"ready": true, "url": "/user/alice/"}}})
		return
	}
	if r.URL.Path == "/hub/api/users/alice/tokens" && r.Method == http.MethodPost {
		var body struct {
			Scopes    []string
			ExpiresIn int `json:"expires_in"`
			Note      string
		}
		json.NewDecoder(r.Body).Decode(&body)
		if r.Header.Get("Authorization") != "token service" || len(body.Scopes) != 1 || body.Scopes[0] != "access:servers!server=alice/" ||
			body.ExpiresIn <= 0 || body.Note != MintedTokenNote {
			fail(400, "unexpected token request")
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.nMinted++
		id, tok := fmt.Sprintf("a%d", f.nMinted), fmt.Sprintf("minted-%d", f.nMinted)
		f.minted[id] = tok
		answer(201, map[string]any{"id": id, "token": tok, "user": "alice"})
		return
	}
	if id, ok := strings.CutPrefix(r.URL.Path, "/hub/api/users/alice/tokens/"); ok && r.Method == http.MethodDelete {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.minted[id]; !ok || r.Header.Get("Authorization") != "token service" {
			fail(404, "no such token")
			return
		}
		delete(f.minted, id)
		w.WriteHeader(204)
		return
	}
	p, ok := strings.CutPrefix(r.URL.Path, "/user/alice/api/contents")
	if !ok {
		fail(404, "Not found")
		return
	}
	p = strings.Trim(p, "/")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+p)
	if auth := r.Header.Get("Authorization"); !f.live(strings.TrimPrefix(auth, "token ")) {
		f.badAuth = append(f.badAuth, auth)
		fail(403, "Forbidden")
		return
	}
	switch r.Method {
	case http.MethodGet:
		if _, ok := f.files[p]; !ok {
			fail(404, "No such file or directory: "+p)
			return
		}
		m := f.model(p)
		if r.URL.Query().Get("content") == "1" && f.files[p] == nil {
			entries := []map[string]any{}
			for q := range f.files {
				if q != "" && parentOf(q) == p {
					entries = append(entries, f.model(q))
				}
			}
			m["content"] = entries
		}
		answer(200, m)
	case http.MethodPut:
		var body struct {
			Type, Format, Content string
			Chunk                 int
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			fail(400, "bad body")
			return
		}
		if _, ok := f.files[parentOf(p)]; !ok {
			fail(404, "No such directory: "+path.Dir(p))
			return
		}
		if body.Type == "directory" {
			if data, ok := f.files[p]; ok && data != nil {
				fail(400, "Not a directory: "+p)
				return
			}
			f.files[p] = nil
			answer(201, f.model(p))
			return
		}
		if f.put != nil {
			if status := f.put(p, body.Chunk); status != 0 {
				fail(status, "Unexpected error while saving file: "+p)
				return
			}
		}
		data, err := base64.StdEncoding.DecodeString(body.Content)
		if err != nil {
			fail(400, "bad base64")
			return
		}
		if body.Chunk > 1 || body.Chunk == -1 {
			data = append(append([]byte{}, f.files[p]...), data...)
		}
		f.files[p] = append([]byte{}, data...) // never nil: a file
		answer(201, f.model(p))
	case http.MethodPatch:
		var body struct{ Path string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			fail(400, "bad body")
			return
		}
		to := strings.Trim(body.Path, "/")
		if f.rename != nil {
			if status := f.rename(f, p, to); status != 0 {
				fail(status, "rename refused")
				return
			}
		}
		// notebook 6.4: is_hidden(new_path, root_dir) cuts the relative
		// path at len(root_dir), then raises a NameError: a 500.
		if f.rootLen > 0 && len(to) >= f.rootLen {
			for _, part := range strings.Split(to[f.rootLen:], "/") {
				if strings.HasPrefix(part, ".") {
					w.WriteHeader(500)
					io.WriteString(w, "<html>500: Internal Server Error</html>")
					return
				}
			}
		}
		to = path.Clean(to) // the server joins the parts: "a//b" is "a/b"
		if _, ok := f.files[p]; !ok {
			fail(404, "No such file or directory: "+p)
			return
		}
		if _, ok := f.files[to]; ok {
			fail(409, "File already exists: "+to)
			return
		}
		for q, data := range f.files {
			if q == p || strings.HasPrefix(q, p+"/") {
				delete(f.files, q)
				f.files[to+q[len(p):]] = data
			}
		}
		answer(200, f.model(to))
	case http.MethodDelete:
		if _, ok := f.files[p]; !ok || p == "" {
			fail(404, "File or directory does not exist: "+p)
			return
		}
		for q := range f.files {
			if q == p || strings.HasPrefix(q, p+"/") {
				delete(f.files, q)
			}
		}
		w.WriteHeader(204)
	default:
		fail(405, "Method not allowed")
	}
}

// live reports whether tok is a minted token not deleted yet (f.mu held).
func (f *fakeJupyter) live(tok string) bool {
	for _, t := range f.minted {
		if t == tok {
			return true
		}
	}
	return false
}

// parentOf is the folder of workspace path p ("" for the root).
func parentOf(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[:i]
	}
	return ""
}

// model is p's contents model without content (f.mu held).
func (f *fakeJupyter) model(p string) map[string]any {
	data := f.files[p]
	if data == nil {
		return map[string]any{"name": path.Base("/" + p), "path": p, "type": "directory", "size": nil, "content": nil}
	}
	return map[string]any{"name": path.Base(p), "path": p, "type": "file", "size": len(data), "content": nil}
}

// write puts a file in the workspace, as its user would.
func (f *fakeJupyter) write(p, content string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[p] = []byte(content)
}

// file returns the content of file p, and whether it is there.
func (f *fakeJupyter) file(p string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, ok := f.files[p]
	return string(data), ok && data != nil
}

// sent counts the requests of method for p.
func (f *fakeJupyter) sent(method, p string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if r == method+" "+p {
			n++
		}
	}
	return n
}

// temps lists what is left of temporary uploads.
func (f *fakeJupyter) temps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var left []string
	for p := range f.files {
		if strings.HasPrefix(p, "skao-staging-") {
			left = append(left, p)
		}
	}
	sort.Strings(left)
	return left
}

// When the server fails to rename the finished upload to the target, only
// the upload is removed. The one documented exception, notebook 6.4's
// rename bug for a top-level name, writes the target directly: only if
// nothing is there right before, and a failure of that never removes what
// is at the target.
func TestJupyterCopyRenameFails(t *testing.T) {
	const rootLen = 10 // where the fake server's rename cuts the path
	fx := newFixture(t)
	fx.file(t, "f.txt", "hello jupyter") // 13 bytes: three 6-byte chunks
	fx.tree(t, "tree", map[string]string{"a.txt": "a", "sub/b.txt": "bb"})
	top := strings.Repeat("a", rootLen) + ".txt"             // the cut lands on its dot: only a direct upload helps
	nested := "d/" + strings.Repeat("b", rootLen-2) + ".txt" // a doubled separator moves the cut
	always := func(status int) func(*fakeJupyter, string, string) int {
		return func(*fakeJupyter, string, string) int { return status }
	}
	for _, tc := range []struct {
		name, source, target string
		rename               func(f *fakeJupyter, from, to string) int
		put                  func(p string, chunk int) int
		status               int    // 0: staged
		detail               string // when not empty, the error's detail
		want                 string // the file at the target afterwards ("": nothing there)
		directPuts           bool   // whether the target may be written directly
	}{
		{name: "a nested name a doubled separator helps", source: "f.txt", target: nested, want: "hello jupyter"},
		{name: "a top-level name: written directly", source: "f.txt", target: top, want: "hello jupyter", directPuts: true},
		{name: "a top-level folder name: written directly", source: "tree", target: strings.Repeat("a", rootLen) + ".d", directPuts: true},
		{name: "a nested name that always fails", source: "f.txt", target: "d/x.txt", rename: always(500),
			status: http.StatusBadGateway, detail: "The Jupyter server of alice failed on d/x.txt (HTTP 500): rename refused"},
		{name: "a top-level name the server cannot reach", source: "f.txt", target: "x.txt", rename: always(http.StatusServiceUnavailable),
			status: http.StatusServiceUnavailable, detail: "The Jupyter server of alice is unavailable (HTTP 503): rename refused"},
		{name: "a top-level name taken before the direct upload", source: "f.txt", target: top,
			rename: func(f *fakeJupyter, _, to string) int {
				if to == top {
					f.files[top] = []byte("the user's own")
				}
				return 0
			},
			status: http.StatusConflict, want: "the user's own"},
		{name: "a direct upload that fails", source: "f.txt", target: top, directPuts: true,
			put: func(p string, chunk int) int {
				if p == top && chunk == 2 {
					return 500
				}
				return 0
			},
			status: http.StatusBadGateway,
			detail: "The Jupyter server of alice failed on " + top + " (HTTP 500): Unexpected error while saving file: " + top +
				" (the server cannot rename to " + top + ", so it was written directly: what was written is not removed)",
			want: "hello "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, hub := newFakeJupyter(t, rootLen)
			f.rename, f.put = tc.rename, tc.put
			m := JupyterCopy{Storage: fx.st, Jupyter: Jupyter{Hub: hub, ServiceToken: "service", ChunkSize: 6},
				Logger: slog.New(slog.DiscardHandler), MaxDepth: 8}
			res, _, err := stage(context.Background(), t, m, staging.Request{Method: "jupyter_copy", Username: "alice", Source: tc.source, Target: tc.target})
			if tc.status == 0 {
				must(t, err)
				if res.Message != "Data staged for user alice with method jupyter_copy" {
					t.Errorf("message %q", res.Message)
				}
			} else {
				wantStatus(t, err, tc.status, tc.detail)
			}
			if tc.source == "tree" && tc.status == 0 {
				for p, want := range map[string]string{"a.txt": "a", "sub/b.txt": "bb"} {
					if got, ok := f.file(path.Join(tc.target, p)); !ok || got != want {
						t.Errorf("%s/%s holds %q (%v), want %q", tc.target, p, got, ok, want)
					}
				}
			} else if got, ok := f.file(tc.target); got != tc.want || ok != (tc.want != "") {
				t.Errorf("the target holds %q (%v), want %q", got, ok, tc.want)
			}
			if !tc.directPuts && f.sent(http.MethodPut, tc.target) != 0 {
				t.Errorf("the target was written directly")
			}
			if tc.directPuts && f.sent(http.MethodPut, tc.target) == 0 {
				t.Errorf("the target was not written directly")
			}
			if n := f.sent(http.MethodDelete, tc.target); n != 0 {
				t.Errorf("the target was deleted %d times", n)
			}
			if left := f.temps(); len(left) != 0 {
				t.Errorf("temporary uploads left: %v", left)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.badAuth) != 0 || len(f.minted) != 0 || f.nMinted == 0 {
				t.Errorf("the server got %d requests without a minted token; %d of %d minted tokens not deleted", len(f.badAuth), len(f.minted), f.nMinted)
			}
		})
	}
}

// The token minted for the user's server is renewed as it nears its expiry,
// each old one deleted, and the last one deleted at the end; the service
// token never reaches the server.
func TestJupyterCopyRenewsMintedToken(t *testing.T) {
	fx := newFixture(t)
	fx.tree(t, "tree", map[string]string{"a.txt": "a", "sub/b.txt": "bb", "sub/c.txt": "ccc"})
	f, hub := newFakeJupyter(t, 0)
	m := JupyterCopy{Storage: fx.st, Jupyter: Jupyter{Hub: hub, ServiceToken: "service", TokenTTL: time.Nanosecond},
		Logger: slog.New(slog.DiscardHandler), MaxDepth: 8}
	_, _, err := stage(context.Background(), t, m, staging.Request{Method: "jupyter_copy", Username: "alice", Source: "tree", Target: "t"})
	must(t, err)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.badAuth) != 0 || len(f.minted) != 0 || f.nMinted < 3 {
		t.Fatalf("%d requests without a live minted token; %d of %d minted tokens left", len(f.badAuth), len(f.minted), f.nMinted)
	}
}

// The target's tree is the user's: comparing it with the source stops as
// soon as it holds more entries than the source's tree, or goes deeper than
// MaxDepth, without listing the rest.
func TestJupyterCopyListBound(t *testing.T) {
	fx := newFixture(t)
	fx.tree(t, "tree", map[string]string{"a.txt": "a", "sub/b.txt": "bb"})
	for _, tc := range []struct {
		name  string
		there func(f *fakeJupyter)
	}{
		{"wide", func(f *fakeJupyter) {
			for i := range 200 {
				f.files[fmt.Sprintf("t/d%03d", i)] = nil
				f.files[fmt.Sprintf("t/d%03d/x", i)] = []byte("x")
			}
		}},
		{"deep", func(f *fakeJupyter) {
			p := "t"
			for range 50 {
				p += "/d"
				f.files[p] = nil
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, hub := newFakeJupyter(t, 0)
			f.files["t"] = nil
			tc.there(f)
			m := JupyterCopy{Storage: fx.st, Jupyter: Jupyter{Hub: hub, ServiceToken: "service"},
				Logger: slog.New(slog.DiscardHandler), MaxDepth: 8}
			_, _, err := stage(context.Background(), t, m, staging.Request{Method: "jupyter_copy", Username: "alice", Source: "tree", Target: "t"})
			wantStatus(t, err, http.StatusConflict, "A different file or folder already exists at t in the Jupyter workspace of alice")
			f.mu.Lock()
			defer f.mu.Unlock()
			gets := 0
			for _, r := range f.requests {
				if strings.HasPrefix(r, "GET t") {
					gets++
				}
			}
			if gets > 10 {
				t.Fatalf("%d listings of the target, want it to stop early", gets)
			}
		})
	}
}

// What the user's server answers is told as its own, the transient kinds
// (busy, unavailable) as such, so a broker retries them and only them.
func TestContentsErrorStatus(t *testing.T) {
	w := &workspace{user: "alice"}
	for _, tc := range []struct {
		status int
		kind   staging.Kind
		detail string
	}{
		{http.StatusTooManyRequests, staging.TooMany, "The Jupyter server of alice is busy (HTTP 429): bad name: try again shortly"},
		{http.StatusServiceUnavailable, staging.Unavailable, "The Jupyter server of alice is unavailable (HTTP 503): bad name"},
		{http.StatusInsufficientStorage, staging.InsufficientStorage, "No space left in the Jupyter workspace of alice"},
		{http.StatusBadRequest, staging.Rejected, "The Jupyter server of alice refused f.txt: bad name"},
		{http.StatusInternalServerError, staging.Upstream, "The Jupyter server of alice failed on f.txt (HTTP 500): bad name"},
	} {
		err := w.contentsError(&jupyterhub.APIError{Op: "PUT f.txt", Status: tc.status, Message: "bad name"}, "f.txt")
		if kind, detail := staging.KindOf(err); kind != tc.kind || detail != tc.detail {
			t.Errorf("HTTP %d: %s %q, want %s %q", tc.status, kind, detail, tc.kind, tc.detail)
		}
		if tc.kind.Transient() != (tc.status == 429 || tc.status == 503 || tc.status == 507 || tc.status == 500) {
			t.Errorf("HTTP %d: transient %v", tc.status, tc.kind.Transient())
		}
	}
	// The hub answers for a stopped server (checked on a real hub in
	// functions/jupyter TestStoppedServerAnswers).
	for _, status := range []int{http.StatusFound, http.StatusMethodNotAllowed, http.StatusFailedDependency} {
		err := w.contentsError(&jupyterhub.APIError{Op: "PUT f.txt", Status: status}, "f.txt")
		if kind, detail := staging.KindOf(err); kind != staging.Unavailable || detail != "The Jupyter server of alice is not running: it was stopped during the staging" {
			t.Errorf("HTTP %d: %s %q, want %s", status, kind, detail, staging.Unavailable)
		}
	}
	// A full disk or quota is answered as any failure to save, with
	// Python's error text (checked on a full tmpfs).
	for _, msg := range []string{"Unexpected error while saving file: big.bin [Errno 28] No space left on device",
		"Unexpected error while saving file: big.bin [Errno 122] Disk quota exceeded"} {
		err := w.contentsError(&jupyterhub.APIError{Op: "write chunk 2 of big.bin", Status: http.StatusInternalServerError, Message: msg}, "big.bin")
		if kind, detail := staging.KindOf(err); kind != staging.InsufficientStorage || detail != "No space left in the Jupyter workspace of alice" {
			t.Errorf("%s: %s %q, want %s", msg, kind, detail, staging.InsufficientStorage)
		}
	}
	// A server that stalls its answer past the client's bound.
	stalled := fmt.Errorf("GET f.txt: %w", jupyterhub.ErrTimeout)
	want := "The Jupyter server of alice did not answer on f.txt within " + jupyterhub.RequestTimeout.String()
	if kind, detail := staging.KindOf(w.contentsError(stalled, "f.txt")); kind != staging.UpstreamTimeout || detail != want {
		t.Errorf("stalled answer: %s %q, want %s %q", kind, detail, staging.UpstreamTimeout, want)
	}
	w.m.Jupyter.Hub, _ = jupyterhub.New("http://hub")
	want = "JupyterHub did not answer within " + jupyterhub.RequestTimeout.String()
	if kind, detail := staging.KindOf(w.hubError(stalled)); kind != staging.UpstreamTimeout || detail != want {
		t.Errorf("stalled hub: %s %q, want %s %q", kind, detail, staging.UpstreamTimeout, want)
	}
}

// What the hub answers becomes what the caller sees; a hub down behind its
// proxy (503) and a busy hub (429) are transient.
func TestJupyterCopyHubStatus(t *testing.T) {
	fx := newFixture(t)
	fx.file(t, "f.txt", "f")
	for _, tc := range []struct {
		hub    int
		status int
		detail string
	}{
		{http.StatusServiceUnavailable, http.StatusServiceUnavailable, "JupyterHub is unavailable at %s (HTTP 503)"},
		{http.StatusTooManyRequests, http.StatusTooManyRequests, "JupyterHub is busy (HTTP 429): try again shortly"},
		{http.StatusNotFound, http.StatusNotFound, "JupyterHub user alice not found"},
		{http.StatusForbidden, http.StatusBadGateway, "JupyterHub rejected the service token (JUPYTERHUB_API_TOKEN)"},
		{http.StatusInternalServerError, http.StatusBadGateway, "JupyterHub failed (HTTP 500)"},
		{http.StatusBadGateway, http.StatusBadGateway, "JupyterHub failed (HTTP 502)"},
	} {
		t.Run(http.StatusText(tc.hub), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.hub)
			}))
			defer srv.Close()
			hub, err := jupyterhub.New(srv.URL)
			must(t, err)
			m := JupyterCopy{Storage: fx.st, Jupyter: Jupyter{Hub: hub, ServiceToken: "service"}, Logger: slog.New(slog.DiscardHandler), MaxDepth: 8}
			_, _, err = stage(context.Background(), t, m, staging.Request{Method: "jupyter_copy", Username: "alice", Source: "f.txt", Target: "f.txt"})
			detail := tc.detail
			if strings.Contains(detail, "%s") {
				detail = fmt.Sprintf(detail, srv.URL)
			}
			wantStatus(t, err, tc.status, detail)
		})
	}
}
