package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// newTestMux registers routes like the stage function's, each answering
// with its own name.
func newTestMux() *Mux {
	m := NewMux()
	named := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			JSON(w, http.StatusOK, map[string]string{"route": name, "id": r.PathValue("id")})
		}
	}
	m.Route(http.MethodPost, "/stage_data", named("stage"))
	m.Route(http.MethodGet, "/stage_data", named("download"))
	m.Route(http.MethodGet, "/config", named("config"))
	m.Route(http.MethodGet, "/config/allowed-methods", named("allowed"))
	m.Route(http.MethodGet, "/operations", named("list"))
	m.Route(http.MethodGet, "/operations/{id}", named("get"))
	m.Route(http.MethodPost, "/", named("receiver"))
	m.Files("/docs", named("docs"))
	m.Files("/assets/{file...}", named("asset"))
	return m
}

func TestMuxRoute(t *testing.T) {
	m := newTestMux()
	for _, tc := range []struct {
		method, path string
		status       int
		route        string // for 200
		allow        string // for 405
		detail       string // for 404 and 405
	}{
		{method: "POST", path: "/stage_data", status: 200, route: "stage"},
		{method: "POST", path: "/stage_data/", status: 200, route: "stage"},
		{method: "GET", path: "/stage_data", status: 200, route: "download"},
		{method: "GET", path: "/stage_data/", status: 200, route: "download"},
		{method: "GET", path: "/config", status: 200, route: "config"},
		{method: "GET", path: "/config/", status: 200, route: "config"},
		{method: "GET", path: "/config/allowed-methods", status: 200, route: "allowed"},
		{method: "GET", path: "/config/allowed-methods/", status: 200, route: "allowed"},
		{method: "GET", path: "/operations", status: 200, route: "list"},
		{method: "GET", path: "/operations/", status: 200, route: "list"},
		{method: "GET", path: "/operations/0190b6a1", status: 200, route: "get"},
		{method: "GET", path: "/operations/0190b6a1/", status: 200, route: "get"},
		{method: "POST", path: "/", status: 200, route: "receiver"},
		{method: "GET", path: "/docs", status: 200, route: "docs"},
		{method: "HEAD", path: "/docs", status: 200, route: "docs"},
		{method: "GET", path: "/assets/css/app.css", status: 200, route: "asset"},
		{method: "POST", path: "/docs", status: 405, allow: "GET, HEAD", detail: "Method POST not allowed on /docs"},
		{method: "PUT", path: "/assets/app.js", status: 405, allow: "GET, HEAD", detail: "Method PUT not allowed on /assets/app.js"},

		{method: "GET", path: "/nope", status: 404, detail: "Not found: /nope"},
		{method: "POST", path: "/nope/deeper", status: 404, detail: "Not found: /nope/deeper"},
		{method: "GET", path: "/operations/a/b", status: 404, detail: "Not found: /operations/a/b"},
		{method: "GET", path: "/config/allowed-methods/x", status: 404, detail: "Not found: /config/allowed-methods/x"},
		{method: "GET", path: "/", status: 404, detail: "Not found: /"},

		{method: "DELETE", path: "/stage_data", status: 405, allow: "GET, HEAD, POST", detail: "Method DELETE not allowed on /stage_data"},
		{method: "PUT", path: "/stage_data/", status: 405, allow: "GET, HEAD, POST", detail: "Method PUT not allowed on /stage_data/"},
		{method: "POST", path: "/config", status: 405, allow: "GET, HEAD", detail: "Method POST not allowed on /config"},
		{method: "POST", path: "/config/", status: 405, allow: "GET, HEAD"},
		{method: "POST", path: "/operations", status: 405, allow: "GET, HEAD"},
		{method: "DELETE", path: "/operations/0190b6a1", status: 405, allow: "GET, HEAD", detail: "Method DELETE not allowed on /operations/0190b6a1"},
		{method: "PATCH", path: "/operations/0190b6a1/", status: 405, allow: "GET, HEAD"},
		{method: "PUT", path: "/", status: 405, allow: "POST", detail: "Method PUT not allowed on /"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			m.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d (body %s)", w.Code, tc.status, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q is not a JSON object: %v", w.Body, err)
			}
			switch tc.status {
			case 200:
				if body["route"] != tc.route {
					t.Errorf("served by %q, want %q", body["route"], tc.route)
				}
				if tc.route == "get" && body["id"] != "0190b6a1" {
					t.Errorf("id = %q", body["id"])
				}
			case 405:
				if got := w.Header().Get("Allow"); got != tc.allow {
					t.Errorf("Allow = %q, want %q", got, tc.allow)
				}
				fallthrough
			default:
				if body["detail"] == "" || (tc.detail != "" && body["detail"] != tc.detail) {
					t.Errorf("detail = %q, want %q", body["detail"], tc.detail)
				}
			}
		})
	}
}

// HEAD is served wherever GET is, and otherwise answered like any other
// method, without a body.
func TestMuxHead(t *testing.T) {
	m := newTestMux()
	w := httptest.NewRecorder()
	m.ServeHTTP(w, httptest.NewRequest(http.MethodHead, "/config", nil))
	if w.Code != http.StatusOK {
		t.Errorf("HEAD /config = %d, want 200", w.Code)
	}
	w = httptest.NewRecorder()
	m.ServeHTTP(w, httptest.NewRequest(http.MethodHead, "/stage_data", nil))
	if w.Code != http.StatusOK {
		t.Errorf("HEAD /stage_data = %d, want 200", w.Code)
	}
	w = httptest.NewRecorder()
	m.ServeHTTP(w, httptest.NewRequest(http.MethodHead, "/", nil))
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "POST" {
		t.Errorf("HEAD / = %d Allow %q, want 405 Allow POST", w.Code, w.Header().Get("Allow"))
	}
}

func TestErrorAndJSON(t *testing.T) {
	later := staging.Errorf(staging.TooMany, "Too many waiting")
	later.RetryAfter = 90*time.Second + time.Millisecond
	for _, tc := range []struct {
		err    error
		status int
		detail string
		retry  string // Retry-After
	}{
		{staging.Errorf(staging.Conflict, "A different file exists at %s", "/x"), 409, "A different file exists at /x", ""},
		{staging.Wrap(staging.Unavailable, "Database unavailable", errors.New("dial tcp: refused")), 503, "Database unavailable", "1"},
		{errors.New("open /srv/secret/path: boom"), 500, "Internal error", ""},
		{fmt.Errorf("wrapped: %w", staging.Errorf(staging.TooMany, "Too much work in flight")), 429, "Too much work in flight", "1"},
		{fmt.Errorf("wrapped: %w", later), 429, "Too many waiting", "91"},
		{staging.Errorf(staging.Canceled, "Download interrupted"), 499, "Download interrupted", ""},
	} {
		w := httptest.NewRecorder()
		Error(w, tc.err)
		var body Detail
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("body %q: %v", w.Body, err)
		}
		if w.Code != tc.status || body.Detail != tc.detail || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("Error(%v) = %d %q, want %d %q", tc.err, w.Code, body.Detail, tc.status, tc.detail)
		}
		if retry := w.Header().Get("Retry-After"); retry != tc.retry {
			t.Errorf("Error(%v): Retry-After %q, want %q", tc.err, retry, tc.retry)
		}
		if strings.Contains(w.Body.String(), "dial tcp") || strings.Contains(w.Body.String(), "/srv/secret") {
			t.Errorf("the cause leaked into the answer: %s", w.Body)
		}
	}
}

// Every kind has a status of its own, and a status relayed from another
// function comes back as the same kind.
func TestKindStatuses(t *testing.T) {
	seen := map[int]staging.Kind{}
	for kind, status := range statuses {
		if other, ok := seen[status]; ok {
			t.Errorf("kinds %s and %s share status %d", kind, other, status)
		}
		seen[status] = kind
		if got := KindOfStatus(status); got != kind {
			t.Errorf("KindOfStatus(%d) = %s, want %s", status, got, kind)
		}
		if kind.Transient() != (status >= 500 || status == 429) {
			t.Errorf("%s (%d): Transient() = %v", kind, status, kind.Transient())
		}
	}
	if got := KindOfStatus(418); got != staging.Rejected {
		t.Errorf("KindOfStatus(418) = %s, want rejected", got)
	}
	if got := KindOfStatus(520); got != staging.Upstream {
		t.Errorf("KindOfStatus(520) = %s, want upstream", got)
	}
}

func TestDecodeJSON(t *testing.T) {
	type request struct {
		Method   string `json:"method"`
		Username string `json:"username"`
	}
	big := `{"method":"local_copy","username":"` + strings.Repeat("a", MaxBody) + `"}`
	justUnder := `{"method":"local_copy","username":"` + strings.Repeat("a", MaxBody-100) + `"}`
	for _, tc := range []struct {
		name   string
		body   string
		status int // 0: accepted
		detail string
	}{
		{name: "valid", body: `{"method":"local_copy","username":"alice"}`},
		{name: "just under the limit", body: justUnder},
		{name: "unknown fields ignored", body: `{"method":"local_copy","extra":1}`},
		{name: "over 1 MiB", body: big, status: 413, detail: "Request body is larger than 1048576 bytes"},
		{name: "over 1 MiB of whitespace first", body: strings.Repeat(" ", MaxBody+1) + `{}`, status: 413},
		{name: "truncated", body: `{"method":"local_copy",`, status: 422},
		{name: "not JSON", body: `method=local_copy`, status: 422},
		{name: "empty", body: ``, status: 422},
		{name: "wrong type", body: `{"method":5}`, status: 422, detail: "Malformed JSON body: method must be a string, not number"},
		{name: "array", body: `[1,2]`, status: 422, detail: "Malformed JSON body: the body must be an object, not array"},
		{name: "syntax", body: `{"method" "x"}`, status: 422, detail: "Malformed JSON body: invalid JSON at byte 11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, "/stage_data", strings.NewReader(tc.body))
			var v request
			err := DecodeJSON(w, r, &v)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("DecodeJSON: %v", err)
				}
				if v.Method != "local_copy" {
					t.Errorf("decoded %+v", v)
				}
				return
			}
			var se *staging.Error
			if !errors.As(err, &se) {
				t.Fatalf("DecodeJSON = %v (%T), want a *staging.Error", err, err)
			}
			status, detail := Status(err)
			if status != tc.status {
				t.Errorf("status = %d (%q), want %d", status, detail, tc.status)
			}
			if tc.detail != "" && detail != tc.detail {
				t.Errorf("detail = %q, want %q", detail, tc.detail)
			}
			if tc.status == 422 && !strings.HasPrefix(detail, "Malformed JSON body: ") {
				t.Errorf("detail = %q, want it to start with Malformed JSON body", detail)
			}
		})
	}
}

// timedOut is a body whose read deadline passed after a few bytes, as the
// server's READ_TIMEOUT makes it.
type timedOut struct{ sent bool }

func (b *timedOut) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, `{"method":`), nil
	}
	return 0, fmt.Errorf("read tcp 127.0.0.1:8080: %w", os.ErrDeadlineExceeded)
}

func TestDecodeJSONTimeout(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/stage_data", &timedOut{})
	var v map[string]any
	err := DecodeJSON(httptest.NewRecorder(), r, &v)
	if status, detail := Status(err); status != http.StatusRequestTimeout || detail != "Request body not received in time" {
		t.Fatalf("DecodeJSON = %d %q, want 408 Request body not received in time", status, detail)
	}
}
