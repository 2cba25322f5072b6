package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/eventauth"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/rucio"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

func init() {
	// Answers the description names that kin-openapi has no decoder for.
	openapi3filter.RegisterBodyDecoder("application/x-tar", openapi3filter.FileBodyDecoder)
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.FileBodyDecoder)
	openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder)
}

// contract checks live requests and answers against /openapi.json and
// remembers which operations it saw.
type contract struct {
	doc    *openapi3.T
	base   string // the server of the description
	router routers.Router
	seen   map[string]bool // "METHOD /path"
}

func loadContract(t *testing.T, serverURL string) *contract {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openAPI)
	must(t, err)
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI 3 description: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: serverURL}}
	router, err := legacy.NewRouter(doc)
	must(t, err)
	return &contract{doc: doc, base: serverURL, router: router, seen: map[string]bool{}}
}

// exchange is one request of the contract test.
type exchange struct {
	name   string
	method string
	path   string // with the query
	body   string
	header []string // name, value, ...
	status int
	// badRequest marks a request the description itself rejects (the
	// point of the case is the error answer).
	badRequest bool
}

// check sends e to base, validates the request (unless it is meant to be
// bad) and the answer, and returns the answer's body.
func (c *contract) check(t *testing.T, base string, e exchange) []byte {
	t.Helper()
	newRequest := func() *http.Request {
		req, err := http.NewRequest(e.method, base+e.path, strings.NewReader(e.body))
		must(t, err)
		if e.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(e.header); i += 2 {
			req.Header.Set(e.header[i], e.header[i+1])
		}
		return req
	}
	req := newRequest()
	route, params, err := c.findRoute(req)
	if err != nil {
		t.Fatalf("%s %s is not in openapi.json: %v", e.method, e.path, err)
	}
	c.seen[e.method+" "+route.Path] = true
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true,
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && !e.badRequest {
		t.Errorf("%s %s: the request does not match openapi.json: %v", e.method, e.path, err)
	} else if err == nil && e.badRequest {
		t.Errorf("%s %s: openapi.json accepts a request meant to be bad", e.method, e.path)
	}

	resp, err := http.DefaultClient.Do(newRequest())
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	if resp.StatusCode != e.status {
		t.Fatalf("%s %s: status %d, want %d: %.300s", e.method, e.path, resp.StatusCode, e.status, body)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
		Header: resp.Header, Options: opts}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s %s: the %d answer does not match openapi.json: %v\n%.500s", e.method, e.path, resp.StatusCode, err, body)
	}
	return body
}

// findRoute finds req's operation, whichever process req goes to.
func (c *contract) findRoute(req *http.Request) (*routers.Route, map[string]string, error) {
	u, err := url.Parse(c.base)
	if err != nil {
		return nil, nil, err
	}
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, u.Host
	return c.router.FindRoute(r)
}

// operations lists every operation of the description.
func (c *contract) operations() []string {
	var ops []string
	for path, item := range c.doc.Paths.Map() {
		for method := range item.Operations() {
			ops = append(ops, method+" "+path)
		}
	}
	sort.Strings(ops)
	return ops
}

// TestOpenAPIContract sends every operation of /openapi.json, with its main
// error answers, to a running stage function (and logs function) and checks
// each request and answer against the description, so the two cannot drift.
func TestOpenAPIContract(t *testing.T) {
	s := startStage(t, nil)
	s.write(t, "samples/hello.txt", "hello")
	s.write(t, "samples/tree/a.txt", "a")
	s.write(t, "samples/other.txt", "another file")
	c := loadContract(t, s.URL)

	item := func(src, dst string) string {
		return fmt.Sprintf(`{"data": {"local_path_on_storage": %q, "relative_path": %q}}`, src, dst)
	}
	stage := "/stage_data?method=local_copy&username=alice"
	exchanges := []exchange{
		{name: "config", method: "GET", path: "/config", status: 200},
		{name: "allowed methods", method: "GET", path: "/config/allowed-methods", status: 200},
		{name: "healthz", method: "GET", path: "/healthz", status: 200},
		{name: "readyz", method: "GET", path: "/readyz", status: 200},
		{name: "page", method: "GET", path: "/", status: 200},
		{name: "docs", method: "GET", path: "/docs", status: 200},
		{name: "openapi", method: "GET", path: "/openapi.json", status: 200},

		{name: "stage", method: "POST", path: stage, body: item("samples/hello.txt", "hello.txt"), status: 200},
		{name: "already there", method: "POST", path: stage, body: item("samples/hello.txt", "hello.txt"), status: 200},
		{name: "symlink", method: "POST", path: "/stage_data?method=local_symlink&username=alice", body: item("samples/hello.txt", "link.txt"), status: 200},
		{name: "batch", method: "POST", path: stage, status: 200,
			body: `{"data": [{"local_path_on_storage": "samples/tree", "relative_path": "tree"}, {"local_path_on_storage": "samples/other.txt", "relative_path": "other.txt"}]}`},
		{name: "partial batch", method: "POST", path: stage, status: 207,
			body: `{"data": [{"local_path_on_storage": "samples/hello.txt", "relative_path": "b1.txt"}, {"local_path_on_storage": "samples/missing", "relative_path": "b2.txt"}]}`},
		{name: "async", method: "POST", path: stage, body: item("samples/hello.txt", "async.txt"), header: []string{"Prefer", "respond-async"}, status: 202},
		{name: "async batch", method: "POST", path: stage, header: []string{"Prefer", "respond-async"}, status: 202,
			body: `{"data": [{"local_path_on_storage": "samples/hello.txt", "relative_path": "async-b.txt"}]}`},
		{name: "missing source", method: "POST", path: stage, body: item("samples/missing", "x"), status: 400},
		{name: "unknown method", method: "POST", path: "/stage_data?method=teleport&username=alice", body: item("samples/hello.txt", "x"), status: 400},
		{name: "escape", method: "POST", path: stage, body: item("../secret", "x"), status: 403},
		{name: "target escape", method: "POST", path: stage, body: item("samples/hello.txt", "../../bob/x"), status: 403},
		{name: "conflict", method: "POST", path: stage, body: item("samples/other.txt", "hello.txt"), status: 409},
		{name: "too large", method: "POST", path: stage, body: `{"data": "` + strings.Repeat("x", 1<<20) + `"}`, status: 413, badRequest: true},
		{name: "no username", method: "POST", path: "/stage_data?method=local_copy", body: item("samples/hello.txt", "x"), status: 422, badRequest: true},
		{name: "malformed", method: "POST", path: stage, body: `{"data": `, status: 422, badRequest: true},
		{name: "download", method: "POST", path: "/stage_data?method=direct_download&username=alice", body: `{"data": {"local_path_on_storage": "samples/hello.txt"}}`, status: 200},
		{name: "download link", method: "GET", path: "/stage_data?method=direct_download&username=alice&local_path_on_storage=samples/hello.txt", status: 200},
		{name: "download tar", method: "GET", path: "/stage_data?method=direct_download&username=alice&local_path_on_storage=samples/tree", status: 200},
		{name: "download range", method: "GET", path: "/stage_data?method=direct_download&username=alice&local_path_on_storage=samples/hello.txt", header: []string{"Range", "bytes=1-2"}, status: 206},
		{name: "download bad range", method: "GET", path: "/stage_data?method=direct_download&username=alice&local_path_on_storage=samples/hello.txt", header: []string{"Range", "bytes=100-200"}, status: 416},
		{name: "download missing", method: "GET", path: "/stage_data?method=direct_download&username=alice&local_path_on_storage=samples/missing", status: 400},
		{name: "download escape", method: "GET", path: "/stage_data?method=direct_download&username=alice&local_path_on_storage=/etc/passwd", status: 403},
		{name: "download form", method: "POST", path: "/stage_data?method=direct_download&username=alice&local_path_on_storage=samples/hello.txt",
			body: "access_token=", header: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 200},
		{name: "JSON sent as a form (curl -d)", method: "POST", path: stage, body: " " + item("samples/hello.txt", "curl-d.txt"),
			header: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 200},
		{name: "download form, not a download", method: "POST", path: "/stage_data?method=local_copy&username=alice&local_path_on_storage=samples/hello.txt",
			body: "access_token=", header: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 422},
		{name: "download other method", method: "GET", path: "/stage_data?method=local_copy&username=alice&local_path_on_storage=samples/hello.txt", status: 422, badRequest: false},

		{name: "operations", method: "GET", path: "/operations?username=alice&limit=10", status: 200},
		{name: "operations by status", method: "GET", path: "/operations?status=failed", status: 200},
		{name: "operations bad status", method: "GET", path: "/operations?status=bogus", status: 422, badRequest: true},
		{name: "operations bad limit", method: "GET", path: "/operations?limit=0", status: 422, badRequest: true},
		{name: "operations bad cursor", method: "GET", path: "/operations?cursor=bm90LWEtY3Vyc29y", status: 422},
		{name: "unknown operation", method: "GET", path: "/operations/0d0f6b2e-4a8c-4a51-9f55-2a8b1d3c9e10", status: 404},

		{name: "browse root", method: "GET", path: "/browse", status: 200},
		{name: "browse", method: "GET", path: "/browse?path=samples", status: 200},
		{name: "browse missing", method: "GET", path: "/browse?path=samples/missing", status: 400},
		{name: "browse file", method: "GET", path: "/browse?path=samples/hello.txt", status: 400},
		{name: "browse escape", method: "GET", path: "/browse?path=../", status: 403},
		{name: "browse NUL", method: "GET", path: "/browse?path=samples%00", status: 422},

		{name: "create file", method: "POST", path: "/create-file", body: `{"filename": "made/new.txt", "content": "new"}`, status: 200},
		{name: "create file again", method: "POST", path: "/create-file", body: `{"filename": "made/new.txt", "content": "new"}`, status: 409},
		{name: "create file escape", method: "POST", path: "/create-file", body: `{"filename": "../new.txt", "content": "new"}`, status: 403},
		{name: "create file malformed", method: "POST", path: "/create-file", body: `{"filename": 1}`, status: 422, badRequest: true},

		{name: "event", method: "POST", path: "/", body: `{"method": "local_copy", "username": "alice", "local_path_on_storage": "samples/hello.txt", "relative_path": "event.txt"}`,
			header: []string{"ce-specversion", "1.0", "ce-id", "contract-1", "ce-source", "/test", "ce-type", "org.skao.staging.request"}, status: 200},
		{name: "event missing source", method: "POST", path: "/", body: `{"method": "local_copy", "username": "alice", "local_path_on_storage": "samples/missing", "relative_path": "event2.txt"}`,
			header: []string{"ce-specversion", "1.0", "ce-id", "contract-2", "ce-source", "/test", "ce-type", "org.skao.staging.request"}, status: 400},
		{name: "not an event", method: "POST", path: "/", body: `{"method": "local_copy"}`, status: 422, badRequest: true},
		{name: "transfer-done without RUCIO_RSE", method: "POST", path: "/", body: `{"scope": "skao", "name": "late.dat", "dst-rse": "SKAO_SITE"}`,
			header: []string{"ce-specversion", "1.0", "ce-id", "contract-3", "ce-source", "/rucio/hermes", "ce-type", "io.rucio.transfer-done"}, status: 400},
		{name: "event of another type", method: "POST", path: "/", body: `{"id": "x", "status": "success"}`,
			header: []string{"ce-specversion", "1.0", "ce-id", "contract-4", "ce-source", "/test", "ce-type", "org.skao.staging.completed"}, status: 400, badRequest: true},
	}
	for _, e := range exchanges {
		t.Run(e.name, func(t *testing.T) { c.check(t, s.URL, e) })
	}

	t.Run("operation", func(t *testing.T) {
		var list struct {
			Operations []struct{ ID string } `json:"operations"`
		}
		must(t, json.Unmarshal(c.check(t, s.URL, exchange{method: "GET", path: "/operations?limit=1", status: 200}), &list))
		if len(list.Operations) != 1 {
			t.Fatalf("no operations: %+v", list)
		}
		c.check(t, s.URL, exchange{method: "GET", path: "/operations/" + url.PathEscape(list.Operations[0].ID), status: 200})
	})

	t.Run("operations pages", func(t *testing.T) {
		type page struct {
			Operations []struct{ ID string } `json:"operations"`
			Next       *string               `json:"next"`
		}
		var first, second page
		must(t, json.Unmarshal(c.check(t, s.URL, exchange{method: "GET", path: "/operations?limit=1", status: 200}), &first))
		if first.Next == nil {
			t.Fatalf("first page of one has no next: %+v", first)
		}
		must(t, json.Unmarshal(c.check(t, s.URL, exchange{method: "GET", path: "/operations?limit=1&cursor=" + url.QueryEscape(*first.Next), status: 200}), &second))
		if len(second.Operations) != 1 || second.Operations[0].ID == first.Operations[0].ID {
			t.Fatalf("second page %+v after %+v", second, first)
		}
		resp, err := http.Get(s.URL + "/operations?limit=1")
		must(t, err)
		resp.Body.Close()
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Fatal("no ETag")
		}
		c.check(t, s.URL, exchange{method: "GET", path: "/operations?limit=1", header: []string{"If-None-Match", etag}, status: 304})
	})

	t.Run("create-file disabled", func(t *testing.T) {
		off := startStage(t, map[string]string{"ENABLE_FILE_CREATOR": "false"})
		c.check(t, off.URL, exchange{method: "POST", path: "/create-file", body: `{"filename": "x", "content": ""}`, status: 404})
	})

	t.Run("database unavailable", func(t *testing.T) {
		db := testenv.MariaDBServerFor(t)
		down := startStage(t, map[string]string{"DATABASE_URL": db.URL()})
		down.write(t, "samples/hello.txt", "hello")
		must(t, db.Stop())
		c.check(t, down.URL, exchange{method: "GET", path: "/readyz", status: 503})
		c.check(t, down.URL, exchange{method: "GET", path: "/operations", status: 503})
		c.check(t, down.URL, exchange{method: "GET", path: "/operations/0d0f6b2e-4a8c-4a51-9f55-2a8b1d3c9e10", status: 503})
		c.check(t, down.URL, exchange{method: "POST", path: stage, body: item("samples/hello.txt", "db.txt"), status: 503})
	})

	t.Run("logs", func(t *testing.T) { checkLogsContract(t, c, s) })
	t.Run("events", func(t *testing.T) { checkEventsContract(t, c) })

	// Every operation of the description was exercised.
	for _, op := range c.operations() {
		if !c.seen[op] {
			t.Errorf("openapi.json describes %s, which no exchange checked", op)
		}
	}
	if _, err := os.Stat(filepath.Join(s.Target, "alice", "hello.txt")); err != nil {
		t.Errorf("the contract's staging left no file: %v", err)
	}
}

// checkLogsContract checks GET /logs of a logs function reading the stage
// function's store.
func checkLogsContract(t *testing.T, c *contract, s *stack) {
	env := map[string]string{}
	for k, v := range s.Env {
		if k != "PORT" {
			env[k] = v
		}
	}
	env["MAX_LOG_STREAMS"] = "1"
	logs := testenv.StartFunction(t, "logs", env)
	for _, e := range []exchange{
		{method: "GET", path: "/logs", status: 200},
		{method: "GET", path: "/logs?format=json&level=INFO&limit=5", status: 200},
		{method: "GET", path: "/logs?function=stage&username=alice", status: 200},
		{method: "GET", path: "/logs?level=LOUD", status: 422, badRequest: true},
		{method: "GET", path: "/logs?limit=0", status: 422, badRequest: true},
		{method: "GET", path: "/logs?since=yesterday", status: 422, badRequest: true},
	} {
		c.check(t, logs.URL, e)
	}
	body := string(c.check(t, logs.URL, exchange{method: "GET", path: "/logs?level=INFO", status: 200}))
	if !strings.Contains(body, " - INFO - ") {
		t.Errorf("GET /logs holds no INFO line of the stage function:\n%.1000s", body)
	}

	// follow=true never ends: check the answer up to its first event.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", logs.URL+"/logs?follow=true&limit=1", nil)
	must(t, err)
	route, params, err := c.findRoute(req)
	must(t, err)
	c.seen["GET "+route.Path] = true
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	must(t, openapi3filter.ValidateRequest(ctx, in))
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	var event strings.Builder
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() && lines.Text() != "" {
		event.WriteString(lines.Text() + "\n")
	}
	if !strings.HasPrefix(event.String(), "id: ") || !strings.Contains(event.String(), "\ndata: ") {
		t.Errorf("first event %q", event.String())
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: opts}
	out.SetBodyBytes([]byte(event.String() + "\n"))
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		t.Errorf("GET /logs?follow=true: the answer does not match openapi.json: %v", err)
	}
	// That stream is the one MAX_LOG_STREAMS allows.
	c.check(t, logs.URL, exchange{method: "GET", path: "/logs?follow=true", status: 503})
}

// eventExchange is an exchange that delivers ev to POST / as a broker does,
// in binary mode (ce-* headers, the data as the body) or structured mode
// (the whole event as application/cloudevents+json).
func eventExchange(t *testing.T, ev cloudevents.Event, structured bool) exchange {
	t.Helper()
	e := exchange{method: http.MethodPost, path: "/"}
	if structured {
		b, err := ev.MarshalJSON()
		must(t, err)
		e.body, e.header = string(b), []string{"Content-Type", "application/cloudevents+json"}
		return e
	}
	req, err := cehttp.NewHTTPRequestFromEvent(context.Background(), "http://127.0.0.1/", ev)
	must(t, err)
	b, err := io.ReadAll(req.Body)
	must(t, err)
	e.body = string(b)
	for name, values := range req.Header {
		for _, v := range values {
			e.header = append(e.header, name, v)
		}
	}
	return e
}

// transferDoneData is an io.rucio.transfer-done event whose data is data
// as given (Rucio's message, its payload, or something malformed).
func transferDoneData(id, data string) cloudevents.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(id)
	ev.SetSource("/rucio/hermes")
	ev.SetType("io.rucio.transfer-done")
	ev.SetData(cloudevents.ApplicationJSON, []byte(data))
	return ev
}

// checkEventsContract delivers both event types of POST / (staging
// requests and Rucio's transfer-done), in binary and structured mode,
// signed as the deployments' EVENT_AUTH=hmac wants or not, to stage
// functions with a Rucio RSE, and checks each request and answer against
// the description: a transfer-done that completes, fails, is ignored
// (nobody waits, a redelivery, another RSE), comes before its replica
// (503), names another file (403), is unsigned or from a sender or user
// that may not send it (401, 403), is malformed (422) or too large (413).
func checkEventsContract(t *testing.T, c *contract) {
	r := startRucio(t, map[string]string{"EVENT_AUTH": "hmac", "EVENT_HMAC_SECRET": hmacKey})
	r.write(t, "samples/hello.txt", "hello")
	signed := func(ev cloudevents.Event) cloudevents.Event {
		ev = ev.Clone()
		must(t, eventauth.Sign(&ev, []byte(hmacKey)))
		return ev
	}
	request := func(id string, req staging.Request) cloudevents.Event {
		return signed(cetest.RequestEvent(t, id, req))
	}
	hello := transferDone("td-1", "user.jdoe", "hello.txt", "SKAO_SITE", helloAdler, len(helloContent))
	forged := `{"scope": "skao", "name": "late.dat", "dst-rse": "SKAO_SITE", "dst-url": "root://xrd.site:1094//rucio/custom/late.dat", "bytes": 16}`
	otherKey := transferDone("td-key", "skao", "late.dat", "SKAO_SITE", "", 16)
	must(t, eventauth.Sign(&otherKey, []byte(strings.Repeat("k", 32))))

	waiting := map[string]string{} // the operation each 202 recorded
	for _, tc := range []struct {
		name       string
		ev         cloudevents.Event
		structured bool
		status     int
		badRequest bool
		before     func() // what must be in place first
		check      func(body []byte)
	}{
		{name: "request, structured", ev: request("ev-1", staging.Request{Method: "local_copy", Username: "alice", Source: "samples/hello.txt", Target: "ev-1.txt"}),
			structured: true, status: 200},
		{name: "request by DID", ev: request("ev-2", staging.Request{Method: "local_copy", Username: "jdoe", DID: "user.jdoe:hello.txt", Target: "hello.txt"}), status: 202,
			check: func(b []byte) { waiting["hello"] = pendingID(t, b) }},
		{name: "request by DID, structured", ev: request("ev-3", staging.Request{Method: "local_copy", Username: "alice", DID: "skao:bad.dat", Target: "bad.dat"}),
			structured: true, status: 202, check: func(b []byte) { waiting["bad"] = pendingID(t, b) }},
		{name: "request by DID, redelivered", ev: request("ev-3", staging.Request{Method: "local_copy", Username: "alice", DID: "skao:bad.dat", Target: "bad.dat"}),
			status: 202},
		{name: "request for a late replica", ev: request("ev-4", staging.Request{Method: "local_copy", Username: "alice", DID: "skao:late.dat", Target: "late.dat"}), status: 202},

		{name: "transfer-done", ev: signed(hello), status: 200,
			before: func() { r.placeReplica(t, "user.jdoe:hello.txt", helloContent) },
			check: func(b []byte) {
				var result rucio.Result
				must(t, json.Unmarshal(b, &result))
				if result.Status != "completed" || result.DID != "user.jdoe:hello.txt" || len(result.Operations) != 1 || result.Operations[0] != waiting["hello"] {
					t.Errorf("transfer-done answered %s, want the completion of %s", b, waiting["hello"])
				}
			}},
		{name: "transfer-done, redelivered in structured mode", ev: signed(hello), structured: true, status: 200,
			check: func(b []byte) { wantResult(t, b, "ignored", "no request waits for user.jdoe:hello.txt") }},
		{name: "transfer-done, replica does not match", ev: signed(transferDone("td-2", "skao", "bad.dat", "SKAO_SITE", "0badc0de", len(helloContent))), status: 200,
			before: func() { r.placeReplica(t, "skao:bad.dat", helloContent) },
			check: func(b []byte) {
				wantResult(t, b, "failed", "Replica of skao:bad.dat has adler32 "+helloAdler+", the transfer reported 0badc0de")
			}},
		{name: "transfer-done, another RSE", ev: signed(transferDone("td-3", "skao", "late.dat", "OTHER_SITE", "", 1)), status: 200,
			check: func(b []byte) { wantResult(t, b, "ignored", "transfer to another RSE: OTHER_SITE") }},
		{name: "transfer-done, payload only, byte count as a string, nobody waits",
			ev:     signed(transferDoneData("td-4", `{"scope": "skao", "name": "nobody.dat", "dst-rse": "SKAO_SITE", "bytes": null, "file-size": "5", "checksum-md5": null}`)),
			status: 200, check: func(b []byte) { wantResult(t, b, "ignored", "no request waits for skao:nobody.dat") }},
		{name: "transfer-done, replica not visible yet", ev: signed(transferDone("td-5", "skao", "late.dat", "SKAO_SITE", "", 16)), status: 503},
		{name: "transfer-done, dst-url of another file", ev: signed(transferDoneData("td-6", forged)), status: 403},
		{name: "transfer-done, unsigned", ev: transferDone("td-7", "skao", "late.dat", "SKAO_SITE", "", 16), status: 401},
		{name: "transfer-done, signed with another secret", ev: otherKey, status: 401},
		{name: "transfer-done without dst-rse", ev: signed(transferDoneData("td-8", `{"payload": {"scope": "skao", "name": "late.dat"}}`)), status: 422, badRequest: true},
		{name: "transfer-done, not an object", ev: signed(transferDoneData("td-9", `["skao", "late.dat"]`)), status: 422, badRequest: true},
		{name: "transfer-done, bytes not a number", ev: signed(transferDoneData("td-10", `{"scope": "skao", "name": "late.dat", "dst-rse": "SKAO_SITE", "bytes": "many"}`)),
			status: 422, badRequest: true},
		{name: "transfer-done, another Rucio event", ev: signed(transferDoneData("td-11", `{"event_type": "transfer-failed", "payload": {"scope": "skao", "name": "late.dat", "dst-rse": "SKAO_SITE"}}`)),
			status: 422, badRequest: true},
		{name: "transfer-done, bad DID", ev: signed(transferDoneData("td-12", `{"scope": "skao", "name": "../late.dat", "dst-rse": "SKAO_SITE"}`)), status: 422, badRequest: true},
		{name: "transfer-done over 1 MiB", ev: signed(transferDoneData("td-13", `{"scope": "skao", "name": "late.dat", "dst-rse": "SKAO_SITE", "padding": "`+strings.Repeat("x", 1<<20)+`"}`)),
			status: 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			e := eventExchange(t, tc.ev, tc.structured)
			e.status, e.badRequest = tc.status, tc.badRequest
			body := c.check(t, r.URL, e)
			if tc.check != nil {
				tc.check(body)
			}
		})
	}
	t.Run("not a CloudEvent", func(t *testing.T) {
		c.check(t, r.URL, exchange{method: "POST", path: "/", body: `{"scope": "skao", "name": "late.dat", "dst-rse": "SKAO_SITE"}`,
			header: []string{"ce-type", "io.rucio.transfer-done"}, status: 422})
	})
	if op := r.operation(t, waiting["hello"]); op["status"] != "success" {
		t.Errorf("the transfer-done left its operation %v", op)
	}
	if op := r.operation(t, waiting["bad"]); op["status"] != "failed" {
		t.Errorf("the mismatching replica left its operation %v", op)
	}

	// Users and senders that may not complete requests: with AUTH_MODE=oidc
	// an event without a sender credential is a user's own, and only an
	// admin's completes anything; a signed one needs EVENT_SENDERS to allow
	// its type.
	t.Run("who may complete", func(t *testing.T) {
		p := idp(t)
		u := startRucio(t, oidcEnv(p, map[string]string{"EVENT_AUTH": "hmac", "EVENT_HMAC_SECRET": hmacKey,
			"EVENT_SENDERS": "org.skao.staging.request=hmac"}))
		done := transferDone("td-u", "skao", "late.dat", "SKAO_SITE", "", 16)
		for _, tc := range []struct {
			name   string
			ev     cloudevents.Event
			header []string
			status int
			detail string
		}{
			{"anonymous", done, nil, 401, "Authentication is required"},
			{"a user", done, bearer(login(t, p, "alice")), 403, "Only an administrator may do this"},
			{"a sender not allowed the type", signed(done), nil, 403, "The event's sender may not send io.rucio.transfer-done"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := eventExchange(t, tc.ev, false)
				e.header = append(e.header, tc.header...)
				e.status = tc.status
				var got httpx.Detail
				must(t, json.Unmarshal(c.check(t, u.URL, e), &got))
				if got.Detail != tc.detail {
					t.Errorf("detail %q, want %q", got.Detail, tc.detail)
				}
			})
		}
	})
}

// pendingID is the operation id of a 202 answer.
func pendingID(t *testing.T, body []byte) string {
	t.Helper()
	var p struct{ Status, ID string }
	must(t, json.Unmarshal(body, &p))
	if p.Status != "pending" || p.ID == "" {
		t.Fatalf("202 answer %s", body)
	}
	return p.ID
}

// wantResult checks a transfer-done's answer.
func wantResult(t *testing.T, body []byte, status, reason string) {
	t.Helper()
	var got rucio.Result
	must(t, json.Unmarshal(body, &got))
	if got.Status != status || got.Reason != reason {
		t.Errorf("transfer-done answered %s, want status %q and reason %q", body, status, reason)
	}
}

// TestOpenAPIContractWithAuthentication checks the answers of authentication
// (AUTH_MODE=oidc) against the description: no token, another user's
// records, an administrator's door.
func TestOpenAPIContractWithAuthentication(t *testing.T) {
	p := idp(t)
	s := startStage(t, oidcEnv(p, nil))
	s.write(t, "samples/hello.txt", "hello")
	c := loadContract(t, s.URL)
	alice, bob := bearer(login(t, p, "alice")), bearer(login(t, p, "bob"))
	body := c.check(t, s.URL, exchange{method: "POST", path: "/stage_data?method=local_copy&username=alice", header: alice, status: 200,
		body: `{"data": {"local_path_on_storage": "samples/hello.txt", "relative_path": "hello.txt"}}`})
	var staged struct{ ID string }
	must(t, json.Unmarshal(body, &staged))
	for _, e := range []exchange{
		{name: "stage, no token", method: "POST", path: "/stage_data?method=local_copy&username=alice", status: 401,
			body: `{"data": {"local_path_on_storage": "samples/hello.txt", "relative_path": "x.txt"}}`},
		{name: "stage for another user", method: "POST", path: "/stage_data?method=local_copy&username=alice", header: bob, status: 403,
			body: `{"data": {"local_path_on_storage": "samples/hello.txt", "relative_path": "x.txt"}}`},
		{name: "download, no token", method: "GET", path: "/stage_data?method=direct_download&username=alice&local_path_on_storage=samples/hello.txt", status: 401},
		{name: "operations, no token", method: "GET", path: "/operations", status: 401},
		{name: "operations of another user", method: "GET", path: "/operations?username=alice", header: bob, status: 403},
		{name: "operations of one's own", method: "GET", path: "/operations?username=alice", header: alice, status: 200},
		{name: "an operation, no token", method: "GET", path: "/operations/" + staged.ID, status: 401},
		{name: "another user's operation", method: "GET", path: "/operations/" + staged.ID, header: bob, status: 404},
		{name: "browse, no token", method: "GET", path: "/browse?path=samples", status: 401},
		{name: "create file, no token", method: "POST", path: "/create-file", body: `{"filename": "new.txt", "content": "x"}`, status: 401},
		{name: "create file, not an admin", method: "POST", path: "/create-file", header: alice, body: `{"filename": "new.txt", "content": "x"}`, status: 403},
	} {
		t.Run(e.name, func(t *testing.T) { c.check(t, s.URL, e) })
	}
}
