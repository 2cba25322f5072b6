package testenv

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// OIDCUser is a user of the test OpenID provider (see OIDCProviderFor).
type OIDCUser struct {
	ID       string   `json:"id"` // sub
	Username string   `json:"username"`
	Password string   `json:"password"`
	Email    string   `json:"email,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	// Scopes are the capability scopes (storage.read:/path) the user is
	// entitled to: a token carries those of them the client asked for.
	Scopes []string `json:"scopes,omitempty"`
}

// OIDCClient is a client registered with the test OpenID provider. Every
// client gets RS256 JWT access tokens.
type OIDCClient struct {
	ID string `json:"id"`
	// Secret makes a confidential client (client credentials allowed);
	// without one it is a public client that must use PKCE.
	Secret       string   `json:"secret,omitempty"`
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// Audience is the tokens' aud besides the client id (always there).
	Audience []string `json:"audience,omitempty"`
	// AccessTokenLifetime, default 5 minutes.
	AccessTokenLifetime time.Duration `json:"-"`
	// UsernameInToken puts preferred_username in access tokens; without it
	// only userinfo has it, as with INDIGO IAM's access tokens.
	UsernameInToken bool `json:"username_in_token,omitempty"`
	// GroupsClaims: the access-token claims that carry the groups, e.g.
	// []string{"wlcg.groups"}; none: no groups in tokens (userinfo's
	// "groups" still has them).
	GroupsClaims []string `json:"groups_claims,omitempty"`
	// For client credentials tokens: sub (default the client id), the
	// scopes the client may be granted, and its groups.
	Subject string   `json:"subject,omitempty"`
	Scopes  []string `json:"scopes,omitempty"`
	Groups  []string `json:"groups,omitempty"`
}

// MarshalJSON writes the lifetime the way the provider reads it.
func (c OIDCClient) MarshalJSON() ([]byte, error) {
	type plain OIDCClient
	var lifetime string
	if c.AccessTokenLifetime > 0 {
		lifetime = c.AccessTokenLifetime.String()
	}
	return json.Marshal(struct {
		plain
		Lifetime string `json:"access_token_lifetime,omitempty"`
	}{plain(c), lifetime})
}

// OIDCConfig is what a test provider knows: its users and clients.
type OIDCConfig struct {
	Users   []OIDCUser
	Clients []OIDCClient
}

// OIDCProvider is a real OpenID provider (tools/oidcprovider, built on the
// op package of github.com/zitadel/oidc/v3) running as its own process on
// 127.0.0.1: discovery at Issuer + "/.well-known/openid-configuration", its
// JWKS, the authorization code flow through its own login page, client
// credentials and userinfo.
type OIDCProvider struct {
	Issuer string // http://127.0.0.1:PORT, no trailing slash
	Config OIDCConfig

	tb   testing.TB
	dir  string
	addr string // 127.0.0.1:0 until the first start, then the port it got

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *syncBuffer
}

// OIDCTokens is a token endpoint's answer.
type OIDCTokens struct {
	AccessToken string `json:"access_token"`
	IDToken     string `json:"id_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

// OIDCProviderFor starts a provider for tb alone, stopped when tb ends. Two
// calls give two providers: two issuers with keys of their own.
func OIDCProviderFor(tb testing.TB, cfg OIDCConfig) *OIDCProvider {
	tb.Helper()
	if !mainUsed.Load() {
		tb.Fatalf("testenv.OIDCProviderFor: the package's tests must declare func TestMain(m *testing.M) { testenv.Main(m) } so the provider's build is removed at the end")
	}
	p := &OIDCProvider{Config: cfg, tb: tb, dir: tb.TempDir(), addr: "127.0.0.1:0"}
	tb.Cleanup(func() {
		p.Stop()
		if tb.Failed() {
			tb.Logf("OpenID provider %s logs:\n%s", p.Issuer, p.Logs())
		}
	})
	p.Start()
	return p
}

// Start starts the provider, again on the same port and with the same keys
// after Stop (a token it signed before verifies after).
func (p *OIDCProvider) Start() {
	p.tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.tb.Fatalf("testenv: OpenID provider %s already running", p.Issuer)
	}
	conf := struct {
		Addr     string       `json:"addr"`
		StateDir string       `json:"state_dir"`
		Users    []OIDCUser   `json:"users"`
		Clients  []OIDCClient `json:"clients"`
	}{p.addr, filepath.Join(p.dir, "state"), p.Config.Users, p.Config.Clients}
	b, err := json.Marshal(conf)
	if err != nil {
		p.tb.Fatal(err)
	}
	confPath := filepath.Join(p.dir, "config.json")
	if err := os.WriteFile(confPath, b, 0o600); err != nil {
		p.tb.Fatal(err)
	}
	cmd := exec.Command(oidcProviderBinary(p.tb), "-config", confPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the tests
	out, err := cmd.StdoutPipe()
	if err != nil {
		p.tb.Fatal(err)
	}
	p.logs = &syncBuffer{}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		p.tb.Fatalf("testenv: start OpenID provider: %v", err)
	}
	done := make(chan struct{})
	first := make(chan string, 1)
	go func() {
		// The first line says where it listens; the rest is kept as logs.
		rd := bufio.NewReader(out)
		if line, err := rd.ReadString('\n'); err == nil {
			first <- line
		}
		close(first)
		io.Copy(p.logs, rd)
		cmd.Wait()
		close(done)
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(30 * time.Second):
	}
	var hello struct{ Issuer string }
	if err := json.Unmarshal([]byte(line), &hello); err != nil || hello.Issuer == "" {
		cmd.Process.Kill()
		<-done
		p.tb.Fatalf("testenv: OpenID provider did not start (first line %q):\n%s", line, p.logs.String())
	}
	p.cmd, p.done = cmd, done
	p.Issuer = hello.Issuer
	p.addr = strings.TrimPrefix(hello.Issuer, "http://")
}

// Stop ends the provider (SIGTERM); its port is then closed, as when an
// identity provider is unreachable. Start brings it back.
func (p *OIDCProvider) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// Logs returns what the provider wrote to stderr.
func (p *OIDCProvider) Logs() string {
	if p.logs == nil {
		return ""
	}
	return p.logs.String()
}

// client returns the configured client with the given id.
func (p *OIDCProvider) client(tb testing.TB, id string) OIDCClient {
	tb.Helper()
	for _, c := range p.Config.Clients {
		if c.ID == id {
			return c
		}
	}
	tb.Fatalf("testenv: the OpenID provider has no client %q", id)
	return OIDCClient{}
}

// ClientCredentials gets a token for the confidential client clientID
// acting for itself (the client credentials grant).
func (p *OIDCProvider) ClientCredentials(tb testing.TB, clientID string, scopes ...string) *OIDCTokens {
	tb.Helper()
	c := p.client(tb, clientID)
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	req, err := http.NewRequest(http.MethodPost, p.Issuer+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	return p.tokens(tb, http.DefaultClient, req)
}

// Login signs username in for clientID the way a browser does, driven from
// Go with a cookie jar: the authorization code flow with PKCE (S256)
// through the provider's login form, then the code for tokens at the token
// endpoint (with the client secret for a confidential client). The client
// needs a redirect URI; nothing has to listen there.
func (p *OIDCProvider) Login(tb testing.TB, clientID, username, password string, scopes ...string) *OIDCTokens {
	tb.Helper()
	c := p.client(tb, clientID)
	verifier := randomURLSafe(tb, 32)
	sum := sha256.Sum256([]byte(verifier))
	code, hc := p.authorizationCode(tb, c, username, password, base64.RawURLEncoding.EncodeToString(sum[:]), scopes)
	return p.exchangeCode(tb, hc, c, code, verifier)
}

// authorizationCode runs the browser's part of the code flow: authorize,
// the login form, and the redirect to the client's first redirect URI with
// a code. challenge is the PKCE S256 challenge, "" for none.
func (p *OIDCProvider) authorizationCode(tb testing.TB, c OIDCClient, username, password, challenge string, scopes []string) (string, *http.Client) {
	tb.Helper()
	if len(c.RedirectURIs) == 0 {
		tb.Fatalf("testenv: client %s has no redirect URI for the code flow", c.ID)
	}
	redirect := c.RedirectURIs[0]
	state := randomURLSafe(tb, 16)
	if len(scopes) == 0 {
		scopes = []string{"openid", "profile"}
	}
	jar, _ := cookiejar.New(nil)
	var code string
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), redirect) {
				q := req.URL.Query()
				if q.Get("state") != state {
					return fmt.Errorf("redirect with state %q, sent %q", q.Get("state"), state)
				}
				if e := q.Get("error"); e != "" {
					return fmt.Errorf("provider refused: %s: %s", e, q.Get("error_description"))
				}
				code = q.Get("code")
				return http.ErrUseLastResponse
			}
			return nil
		}}
	params := url.Values{
		"client_id":     {c.ID},
		"redirect_uri":  {redirect},
		"response_type": {"code"},
		"scope":         {strings.Join(scopes, " ")},
		"state":         {state},
	}
	if challenge != "" {
		params.Set("code_challenge", challenge)
		params.Set("code_challenge_method", "S256")
	}
	resp, err := hc.Get(p.Issuer + "/authorize?" + params.Encode())
	if err != nil {
		tb.Fatalf("testenv: authorize: %v", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="id" value="([^"]+)"`).FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		tb.Fatalf("testenv: authorize: no login form (%s): %s", resp.Status, page)
	}
	resp, err = hc.PostForm(p.Issuer+"/login", url.Values{"id": {string(m[1])}, "username": {username}, "password": {password}})
	if err != nil {
		tb.Fatalf("testenv: login: %v", err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if code == "" {
		tb.Fatalf("testenv: login as %s gave no code (%s): %s", username, resp.Status, page)
	}
	return code, hc
}

// exchangeCode trades a code for tokens, with the client secret for a
// confidential client and the PKCE verifier when there is one.
func (p *OIDCProvider) exchangeCode(tb testing.TB, hc *http.Client, c OIDCClient, code, verifier string) *OIDCTokens {
	tb.Helper()
	req := p.codeRequest(tb, c, code, verifier)
	return p.tokens(tb, hc, req)
}

func (p *OIDCProvider) codeRequest(tb testing.TB, c OIDCClient, code, verifier string) *http.Request {
	tb.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.RedirectURIs[0]},
		"client_id": {c.ID}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	req, err := http.NewRequest(http.MethodPost, p.Issuer+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.Secret != "" {
		req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	}
	return req
}

func (p *OIDCProvider) tokens(tb testing.TB, hc *http.Client, req *http.Request) *OIDCTokens {
	tb.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatalf("testenv: token endpoint: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var t OIDCTokens
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &t) != nil || t.AccessToken == "" {
		tb.Fatalf("testenv: token endpoint answered %s: %s", resp.Status, body)
	}
	return &t
}

// RotateKey makes the provider sign with a new key and returns its kid. The
// old keys stay in the JWKS unless retire is set.
func (p *OIDCProvider) RotateKey(tb testing.TB, retire bool) string {
	tb.Helper()
	u := p.Issuer + "/testing/rotate"
	if retire {
		u += "?retire=1"
	}
	var out struct{ Kid string }
	p.control(tb, http.MethodPost, u, &out)
	return out.Kid
}

// SetClock has the provider issue tokens as if the time were now+offset:
// with a negative offset beyond their lifetime they are born expired, with
// a positive one they are not valid yet (nbf in the future).
func (p *OIDCProvider) SetClock(tb testing.TB, offset time.Duration) {
	tb.Helper()
	p.control(tb, http.MethodPost, p.Issuer+"/testing/clock?offset="+url.QueryEscape(offset.String()), nil)
}

// Requests returns how many requests the provider has served on path
// (e.g. "/userinfo", "/keys", "/.well-known/openid-configuration").
func (p *OIDCProvider) Requests(tb testing.TB, path string) int {
	tb.Helper()
	var counts map[string]int
	p.control(tb, http.MethodGet, p.Issuer+"/testing/counts", &counts)
	return counts[path]
}

func (p *OIDCProvider) control(tb testing.TB, method, u string, out any) {
	tb.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("testenv: OpenID provider: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("testenv: OpenID provider %s %s: %s: %s", method, u, resp.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			tb.Fatalf("testenv: OpenID provider %s %s: %v: %s", method, u, err, body)
		}
	}
}

func randomURLSafe(tb testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// oidcProviderBinary builds tools/oidcprovider, a module of its own (its
// dependencies stay out of the service's go.mod), once per test binary.
func oidcProviderBinary(tb testing.TB) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	const name = "tools/oidcprovider"
	if bin, ok := binaries[name]; ok {
		return bin
	}
	if binDir == "" {
		dir, err := os.MkdirTemp("", "skao-staging-test-bin-")
		if err != nil {
			tb.Fatal(err)
		}
		binDir = dir
		atExit(func() { os.RemoveAll(dir) })
	}
	bin := filepath.Join(binDir, "oidcprovider")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(RepoRoot(), "tools", "oidcprovider")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("testenv: build %s: %v\n%s", name, err, out)
	}
	if _, err := os.Stat(bin); errors.Is(err, os.ErrNotExist) {
		tb.Fatalf("testenv: build %s left no program", name)
	}
	binaries[name] = bin
	return bin
}
