package main

import (
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"net/http"
	"os"
	"sync"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"github.com/ska-telescope/skao-staging-service/internal/testenv"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/ska-telescope/skao-staging-service/lib/events"
)

func TestCloudEvents(t *testing.T) {
	s := startStage(t, nil)
	s.write(t, "ev/file", "event data")
	s.write(t, "ev/tree/x", "x")

	for _, mode := range []struct {
		name       string
		structured bool
	}{{"binary", false}, {"structured", true}} {
		t.Run(mode.name, func(t *testing.T) {
			target := "from-" + mode.name
			ev := cetest.RequestEvent(t, "evt-"+mode.name, staging.Request{Method: "local_copy", Username: "alice",
				Source: "ev/tree", Target: target})
			status, reply, _ := cetest.SendEvent(t, s.URL+"/", ev, mode.structured)
			if status != http.StatusOK || reply == nil || reply.Type() != events.TypeCompleted {
				t.Fatalf("status %d reply %v", status, reply)
			}
			var data events.ReplyData
			must(t, reply.DataAs(&data))
			if data.Status != "success" || data.Message != "Data staged for user alice with method local_copy" ||
				data.Method != "local_copy" || data.Username != "alice" || data.RelativePath != target || data.ID == "" {
				t.Fatalf("reply data %+v", data)
			}
			if b, _ := os.ReadFile(s.userPath("alice", target+"/x")); string(b) != "x" {
				t.Fatal("not staged")
			}
			before := s.countOperations(t)
			// Redelivery, in the other mode too: the first outcome, nothing new.
			for _, again := range []bool{mode.structured, !mode.structured} {
				status, reply2, _ := cetest.SendEvent(t, s.URL+"/", ev, again)
				var data2 events.ReplyData
				must(t, reply2.DataAs(&data2))
				if status != 200 || reply2.ID() != reply.ID() || data2 != data {
					t.Fatalf("redelivery: status %d reply %+v, first %+v", status, data2, data)
				}
			}
			if after := s.countOperations(t); after != before {
				t.Fatalf("redelivery added records: %d -> %d", before, after)
			}
		})
	}

	t.Run("concurrent redelivery has one effect", func(t *testing.T) {
		ev := cetest.RequestEvent(t, "evt-concurrent", staging.Request{Method: "local_copy", Username: "bob",
			Source: "ev/file", Target: "c"})
		before := s.countOperations(t)
		var wg sync.WaitGroup
		ids := make([]string, 5)
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, reply, _ := cetest.SendEvent(t, s.URL+"/", ev, i%2 == 0)
				var d events.ReplyData
				if status == 200 && reply.DataAs(&d) == nil {
					ids[i] = d.ID + " " + d.Message
				}
			}()
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] || id == "" {
				t.Fatalf("deliveries answered differently: %q", ids)
			}
		}
		if after := s.countOperations(t); after != before+1 {
			t.Fatalf("records %d -> %d, want one more", before, after)
		}
	})

	t.Run("input problems are 4xx, also on redelivery", func(t *testing.T) {
		cases := []struct {
			name   string
			ev     func() cloudevents.Event
			status int
		}{
			{"missing source", func() cloudevents.Event {
				return cetest.RequestEvent(t, "bad-1", staging.Request{Method: "local_copy", Username: "alice", Source: "nope", Target: "x"})
			}, 400},
			{"escape", func() cloudevents.Event {
				return cetest.RequestEvent(t, "bad-2", staging.Request{Method: "local_copy", Username: "alice", Source: "../../etc/passwd", Target: "x"})
			}, 403},
			{"extension differs from method", func() cloudevents.Event {
				ev := cetest.RequestEvent(t, "bad-3", staging.Request{Method: "local_copy", Username: "alice", Source: "ev/file", Target: "x"})
				ev.SetExtension(events.ExtMethod, "local_symlink")
				return ev
			}, 422},
			{"wrong type", func() cloudevents.Event {
				ev := cetest.RequestEvent(t, "bad-4", staging.Request{Method: "local_copy", Username: "alice", Source: "ev/file", Target: "x"})
				ev.SetType("org.example.other")
				return ev
			}, 400},
			{"bad username", func() cloudevents.Event {
				return cetest.RequestEvent(t, "bad-5", staging.Request{Method: "local_copy", Username: "../root", Source: "ev/file", Target: "x"})
			}, 422},
			{"direct_download", func() cloudevents.Event {
				return cetest.RequestEvent(t, "bad-6", staging.Request{Method: "direct_download", Username: "alice", Source: "ev/file"})
			}, 422},
		}
		for _, c := range cases {
			for attempt := 0; attempt < 2; attempt++ {
				status, _, _ := cetest.SendEvent(t, s.URL+"/", c.ev(), attempt == 1)
				if status != c.status {
					t.Fatalf("%s (attempt %d): status %d, want %d", c.name, attempt, status, c.status)
				}
			}
		}
		r := testenv.Do(t, http.MethodPost, s.URL+"/", `{"not":"an event"}`)
		expect(t, r, 422, "", "")
	})
}
