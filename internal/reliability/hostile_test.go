package reliability

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// TestTraversal tries to leave the source storage and the user's area in
// every way a path can be bent: '..', absolute paths, encodings, NUL,
// symlinks in the source and in the area, very long names and unicode
// look-alikes. Each attempt must be refused with its status and a detail,
// or contained (staged inside the area under its literal name); nothing
// outside, in the source or in another user's area may change.
func TestTraversal(t *testing.T) {
	s := newSite(t, "")
	s.write(t, "obs/a.txt", []byte("inside"))
	sibling := s.Source + "x" // a folder whose name starts like the source root
	must(t, os.MkdirAll(sibling, 0o755))
	must(t, os.WriteFile(filepath.Join(sibling, "secret"), []byte("secret-content"), 0o600))
	area := s.userPath("alice", "")
	must(t, os.MkdirAll(area, 0o755))
	must(t, os.MkdirAll(s.userPath("bob", ""), 0o755))
	must(t, os.WriteFile(s.userPath("bob", "mine"), []byte("bob's"), 0o600))
	for link, to := range map[string]string{
		filepath.Join(s.Source, "escape"):    "../outside/secret",
		filepath.Join(s.Source, "escapedir"): "../outside",
		filepath.Join(s.Source, "absout"):    filepath.Join(s.Outside, "secret"),
		filepath.Join(s.Source, "obs/up"):    "../../outside/secret",
		filepath.Join(area, "out"):           "../../outside",
		filepath.Join(area, "abs"):           s.Outside,
		filepath.Join(area, "bobs"):          "../bob",
		filepath.Join(s.Target, "mallory"):   "../outside",
	} {
		must(t, os.Symlink(to, link))
	}
	p := s.start(t, nil)
	outside, source, bob := snapshot(t, s.Outside), snapshot(t, s.Source), snapshot(t, s.userPath("bob", ""))
	siblingBefore := snapshot(t, sibling)

	long := strings.Repeat("n", 300)
	deep := strings.Repeat("d/", 2100) + "x"       // longer than PATH_MAX
	deepInside := strings.Repeat("d/", 1000) + "x" // deeper than MAX_PATH_DEPTH (64)
	deepEnough := strings.Repeat("d/", 60) + "x"   // within it: os.Root walks it level by level
	const refused, contained = 0, 200
	cases := []struct {
		name, user, src, dst string
		want                 int // a 4xx status, or contained
	}{
		{"dot-dot source", "alice", "../outside/secret", "x", 403},
		{"dot-dot inside the source path", "alice", "obs/../../outside/secret", "x", 403},
		{"absolute source outside", "alice", "/etc/passwd", "x", 403},
		{"absolute source through the root's name", "alice", s.Source + "/../outside/secret", "x", 403},
		{"absolute source in a sibling folder", "alice", sibling + "/secret", "x", 403},
		{"symlink out of the source", "alice", "escape", "x", 403},
		{"symlink folder out of the source", "alice", "escapedir/secret", "x", 403},
		{"absolute symlink in the source", "alice", "absout", "x", 403},
		{"nested symlink out of the source", "alice", "obs/up", "x", 403},
		{"percent-encoded dot-dot in the body", "alice", "%2e%2e/outside/secret", "x", 400},
		{"NUL in the source", "alice", "obs/a.txt\x00/../../../outside/secret", "x", 422},
		{"very long source name", "alice", long, "x", 422},
		{"very deep source path", "alice", deep, "x", 422},
		{"two-dot leader look-alike", "alice", "\u2025/outside/secret", "x", 400},
		{"fullwidth dots", "alice", "\uff0e\uff0e/outside/secret", "x", 400},
		{"division slash", "alice", "..\u2215outside\u2215secret", "x", 400},
		{"dot-dot target", "alice", "obs/a.txt", "../bob/x", 403},
		{"dot-dot inside the target path", "alice", "obs/a.txt", "a/../../bob/x", 403},
		{"absolute target", "alice", "obs/a.txt", s.Outside + "/x", 403},
		{"symlink out of the area", "alice", "obs/a.txt", "out/x", 403},
		{"absolute symlink in the area", "alice", "obs/a.txt", "abs/x", 403},
		{"symlink into another user's area", "alice", "obs/a.txt", "bobs/x", 403},
		{"user area that is a symlink out", "mallory", "obs/a.txt", "x", 403},
		{"NUL in the target", "alice", "obs/a.txt", "x\x00/../../bob/x", 422},
		{"very long target name", "alice", "obs/a.txt", long, 422},
		{"very deep target path", "alice", "obs/a.txt", deepInside, 422},
		{"deep target path within the limit", "alice", "obs/a.txt", deepEnough, contained},
		{"reserved temporary name", "alice", "obs/a.txt", ".skao-staging-0190b6a1-7e3c-7b3e-8000-000000000000.tmp", 400},
		{"the area itself", "alice", "obs/a.txt", "sub/..", 400},
		{"dot-dot username", "..", "obs/a.txt", "x", 422},
		{"username with a slash", "alice/../bob", "obs/a.txt", "x", 422},
		{"username with a NUL", "alice\x00", "obs/a.txt", "x", 422},
		{"look-alike username", "\uff41lice", "obs/a.txt", "x", 422},
		{"fullwidth dots in the target", "alice", "obs/a.txt", "\uff0e\uff0e/x", contained},
		{"right-to-left override in the target", "alice", "obs/a.txt", "txt.\u202eexe", contained},
		{"percent-encoded dot-dot in the target", "alice", "obs/a.txt", "%2e%2e/y", contained},
		{"combining characters in the target", "alice", "obs/a.txt", ".\u0307./z", contained},
	}
	counts := map[string]int{}
	for _, c := range cases {
		for _, method := range []string{"local_copy", "local_symlink"} {
			t.Run(c.name+"/"+method, func(t *testing.T) {
				dst := c.dst
				if c.want == contained {
					dst = method + "-" + c.dst
				}
				r := call(client, http.MethodPost, p.URL+"/stage_data?method="+method+"&username="+url.QueryEscape(c.user),
					stageBody(c.src, dst))
				if c.want == contained {
					counts["contained"]++
					if r.Status != 200 {
						t.Fatalf("%v, want it staged inside the area", r)
					}
					real, err := filepath.EvalSymlinks(filepath.Dir(s.userPath("alice", dst)))
					if err != nil || !strings.HasPrefix(real+"/", area) {
						t.Fatalf("staged in %q (%v), outside %s", real, err, area)
					}
					if _, err := os.Lstat(s.userPath("alice", dst)); err != nil {
						t.Fatalf("not under its literal name: %v", err)
					}
					return
				}
				counts["refused"]++
				if r.Status != c.want || r.str("detail") == "" {
					t.Fatalf("%v, want %d with a detail", r, c.want)
				}
			})
		}
		if c.dst == "x" && c.user == "alice" {
			t.Run(c.name+"/direct_download", func(t *testing.T) {
				counts["refused"]++
				r := call(client, http.MethodGet, p.URL+"/stage_data?method=direct_download&username=alice&local_path_on_storage="+url.QueryEscape(c.src), nil)
				if r.Status != c.want || r.str("detail") == "" || bytes.Contains(r.Body, []byte("secret-content")) {
					t.Fatalf("%v, want %d with a detail", r, c.want)
				}
			})
		}
	}
	t.Run("encoded in the query", func(t *testing.T) {
		for _, q := range []string{"%2e%2e%2foutside%2fsecret", "%252e%252e%252foutside%252fsecret", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"} {
			counts["refused"]++
			r := call(client, http.MethodGet, p.URL+"/stage_data?method=direct_download&username=alice&local_path_on_storage="+q, nil)
			if r.Status/100 != 4 || r.str("detail") == "" || bytes.Contains(r.Body, []byte("secret-content")) {
				t.Errorf("%s: %v", q, r)
			}
		}
	})
	sameSnapshot(t, "outside the roots", outside, snapshot(t, s.Outside))
	sameSnapshot(t, "the sibling of the source", siblingBefore, snapshot(t, sibling))
	sameSnapshot(t, "the source", source, snapshot(t, s.Source))
	sameSnapshot(t, "bob's area", bob, snapshot(t, s.userPath("bob", "")))
	if left := testenv.Temps(s.Target, ".skao-staging-"); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	record(t, fmt.Sprintf("%d traversal attempts refused with their 4xx and a detail, %d look-alike names contained in the area; outside, the source, its sibling and another user's area unchanged",
		counts["refused"], counts["contained"]))
}

// TestSymlinkSwappedDuringStaging flips links in the user's area and in the
// source between a place inside and a place outside while requests stage
// through them: each request is staged inside or refused, never outside.
func TestSymlinkSwappedDuringStaging(t *testing.T) {
	s := newSite(t, "")
	s.write(t, "obs/a.txt", []byte("inside"))
	area := s.userPath("alice", "")
	must(t, os.MkdirAll(filepath.Join(area, "real"), 0o755))
	p := s.start(t, nil)
	outside := snapshot(t, s.Outside)

	// swap makes name a link to one of two places, flipping atomically
	// (rename over it) until stop is closed.
	stop := make(chan struct{})
	var flips atomic.Int64
	var wg sync.WaitGroup
	swap := func(name string, places ...string) {
		defer wg.Done()
		tmp := name + ".new"
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			os.Remove(tmp)
			if os.Symlink(places[i%2], tmp) == nil && os.Rename(tmp, name) == nil {
				flips.Add(1)
			}
		}
	}
	wg.Add(2)
	go swap(filepath.Join(area, "swap"), "real", "../../outside")
	go swap(filepath.Join(s.Source, "srcswap"), "obs/a.txt", "../outside/secret")

	n := size(300, 3000)
	var staged, refused, wrong atomic.Int64
	var cwg sync.WaitGroup
	for c := range 4 {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for i := c; i < n; i += 4 {
				src, dst := "obs/a.txt", fmt.Sprintf("swap/f%d", i)
				method := []string{"local_copy", "local_symlink"}[i%2]
				if i%3 == 0 {
					src, dst, method = "srcswap", fmt.Sprintf("real/s%d", i), "local_copy"
				}
				r := call(client, http.MethodPost, stageURL(p.URL, method, "alice"), stageBody(src, dst))
				switch {
				case r.Status == 200:
					staged.Add(1)
				case r.Status == 403 || r.Status == 400:
					refused.Add(1)
				default:
					wrong.Add(1)
					t.Errorf("%s %s -> %s: %v", method, src, dst, r)
				}
			}
		}()
	}
	cwg.Wait()
	close(stop)
	wg.Wait()
	sameSnapshot(t, "outside the roots", outside, snapshot(t, s.Outside))
	// Every copy of the swapped source holds the inside content.
	files, _ := filepath.Glob(filepath.Join(area, "real", "s*"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err != nil || string(b) != "inside" {
			t.Errorf("%s holds %q (%v)", f, b, err)
		}
	}
	if left := testenv.Temps(s.Target, ".skao-staging-"); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if staged.Load() == 0 || refused.Load() == 0 {
		t.Errorf("%d staged, %d refused: the swaps did not race the requests", staged.Load(), refused.Load())
	}
	record(t, fmt.Sprintf("%d requests through links flipped %d times between inside and outside: %d staged inside, %d refused (403/400), %d other answers; nothing outside changed",
		n, flips.Load(), staged.Load(), refused.Load(), wrong.Load()))
}

// TestHostileBodies sends oversized, deeply nested and otherwise abusive
// bodies: each is answered with its 4xx and a detail, quickly, and the
// function keeps serving.
func TestHostileBodies(t *testing.T) {
	s := newSite(t, "")
	s.write(t, "obs/a.txt", []byte("inside"))
	p := s.start(t, nil)
	u := stageURL(p.URL, "local_copy", "alice")
	item := `{"local_path_on_storage":"obs/a.txt","relative_path":"x"}`
	batch := func(n int) string {
		return `{"data":[` + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + `]}`
	}
	cases := []struct {
		name, url, body string
		want            int
	}{
		{"2 MiB body", u, `{"data":` + item + `,"pad":"` + strings.Repeat("x", 2<<20) + `"}`, 413},
		{"1 MiB and one byte", u, `{"data":` + item + `,"pad":"` + strings.Repeat("x", 1<<20-len(item)-17) + `"}`, 413},
		{"100,000 nested arrays", u, `{"data":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`, 422},
		{"100,000 nested objects", u, strings.Repeat(`{"data":`, 100000) + "1" + strings.Repeat("}", 100000), 422},
		{"nested objects in a field", u, `{"data":{"local_path_on_storage":` + strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000) + `,"relative_path":"x"}}`, 422},
		{"1001 items", u, batch(1001), 422},
		{"unterminated string", u, `{"data":{"local_path_on_storage":"obs`, 422},
		{"invalid UTF-8", u, "{\"data\":{\"local_path_on_storage\":\"\xff\xfe\",\"relative_path\":\"x\"}}", 400},
		{"not an object", u, `"data"`, 422},
		{"oversized CloudEvent", p.URL + "/", `{"specversion":"1.0","pad":"` + strings.Repeat("x", 2<<20) + `"}`, 413},
		{"deeply nested CloudEvent", p.URL + "/", strings.Repeat("[", 100000), 422},
	}
	var slowest time.Duration
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := call(client, http.MethodPost, c.url, c.body, "Content-Type", "application/cloudevents+json")
			if c.url == u {
				r = call(client, http.MethodPost, c.url, c.body)
			}
			if r.Status != c.want || r.str("detail") == "" {
				t.Fatalf("%v, want %d with a detail", r, c.want)
			}
			slowest = max(slowest, r.Took)
		})
	}
	t.Run("header over 1 MiB", func(t *testing.T) {
		r := call(client, http.MethodGet, p.URL+"/operations?username="+strings.Repeat("a", 2<<20), nil)
		if r.Status != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%v, want 431", r)
		}
	})
	t.Run("1000 items still work", func(t *testing.T) {
		var b strings.Builder
		b.WriteString(`{"data":[`)
		for i := range 1000 {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"local_path_on_storage":"obs/a.txt","relative_path":"many/%d"}`, i)
		}
		b.WriteString("]}")
		r := call(client, http.MethodPost, stageURL(p.URL, "local_symlink", "alice"), b.String())
		if r.Status != 200 || r.str("status") != "success" {
			t.Fatalf("%v", r)
		}
	})
	if r := call(client, http.MethodPost, u, `{"data":`+item+`}`); r.Status != 200 {
		t.Fatalf("a normal request afterwards: %v", r)
	}
	record(t, fmt.Sprintf("%d abusive bodies (2 MiB, 100,000-deep nesting, 1001 items, bad UTF-8, oversized and nested CloudEvents) each refused with its 4xx and a detail, the slowest in %s; a header over 1 MiB answered 431; a 1000-item batch still staged",
		len(cases), ms(slowest)))
}

// TestSlowClients trickles request headers and bodies one byte at a time:
// with READ_TIMEOUT=1s each such connection is answered 408 or closed
// within the timeout and a margin, staging nothing, while other clients are
// served as usual.
func TestSlowClients(t *testing.T) {
	s := newSite(t, "")
	s.write(t, "obs/a.txt", []byte("inside"))
	p := s.start(t, map[string]string{"READ_TIMEOUT": "1s"})
	addr := strings.TrimPrefix(p.URL, "http://")
	body := `{"data":{"local_path_on_storage":"obs/a.txt","relative_path":"slow"}}`
	head := fmt.Sprintf("POST /stage_data?method=local_copy&username=alice HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))

	// trickle sends prefix at once, then rest a byte every 100ms, and
	// returns how long until the server answered or closed, and what it said.
	trickle := func(prefix, rest string) (time.Duration, string) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer conn.Close()
		start := time.Now()
		conn.Write([]byte(prefix))
		answered := make(chan string, 1)
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				answered <- "closed: " + err.Error()
				return
			}
			b := new(bytes.Buffer)
			b.ReadFrom(resp.Body)
			answered <- fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b.Bytes()))
		}()
		for i := 0; i < len(rest); i++ {
			select {
			case a := <-answered:
				return time.Since(start), a
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := conn.Write([]byte{rest[i]}); err != nil {
				break
			}
		}
		select {
		case a := <-answered:
			return time.Since(start), a
		case <-time.After(10 * time.Second):
			return time.Since(start), "still open"
		}
	}

	const clients = 20
	type outcome struct {
		took time.Duration
		said string
	}
	bodies, headers := make([]outcome, clients), make([]outcome, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(2)
		go func() { defer wg.Done(); bodies[i].took, bodies[i].said = trickle(head, body) }()
		go func() {
			defer wg.Done()
			headers[i].took, headers[i].said = trickle("", "GET /operations HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "+strings.Repeat("p", 100)+"\r\n\r\n")
		}()
	}
	// Meanwhile others are served at once.
	time.Sleep(300 * time.Millisecond)
	var served latencies
	for range 20 {
		r := call(client, http.MethodGet, p.URL+"/operations?username=alice", nil)
		if r.Status != 200 {
			t.Errorf("a normal request while slow clients hang on: %v", r)
		}
		served = append(served, r.Took)
	}
	wg.Wait()
	var worst time.Duration
	for i := range clients {
		for _, o := range []outcome{bodies[i], headers[i]} {
			worst = max(worst, o.took)
			if o.took > 2500*time.Millisecond {
				t.Errorf("a slow client held its connection for %s: %s", o.took, o.said)
			}
		}
		if !strings.HasPrefix(bodies[i].said, "408 ") || !strings.Contains(bodies[i].said, "Request body not received in time") {
			t.Errorf("trickled body answered %q, want 408 with a detail", bodies[i].said)
		}
	}
	if _, err := os.Lstat(s.userPath("alice", "slow")); err == nil {
		t.Error("a trickled request was staged")
	}
	if ops := s.operations(t); len(ops) != 0 {
		t.Errorf("trickled requests left %d records", len(ops))
	}
	record(t, fmt.Sprintf("READ_TIMEOUT=1s: %d trickled bodies answered 408 and %d trickled headers cut off, all within %s; meanwhile 20 normal requests served with p50 %s, max %s; nothing staged or recorded",
		clients, clients, ms(worst), ms(served.percentile(50)), ms(served.percentile(100))))
}
