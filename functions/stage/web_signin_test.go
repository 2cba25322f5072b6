package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// The page signing in: with AUTH_MODE=oidc through the identity provider's
// own login page (a real provider, tools/oidcprovider), with
// AUTH_MODE=jupyterhub with a real hub's token.

// pageProvider is an identity provider for the page at pageURL: its public
// client "page" (PKCE, the page as redirect URI, tokens for this service,
// as SKA IAM gives them; edit changes it) and the confidential "cli" that
// tests use from Go.
func pageProvider(t *testing.T, pageURL string, edit func(*testenv.OIDCClient)) *testenv.OIDCProvider {
	page := testenv.OIDCClient{ID: "page", RedirectURIs: []string{pageURL + "/"}, Audience: []string{audience}}
	if edit != nil {
		edit(&page)
	}
	return testenv.OIDCProviderFor(t, testenv.OIDCConfig{
		Users: []testenv.OIDCUser{
			{ID: "u-alice", Username: "alice", Password: "alice-pw"},
			{ID: "u-bob", Username: "bob", Password: "bob-pw"},
			{ID: "u-admin", Username: "admin", Password: "admin-pw", Groups: []string{adminsGrp}},
		},
		Clients: []testenv.OIDCClient{
			page,
			{ID: "cli", Secret: "cli-secret", RedirectURIs: []string{"http://127.0.0.1:1/cb"}, Audience: []string{audience},
				GroupsClaims: []string{"wlcg.groups"}},
		},
	})
}

// sentRequest is a request the page sent, as Chromium reports it.
type sentRequest struct {
	Method, URL, Authorization string
}

// requestLog records every request of a page's tab.
type requestLog struct {
	mu   sync.Mutex
	list []sentRequest
}

func recordRequests(p *page) *requestLog {
	l := &requestLog{}
	events := chromedp.Events(p.ctx, network.RequestWillBeSent)
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			r := sentRequest{Method: ev.Request.Method, URL: ev.Request.URL}
			for k, v := range ev.Request.Headers {
				if strings.EqualFold(k, "Authorization") {
					r.Authorization = fmt.Sprint(v)
				}
			}
			l.mu.Lock()
			l.list = append(l.list, r)
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *requestLog) all() []sentRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sentRequest(nil), l.list...)
}

// await waits for a request that match accepts, sent after the first from
// requests, and returns it.
func (l *requestLog) await(t *testing.T, what string, from int, match func(sentRequest) bool) sentRequest {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, r := range l.all()[min(from, len(l.all())):] {
			if match(r) {
				return r
			}
		}
	}
	t.Fatalf("no request %s among:\n%v", what, l.all())
	return sentRequest{}
}

// waitAcross polls a JavaScript expression in whatever document the tab
// shows, through navigations (to the provider and back), until it is
// truthy, and returns its value as a string.
func (p *page) waitAcross(t *testing.T, what, expr string, timeout time.Duration) string {
	t.Helper()
	js := fmt.Sprintf(`(() => { try { const v = (%s); return v ? String(v) : ""; } catch { return ""; } })()`, expr)
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		cancel()
		if err == nil && v != "" {
			return v
		}
		last = err
	}
	t.Fatalf("waiting for %s (%s): %v\n%s", what, expr, last, p.state())
	return ""
}

// login fills the provider's own login page in and sends it.
func (p *page) login(t *testing.T, issuer, user, password string) {
	t.Helper()
	p.waitAcross(t, "the provider's login page", fmt.Sprintf(`location.origin === %q && document.querySelector("#password")`, issuer), 30*time.Second)
	p.do(t, chromedp.SendKeys(chromedp.ID("username"), user), chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("submit")))
}

// signedIn waits until the page at origin shows user signed in.
func (p *page) signedIn(t *testing.T, origin, user string) {
	t.Helper()
	p.waitAcross(t, user+" signed in", fmt.Sprintf(`location.origin === %q && document.querySelector("#session-user")?.textContent === %q
		&& !document.querySelector("#session-who").hidden`, origin, user), 30*time.Second)
}

// storedAnywhere is what the page keeps where a token must never be:
// localStorage, sessionStorage, its cookies, its address and its history
// entry, and every cookie of the browser.
func (p *page) storedAnywhere(t *testing.T) string {
	t.Helper()
	v := eval[string](t, p, `JSON.stringify({local: Object.entries(localStorage), session: Object.entries(sessionStorage),
		cookie: document.cookie, url: location.href, state: history.state})`)
	cookies, err := chromedp.Call(p.ctx, storage.GetCookies, storage.GetCookiesParams{})
	must(t, err)
	b, _ := json.Marshal(cookies.Cookies)
	return v + string(b)
}

// TestWebPageSignIn drives the page with AUTH_MODE=oidc in Chromium, behind
// the local ingress with the logs function: signing in through the
// provider's own login page (a wrong password first), staging as the user,
// the user's history only, a download and the log with the token, the
// token kept in memory only, signing out.
func TestWebPageSignIn(t *testing.T) {
	port := testenv.FreePort(t)
	pageURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	idp := pageProvider(t, pageURL, nil)
	s := startStage(t, oidcEnv(idp, nil)) // OIDC_CLIENT_ID=page
	s.write(t, "data/alice.txt", "alice's data\n")
	s.write(t, "data/bob.txt", "bob's data\n")
	blob := make([]byte, 2<<20+3)
	rand.Read(blob)
	must(t, os.WriteFile(filepath.Join(s.Source, "data/blob.bin"), blob, 0o644))
	env := map[string]string{}
	for k, v := range s.Env {
		if k != "PORT" {
			env[k] = v
		}
	}
	logs := testenv.StartFunction(t, "logs", env)
	startIngressAt(t, port, "/logs="+logs.URL+";/="+s.URL)

	// Bob's operation, which alice's history must not show.
	bobs := s.stageAs(t, login(t, idp, "bob"), "bob", "data/bob.txt", "b.txt")
	expect(t, bobs, 200, "status", "success")

	p := newPage(t, 1280, 900)
	sent := recordRequests(p)
	p.do(t, chromedp.Navigate(pageURL))
	p.wait(t, "the sign-in button", `!document.querySelector("#sign-in").hidden && !document.querySelector("#session").hidden`)

	t.Run("signed out, the page asks to sign in", func(t *testing.T) {
		if ro, v := eval[bool](t, p, `document.querySelector("#username").readOnly`), eval[string](t, p, `document.querySelector("#username").value`); !ro || v != "" {
			t.Errorf("username field read-only %v, value %q", ro, v)
		}
		p.wait(t, "the history's message", `document.querySelector("#history-error").textContent === "Cannot load the history: Sign in first."`)
		p.wait(t, "the log's message", `document.querySelector("#log-state").textContent === "Sign in to follow the log."`)
		p.set(t, "#method", "local_copy")
		p.set(t, "#source", "data/alice.txt")
		p.set(t, "#target", "early.txt")
		if kind, text := p.submit(t); kind != "error" || text != "Sign in to stage data." {
			t.Fatalf("answer %s %q", kind, text)
		}
		p.wait(t, "focus on Sign in", `document.activeElement.id === "sign-in"`)
		for _, r := range sent.all() {
			if strings.HasPrefix(r.URL, pageURL) && (strings.Contains(r.URL, "/stage_data") || strings.Contains(r.URL, "/operations")) {
				t.Errorf("a request without credentials was sent: %s %s", r.Method, r.URL)
			}
		}
	})

	t.Run("a wrong password stays on the provider's page", func(t *testing.T) {
		p.do(t, chromedp.Focus(chromedp.ID("sign-in")), chromedp.KeyEvent(kb.Enter)) // by keyboard
		p.login(t, idp.Issuer, "alice", "not-her-password")
		msg := p.waitAcross(t, "the provider's error", fmt.Sprintf(`location.origin === %q && document.querySelector("#error")?.textContent`, idp.Issuer), 30*time.Second)
		if !strings.Contains(strings.ToLower(msg), "password") && !strings.Contains(strings.ToLower(msg), "invalid") {
			t.Errorf("provider's message %q", msg)
		}
		p.screenshot(t, "signin-wrong-password.png")
	})

	var token string
	t.Run("signing in through the provider's login page", func(t *testing.T) {
		from := len(sent.all())
		p.do(t, chromedp.SendKeys(chromedp.ID("username"), "alice"), chromedp.SendKeys(chromedp.ID("password"), "alice-pw"),
			chromedp.Click(chromedp.ID("submit")))
		p.signedIn(t, pageURL, "alice")
		if ro, v := eval[bool](t, p, `document.querySelector("#username").readOnly`), eval[string](t, p, `document.querySelector("#username").value`); !ro || v != "alice" {
			t.Errorf("username field read-only %v, value %q", ro, v)
		}
		// The token goes with the page's calls.
		r := sent.await(t, "to /operations with a bearer token", from, func(r sentRequest) bool {
			return strings.HasPrefix(r.URL, pageURL+"/operations") && strings.HasPrefix(r.Authorization, "Bearer ")
		})
		token = strings.TrimPrefix(r.Authorization, "Bearer ")
		if strings.Count(token, ".") != 2 {
			t.Fatalf("the bearer token %q is no JWT", token)
		}
		// The code and state left the address; the token is in memory only.
		if search := eval[string](t, p, `location.search`); search != "" {
			t.Errorf("the address still has %q", search)
		}
		if stored := p.storedAnywhere(t); strings.Contains(stored, token) || strings.Contains(stored, "code_verifier") {
			t.Errorf("the token is stored: %s", stored)
		}
		if n := eval[float64](t, p, `sessionStorage.length`); n != 0 {
			t.Errorf("sessionStorage keeps %v entries after the sign-in", n)
		}
		for _, r := range sent.all() {
			if strings.Contains(r.URL, token) {
				t.Errorf("the token is in the address of %s %s", r.Method, r.URL)
			}
		}
	})

	t.Run("staging as the signed-in user", func(t *testing.T) {
		p.set(t, "#method", "local_copy")
		p.set(t, "#source", "data/alice.txt")
		p.set(t, "#target", "mine.txt")
		if kind, text := p.submit(t); kind != "success" || text != "Data staged for user alice with method local_copy" {
			t.Fatalf("answer %s %q", kind, text)
		}
		got, err := os.ReadFile(s.userPath("alice", "mine.txt"))
		if err != nil || string(got) != "alice's data\n" {
			t.Fatalf("staged %q, %v", got, err)
		}
		p.historyRow(t, "the staging in the history", "#history-table tbody tr",
			`row.dataset.status === "success" && row.innerText.includes("data/alice.txt → mine.txt")`)
		ids := eval[[]string](t, p, `[...document.querySelectorAll("#history-table tbody tr")].map(r => r.dataset.id || "")`)
		admin := login(t, idp, "admin")
		for _, id := range ids {
			if id == bobs.Str("id") {
				t.Errorf("alice's history shows bob's operation %s", id)
			}
			if id == "" {
				t.Errorf("history rows %v", ids)
				continue
			}
			if op := s.operationAs(t, admin, id); op["username"] != "alice" {
				t.Errorf("operation %s in alice's history is %v's", id, op["username"])
			}
		}
	})

	t.Run("a download carries the token in a form, not in the address", func(t *testing.T) {
		downloaded := p.expectDownload(t)
		from := len(sent.all())
		p.set(t, "#method", "direct_download")
		p.set(t, "#source", "data/blob.bin")
		if kind, text := p.submit(t); kind != "success" || !strings.Contains(text, "blob.bin") {
			t.Fatalf("answer %s %q", kind, text)
		}
		if got := downloaded("blob.bin"); !bytes.Equal(got, blob) {
			t.Fatalf("downloaded %d bytes differ from the %d bytes of the source", len(got), len(blob))
		}
		r := sent.await(t, "posting the download", from, func(r sentRequest) bool {
			return r.Method == http.MethodPost && strings.Contains(r.URL, "method=direct_download")
		})
		if strings.Contains(r.URL, token) {
			t.Errorf("the download's address holds the token: %s", r.URL)
		}
		p.historyRow(t, "the download in the history", "#history-table tbody tr",
			`row.dataset.status === "success" && row.innerText.includes("direct_download") && row.innerText.includes("data/blob.bin")`)
		p.set(t, "#method", "local_copy")
	})

	t.Run("the log viewer follows with the token", func(t *testing.T) {
		p.wait(t, "the log stream", `document.querySelector("#log-state").textContent === "following"`)
		r := sent.await(t, "following /logs", 0, func(r sentRequest) bool {
			return strings.HasPrefix(r.URL, pageURL+"/logs?") && strings.Contains(r.URL, "follow=true")
		})
		if r.Authorization != "Bearer "+token {
			t.Errorf("the log stream was requested with Authorization %q", r.Authorization)
		}
		p.wait(t, "alice's staging in the log", `[...document.querySelectorAll("#log-lines li")].some(li => li.textContent.includes("mine.txt"))`)
	})

	t.Run("labels and screenshots, wide and narrow", func(t *testing.T) {
		unlabelled := eval[[]string](t, p, `[...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
			.filter(e => e.labels.length === 0 && !e.getAttribute("aria-label")).map(e => e.id)`)
		if len(unlabelled) > 0 {
			t.Errorf("inputs without a label: %v", unlabelled)
		}
		p.screenshot(t, "page-signed-in.png")
		p.do(t, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
		defer p.do(t, chromedp.ResetViewport())
		overflow := p.wait(t, "the narrow layout", `window.innerWidth === 390 && String(document.documentElement.scrollWidth - window.innerWidth)`)
		if overflow != "0" {
			t.Errorf("the page is %spx wider than a 390px screen", overflow)
		}
		p.screenshot(t, "page-signed-in-narrow.png")
	})

	t.Run("signing out forgets the token", func(t *testing.T) {
		from := len(sent.all())
		p.do(t, chromedp.Click(chromedp.ID("sign-out")))
		p.wait(t, "signed out", `!document.querySelector("#sign-in").hidden && document.querySelector("#session-who").hidden
			&& document.querySelector("#username").value === ""`)
		p.wait(t, "the history's message", `document.querySelector("#history-error").textContent === "Cannot load the history: Sign in first."
			&& document.querySelectorAll("#history-table tbody tr").length === 0
			&& document.querySelectorAll("#log-lines li").length === 0
			&& document.querySelector("#log-state").textContent === "Sign in to follow the log."`)
		p.set(t, "#source", "data/alice.txt")
		p.set(t, "#target", "after-sign-out.txt")
		if kind, text := p.submit(t); kind != "error" || text != "Sign in to stage data." {
			t.Fatalf("answer %s %q", kind, text)
		}
		for _, r := range sent.all()[from:] {
			if r.Authorization != "" {
				t.Errorf("sent with credentials after signing out: %s %s", r.Method, r.URL)
			}
		}
		if _, err := os.Lstat(s.userPath("alice", "after-sign-out.txt")); !os.IsNotExist(err) {
			t.Error("staged after signing out")
		}
		if stored := p.storedAnywhere(t); strings.Contains(stored, token) {
			t.Errorf("the token is stored: %s", stored)
		}
	})

	t.Run("an administrator signed in is told the storage's root", func(t *testing.T) {
		// A staging named by its absolute path shows relative to the root,
		// which /config tells an administrator only.
		abs := filepath.Join(s.Source, "data/alice.txt")
		expect(t, s.stageAs(t, login(t, idp, "admin"), "admin", abs, "abs.txt"), 200, "status", "success")
		p.do(t, chromedp.Click(chromedp.ID("sign-in")))
		p.login(t, idp.Issuer, "admin", "admin-pw")
		p.signedIn(t, pageURL, "admin")
		row := p.historyRow(t, "the admin's staging", "#history-table tbody tr", `row.innerText.includes("abs.txt")`)
		if !strings.Contains(row, "data/alice.txt → abs.txt") || strings.Contains(row, s.Source) {
			t.Errorf("history row %q", row)
		}
	})

	p.noErrors(t)
}

// TestWebPageSignInExpires: a token that expires while the page is open
// ends the session with a clear message and an offer to sign in again.
func TestWebPageSignInExpires(t *testing.T) {
	port := testenv.FreePort(t)
	pageURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	// Tokens that live 10 s, with the username in them and no admin groups
	// to look up, so the service judges them alone (without asking the
	// provider's userinfo, which refuses them once expired): it says they
	// expired.
	idp := pageProvider(t, pageURL, func(c *testenv.OIDCClient) {
		c.AccessTokenLifetime = 10 * time.Second
		c.UsernameInToken = true
	})
	startStage(t, oidcEnv(idp, map[string]string{"PORT": fmt.Sprint(port), "OIDC_LEEWAY": "1s", "OIDC_ADMIN_GROUPS": ""}))

	p := newPage(t, 1000, 800)
	p.do(t, chromedp.Navigate(pageURL))
	p.wait(t, "the sign-in button", `!document.querySelector("#sign-in").hidden`)
	p.do(t, chromedp.Click(chromedp.ID("sign-in")))
	p.login(t, idp.Issuer, "alice", "alice-pw")
	p.signedIn(t, pageURL, "alice")
	// The history, polled every second, meets the expired token.
	msg := p.waitAcross(t, "the session's end", `!document.querySelector("#session-message").hidden
		&& !document.querySelector("#sign-in-again").hidden && document.querySelector("#session-message-text").textContent`, time.Minute)
	if msg != "Your sign-in has ended (The access token has expired). Sign in again to go on." {
		t.Errorf("message %q", msg)
	}
	if who := eval[bool](t, p, `document.querySelector("#session-who").hidden && document.querySelector("#username").value === ""`); !who {
		t.Error("the page still shows the user signed in")
	}
	p.wait(t, "the log's message", `document.querySelector("#log-state").textContent === "Sign in to follow the log."`)
	p.screenshot(t, "signin-expired.png")
	p.do(t, chromedp.Focus(chromedp.ID("sign-in-again")), chromedp.KeyEvent(kb.Enter))
	p.waitAcross(t, "the provider's login page", fmt.Sprintf(`location.origin === %q && document.querySelector("#password")`, idp.Issuer), 30*time.Second)
	p.noErrors(t)
}

// TestWebPageHubToken: with AUTH_MODE=jupyterhub the page asks for a
// JupyterHub token and sends it with every call ("Authorization: token").
func TestWebPageHubToken(t *testing.T) {
	hub := testenv.Hub(t)
	user := hub.NewHubUser(t, "webpage", false)
	token := hub.UserToken(t, user)
	s := startStage(t, map[string]string{"AUTH_MODE": "jupyterhub", "JUPYTERHUB_URL": hub.URL})
	s.write(t, "data/hub.txt", "for the hub user\n")

	p := newPage(t, 1000, 800)
	sent := recordRequests(p)
	p.do(t, chromedp.Navigate(s.URL))
	p.wait(t, "the token field", `!document.querySelector("#hub-token-form").hidden && document.querySelector("#signin-oidc").hidden`)
	p.wait(t, "the history's message", `document.querySelector("#history-error").textContent === "Cannot load the history: Enter your JupyterHub token first."`)

	// A token the hub does not know is refused and forgotten.
	p.set(t, "#hub-token", "not-a-hub-token")
	p.do(t, chromedp.Click(chromedp.CSS(`#hub-token-form button[type=submit]`)))
	msg := p.wait(t, "the refusal", `!document.querySelector("#session-message").hidden && document.querySelector("#session-message-text").textContent`)
	if !strings.HasPrefix(msg, "The JupyterHub token was refused (") {
		t.Errorf("message %q", msg)
	}

	from := len(sent.all())
	p.set(t, "#hub-token", token)
	p.do(t, chromedp.Click(chromedp.CSS(`#hub-token-form button[type=submit]`)))
	p.wait(t, "the history", `document.querySelector("#history-error").hidden && document.querySelector("#session-message").hidden`)
	p.set(t, "#username", user)
	p.set(t, "#method", "local_copy")
	p.set(t, "#source", "data/hub.txt")
	p.set(t, "#target", "hub.txt")
	if kind, text := p.submit(t); kind != "success" || text != "Data staged for user "+user+" with method local_copy" {
		t.Fatalf("answer %s %q", kind, text)
	}
	if _, err := os.Stat(s.userPath(user, "hub.txt")); err != nil {
		t.Fatal(err)
	}
	r := sent.await(t, "staging with the token", from, func(r sentRequest) bool {
		return r.Method == http.MethodPost && strings.Contains(r.URL, "/stage_data")
	})
	if r.Authorization != "token "+token {
		t.Errorf("the staging was sent with Authorization %q", r.Authorization)
	}
	p.screenshot(t, "page-hub-token.png")
	p.do(t, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	overflow := p.wait(t, "the narrow layout", `window.innerWidth === 390 && String(document.documentElement.scrollWidth - window.innerWidth)`)
	if overflow != "0" {
		t.Errorf("the page is %spx wider than a 390px screen", overflow)
	}
	p.noErrors(t)
}

// TestDownloadForm: the download link posted as a form carries the
// caller's token in its body (access_token), as the page's download does;
// a cross-site form is refused like any cross-site POST.
func TestDownloadForm(t *testing.T) {
	p := idp(t)
	s := startStage(t, oidcEnv(p, nil))
	s.write(t, "data/file", "the content")
	alice, bob := login(t, p, "alice"), login(t, p, "bob")
	link := s.URL + "/stage_data?method=direct_download&username=alice&local_path_on_storage=data/file"
	post := func(link string, form url.Values, header ...string) *testenv.Response {
		return testenv.Do(t, http.MethodPost, link, form.Encode(), append([]string{"Content-Type", "application/x-www-form-urlencoded"}, header...)...)
	}
	r := post(link, url.Values{"access_token": {alice}})
	if r.Status != 200 || string(r.Body) != "the content" || !strings.Contains(r.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("alice's download: %d %q %v", r.Status, r.Body, r.Header)
	}
	expect(t, post(link, url.Values{}), 401, "detail", "Authentication is required")
	expect(t, post(link, url.Values{"access_token": {"not-a-jwt"}}), 401, "detail", "The access token is not accepted")
	expect(t, post(link, url.Values{"access_token": {bob}}), 403, "detail", "User bob may not stage data for user alice")
	expect(t, post(strings.Replace(link, "direct_download", "local_copy", 1)+"&relative_path=x", url.Values{"access_token": {alice}}), 422, "", "")
	expect(t, post(link, url.Values{"access_token": {alice}}, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"), 403, "", "")
	expect(t, post(link, url.Values{"access_token": {strings.Repeat("x", maxFormBody)}}), 413, "", "")
}
