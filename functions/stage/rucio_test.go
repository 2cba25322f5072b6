package main

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/ska-telescope/skao-staging-service/lib/rucio"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"github.com/ska-telescope/skao-staging-service/internal/testenv"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/lib/events"
)

// Replica paths in the RSE's deterministic layout, computed apart from the
// service with Python's hashlib (Rucio's lfn2pfn "hash" algorithm).
var replicaPaths = map[string]string{
	"user.jdoe:hello.txt": "user/jdoe/04/49/hello.txt",
	"skao:present.dat":    "skao/05/c8/present.dat",
	"skao:bad.dat":        "skao/cf/b7/bad.dat",
	"skao:late.dat":       "skao/7e/c6/late.dat",
	"skao:batch.dat":      "skao/66/3c/batch.dat",
	"skao:here.dat":       "skao/72/02/here.dat",
	// Names with '/', which Rucio's generic schema allows; paths from
	// Rucio's own RSEDeterministicTranslation.__hash run as is.
	"skao:data/run1/vis.ms": "skao/87/a8/data/run1/vis.ms",
	"skao:/lsst/raw/x.fits": "skao/ab/ad/lsst/raw/x.fits",
}

// Checksums of "replica of hello", from Python's zlib and hashlib.
const (
	helloContent = "replica of hello"
	helloAdler   = "33f7060a"
	helloMD5     = "0843d9308a2644c4134b25292c3db131"
)

// sink collects the events the service sends to K_SINK.
type sink struct {
	*httptest.Server
	mu     sync.Mutex
	events []cloudevents.Event
}

func newSink(t *testing.T) *sink {
	s := &sink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.events = append(s.events, *ev)
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.Close)
	return s
}

// received returns the outcome events about operation id.
func (s *sink) received(id string) []cloudevents.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []cloudevents.Event
	for _, ev := range s.events {
		if ev.Subject() == id {
			out = append(out, ev)
		}
	}
	return out
}

type rucioStack struct {
	*stack
	rse  string
	sink *sink
}

func startRucio(t *testing.T, env map[string]string) *rucioStack {
	dir := t.TempDir()
	sk := newSink(t)
	e := map[string]string{
		"SOURCE_STORAGE_PATH": filepath.Join(dir, "source"),
		"RUCIO_RSE":           "SKAO_SITE",
		"RUCIO_RSE_ROOT":      filepath.Join(dir, "source", "rse"),
		"RUCIO_RSE_PREFIX":    "root://xrd.site:1094//rucio",
		"K_SINK":              sk.URL,
	}
	for k, v := range env {
		e[k] = v
	}
	return &rucioStack{stack: startStage(t, e), rse: e["RUCIO_RSE_ROOT"], sink: sk}
}

func (r *rucioStack) placeReplica(t *testing.T, did, content string) {
	t.Helper()
	rel, ok := replicaPaths[did]
	if !ok {
		t.Fatalf("placeReplica: no path for %s in replicaPaths", did)
	}
	p := filepath.Join(r.rse, rel)
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), 0o644))
}

func (r *rucioStack) stageDID(t *testing.T, user, did, dst string) *testenv.Response {
	body := map[string]any{"data": map[string]string{"did": did, "relative_path": dst}}
	return testenv.Do(t, http.MethodPost, r.URL+"/stage_data?method=local_copy&username="+user, body)
}

// transferDone is Rucio's message as hermes emits it, nulls included: the
// envelope of deliver_to_activemq (lib/rucio/daemons/hermes/hermes.py:
// event_type, payload, created_at) around the payload of
// add_monitor_message (lib/rucio/core/request.py) with the fields FTS's
// get_monitor_msg_fields adds (lib/rucio/transfertool/fts3.py, among them
// "transfer_link" next to Rucio's own null "transfer-link"), in their
// types: sizes are numbers, the request id 32 lowercase hex digits, dates
// str(datetime), dst-url the PFN Rucio's xrootd protocol builds (host,
// port, prefix "//rucio/", the deterministic path).
func transferDone(id, scope, name, rse, adler string, size int) cloudevents.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(id)
	ev.SetSource("/rucio/hermes")
	ev.SetType("io.rucio.transfer-done")
	adlerJSON := "null"
	if adler != "" {
		adlerJSON = `"` + adler + `"`
	}
	sum := md5.Sum([]byte(id))
	requestID := hex.EncodeToString(sum[:])
	jobID := requestID[:8] + "-" + requestID[8:12] + "-" + requestID[12:16] + "-" + requestID[16:20] + "-" + requestID[20:]
	host := "root://xrd.site:1094"
	if rse != "SKAO_SITE" {
		host = "root://xrd." + strings.ToLower(rse) + ":1094"
	}
	dstURL := host + "//rucio/" + rucioHashPath(scope, name)
	body, err := json.Marshal(map[string]any{
		"event_type": "transfer-done",
		"payload": map[string]any{
			"activity":            "User Subscriptions",
			"request-id":          requestID,
			"duration":            3,
			"checksum-adler":      json.RawMessage(adlerJSON),
			"checksum-md5":        nil,
			"file-size":           size,
			"bytes":               size,
			"guid":                nil,
			"previous-request-id": nil,
			"protocol":            "root",
			"scope":               scope,
			"name":                name,
			"dataset":             nil,
			"datasetScope":        nil,
			"src-type":            "DISK",
			"src-rse":             "CERN_DISK",
			"src-url":             "root://eos.cern.ch:1094//eos/rucio/" + rucioHashPath(scope, name),
			"dst-type":            "DISK",
			"dst-rse":             rse,
			"dst-url":             dstURL,
			"reason":              "",
			"transfer-endpoint":   "https://fts:8446",
			"transfer-id":         jobID,
			"transfer-link":       nil,
			"created_at":          "2026-11-26 09:58:00",
			"submitted_at":        "2026-11-26 09:59:00",
			"started_at":          "2026-11-26 09:59:57",
			"transferred_at":      "2026-11-26 10:00:00",
			"tool-id":             "rucio-conveyor",
			"account":             "jdoe",
			"datatype":            nil,
			"transfer_link":       "https://fts:8449/fts3/ftsmon/#/job/" + jobID,
		},
		"created_at": "2026-11-26 10:00:01.123456",
	})
	if err != nil {
		panic(err)
	}
	ev.SetData(cloudevents.ApplicationJSON, body)
	return ev
}

// rucioHashPath is Rucio's lfn2pfn "hash" (RSEDeterministicTranslation.__hash
// in lib/rucio/rse/translation.py), written out as Rucio does, without
// cleaning the path: a name with a leading '/' gives "scope/ab/cd//name".
func rucioHashPath(scope, name string) string {
	sum := md5.Sum([]byte(scope + ":" + name))
	h := hex.EncodeToString(sum[:])
	if strings.HasPrefix(scope, "user") || strings.HasPrefix(scope, "group") {
		scope = strings.ReplaceAll(scope, ".", "/")
	}
	return scope + "/" + h[0:2] + "/" + h[2:4] + "/" + name
}

func sendRaw(t *testing.T, url string, ev cloudevents.Event, structured bool) (int, map[string]any) {
	t.Helper()
	req, err := cehttp.NewHTTPRequestFromEvent(t.Context(), url, ev)
	must(t, err)
	if structured {
		body, err := ev.MarshalJSON()
		must(t, err)
		req, err = http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
		must(t, err)
		req.Header.Set("Content-Type", "application/cloudevents+json")
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	var out map[string]any
	decodeJSON(resp, &out)
	return resp.StatusCode, out
}

func TestRucioPendingThenCompleted(t *testing.T) {
	r := startRucio(t, nil)
	res := r.stageDID(t, "jdoe", "user.jdoe:hello.txt", "from-rucio/hello.txt")
	expect(t, res, 202, "status", "pending")
	id := res.Str("id")
	op := r.operation(t, id)
	if op["status"] != "pending" || op["did"] != "user.jdoe:hello.txt" {
		t.Fatalf("pending operation %v", op)
	}
	list := testenv.Do(t, http.MethodGet, r.URL+"/operations?status=pending", nil)
	if ops := list.JSON["operations"].([]any); len(ops) != 1 || ops[0].(map[string]any)["did"] != "user.jdoe:hello.txt" {
		t.Fatalf("pending list %s", list.Body)
	}

	r.placeReplica(t, "user.jdoe:hello.txt", helloContent)
	ev := transferDone("req-1", "user.jdoe", "hello.txt", "SKAO_SITE", helloAdler, len(helloContent))
	status, answer := sendRaw(t, r.URL+"/", ev, false)
	if status != 200 || answer["status"] != "completed" {
		t.Fatalf("transfer-done: %d %v", status, answer)
	}
	op = r.operation(t, id)
	if op["status"] != "success" || op["message"] != "Data staged for user jdoe with method local_copy" {
		t.Fatalf("completed operation %v", op)
	}
	if b, _ := os.ReadFile(r.userPath("jdoe", "from-rucio/hello.txt")); string(b) != helloContent {
		t.Fatalf("staged %q", b)
	}
	got := r.sink.received(id)
	if len(got) != 1 || got[0].Type() != events.TypeCompleted {
		t.Fatalf("sink got %v", got)
	}

	// Redelivery, in structured mode: acknowledged, no second effect.
	before := r.countOperations(t)
	status, answer = sendRaw(t, r.URL+"/", ev, true)
	if status != 200 || answer["status"] != "ignored" {
		t.Fatalf("redelivery: %d %v", status, answer)
	}
	if r.countOperations(t) != before || len(r.sink.received(id)) != 1 {
		t.Fatal("redelivery had an effect")
	}
}

func TestRucioAlreadyPresentOtherRSEAndMalformed(t *testing.T) {
	r := startRucio(t, nil)
	r.placeReplica(t, "skao:present.dat", "here")
	res := r.stageDID(t, "alice", "skao:present.dat", "present.dat")
	expect(t, res, 200, "message", "Data staged for user alice with method local_copy")
	if op := r.operation(t, res.Str("id")); op["did"] != "skao:present.dat" {
		t.Fatalf("record %v", op)
	}

	res = r.stageDID(t, "alice", "skao:late.dat", "late.dat")
	expect(t, res, 202, "status", "pending")
	status, answer := sendRaw(t, r.URL+"/", transferDone("o-1", "skao", "late.dat", "OTHER_SITE", "", 1), false)
	if status != 200 || answer["status"] != "ignored" {
		t.Fatalf("other RSE: %d %v", status, answer)
	}
	status, answer = sendRaw(t, r.URL+"/", transferDone("o-2", "skao", "nobody-waits.dat", "SKAO_SITE", "", 1), true)
	if status != 200 || answer["status"] != "ignored" {
		t.Fatalf("unknown DID: %d %v", status, answer)
	}
	if op := r.operation(t, res.Str("id")); op["status"] != "pending" {
		t.Fatalf("still waiting: %v", op)
	}
	bad := cloudevents.NewEvent()
	bad.SetID("m-1")
	bad.SetSource("/rucio/hermes")
	bad.SetType("io.rucio.transfer-done")
	bad.SetData(cloudevents.ApplicationJSON, []byte(`{"payload": {"scope": "skao"}}`))
	status, answer = sendRaw(t, r.URL+"/", bad, false)
	if status != 422 || answer["detail"] == "" {
		t.Fatalf("malformed: %d %v", status, answer)
	}
	// Bad DIDs and a DID with a path are refused at once.
	expect(t, r.stageDID(t, "alice", "../etc:passwd", "x"), 422, "", "")
	body := map[string]any{"data": map[string]string{"did": "skao:late.dat", "local_path_on_storage": "x", "relative_path": "y"}}
	expect(t, testenv.Do(t, http.MethodPost, r.URL+"/stage_data?method=local_copy&username=alice", body), 422, "", "")
	// A download cannot wait for a replica.
	dl := testenv.Do(t, http.MethodPost, r.URL+"/stage_data?method=direct_download&username=alice",
		map[string]any{"data": map[string]string{"did": "skao:late.dat"}})
	expect(t, dl, 404, "detail", "Replica of skao:late.dat is not at this site yet")
}

func TestRucioChecksumMismatchStagesNothing(t *testing.T) {
	r := startRucio(t, nil)
	res := r.stageDID(t, "alice", "skao:bad.dat", "bad.dat")
	expect(t, res, 202, "status", "pending")
	r.placeReplica(t, "skao:bad.dat", helloContent)
	status, answer := sendRaw(t, r.URL+"/", transferDone("b-1", "skao", "bad.dat", "SKAO_SITE", "0badc0de", len(helloContent)), false)
	if status != 200 || answer["status"] != "failed" {
		t.Fatalf("transfer-done: %d %v", status, answer)
	}
	op := r.operation(t, res.Str("id"))
	if op["status"] != "failed" || !strings.Contains(op["error_reason"].(string), "adler32") {
		t.Fatalf("operation %v", op)
	}
	if _, err := os.Lstat(r.userPath("alice", "bad.dat")); !os.IsNotExist(err) {
		t.Fatal("staged despite the checksum mismatch")
	}
	if got := r.sink.received(res.Str("id")); len(got) != 1 || got[0].Type() != events.TypeFailed {
		t.Fatalf("sink got %v", got)
	}
}

// A transfer-done completes requests only with the DID's own replica: its
// dst-url, mapped through RUCIO_RSE_PREFIX, must name the deterministic
// path. A message naming another file of the RSE (which anyone could
// download and describe) completes nothing and changes no record.
func TestRucioTransferMustNameTheDIDsReplica(t *testing.T) {
	r := startRucio(t, nil)
	res := r.stageDID(t, "alice", "skao:late.dat", "late.dat")
	expect(t, res, 202, "status", "pending")
	id := res.Str("id")
	must(t, os.MkdirAll(filepath.Join(r.rse, "custom"), 0o755))
	must(t, os.WriteFile(filepath.Join(r.rse, "custom/late.dat"), []byte(helloContent), 0o644))
	send := func(dstURL string) (int, map[string]any) {
		ev := transferDone("u-"+dstURL, "skao", "late.dat", "SKAO_SITE", "", len(helloContent))
		ev.SetData(cloudevents.ApplicationJSON, []byte(`{"scope":"skao","name":"late.dat","dst-rse":"SKAO_SITE",
			"dst-url":"`+dstURL+`","bytes":16,"checksum-adler":null,"checksum-md5":"`+helloMD5+`"}`))
		return sendRaw(t, r.URL+"/", ev, false)
	}
	for _, forged := range []string{"root://xrd.site:1094//rucio/custom/late.dat", "root://xrd.site:1094//rucio/../rucio/custom/late.dat"} {
		status, answer := send(forged)
		if status != 403 || answer["detail"] != "dst-url does not name the replica of skao:late.dat on SKAO_SITE" {
			t.Fatalf("%s: %d %v, want 403", forged, status, answer)
		}
	}
	if op := r.operation(t, id); op["status"] != "pending" {
		t.Fatalf("a forged completion changed the record: %v", op)
	}
	// The deterministic path, through the prefix, completes it.
	det := rucio.DeterministicPath(rucio.DID{Scope: "skao", Name: "late.dat"})
	must(t, os.MkdirAll(filepath.Dir(filepath.Join(r.rse, det)), 0o755))
	must(t, os.WriteFile(filepath.Join(r.rse, det), []byte(helloContent), 0o644))
	status, answer := send("root://xrd.site:1094//rucio/" + det)
	if status != 200 || answer["status"] != "completed" {
		t.Fatalf("transfer-done of the replica: %d %v", status, answer)
	}
	if b, _ := os.ReadFile(r.userPath("alice", "late.dat")); string(b) != helloContent {
		t.Fatalf("staged %q", b)
	}
}

// A DID whose name has '/' in it (as Rucio's generic schema allows, a
// leading one too) waits, and Rucio's transfer-done, whose dst-url is
// the PFN Rucio builds for it, completes it with the replica in the
// deterministic layout.
func TestRucioDIDNamesWithSlashes(t *testing.T) {
	r := startRucio(t, nil)
	for i, did := range []string{"skao:data/run1/vis.ms", "skao:/lsst/raw/x.fits"} {
		target := fmt.Sprintf("slashes/%d.dat", i)
		res := r.stageDID(t, "alice", did, target)
		expect(t, res, 202, "status", "pending")
		r.placeReplica(t, did, helloContent)
		scope, name, _ := strings.Cut(did, ":")
		status, answer := sendRaw(t, r.URL+"/", transferDone(fmt.Sprint("s-", i), scope, name, "SKAO_SITE", helloAdler, len(helloContent)), false)
		if status != 200 || answer["status"] != "completed" {
			t.Fatalf("%s: transfer-done: %d %v", did, status, answer)
		}
		if op := r.operation(t, res.Str("id")); op["status"] != "success" || op["did"] != did {
			t.Fatalf("%s: operation %v", did, op)
		}
		if b, _ := os.ReadFile(r.userPath("alice", target)); string(b) != helloContent {
			t.Fatalf("%s: staged %q", did, b)
		}
	}
}

func TestRucioPendingExpires(t *testing.T) {
	r := startRucio(t, map[string]string{"PENDING_TTL": "300ms"})
	res := r.stageDID(t, "alice", "skao:late.dat", "late.dat")
	expect(t, res, 202, "status", "pending")
	var op map[string]any
	testenv.WaitFor(t, 10*time.Second, "the request to expire", func() bool {
		op = r.operation(t, res.Str("id"))
		return op["status"] == "failed"
	})
	if !strings.HasPrefix(op["error_reason"].(string), "Expired") {
		t.Fatalf("operation %v", op)
	}
	testenv.WaitFor(t, 5*time.Second, "the failed event", func() bool { return len(r.sink.received(res.Str("id"))) == 1 })
	if ev := r.sink.received(res.Str("id"))[0]; ev.Type() != events.TypeFailed {
		t.Fatalf("event %v", ev)
	}
}

func TestRucioBatchMixedAndEvents(t *testing.T) {
	r := startRucio(t, nil)
	r.write(t, "plain.txt", "plain")
	r.placeReplica(t, "skao:present.dat", "here")
	items := []map[string]string{
		{"local_path_on_storage": "plain.txt", "relative_path": "b/plain.txt"},
		{"did": "skao:present.dat", "relative_path": "b/present.dat"},
		{"did": "skao:batch.dat", "relative_path": "b/batch.dat"},
	}
	res := testenv.Do(t, http.MethodPost, r.URL+"/stage_data?method=local_copy&username=alice", map[string]any{"data": items})
	expect(t, res, 202, "status", "pending")
	results := res.JSON["results"].([]any)
	for i, want := range []string{"success", "success", "pending"} {
		if got := results[i].(map[string]any)["status"]; got != want {
			t.Fatalf("result %d: %v, want %s (%s)", i, got, want, res.Body)
		}
	}
	// The same through a CloudEvent request, delivered twice.
	req := cetest.RequestEvent(t, "did-evt", staging.Request{Method: "local_symlink", Username: "bob", DID: "skao:batch.dat", Target: "link"})
	for attempt := 0; attempt < 2; attempt++ {
		status, answer := sendRaw(t, r.URL+"/", req, attempt == 1)
		if status != 202 || answer["status"] != "pending" {
			t.Fatalf("request event: %d %v", status, answer)
		}
	}
	r.placeReplica(t, "skao:batch.dat", "batch")
	status, answer := sendRaw(t, r.URL+"/", transferDone("d-1", "skao", "batch.dat", "SKAO_SITE", "", 5), false)
	if status != 200 || answer["status"] != "completed" || len(answer["operations"].([]any)) != 2 {
		t.Fatalf("transfer-done: %d %v", status, answer)
	}
	if b, _ := os.ReadFile(r.userPath("alice", "b/batch.dat")); string(b) != "batch" {
		t.Fatal("batch item not staged")
	}
	if link, _ := os.Readlink(r.userPath("bob", "link")); link != filepath.Join(r.rse, replicaPaths["skao:batch.dat"]) {
		t.Fatalf("link %q", link)
	}
}

// TestWebPageShowsDIDs: the page's history shows a request by DID, and that
// it waits for its replica, then the staged replica once it arrived.
func TestWebPageShowsDIDs(t *testing.T) {
	r := startRucio(t, nil)
	res := r.stageDID(t, "jdoe", "user.jdoe:hello.txt", "hello.txt")
	expect(t, res, 202, "status", "pending")
	p := openPage(t, r.URL, 1200, 900)
	row := p.historyRow(t, "the pending row", "#history-table tbody tr", `row.dataset.status === "pending"`)
	if !strings.Contains(row, "user.jdoe:hello.txt (waiting for the replica)") {
		t.Fatalf("pending row: %q", row)
	}
	r.placeReplica(t, "user.jdoe:hello.txt", helloContent)
	status, _ := sendRaw(t, r.URL+"/", transferDone("w-1", "user.jdoe", "hello.txt", "SKAO_SITE", helloAdler, len(helloContent)), false)
	if status != 200 {
		t.Fatalf("transfer-done: %d", status)
	}
	row = p.historyRow(t, "the completed row", "#history-table tbody tr", `row.dataset.status === "success"`)
	if !strings.Contains(row, "user.jdoe:hello.txt (rse/user/jdoe/04/49/hello.txt)") {
		t.Fatalf("completed row: %q", row)
	}
	p.noErrors(t)
}
