// Package jupyterhub is a client of JupyterHub's REST API (users, their
// servers, token owners) and of the Jupyter Server contents API that the hub
// proxies at /user/<name>/api/contents. Tokens travel only in the
// Authorization header: they never appear in URLs, errors or logs.
package jupyterhub

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Client talks to one hub.
type Client struct {
	base    *url.URL // the hub's public URL, without /hub
	http    *http.Client
	timeout time.Duration // RequestTimeout
}

// RequestTimeout bounds one request to the hub or a Jupyter server, its
// body and its answer included (not the progress stream, which the caller
// bounds): a hub or a server that stalls (the user's server is the user's
// own code) would otherwise hold the operation, whose lease is kept alive
// meanwhile, forever. A chunk of 8 MiB has time to cross a slow link.
const RequestTimeout = 10 * time.Minute

// ErrTimeout is matched by a request that got no complete answer within
// RequestTimeout.
var ErrTimeout = errors.New("no complete answer within " + RequestTimeout.String())

// New returns a client of the hub at rawURL (its public URL, such as
// https://jupyter.example.org; a trailing /hub or /hub/api is ignored).
func New(rawURL string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(rawURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("JupyterHub URL %q is not an http(s) URL", rawURL)
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/api"), "/hub")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = 5 * time.Minute // a chunk is written before the answer
	return &Client{base: u, http: &http.Client{Transport: tr, CheckRedirect: noRedirect}, timeout: RequestTimeout}, nil
}

// noRedirect answers a redirect as the 3xx it is. Go keeps the
// Authorization header on a redirect to the same host name on any port or
// scheme, or to a subdomain, which would take a token to another server;
// and the hub answers for a stopped server with a redirect whose end (a 404
// page) would read as a missing file.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// URL is the hub's public URL as messages show it: a password it holds
// (https://user:pass@...) is hidden.
func (c *Client) URL() string { return c.base.Redacted() }

// APIError is an answer other than 2xx from the hub or a Jupyter server.
type APIError struct {
	Op      string // what was asked, e.g. "GET user alice"
	Status  int
	Message string // the server's message, if it sent one
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s: HTTP %d", e.Op, e.Status)
	}
	return fmt.Sprintf("%s: HTTP %d: %s", e.Op, e.Status, e.Message)
}

// StatusOf returns the HTTP status of an *APIError in err's chain, or 0.
func StatusOf(err error) int {
	var e *APIError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// ErrUnreachable is matched (errors.Is) by failures to reach the hub at all.
var ErrUnreachable = errors.New("JupyterHub unreachable")

type unreachable struct{ err error }

func (u unreachable) Error() string        { return ErrUnreachable.Error() + ": " + u.err.Error() }
func (u unreachable) Is(target error) bool { return target == ErrUnreachable }
func (u unreachable) Unwrap() error        { return u.err }

// User is the part of the hub's user model the service needs.
type User struct {
	Name    string            `json:"name"`
	Kind    string            `json:"kind"` // "user", or "service" for a service's token
	Admin   bool              `json:"admin"`
	Servers map[string]Server `json:"servers"`
	// Scopes are those of the token that asked (GET /hub/api/user), nil
	// from a hub older than 2.0, whose tokens all act fully for their owner.
	Scopes []string `json:"scopes"`
}

// Who names u for a message: the user's name, or "service <name>".
func (u *User) Who() string {
	if u.Kind == "service" {
		return "service " + u.Name
	}
	return u.Name
}

// MayActFor reports whether the token whose owner u is may act for its
// owner at the hub service named service ("" for none): a token that may
// already act in the owner's Jupyter servers (the hub's Token page gives
// one, as does a server's own JUPYTERHUB_API_TOKEN), or one issued for
// that service. A token the hub issued only to identify its owner, for
// example to another service through OAuth, may not.
func (u *User) MayActFor(service string) bool {
	if u.Scopes == nil {
		return true
	}
	for _, s := range u.Scopes {
		scope, filter, _ := strings.Cut(s, "!")
		switch {
		case scope == "access:servers":
			if filter == "" || filter == "user="+u.Name || strings.HasPrefix(filter, "server="+u.Name+"/") {
				return true
			}
		case scope == "access:services":
			if filter == "" || (service != "" && filter == "service="+service) {
				return true
			}
		}
	}
	return false
}

// ActsAsAdmin reports whether the token acts as a hub admin: its owner is
// one and the token carries an admin's unfiltered scope (admin:users or
// admin:servers), so an admin's token made only to identify them is not.
func (u *User) ActsAsAdmin() bool {
	if !u.Admin {
		return false
	}
	if u.Scopes == nil {
		return true
	}
	return slices.Contains(u.Scopes, "admin:users") || slices.Contains(u.Scopes, "admin:servers")
}

// Server is one of a user's servers ("" is the default one).
type Server struct {
	Ready   bool    `json:"ready"`
	Pending *string `json:"pending"` // "spawn", "stop", or null
	URL     string  `json:"url"`     // path of the server on the hub's host, e.g. /user/alice/
}

// User looks name up.
func (c *Client) User(ctx context.Context, token, name string) (*User, error) {
	var u User
	if err := c.do(ctx, http.MethodGet, c.hubURL("users", name), token, nil, &u, "GET user "+name); err != nil {
		return nil, err
	}
	return &u, nil
}

// Whoami returns the user who owns token (GET /hub/api/user).
func (c *Client) Whoami(ctx context.Context, token string) (*User, error) {
	var u User
	if err := c.do(ctx, http.MethodGet, c.hubURL("user"), token, nil, &u, "GET token owner"); err != nil {
		return nil, err
	}
	return &u, nil
}

// ErrSpawnFailed is matched by a server that the hub reports as failed.
var ErrSpawnFailed = errors.New("the Jupyter server failed to start")

// Server makes sure name's default server runs, starting it and following
// the hub's progress stream until it is ready, and returns its path (the
// "url" of the hub's server model), for Contents. token goes to the hub
// only. ctx bounds the wait.
func (c *Client) Server(ctx context.Context, token, name string) (string, error) {
	pause := 100 * time.Millisecond
	for {
		u, err := c.User(ctx, token, name)
		if err != nil {
			return "", err
		}
		srv, exists := u.Servers[""]
		switch {
		case exists && srv.Ready && srv.URL != "":
			return srv.URL, nil
		case exists && srv.Pending != nil && *srv.Pending == "stop":
			// Stopping: it can be started again once it is gone.
			if err := sleep(ctx, 200*time.Millisecond); err != nil {
				return "", err
			}
			continue
		case !exists || srv.Pending == nil:
			err := c.do(ctx, http.MethodPost, c.hubURL("users", name, "server"), token, nil, nil, "start server of "+name)
			if err != nil && StatusOf(err) != http.StatusBadRequest { // 400: already started meanwhile
				return "", err
			}
		}
		ready, err := c.waitReady(ctx, token, name)
		if err != nil {
			return "", err
		}
		if !ready {
			// The progress stream ended before the server was ready or
			// failed: look again, but not in a tight loop against the
			// hub should it keep ending them.
			if err := sleep(ctx, pause); err != nil {
				return "", err
			}
			pause = min(2*pause, 2*time.Second)
		}
	}
}

// Token is an API token as the hub creates it.
type Token struct {
	ID      string // "a<number>", for DeleteToken
	Token   string
	Expires time.Time // zero: never
}

// NewToken creates a token owned by user with exactly scopes, valid for
// expiresIn (rounded up to a second; 0: no expiry), with note. hubToken
// needs the "tokens" scope on user, and the hub grants only scopes user
// holds.
func (c *Client) NewToken(ctx context.Context, hubToken, user string, scopes []string, expiresIn time.Duration, note string) (*Token, error) {
	body := map[string]any{"scopes": scopes, "note": note}
	if expiresIn > 0 {
		body["expires_in"] = int64((expiresIn + time.Second - 1) / time.Second)
	}
	start := time.Now()
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if err := c.do(ctx, http.MethodPost, c.hubURL("users", user, "tokens"), hubToken, body, &out, "create a token for "+user); err != nil {
		return nil, err
	}
	if out.ID == "" || out.Token == "" {
		return nil, &APIError{Op: "create a token for " + user, Status: http.StatusBadGateway, Message: "the answer holds no token"}
	}
	t := &Token{ID: out.ID, Token: out.Token}
	if expiresIn > 0 {
		t.Expires = start.Add(expiresIn)
	}
	return t, nil
}

// DeleteToken deletes user's token id.
func (c *Client) DeleteToken(ctx context.Context, hubToken, user, id string) error {
	return c.do(ctx, http.MethodDelete, c.hubURL("users", user, "tokens", id), hubToken, nil, nil, "delete a token of "+user)
}

// ServerScope is the one scope of the tokens ServerAccess mints: access to
// user's default server, nothing else.
func ServerScope(user string) string { return "access:servers!server=" + user + "/" }

// ServerAccess is a short-lived token owned by one user that reaches only
// their default server (ServerScope), minted with a hub token that may
// create tokens for them (which itself never goes to the user's server).
// It is renewed when less than a third of its lifetime is left, the old one
// deleted; Close deletes the last one. Safe for one goroutine at a time.
type ServerAccess struct {
	c        *Client
	hubToken string
	user     string
	ttl      time.Duration
	note     string
	cur      *Token
	// Failed is told of a token that could not be deleted (nil: nothing).
	Failed func(error)
}

// ServerAccess returns a ServerAccess for user's default server whose tokens
// live ttl (0: 10 minutes) and carry note; nothing is minted before the
// first Token.
func (c *Client) ServerAccess(hubToken, user string, ttl time.Duration, note string) *ServerAccess {
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	return &ServerAccess{c: c, hubToken: hubToken, user: user, ttl: ttl, note: note}
}

// Token returns the current token, minting one first if there is none or
// it has less than a third of its lifetime left.
func (a *ServerAccess) Token(ctx context.Context) (string, error) {
	if a.cur != nil && time.Until(a.cur.Expires) > a.ttl/3 {
		return a.cur.Token, nil
	}
	t, err := a.c.NewToken(ctx, a.hubToken, a.user, []string{ServerScope(a.user)}, a.ttl, a.note)
	if err != nil {
		return "", err
	}
	old := a.cur
	a.cur = t
	if old != nil {
		a.delete(ctx, old)
	}
	return t.Token, nil
}

// Close deletes the current token, even when ctx is cancelled.
func (a *ServerAccess) Close(ctx context.Context) {
	if a.cur != nil {
		a.delete(ctx, a.cur)
		a.cur = nil
	}
}

func (a *ServerAccess) delete(ctx context.Context, t *Token) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := a.c.DeleteToken(ctx, a.hubToken, a.user, t.ID)
	if err != nil && StatusOf(err) != http.StatusNotFound && a.Failed != nil {
		a.Failed(err)
	}
}

// TokenSource gives the token of each request to a Jupyter server.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// StaticToken is a TokenSource of one token.
type StaticToken string

func (t StaticToken) Token(context.Context) (string, error) { return string(t), nil }

// waitReady follows the server's progress event stream until it reports
// ready or failed.
func (c *Client) waitReady(ctx context.Context, token, name string) (ready bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.hubURL("users", name, "server", "progress"), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "token "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.send(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, apiError(resp, "progress of "+name)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok {
			continue
		}
		var ev struct {
			Ready   bool   `json:"ready"`
			Failed  bool   `json:"failed"`
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(strings.TrimSpace(data)), &ev) != nil {
			continue
		}
		if ev.Failed {
			return false, fmt.Errorf("%w: %s", ErrSpawnFailed, ev.Message)
		}
		if ev.Ready {
			return true, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := sc.Err(); err != nil {
		return false, unreachable{err}
	}
	return false, nil // the stream ended: look at the user model again
}

func (c *Client) hubURL(parts ...string) string {
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return c.base.String() + "/hub/api/" + strings.Join(parts, "/")
}

// Contents is the contents API of the server at serverPath (the "url" of
// the hub's server model, as Server returns it: escaped, and holding the
// hub's base path), reached with the tokens of tokens.
func (c *Client) Contents(serverPath string, tokens TokenSource) *Contents {
	base := c.base.Scheme + "://" + c.base.Host + "/" + strings.Trim(serverPath, "/") + "/api/contents"
	return &Contents{c: c, base: base, tokens: tokens}
}

func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		var op *net.OpError
		var dns *net.DNSError
		if errors.As(err, &op) || errors.As(err, &dns) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, unreachable{err}
		}
		return nil, err
	}
	return resp, nil
}

// do sends a JSON request with token and decodes a JSON answer into out.
func (c *Client) do(ctx context.Context, method, u, token string, in, out any, op string) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "token "+token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.roundTrip(req, out, op)
}

// MaxAnswer bounds a JSON answer of the hub or of a Jupyter server (the
// user's server is the user's own code): a larger one fails with
// ErrTooLarge before it is held in memory.
const MaxAnswer = 16 << 20

// ErrTooLarge is matched by an answer over MaxAnswer.
var ErrTooLarge = errors.New("the answer is larger than 16 MiB")

func (c *Client) roundTrip(req *http.Request, out any, op string) error {
	ctx, cancel := context.WithTimeout(req.Context(), c.timeout)
	defer cancel()
	err := c.exchange(req.WithContext(ctx), out, op)
	if err != nil && ctx.Err() == context.DeadlineExceeded && req.Context().Err() == nil {
		return fmt.Errorf("%s: %w", op, ErrTimeout)
	}
	return err
}

func (c *Client) exchange(req *http.Request, out any, op string) error {
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp, op)
	}
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, MaxAnswer)).Decode(out); err != nil {
		if tooLarge := new(http.MaxBytesError); errors.As(err, &tooLarge) {
			return fmt.Errorf("%s: %w", op, ErrTooLarge)
		}
		return fmt.Errorf("%s: malformed answer: %w", op, err)
	}
	return nil
}

// apiError reads the {"message": ...} that JupyterHub and Jupyter Server
// send with errors (HTML pages and tracebacks are left out).
func apiError(resp *http.Response, op string) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var m struct {
		Message string `json:"message"`
	}
	json.Unmarshal(b, &m)
	return &APIError{Op: op, Status: resp.StatusCode, Message: m.Message}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// Contents is one Jupyter server's contents API. Paths are relative to the
// server's root directory, with forward slashes.
type Contents struct {
	c      *Client
	base   string // .../user/<name>/api/contents
	tokens TokenSource
}

// do is Client.do with the contents API's current token.
func (c *Contents) do(ctx context.Context, method, u string, in, out any, op string) error {
	token, err := c.tokens.Token(ctx)
	if err != nil {
		return err
	}
	return c.c.do(ctx, method, u, token, in, out, op)
}

// Model is a file or directory as the contents API describes it.
type Model struct {
	Name    string  `json:"name"`
	Path    string  `json:"path"`
	Type    string  `json:"type"` // "file", "directory" or "notebook"
	Size    *int64  `json:"size"`
	Content []Model `json:"-"` // a directory's entries, when asked for
}

func (c *Contents) url(p string) string {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return c.base + "/" + strings.Join(parts, "/")
}

// Get describes p; with entries, a directory's entries come in Content.
func (c *Contents) Get(ctx context.Context, p string, entries bool) (*Model, error) {
	q := "?content=0"
	if entries {
		q = "?content=1"
	}
	var raw struct {
		Model
		Content json.RawMessage `json:"content"`
	}
	if err := c.do(ctx, http.MethodGet, c.url(p)+q, nil, &raw, "GET "+p); err != nil {
		return nil, err
	}
	m := raw.Model
	if entries && m.Type == "directory" && len(raw.Content) > 0 {
		if err := json.Unmarshal(raw.Content, &m.Content); err != nil {
			return nil, fmt.Errorf("GET %s: malformed listing: %w", p, err)
		}
	}
	return &m, nil
}

// Mkdir creates directory p (nothing happens if it exists).
func (c *Contents) Mkdir(ctx context.Context, p string) error {
	return c.do(ctx, http.MethodPut, c.url(p), map[string]string{"type": "directory"}, nil, "create folder "+p)
}

// Rename moves from to to; the server refuses (409) when to exists.
func (c *Contents) Rename(ctx context.Context, from, to string) error {
	return c.do(ctx, http.MethodPatch, c.url(from), map[string]string{"path": to}, nil, "rename "+from)
}

// Delete removes p (a folder with its content).
func (c *Contents) Delete(ctx context.Context, p string) error {
	return c.do(ctx, http.MethodDelete, c.url(p), nil, nil, "delete "+p)
}

// Upload writes size bytes read from src at offset 0 to file p, as base64
// in chunks of at most chunk bytes (contents API chunks 1, 2, ..., -1 for
// the last), streaming: memory stays a few buffers whatever the size. done is
// called after every chunk with the bytes sent so far. It returns the
// file's model as the server reports it after the last chunk.
func (c *Contents) Upload(ctx context.Context, p string, src io.ReaderAt, size, chunk int64, done func(int64)) (*Model, error) {
	if chunk < 3 {
		chunk = 8 << 20
	}
	chunk -= chunk % 3 // every chunk but the last encodes without padding
	var m Model
	if size <= chunk {
		// One request, no chunk field: an ordinary save.
		if err := c.put(ctx, p, 0, io.NewSectionReader(src, 0, size), size, &m); err != nil {
			return nil, err
		}
		done(size)
		return &m, nil
	}
	for off, n := int64(0), 1; off < size; n++ {
		length := min(chunk, size-off)
		number := n
		if off+length == size {
			number = -1
		}
		if err := c.put(ctx, p, number, io.NewSectionReader(src, off, length), length, &m); err != nil {
			return nil, err
		}
		off += length
		done(off)
	}
	return &m, nil
}

// put sends one PUT whose body is the JSON model with content base64
// encoded as it is read, with an exact Content-Length.
func (c *Contents) put(ctx context.Context, p string, chunk int, data io.Reader, n int64, out *Model) error {
	head := `{"type":"file","format":"base64",`
	if chunk != 0 {
		head += fmt.Sprintf(`"chunk":%d,`, chunk)
	}
	head += `"content":"`
	token, err := c.tokens.Token(ctx)
	if err != nil {
		return err
	}
	const tail = `"}`
	body := io.MultiReader(strings.NewReader(head), newBase64Reader(data), strings.NewReader(tail))
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url(p), body)
	if err != nil {
		return err
	}
	req.ContentLength = int64(len(head)) + int64(base64.StdEncoding.EncodedLen(int(n))) + int64(len(tail))
	req.Header.Set("Authorization", "token "+token)
	req.Header.Set("Content-Type", "application/json")
	op := "write " + p
	if chunk != 0 {
		op = fmt.Sprintf("write chunk %d of %s", chunk, p)
	}
	return c.c.roundTrip(req, out, op)
}

// base64Reader encodes what it reads from src, in blocks a multiple of 3
// bytes long so only the very end carries padding.
type base64Reader struct {
	src     io.Reader
	raw     []byte
	enc     []byte
	pending []byte
	err     error
}

func newBase64Reader(src io.Reader) *base64Reader {
	const block = 48 << 10 // a multiple of 3
	return &base64Reader{src: src, raw: make([]byte, block), enc: make([]byte, base64.StdEncoding.EncodedLen(block))}
}

func (r *base64Reader) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		n, err := io.ReadFull(r.src, r.raw)
		if n > 0 {
			base64.StdEncoding.Encode(r.enc, r.raw[:n])
			r.pending = r.enc[:base64.StdEncoding.EncodedLen(n)]
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			r.err = io.EOF
		case err != nil:
			r.err = err
		}
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}
