package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// TestWebPageShowsNamesAsText stages files whose names hold markup, quotes
// and marks that reorder text, and checks that the page shows them, their
// errors and their log lines as text spelled as it is: nothing is built
// from them, and no name passes for another.
func TestWebPageShowsNamesAsText(t *testing.T) {
	s := startStage(t, nil)
	names := []string{`<img src=x onerror=alert(1)>`, `"><svg onload=alert(2)>.txt`, `it's "quoted"; name.txt`, "rtl\u202egnp.exe"}
	for _, name := range append(names, "new\nline.txt", "héllo wörld.txt") {
		s.write(t, filepath.Join("odd", name), "x")
	}
	env := map[string]string{}
	for k, v := range s.Env {
		if k != "PORT" {
			env[k] = v
		}
	}
	logs := testenv.StartFunction(t, "logs", env)
	p := openPage(t, startIngress(t, "/logs="+logs.URL+";/="+s.URL), 1280, 900)
	p.wait(t, "the log stream", `document.querySelector("#log-state").textContent === "following"`)
	p.set(t, "#username", "alice")
	p.set(t, "#method", "local_copy")
	for _, name := range names {
		p.set(t, "#source", "odd/"+name)
		p.set(t, "#target", "t/"+name)
		if kind, text := p.submit(t); kind != "success" {
			t.Fatalf("answer %s %q", kind, text)
		}
	}
	p.set(t, "#source", "odd/missing<img src=x onerror=alert(3)>")
	if kind, text := p.submit(t); kind != "error" || text != "Source path does not exist: odd/missing<img src=x onerror=alert(3)>" {
		t.Fatalf("answer %s %q", kind, text)
	}
	p.do(t)
	p.wait(t, "the folder's listing", `(() => { const here = document.querySelector("#browse-path").textContent === "/odd";
		if (!here) document.querySelector('#browse-table tr[data-path="odd"] .link-button')?.click(); return here; })()`)
	p.wait(t, "the refusal's log line", `[...document.querySelectorAll("#log-lines li")].some(li => li.textContent.includes("onerror=alert(3)"))`)
	p.historyRow(t, "the refusal in the history", "#history-table tbody tr", `row.dataset.status === "failed"`)

	listing := eval[[]string](t, p, `[...document.querySelectorAll("#browse-table tbody .path")].map(td => td.textContent)`)
	want := []string{`"><svg onload=alert(2)>.txt`, `<img src=x onerror=alert(1)>`, "héllo wörld.txt", `it's "quoted"; name.txt`, `new\nline.txt`, `rtl\u202egnp.exe`}
	if strings.Join(listing, "|") != strings.Join(want, "|") {
		t.Errorf("listing %q, want %q", listing, want)
	}
	row := p.historyRow(t, "the staging of rtl", "#history-table tbody tr", `row.querySelector(".path").textContent.startsWith("odd/rtl")`)
	if !strings.Contains(row, `odd/rtl\u202egnp.exe → t/rtl\u202egnp.exe`) {
		t.Errorf("history row %q", row)
	}
	if eval[bool](t, p, `document.body.innerText.includes("\u202e")`) {
		t.Error("the page shows a right-to-left override as such")
	}
	if n := eval[int](t, p, `document.querySelectorAll("body img, body svg").length`); n != 0 {
		t.Errorf("%d elements built from names", n)
	}

	// A name that is not ASCII is saved as it is spelled (filename*).
	downloaded := p.expectDownload(t)
	p.set(t, "#method", "direct_download")
	p.set(t, "#source", "odd/héllo wörld.txt")
	if kind, text := p.submit(t); kind != "success" {
		t.Fatalf("answer %s %q", kind, text)
	}
	if got := downloaded("héllo wörld.txt"); string(got) != "x" {
		t.Fatalf("downloaded %q", got)
	}
	p.noErrors(t)
}

// TestWebPageStagesPickedNames picks files whose names a text field cannot
// hold as they are (a line break, spaces at the ends) with Use, and stages
// them: the page sends the listing's exact path.
func TestWebPageStagesPickedNames(t *testing.T) {
	s := startStage(t, nil)
	names := []string{"new\nline.txt", " padded.txt "}
	for _, name := range names {
		s.write(t, filepath.Join("odd", name), name)
	}
	p := openPage(t, s.URL, 1280, 900)
	p.set(t, "#username", "alice")
	p.set(t, "#method", "local_copy")
	p.wait(t, "the folder's listing", `(() => { const here = document.querySelector("#browse-path").textContent === "/odd";
		if (!here) document.querySelector('#browse-table tr[data-path="odd"] .link-button')?.click(); return here; })()`)
	for i, name := range names {
		eval[any](t, p, fmt.Sprintf(`[...document.querySelectorAll("#browse-table tbody tr")].find(r => r.dataset.path === %q).querySelector("button").click()`, "odd/"+name))
		target := fmt.Sprintf("picked-%d.txt", i)
		p.set(t, "#target", target)
		if kind, text := p.submit(t); kind != "success" {
			t.Fatalf("%q: answer %s %q", name, kind, text)
		}
		if got, err := os.ReadFile(s.userPath("alice", target)); err != nil || string(got) != name {
			t.Fatalf("%q: staged %q (%v)", name, got, err)
		}
	}
	p.noErrors(t)
}
