package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// page is the staging page open in a real headless Chromium.
type page struct {
	ctx context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage // what the page reported
}

// openPage starts Chromium (window width×height) on url and records the
// page's console.
func openPage(t *testing.T, url string, width, height int) *page {
	t.Helper()
	p := newPage(t, width, height)
	p.do(t, chromedp.Navigate(url))
	p.wait(t, "the methods to load", `document.querySelectorAll("#method option").length > 0`)
	return p
}

// newPage starts Chromium on a blank tab and records its console.
func newPage(t *testing.T, width, height int) *page {
	t.Helper()
	p := &page{ctx: testenv.Chromium(t, width, height)}
	messages := chromedp.Console(p.ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.console = append(p.console, m)
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *page) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v\n%s", err, p.state())
	}
}

// eval runs a JavaScript expression and returns its value.
func eval[T any](t *testing.T, p *page, expr string) T {
	t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// wait polls a JavaScript expression in the page until it is truthy.
func (p *page) wait(t *testing.T, what, expr string) string {
	t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Poll[any](expr,
		chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(20*time.Millisecond)))
	if err != nil {
		t.Fatalf("waiting for %s (%s): %v\n%s", what, expr, err, p.state())
	}
	return fmt.Sprint(v)
}

// state describes the page for a failure message.
func (p *page) state() string {
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](`JSON.stringify({
		result: document.querySelector("#result")?.className + ": " + document.querySelector("#result")?.textContent,
		browse: document.querySelector("#browse-path")?.textContent + " " + document.querySelector("#browse-error")?.textContent,
		history: [...document.querySelectorAll("#history-table tbody tr")].slice(0, 5).map(r => r.innerText),
		logs: document.querySelector("#log-state")?.textContent,
	}, null, 1)`))
	if err != nil {
		return "page state unavailable: " + err.Error()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var console []string
	for _, m := range p.console {
		console = append(console, fmt.Sprintf("%s: %s", m.Type, m.Text))
	}
	return v + "\nconsole:\n" + strings.Join(console, "\n")
}

// set gives a form field a value as a user's edit would (with its change event).
func (p *page) set(t *testing.T, selector, value string) {
	t.Helper()
	sel, _ := json.Marshal(selector)
	val, _ := json.Marshal(value)
	eval[any](t, p, fmt.Sprintf(`(() => { const e = document.querySelector(%s); e.value = %s;
		e.dispatchEvent(new Event("input", {bubbles: true})); e.dispatchEvent(new Event("change", {bubbles: true})); })()`, sel, val))
}

// submit sends the staging form and returns the answer it shows: its kind
// ("success", "error" or "info") and its text.
func (p *page) submit(t *testing.T) (string, string) {
	t.Helper()
	eval[any](t, p, `(() => { const r = document.querySelector("#result"); r.className = ""; r.textContent = ""; })()`)
	p.do(t, chromedp.Click(chromedp.ID("submit")))
	got := p.wait(t, "the service's answer", `(() => { const r = document.querySelector("#result");
		return !r.textContent.endsWith("…") && /success|error|info/.test(r.className) && r.className + "|" + r.textContent; })()`)
	kind, text, _ := strings.Cut(got, "|")
	return strings.TrimPrefix(kind, "message "), text
}

// historyRow waits for the history row matching a CSS selector and
// condition, and returns its text.
func (p *page) historyRow(t *testing.T, what, selector, cond string) string {
	t.Helper()
	sel, _ := json.Marshal(selector)
	return p.wait(t, what, fmt.Sprintf(`[...document.querySelectorAll(%s)].filter(row => %s).map(row => row.innerText)[0]`, sel, cond))
}

// expectDownload lets the browser save downloads into a new folder and
// returns what waits for the next one to complete and gives the content of
// the file it saved as name. Call it before the click that downloads.
func (p *page) expectDownload(t *testing.T) func(name string) []byte {
	t.Helper()
	dir := t.TempDir()
	_, err := chromedp.CallBrowser(p.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir, EventsEnabled: new(true)})
	must(t, err)
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	t.Cleanup(cancel)
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	return func(name string) []byte {
		t.Helper()
		for ev, err := range progress {
			if err != nil {
				t.Fatalf("no completed download: %v\n%s", err, p.state())
			}
			if ev.State == browser.DownloadProgressStateCanceled {
				t.Fatalf("download canceled: %+v", ev)
			}
			if ev.State == browser.DownloadProgressStateCompleted {
				break
			}
		}
		got, err := os.ReadFile(filepath.Join(dir, name))
		must(t, err)
		return got
	}
}

// noErrors fails when the page threw an exception or broke its security
// policy. Error answers of the service are expected ("Failed to load
// resource"), and so is the log stream's 404 while no logs function runs.
func (p *page) noErrors(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.console {
		if m.IsException() || m.Type == "error" && !strings.HasPrefix(m.Text, "Failed to load resource") {
			t.Errorf("the page reported %s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1)
		}
	}
}

// screenshot saves a full-page PNG among the test's artifacts
// (go test -artifacts keeps them).
func (p *page) screenshot(t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.ArtifactDir(), name)
	must(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}

// TestWebPage drives the page at / in Chromium against a running stage
// function: pick, stage, watch, download, and the errors a user meets.
func TestWebPage(t *testing.T) {
	// jupyter_copy is offered when its function is configured; the page
	// shows its token field from the traits /config gives.
	s := startStage(t, map[string]string{"OPERATION_LEASE": "1s", "JUPYTER_FUNCTION_URL": "http://127.0.0.1:9/"})
	s.write(t, "samples/hello.txt", "Hello from the sample data.\n")
	s.write(t, "samples/notes/readme.txt", "notes\n")
	blob := make([]byte, 3<<20+17)
	rand.Read(blob)
	must(t, os.WriteFile(filepath.Join(s.Source, "samples/random.bin"), blob, 0o644))
	for i := range 6 {
		must(t, os.MkdirAll(filepath.Join(s.Source, "samples/observation-001/cal"), 0o755))
		must(t, os.WriteFile(filepath.Join(s.Source, fmt.Sprintf("samples/observation-001/cal/block-%d.dat", i)), blob[:1<<20], 0o644))
	}
	s.write(t, "samples/observation-001/summary.txt", "six blocks\n")
	const dirBytes = float64(6<<20 + len("six blocks\n"))

	p := openPage(t, s.URL, 1280, 900)

	t.Run("pick a source with the browser and stage it with local_copy", func(t *testing.T) {
		// Typed as a user types it.
		p.do(t, chromedp.Click(chromedp.ID("username")), chromedp.SendKeys(chromedp.ID("username"), "alice"))
		p.set(t, "#method", "local_copy")
		p.wait(t, "the root listing", `document.querySelector('#browse-table tr[data-path="samples"]')`)
		p.do(t, chromedp.Click(chromedp.CSS(`#browse-table tr[data-path="samples"] .link-button`)))
		p.wait(t, "the samples listing", `document.querySelector("#browse-path").textContent === "/samples"`)
		rows := p.wait(t, "the entries", `[...document.querySelectorAll("#browse-table tbody tr")].map(r => r.dataset.path + ":" + r.dataset.type).join(" ")`)
		if want := "samples/hello.txt:file samples/notes:directory samples/observation-001:directory samples/random.bin:file"; rows != want {
			t.Fatalf("listing %q, want %q", rows, want)
		}
		p.do(t, chromedp.Click(chromedp.CSS(`#browse-table tr[data-path="samples/hello.txt"] button`)))
		if src, dst := eval[string](t, p, `document.querySelector("#source").value`), eval[string](t, p, `document.querySelector("#target").value`); src != "samples/hello.txt" || dst != "hello.txt" {
			t.Fatalf("picked source %q target %q", src, dst)
		}
		kind, text := p.submit(t)
		if kind != "success" || text != "Data staged for user alice with method local_copy" {
			t.Fatalf("answer %s %q", kind, text)
		}
		got, err := os.ReadFile(s.userPath("alice", "hello.txt"))
		must(t, err)
		if string(got) != "Hello from the sample data.\n" {
			t.Fatalf("staged %q", got)
		}
		row := p.historyRow(t, "the history row", "#history-table tbody tr",
			`row.dataset.status === "success" && row.innerText.includes("samples/hello.txt → hello.txt")`)
		if !strings.Contains(row, "local_copy") || !strings.Contains(row, "28 B") || !strings.Contains(row, "100%") {
			t.Fatalf("history row %q", row)
		}
	})

	t.Run("stage a directory and watch its progress reach 100%", func(t *testing.T) {
		p.set(t, "#source", "samples/observation-001")
		p.set(t, "#target", "obs")
		p.do(t, chromedp.Click(chromedp.ID("async")))
		kind, text := p.submit(t)
		p.do(t, chromedp.Click(chromedp.ID("async")))
		id := regexp.MustCompile(`operation (\S+) runs in the background`).FindStringSubmatch(text)
		if kind != "info" || id == nil {
			t.Fatalf("answer %s %q", kind, text)
		}
		sel := fmt.Sprintf(`#history-table tr[data-id=%q]`, id[1])
		p.historyRow(t, "the operation in the history", sel, "true")
		row := p.historyRow(t, "100%", sel, `row.dataset.status === "success" && row.querySelector(".percent")?.textContent === "100%"`)
		bar := eval[[]float64](t, p, fmt.Sprintf(`(b => [b.value, b.max])(document.querySelector(%q + " progress"))`, sel))
		if bar[0] != dirBytes || bar[1] != dirBytes || !strings.Contains(row, "6.0 MiB") {
			t.Fatalf("progress bar %v, row %q; want %v of %v", bar, row, dirBytes, dirBytes)
		}
		b, err := os.ReadFile(s.userPath("alice", "obs/cal/block-5.dat"))
		must(t, err)
		if !bytes.Equal(b, blob[:1<<20]) {
			t.Fatal("staged block differs from the source")
		}
	})

	t.Run("the history asks with its ETag and is answered 304 while nothing changes", func(t *testing.T) {
		p.wait(t, "three 304 answers in a row to the history's polls", `(() => {
			const polls = performance.getEntriesByType("resource").filter((e) => e.name.includes("/operations?"));
			return polls.length >= 3 && polls.slice(-3).every((e) => e.responseStatus === 304);
		})()`)
		// An answer with content comes again once something changes.
		p.set(t, "#source", "samples/hello.txt")
		p.set(t, "#target", "hello-again.txt")
		if kind, text := p.submit(t); kind != "success" {
			t.Fatalf("answer %s %q", kind, text)
		}
		p.historyRow(t, "the new history row", "#history-table tbody tr",
			`row.dataset.status === "success" && row.innerText.includes("hello-again.txt")`)
	})

	t.Run("direct_download saves the identical file", func(t *testing.T) {
		downloaded := p.expectDownload(t)
		p.set(t, "#method", "direct_download")
		if hidden := eval[bool](t, p, `document.querySelector("#target-field").hidden`); !hidden {
			t.Fatal("the target path is shown for direct_download")
		}
		p.set(t, "#source", "samples/random.bin")
		kind, text := p.submit(t)
		if kind != "success" || !strings.Contains(text, "random.bin") {
			t.Fatalf("answer %s %q", kind, text)
		}
		if got := downloaded("random.bin"); !bytes.Equal(got, blob) {
			t.Fatalf("downloaded %d bytes differ from the %d bytes of the source", len(got), len(blob))
		}
		p.historyRow(t, "the download in the history", "#history-table tbody tr",
			`row.dataset.status === "success" && row.innerText.includes("direct_download") && row.innerText.includes("samples/random.bin")`)
	})

	t.Run("clear errors", func(t *testing.T) {
		for _, tt := range []struct {
			method, source, want string
		}{
			{"local_copy", "samples/missing.txt", "Source path does not exist: samples/missing.txt"},
			{"local_copy", "../outside.txt", "Source path is outside the source storage: ../outside.txt"},
			{"local_symlink", "/etc/passwd", "Source path is outside the source storage: /etc/passwd"},
			{"direct_download", "samples/missing.txt", "Source path does not exist: samples/missing.txt"},
			{"direct_download", "../outside.txt", "Source path is outside the source storage: ../outside.txt"},
		} {
			p.set(t, "#method", tt.method)
			p.set(t, "#source", tt.source)
			p.set(t, "#target", "err.txt")
			kind, text := p.submit(t)
			if tt.method == "direct_download" && kind == "success" {
				// The download frame reports the service's error once it loads.
				text = p.wait(t, "the download error", `document.querySelector("#result.error")?.textContent`)
				kind = "error"
			}
			if kind != "error" || text != tt.want {
				t.Errorf("%s %s: answer %s %q, want error %q", tt.method, tt.source, kind, text, tt.want)
			}
		}
		p.set(t, "#method", "local_copy")
		p.set(t, "#source", "")
		kind, text := p.submit(t)
		if kind != "error" || !strings.Contains(text, "source path") {
			t.Errorf("empty source: %s %q", kind, text)
		}
		p.historyRow(t, "the refusal in the history", "#history-table tbody tr",
			`row.dataset.status === "failed" && row.innerText.includes("Source path does not exist: samples/missing.txt")`)
	})

	t.Run("by keyboard", func(t *testing.T) {
		// Browse opens the folder of the source typed so far.
		p.set(t, "#source", "samples/observation-001/summary.txt")
		p.set(t, "#target", "")
		p.do(t, chromedp.Focus(chromedp.ID("browse-here")), chromedp.KeyEvent(kb.Enter))
		p.wait(t, "the source's folder", `document.querySelector("#browse-path").textContent === "/samples/observation-001"`)
		p.wait(t, "focus in the listing", `document.activeElement.closest("#browse-table") !== null`)
		// Up to samples, into samples/notes, then its only file's Use button.
		p.do(t, chromedp.Focus(chromedp.ID("browse-up")), chromedp.KeyEvent(kb.Enter))
		p.wait(t, "samples", `document.querySelector('#browse-table tr[data-path="samples/notes"]')`)
		p.do(t, chromedp.Focus(chromedp.CSS(`#browse-table tr[data-path="samples/notes"] .link-button`)), chromedp.KeyEvent(kb.Enter))
		p.wait(t, "notes", `document.querySelector('#browse-table tr[data-path="samples/notes/readme.txt"]')`)
		p.do(t, chromedp.Focus(chromedp.CSS(`#browse-table tr[data-path="samples/notes/readme.txt"] button`)), chromedp.KeyEvent(kb.Enter))
		p.wait(t, "the picked source", `document.querySelector("#source").value === "samples/notes/readme.txt" && document.activeElement.id === "source"`)
		// Tab on to the submit button and press Enter.
		for range 8 {
			if eval[string](t, p, `document.activeElement.id`) == "submit" {
				break
			}
			p.do(t, chromedp.KeyEvent(kb.Tab))
		}
		eval[any](t, p, `document.querySelector("#result").textContent = ""`)
		p.do(t, chromedp.KeyEvent(kb.Enter))
		text := p.wait(t, "the answer", `document.querySelector("#result.success")?.textContent`)
		if text != "Data staged for user alice with method local_copy" {
			t.Fatalf("answer %q", text)
		}
		if _, err := os.Stat(s.userPath("alice", "readme.txt")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("labels and token field", func(t *testing.T) {
		unlabelled := eval[[]string](t, p, `[...document.querySelectorAll("input, select, textarea")]
			.filter(e => e.labels.length === 0 && !e.getAttribute("aria-label")).map(e => e.id)`)
		if len(unlabelled) > 0 {
			t.Fatalf("inputs without a label: %v", unlabelled)
		}
		for method, shown := range map[string]bool{"jupyter_copy": true, "local_copy": false, "direct_download": false} {
			p.set(t, "#method", method)
			if got := !eval[bool](t, p, `document.querySelector("#token-field").hidden`); got != shown {
				t.Errorf("%s: token field shown %v, want %v", method, got, shown)
			}
		}
		// The token goes in the body, never in the URL (which proxies log).
		eval[bool](t, p, `(() => { const f = window.fetch; window.sent = [];
			window.fetch = (url, o) => { window.sent.push([String(url), String(o && o.body)]); return f(url, o); }; return true })()`)
		p.set(t, "#method", "jupyter_copy")
		p.set(t, "#source", "samples/hello.txt")
		p.set(t, "#target", "nb/hello.txt")
		p.set(t, "#jupyter-token", "token-of-alice-123")
		p.submit(t)
		sent := eval[[][]string](t, p, `window.sent.filter(([u]) => u.startsWith("/stage_data"))`)
		if len(sent) != 1 || strings.Contains(sent[0][0], "token-of-alice-123") || !strings.Contains(sent[0][1], `"jupyter_token":"token-of-alice-123"`) {
			t.Errorf("jupyter_copy sent %q, want the token in the body only", sent)
		}
		p.set(t, "#jupyter-token", "")
		p.set(t, "#method", "local_copy")
	})

	t.Run("file creator", func(t *testing.T) {
		p.wait(t, "the file creator", `!document.querySelector("#creator").hidden`)
		p.set(t, "#creator-name", "made/by-page.txt")
		p.set(t, "#creator-content", "made in the browser")
		p.do(t, chromedp.Click(chromedp.CSS(`#creator-form button`)))
		text := p.wait(t, "the creator's answer", `(r => /success|error/.test(r.className) && r.className + "|" + r.textContent)(document.querySelector("#creator-result"))`)
		if text != "message success|File created at made/by-page.txt" {
			t.Fatalf("answer %q", text)
		}
		b, err := os.ReadFile(filepath.Join(s.Source, "made/by-page.txt"))
		if err != nil || string(b) != "made in the browser" {
			t.Fatalf("created file %q, %v", b, err)
		}
	})

	t.Run("screenshots, wide and narrow", func(t *testing.T) {
		p.set(t, "#source", "samples/observation-001")
		p.set(t, "#target", "obs")
		p.do(t, chromedp.Click(chromedp.ID("submit")))
		p.wait(t, "an answer", `document.querySelector("#result.success")`)
		p.screenshot(t, "page-wide.png")
		p.do(t, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
		defer p.do(t, chromedp.ResetViewport())
		overflow := p.wait(t, "the narrow layout", `window.innerWidth === 390 && String(document.documentElement.scrollWidth - window.innerWidth)`)
		if overflow != "0" {
			t.Errorf("the page is %spx wider than a 390px screen", overflow)
		}
		p.screenshot(t, "page-narrow.png")
	})

	p.noErrors(t)
}

// TestWebPageFileCreatorOff checks that the page hides the file creator when
// the route does not exist.
func TestWebPageFileCreatorOff(t *testing.T) {
	s := startStage(t, map[string]string{"ENABLE_FILE_CREATOR": "false"})
	r := testenv.Do(t, http.MethodGet, s.URL+"/", nil)
	if r.Status != 200 || !bytes.Contains(r.Body, []byte(`data-file-creator="false"`)) {
		t.Fatalf("GET /: %d, body has no file creator switch off", r.Status)
	}
	on := startStage(t, nil)
	r = testenv.Do(t, http.MethodGet, on.URL+"/", nil)
	if !bytes.Contains(r.Body, []byte(`data-file-creator="true"`)) {
		t.Fatal("GET / with ENABLE_FILE_CREATOR=true: the page's file creator is off")
	}
	p := openPage(t, s.URL, 1000, 800)
	if hidden := eval[bool](t, p, `document.querySelector("#creator").hidden`); !hidden {
		t.Fatal("the file creator is shown")
	}
	p.noErrors(t)
}

// TestDocsPage opens /docs in Chromium: Swagger UI renders every operation
// of /openapi.json from the embedded assets alone.
func TestDocsPage(t *testing.T) {
	s := startStage(t, nil)
	p := newPage(t, 1280, 900)
	p.do(t, chromedp.Navigate(s.URL+"/docs"))
	n := p.wait(t, "the operations", `document.querySelectorAll(".opblock").length`)
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	must(t, json.Unmarshal(openAPI, &doc))
	ops := 0
	for _, item := range doc.Paths {
		ops += len(item)
	}
	if n != fmt.Sprint(ops) {
		t.Fatalf("/docs shows %s operations, /openapi.json has %d", n, ops)
	}
	title := eval[string](t, p, `document.querySelector(".info .title")?.textContent`)
	if !strings.HasPrefix(title, "SKAO Staging Service") {
		t.Fatalf("title %q", title)
	}
	p.screenshot(t, "docs.png")
	p.noErrors(t)
}

// startIngress runs the local ingress of `make run` (internal/devingress) on
// a free port with routes ("prefix=url;...") and returns its URL.
func startIngress(t *testing.T, routes string) string {
	t.Helper()
	return startIngressAt(t, testenv.FreePort(t), routes)
}

// startIngressAt runs the local ingress on port (when its URL must be known
// before the functions behind it start) and returns its URL.
func startIngressAt(t *testing.T, port int, routes string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "devingress")
	build := exec.Command("go", "build", "-o", bin, "./internal/devingress")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build devingress: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "HOST=127.0.0.1", fmt.Sprintf("PORT=%d", port), "INGRESS_ROUTES="+routes)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr
		}
		select {
		case <-exited:
			t.Fatalf("devingress exited: %s", logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("devingress not listening after 10s: %s", logs.String())
		}
	}
}

// TestWebPageLogViewer runs the stack of `make run` (stage and logs
// functions behind the local ingress, one store) and watches a staging's
// log line arrive in the page's log viewer.
func TestWebPageLogViewer(t *testing.T) {
	s := startStage(t, nil)
	s.write(t, "samples/logged.txt", "a line in the log")
	env := map[string]string{}
	for k, v := range s.Env {
		if k != "PORT" {
			env[k] = v
		}
	}
	logs := testenv.StartFunction(t, "logs", env)
	ingress := startIngress(t, "/logs="+logs.URL+";/="+s.URL)

	p := openPage(t, ingress, 1280, 900)
	p.wait(t, "the log stream", `document.querySelector("#log-state").textContent === "following"`)
	p.set(t, "#username", "logger")
	p.set(t, "#method", "local_copy")
	p.set(t, "#source", "samples/logged.txt")
	p.set(t, "#target", "from-the-log-test.txt")
	if kind, text := p.submit(t); kind != "success" {
		t.Fatalf("answer %s %q", kind, text)
	}
	line := p.wait(t, "the staging's log line", `[...document.querySelectorAll("#log-lines li")]
		.map(li => li.textContent).find(l => l.includes("from-the-log-test.txt"))`)
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\S+ - INFO - staging finished .*username=logger`).MatchString(line) {
		t.Fatalf("log line %q", line)
	}

	// WARNING and above: the INFO lines go, and come back at INFO.
	p.set(t, "#log-level", "WARNING")
	p.wait(t, "the stream at WARNING", `document.querySelector("#log-state").textContent === "following"`)
	if shown := eval[[]string](t, p, `[...document.querySelectorAll("#log-lines li:not([hidden])")].map(li => li.dataset.level)
			.filter(l => l === "DEBUG" || l === "INFO")`); len(shown) > 0 {
		t.Fatalf("levels below WARNING shown: %v", shown)
	}
	p.set(t, "#log-level", "INFO")
	p.wait(t, "the INFO line again", `[...document.querySelectorAll("#log-lines li:not([hidden])")]
		.some(li => li.textContent.includes("from-the-log-test.txt"))`)
	p.screenshot(t, "page-with-log.png")
	p.noErrors(t)
}
