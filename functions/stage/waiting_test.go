package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// TestWaitingPerUser, on MariaDB: a user who has MAX_WAITING_PER_USER
// requests waiting for their DID's replica is answered 429 for one more,
// over HTTP and by event, and nothing is recorded; another user is not
// affected; a redelivered request event is answered 202 with its
// operation; once a waiting request is completed, or has failed, the user
// may file one more.
func TestWaitingPerUser(t *testing.T) {
	r := startRucio(t, map[string]string{"DATABASE_URL": testenv.MariaDB(t), "MAX_WAITING_PER_USER": "2"})
	const detail = "Too many requests waiting for a replica: user alice has 2, the most one user may (MAX_WAITING_PER_USER); try again once some have arrived or expired"

	ev := cetest.RequestEvent(t, "w-1", staging.Request{Method: "local_copy", Username: "alice", DID: "skao:late.dat", Target: "late.dat"})
	status, answer := sendRaw(t, r.URL+"/", ev, false)
	if status != 202 || answer["status"] != "pending" {
		t.Fatalf("request event: %d %v", status, answer)
	}
	late := answer["id"]
	bad := r.stageDID(t, "alice", "skao:bad.dat", "bad.dat")
	expect(t, bad, 202, "status", "pending")

	// At the limit: refused, over HTTP and by event, and not recorded.
	before := r.countOperations(t)
	res := r.stageDID(t, "alice", "skao:batch.dat", "batch.dat")
	expect(t, res, 429, "detail", detail)
	if got := res.Header.Get("Retry-After"); got != "60" {
		t.Errorf("Retry-After %q, want 60: replicas take long to arrive", got)
	}
	status, answer = sendRaw(t, r.URL+"/", cetest.RequestEvent(t, "w-2",
		staging.Request{Method: "local_copy", Username: "alice", DID: "skao:batch.dat", Target: "batch.dat"}), true)
	if status != 429 || answer["detail"] != detail {
		t.Fatalf("request event beyond the limit: %d %v", status, answer)
	}
	// In a batch, the item beyond the limit is answered 429 in its place,
	// not recorded, and the others run.
	r.placeReplica(t, "skao:here.dat", helloContent)
	batch := testenv.Do(t, http.MethodPost, r.URL+"/stage_data?method=local_copy&username=alice", map[string]any{
		"data": []map[string]string{{"did": "skao:here.dat", "relative_path": "here.dat"}, {"did": "skao:batch.dat", "relative_path": "batch.dat"}}})
	expect(t, batch, 207, "status", "partial")
	results, _ := batch.JSON["results"].([]any)
	if len(results) != 2 || results[0].(map[string]any)["status"] != "success" ||
		results[1].(map[string]any)["detail"] != detail || results[1].(map[string]any)["id"] != nil {
		t.Fatalf("batch at the limit: %v", results)
	}
	if n := r.countOperations(t); n != before+1 {
		t.Fatalf("batch at the limit recorded %d operations, want 1 (the item staged)", n-before)
	}
	before++

	// Another user is not affected.
	expect(t, r.stageDID(t, "bob", "skao:batch.dat", "batch.dat"), 202, "status", "pending")

	// A redelivery of the accepted event: its operation, nothing new.
	before = r.countOperations(t)
	status, answer = sendRaw(t, r.URL+"/", ev, true)
	if status != 202 || answer["status"] != "pending" || answer["id"] != late {
		t.Fatalf("redelivery: %d %v, want 202 with %v", status, answer, late)
	}
	if n := r.countOperations(t); n != before {
		t.Fatalf("redelivery recorded an operation: %d, were %d", n, before)
	}

	// Completed: room for one more, and only one.
	r.placeReplica(t, "skao:late.dat", helloContent)
	status, answer = sendRaw(t, r.URL+"/", transferDone("t-1", "skao", "late.dat", "SKAO_SITE", helloAdler, len(helloContent)), false)
	if status != 200 || answer["status"] != "completed" {
		t.Fatalf("transfer-done: %d %v", status, answer)
	}
	expect(t, r.stageDID(t, "alice", "skao:batch.dat", "batch.dat"), 202, "status", "pending")
	expect(t, r.stageDID(t, "alice", "skao:present.dat", "present.dat"), 429, "detail", detail)

	// Failed (its replica failed its check): room again.
	r.placeReplica(t, "skao:bad.dat", helloContent)
	status, answer = sendRaw(t, r.URL+"/", transferDone("t-2", "skao", "bad.dat", "SKAO_SITE", "0badc0de", len(helloContent)), false)
	if status != 200 || answer["status"] != "failed" {
		t.Fatalf("transfer-done of a bad replica: %d %v", status, answer)
	}
	if op := r.operation(t, bad.Str("id")); op["status"] != "failed" || !strings.Contains(op["error_reason"].(string), "adler32") {
		t.Fatalf("bad replica's request: %v", op)
	}
	expect(t, r.stageDID(t, "alice", "skao:present.dat", "present.dat"), 202, "status", "pending")
}
