package jupyterhub

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

func TestBase64Reader(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 4, 48<<10 - 1, 48 << 10, 48<<10 + 1, 3*48<<10 + 2, 1 << 20} {
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		want := base64.StdEncoding.EncodeToString(raw)
		// One byte at a time from the source, and small reads, must not
		// change the encoding (no padding in the middle).
		got, err := io.ReadAll(iotest.OneByteReader(newBase64Reader(iotest.HalfReader(bytes.NewReader(raw)))))
		if err != nil || string(got) != want {
			t.Fatalf("%d bytes: encoding differs (err %v)", n, err)
		}
	}
}

func TestBase64ReaderPassesErrors(t *testing.T) {
	_, err := io.ReadAll(newBase64Reader(iotest.TimeoutReader(bytes.NewReader(make([]byte, 100<<10)))))
	if err != iotest.ErrTimeout {
		t.Fatalf("error %v, want %v", err, iotest.ErrTimeout)
	}
}

func TestURLs(t *testing.T) {
	for _, tc := range []struct{ in, hub, contents string }{
		{"http://hub:8000", "http://hub:8000/hub/api/users/a%20b", "http://hub:8000/user/a%20b/api/contents/dir/x%3Fy%23z.txt"},
		{"http://hub:8000/", "http://hub:8000/hub/api/users/a%20b", "http://hub:8000/user/a%20b/api/contents/dir/x%3Fy%23z.txt"},
		{"https://h.org/jupyter/hub/api/", "https://h.org/jupyter/hub/api/users/a%20b", "https://h.org/jupyter/user/a%20b/api/contents/dir/x%3Fy%23z.txt"},
	} {
		c, err := New(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.hubURL("users", "a b"); got != tc.hub {
			t.Errorf("%s: hub URL %s, want %s", tc.in, got, tc.hub)
		}
		// The hub's server model gives the path with its base path.
		serverPath := "/user/a%20b/"
		if c.base.Path != "" {
			serverPath = c.base.Path + serverPath
		}
		if got := c.Contents(serverPath, StaticToken("t")).url("dir/x?y#z.txt"); got != tc.contents {
			t.Errorf("%s: contents URL %s, want %s", tc.in, got, tc.contents)
		}
	}
	for _, bad := range []string{"", "hub:8000", "ftp://hub", "http://"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

// The user's server answers what it likes: an answer over MaxAnswer fails
// with ErrTooLarge, read no further than MaxAnswer+1 bytes; one just within
// is decoded.
func TestAnswerBound(t *testing.T) {
	var sent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A directory listing of one entry whose name is as long as asked.
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.Header().Set("Content-Type", "application/json")
		head := `{"name":"d","path":"d","type":"directory","content":[{"name":"`
		tail := `","path":"d/x","type":"file","size":1}]}`
		cw := &countingWriter{w: w, n: &sent}
		io.WriteString(cw, head)
		io.CopyN(cw, strings.NewReader(strings.Repeat("x", n)), int64(n))
		io.WriteString(cw, tail)
	}))
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	overhead := len(`{"name":"d","path":"d","type":"directory","content":[{"name":"` + `","path":"d/x","type":"file","size":1}]}`)
	for _, tc := range []struct {
		name string
		n    int
		err  error
	}{
		{"within", MaxAnswer - overhead, nil},
		{"one byte over", MaxAnswer - overhead + 1, ErrTooLarge},
		{"far over", 256 << 20, ErrTooLarge},
	} {
		sent.Store(0)
		ct := &Contents{c: c, base: srv.URL, tokens: StaticToken("t")}
		m, err := ct.Get(context.Background(), strconv.Itoa(tc.n), true)
		if !errors.Is(err, tc.err) {
			t.Fatalf("%s: error %v, want %v", tc.name, err, tc.err)
		}
		if tc.err == nil && (len(m.Content) != 1 || len(m.Content[0].Name) != tc.n) {
			t.Fatalf("%s: listing not decoded", tc.name)
		}
		if tc.err != nil && sent.Load() > 2*MaxAnswer {
			t.Fatalf("%s: the client read on: the server sent %d bytes", tc.name, sent.Load())
		}
	}
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// TestTokenScopes: which of a token's scopes (as GET /hub/api/user lists
// them) let it act for its owner at the service "staging", and as an admin.
func TestTokenScopes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		admin         bool
		scopes        []string
		acts, asAdmin bool
	}{
		{name: "hub older than 2.0 (no scopes)", scopes: nil, acts: true},
		{name: "hub older than 2.0, admin", admin: true, scopes: nil, acts: true, asAdmin: true},
		{name: "Token page (the owner's own scopes)", scopes: []string{"read:users!user=alice", "access:servers!user=alice", "tokens!user=alice"}, acts: true},
		{name: "a server's own token", scopes: []string{"users:activity!user=alice", "access:servers!server=alice/"}, acts: true},
		{name: "a named server's token", scopes: []string{"access:servers!server=alice/gpu"}, acts: true},
		{name: "issued for this service", scopes: []string{"access:services!service=staging", "read:users:name!user=alice"}, acts: true},
		{name: "every service", scopes: []string{"access:services"}, acts: true},
		{name: "identify only", scopes: []string{"read:users:name!user=alice", "read:users:groups!user=alice"}},
		{name: "issued for another service", scopes: []string{"access:services!service=grades", "read:users:name!user=alice"}},
		{name: "another user's server", scopes: []string{"access:servers!server=alicia/", "access:servers!user=al"}},
		{name: "a group's servers", scopes: []string{"access:servers!group=physics"}},
		{name: "no scopes at all", scopes: []string{}},
		{name: "admin, Token page", admin: true, scopes: []string{"admin:users", "admin:servers", "access:servers", "tokens"}, acts: true, asAdmin: true},
		{name: "admin, identify only", admin: true, scopes: []string{"read:users:name!user=alice"}},
		{name: "admin, own servers only", admin: true, scopes: []string{"access:servers!user=alice"}, acts: true},
		{name: "admin scopes of a non-admin", scopes: []string{"admin:users", "access:servers"}, acts: true},
	} {
		u := &User{Name: "alice", Kind: "user", Admin: tc.admin, Scopes: tc.scopes}
		if got := u.MayActFor("staging"); got != tc.acts {
			t.Errorf("%s: MayActFor %v, want %v", tc.name, got, tc.acts)
		}
		if got := u.ActsAsAdmin(); got != tc.asAdmin {
			t.Errorf("%s: ActsAsAdmin %v, want %v", tc.name, got, tc.asAdmin)
		}
	}
	if (&User{Name: "alice", Scopes: []string{"access:services!service=staging"}}).MayActFor("") {
		t.Error("a token for a service named staging acts here while this service has no name at the hub")
	}
}

// A redirect is not followed, even to the same host on another port (where
// Go would keep the Authorization header) or on the hub's own origin: its
// answer is the 3xx itself, and the token never arrives anywhere else.
func TestRedirectNotFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			elsewhere.Add(1)
		}
		w.Write([]byte(`{"name":"other"}`))
	}))
	defer other.Close()
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hub/api/users/away", "/user/away/api/contents/x":
			http.Redirect(w, r, other.URL+"/steal", http.StatusTemporaryRedirect)
		case "/hub/api/users/moved":
			http.Redirect(w, r, "/hub/api/users/here", http.StatusFound)
		case "/hub/api/users/here":
			if r.Header.Get("Authorization") != "token secret" {
				w.WriteHeader(http.StatusForbidden)
				return
			}
			w.Write([]byte(`{"name":"here"}`))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer hub.Close()
	c, err := New(hub.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.User(context.Background(), "secret", "away"); StatusOf(err) != http.StatusTemporaryRedirect {
		t.Fatalf("redirect to another origin: error %v, want HTTP 307", err)
	}
	if _, err := c.Contents("/user/away/", StaticToken("secret")).Get(context.Background(), "x", false); err == nil {
		t.Fatal("the contents API followed a redirect to another origin")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the token reached another origin %d times", n)
	}
	if _, err := c.User(context.Background(), "secret", "moved"); StatusOf(err) != http.StatusFound {
		t.Fatalf("redirect on the hub's origin: error %v, want HTTP 302", err)
	}
}

// A hub or a server that sends its headers and then stalls: the request
// fails with ErrTimeout after the client's bound instead of waiting forever.
func TestStalledAnswer(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"name":`))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c.timeout = 200 * time.Millisecond
	for name, call := range map[string]func() error{
		"hub": func() error { _, err := c.User(context.Background(), "t", "alice"); return err },
		"contents": func() error {
			_, err := c.Contents("/user/alice/", StaticToken("t")).Get(context.Background(), "x", false)
			return err
		},
	} {
		done := make(chan error, 1)
		go func() { done <- call() }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s: error %v, want ErrTimeout", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: still waiting for a stalled answer after 10s", name)
		}
	}
	// The caller's own deadline stays the caller's.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.User(ctx, "t", "alice"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller's deadline: error %v", err)
	}
}

// The hub's URL as messages show it never holds the password a
// JUPYTERHUB_URL may carry.
func TestURLHidesPassword(t *testing.T) {
	c, err := New("https://svc:s3cret@hub.example.org/hub/")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.URL(); strings.Contains(got, "s3cret") || !strings.Contains(got, "hub.example.org") {
		t.Fatalf("URL() = %q", got)
	}
}

// A hub whose progress stream keeps ending before the server is ready is
// asked again after a growing pause, not in a tight loop, until the
// caller's time is up.
func TestServerStartDoesNotSpin(t *testing.T) {
	var asked atomic.Int64
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		switch {
		case strings.HasSuffix(r.URL.Path, "/server/progress"):
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: {\"progress\": 50, \"message\": \"starting\"}\n\n") // then ends
		case strings.HasSuffix(r.URL.Path, "/users/alice"):
			fmt.Fprint(w, `{"name": "alice", "servers": {"": {"ready": false, "pending": "spawn", "url": "/user/alice/"}}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer hub.Close()
	c, err := New(hub.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c.Server(ctx, "token", "alice"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Server: %v, want the caller's deadline", err)
	}
	// 100, 200 and 400 ms of pauses fit in the second: a few rounds of
	// two requests each, where a tight loop makes thousands.
	if n := asked.Load(); n > 12 {
		t.Fatalf("the hub was asked %d times in a second", n)
	}
}
