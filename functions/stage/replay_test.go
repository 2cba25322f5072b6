package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"github.com/ska-telescope/skao-staging-service/lib/eventauth"
	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Signed events are time-bound (EVENT_AUTH=hmac, EVENT_MAX_AGE): a signed
// event captured on the cluster network and sent again later than a
// broker would redeliver it is refused 401 and does nothing, whatever it
// carries; the time is part of the signature, so it cannot be moved. A
// redelivery within the window still answers the first outcome and
// stages nothing again, even after the user deleted what it staged.
func TestSignedEventsAreTimeBound(t *testing.T) {
	r := startRucio(t, map[string]string{"EVENT_AUTH": "hmac", "EVENT_HMAC_SECRET": hmacKey, "EVENT_MAX_AGE": "1h"})
	r.write(t, "ev/file", "event data")
	sign := func(ev cloudevents.Event, at time.Time) cloudevents.Event {
		ev = ev.Clone()
		if !at.IsZero() {
			ev.SetTime(at)
		}
		must(t, eventauth.Sign(&ev, []byte(hmacKey)))
		return ev
	}
	request := func(id, target string) cloudevents.Event {
		return cetest.RequestEvent(t, id, staging.Request{Method: "local_copy", Username: "alice", Source: "ev/file", Target: target})
	}

	t.Run("a redelivery within the window has no second effect", func(t *testing.T) {
		ev := sign(request("fresh-1", "fresh"), time.Now())
		status, reply, _ := cetest.SendEvent(t, r.URL+"/", ev, false)
		if status != http.StatusOK || reply == nil || reply.Type() != events.TypeCompleted {
			t.Fatalf("first delivery: %d %v", status, reply)
		}
		staged := r.userPath("alice", "fresh")
		must(t, os.Remove(staged)) // the user deletes the copy
		before := r.countOperations(t)
		status, again, _ := cetest.SendEvent(t, r.URL+"/", ev, true)
		if status != http.StatusOK || again == nil || again.ID() != reply.ID() {
			t.Fatalf("redelivery: %d %v, first %v", status, again, reply)
		}
		if _, err := os.Lstat(staged); !os.IsNotExist(err) {
			t.Fatal("the redelivery staged the deleted file again")
		}
		if n := r.countOperations(t); n != before {
			t.Fatalf("the redelivery added records: %d -> %d", before, n)
		}
	})

	// Each a first delivery: what it would do is what a replay does to a
	// request never recorded (refused 429 or 503 until the broker gave up).
	old := sign(request("old-1", "old"), time.Now().Add(-3*time.Hour))
	tampered := sign(request("tampered-1", "tampered"), time.Now().Add(-3*time.Hour))
	tampered.SetTime(time.Now()) // moved into the window after signing
	for _, tc := range []struct {
		name, target string
		ev           cloudevents.Event
		detail       string
	}{
		{"older than EVENT_MAX_AGE", "old", old, "outside the accepted window"},
		{"too far ahead", "future", sign(request("future-1", "future"), time.Now().Add(time.Hour)), "outside the accepted window"},
		{"without a time", "timeless", sign(request("timeless-1", "timeless"), time.Time{}), "outside the accepted window"},
		{"time changed after signing", "tampered", tampered, "not authenticated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.target == "timeless" {
				// Sign sets a time that is missing: take it out again,
				// as a sender with its own signing code would send it.
				tc.ev.SetTime(time.Time{})
				tc.ev = signAsIs(t, tc.ev)
				if !tc.ev.Time().IsZero() {
					t.Fatal("the event has a time")
				}
			}
			before := r.countOperations(t)
			for _, structured := range []bool{false, true} {
				status, answer := sendRaw(t, r.URL+"/", tc.ev, structured)
				if status != http.StatusUnauthorized || !strings.Contains(answer["detail"].(string), tc.detail) {
					t.Fatalf("structured=%v: %d %v, want 401 with %q", structured, status, answer, tc.detail)
				}
			}
			if _, err := os.Lstat(r.userPath("alice", tc.target)); !os.IsNotExist(err) {
				t.Fatal("staged")
			}
			if n := r.countOperations(t); n != before {
				t.Fatalf("recorded: %d -> %d records", before, n)
			}
		})
	}

	// A transfer-done captured hours ago, sent while a later request for
	// the same DID waits and its replica is being written again: it would
	// check the half-written file against the old message and fail the
	// request for good. Refused, the request keeps waiting, and the
	// transfer's own message completes it.
	t.Run("an old transfer-done changes no waiting request", func(t *testing.T) {
		res := r.stageDID(t, "bob", "user.jdoe:hello.txt", "hello.txt")
		expect(t, res, 202, "status", "pending")
		r.placeReplica(t, "user.jdoe:hello.txt", helloContent[:5]) // still being written
		captured := sign(transferDone("td-old", "user.jdoe", "hello.txt", "SKAO_SITE", helloAdler, len(helloContent)),
			time.Now().Add(-3*time.Hour))
		status, answer := sendRaw(t, r.URL+"/", captured, false)
		if status != http.StatusUnauthorized {
			t.Fatalf("old transfer-done: %d %v", status, answer)
		}
		if op := r.operation(t, res.Str("id")); op["status"] != "pending" {
			t.Fatalf("the old transfer-done changed the request: %v", op)
		}
		r.placeReplica(t, "user.jdoe:hello.txt", helloContent)
		done := sign(transferDone("td-new", "user.jdoe", "hello.txt", "SKAO_SITE", helloAdler, len(helloContent)), time.Time{})
		if status, answer := sendRaw(t, r.URL+"/", done, false); status != 200 || answer["status"] != "completed" {
			t.Fatalf("transfer-done: %d %v", status, answer)
		}
		if b, _ := os.ReadFile(filepath.Join(r.Target, "bob", "hello.txt")); string(b) != helloContent {
			t.Fatalf("staged %q", b)
		}
	})
}

// signAsIs signs ev as it is, without a time when it has none: the
// canonical form's HMAC, as a sender with its own signing code would.
func signAsIs(t *testing.T, ev cloudevents.Event) cloudevents.Event {
	t.Helper()
	ev.SetExtension(eventauth.ExtSignature, nil)
	c, err := eventauth.Canonical(&ev)
	must(t, err)
	h := hmac.New(sha256.New, []byte(hmacKey))
	h.Write(c)
	ev.SetExtension(eventauth.ExtSignature, "v1="+base64.RawURLEncoding.EncodeToString(h.Sum(nil)))
	return ev
}
