package events

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/eventauth"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/staging/stagingtest"
)

const secret = "a-shared-secret-of-at-least-32-bytes!"

// recorder is an HTTP endpoint that keeps the events it gets and answers
// with status and body.
type recorder struct {
	mu     sync.Mutex
	events []*cloudevents.Event
	auth   []string
	status int
	body   string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ev, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	rec.mu.Lock()
	rec.events, rec.auth = append(rec.events, ev), append(rec.auth, r.Header.Get("Authorization"))
	rec.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rec.status)
	io.WriteString(w, rec.body)
}

func TestPeerRelaysOutcomesByKind(t *testing.T) {
	req := &staging.Request{Method: "jupyter_copy", Username: "alice", Source: "a", Target: "b", OperationID: "op-1"}
	for _, tc := range []struct {
		name   string
		status int
		body   string
		kind   staging.Kind
		detail string
	}{
		{"success", 200, "", "", ""},
		{"refused", 403, `{"detail":"User bob may not stage data for user alice"}`, staging.Forbidden, "User bob may not stage data for user alice"},
		{"missing", 400, `{"detail":"Source path does not exist: a"}`, staging.Rejected, "Source path does not exist: a"},
		{"busy", 503, `{"detail":"Database unavailable"}`, staging.Unavailable, "Database unavailable"},
		{"not JSON", 500, `<html>boom</html>`, staging.Internal, "The jupyter function answered 500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{status: tc.status, body: tc.body}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			p := Peer{Name: "jupyter", URL: srv.URL, Source: "/skao/staging/stage", Creds: &Credentials{Secret: []byte(secret)}}
			err := p.Run(context.Background(), staging.Caller{Name: "alice", Token: "user-token"}, req)
			if tc.kind == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if k, d := staging.KindOf(err); k != tc.kind || d != tc.detail {
				t.Fatalf("%v: %s %q, want %s %q", err, k, d, tc.kind, tc.detail)
			}
			ev := rec.events[0]
			got, err := DecodeRequest(ev)
			if err != nil || got.OperationID != "op-1" || got.Username != "alice" || ev.ID() != "op-1" {
				t.Fatalf("handed on %+v (%v), event id %s", got, err, ev.ID())
			}
			// Signed with this function's secret, so the peer trusts the
			// sender; the user's token, which the peer does not need,
			// stays here.
			v, _ := eventauth.New(eventauth.Config{Mode: "hmac", HMACSecrets: [][]byte{[]byte(secret)}})
			if _, err := v.Verify(context.Background(), http.Header{}, ev); err != nil {
				t.Errorf("the hand-off's signature: %v", err)
			}
			if rec.auth[0] != "" {
				t.Errorf("a signed hand-off carries Authorization %q", rec.auth[0])
			}
		})
	}
	p := Peer{Name: "jupyter", URL: "http://127.0.0.1:9"}
	if k, _ := staging.KindOf(p.Run(context.Background(), staging.Caller{}, req)); k != staging.Unavailable {
		t.Errorf("unreachable peer: %s", k)
	}
}

func TestSenderSignsOrSendsItsToken(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("projected-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{status: 202}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	signed, err := NewSender(srv.URL, "/skao/staging/stage", &Credentials{Secret: []byte(secret)}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	withToken, _ := NewSender(srv.URL, "/skao/staging/stage", &Credentials{TokenFile: token}, slog.Default())
	plain, _ := NewSender(srv.URL, "/skao/staging/stage", nil, slog.Default())
	req := &staging.Request{Method: "local_copy", Username: "alice", Source: "a", Target: "b", DID: "s:n", OperationID: "op-2",
		JupyterToken: "users-hub-token"}
	for _, s := range []*Sender{signed, withToken, plain} {
		if err := s.Handoff(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	signed.Notify(context.Background(), &staging.Operation{ID: "op-2", Status: staging.StatusSuccess, Method: "local_copy"})
	v, _ := eventauth.New(eventauth.Config{Mode: "hmac", HMACSecrets: [][]byte{[]byte(secret)}})
	if _, err := v.Verify(context.Background(), http.Header{}, rec.events[0]); err != nil {
		t.Errorf("signed hand-off: %v", err)
	}
	if got, _ := DecodeRequest(rec.events[0]); got.DID != "s:n" || got.Source != "a" || got.OperationID != "op-2" {
		t.Errorf("the hand-off lost its request: %+v", got)
	}
	for _, ev := range rec.events[:3] {
		if strings.Contains(string(ev.Data()), "users-hub-token") {
			t.Errorf("a hand-off through the broker carries the user's hub token: %s", ev.Data())
		}
	}
	if req.JupyterToken != "users-hub-token" {
		t.Error("Handoff changed the caller's request")
	}
	if rec.auth[1] != "Bearer projected-token" || rec.auth[2] != "" {
		t.Errorf("Authorization %q, %q", rec.auth[1], rec.auth[2])
	}
	if _, ok := rec.events[2].Extensions()[eventauth.ExtSignature]; ok {
		t.Error("an unsigned sender signed")
	}
	if ev := rec.events[3]; ev.Type() != TypeCompleted || ev.ID() != "op-2/success" {
		t.Errorf("outcome event %s %s", ev.Type(), ev.ID())
	}
	if _, err := v.Verify(context.Background(), http.Header{}, rec.events[3]); err != nil {
		t.Errorf("signed outcome: %v", err)
	}
}

// The receiver establishes the caller: a verified sender acts for anyone;
// an event without sender credentials is a user's request when users may
// send (authenticated by AUTH_MODE), refused otherwise.
func TestReceiverCallers(t *testing.T) {
	store := stagingtest.NewMemStore()
	svc := &staging.Service{Store: store}
	svc.Register(echo{})
	senders, _ := eventauth.New(eventauth.Config{Mode: "hmac", HMACSecrets: [][]byte{[]byte(secret)}})
	event := func(user string, sign bool) cloudevents.Event {
		ev, _ := NewRequest("/test", &staging.Request{Method: "echo", Username: user, Source: "a", Target: "b"})
		ev.SetID(user + "-" + map[bool]string{true: "signed", false: "plain"}[sign])
		if sign {
			(&Credentials{Secret: []byte(secret)}).sign(&ev)
		}
		return ev
	}
	for _, tc := range []struct {
		name         string
		usersMaySend bool
		ev           cloudevents.Event
		status       int
		detail       string
	}{
		{"signed, for anyone", false, event("bob", true), 200, ""},
		{"unsigned, users may not send", false, event("bob", false), 401, "Events must come from an authorized sender (EVENT_AUTH=hmac)"},
		{"unsigned, a user without a token", true, event("bob", false), 401, "Authentication is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &Receiver{Service: svc, Source: "/test", Logger: slog.Default(), Senders: senders,
				Auth: jupyterless{}, UsersMaySend: tc.usersMaySend}
			srv := httptest.NewServer(rc)
			defer srv.Close()
			r, err := cehttp.NewHTTPRequestFromEvent(context.Background(), srv.URL, tc.ev)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var d struct{ Detail string }
			json.NewDecoder(resp.Body).Decode(&d)
			if resp.StatusCode != tc.status || !strings.Contains(d.Detail, tc.detail) {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, d.Detail, tc.status, tc.detail)
			}
		})
	}
}

// jupyterless is an AUTH_MODE whose users need a token: none here.
type jupyterless struct{}

func (jupyterless) Caller(ctx context.Context, token string) (staging.Caller, error) {
	if token == "" {
		return staging.Caller{}, nil
	}
	return auth.None{}.Caller(ctx, token)
}

// echo is a method that stages nothing and succeeds.
type echo struct{}

func (echo) Name() string           { return "echo" }
func (echo) Traits() staging.Traits { return staging.Traits{NeedsTarget: true} }
func (echo) Prepare(ctx context.Context, req *staging.Request) (*staging.Plan, error) {
	return &staging.Plan{Run: func(context.Context, *staging.Job) (*staging.Result, error) {
		return &staging.Result{Message: "done"}, nil
	}}, nil
}

// An event without the id and source that make a redelivery known is
// malformed: 422, nothing staged or recorded, in either mode.
func TestReceiverRefusesEventsWithoutIdentity(t *testing.T) {
	store := stagingtest.NewMemStore()
	svc := &staging.Service{Store: store}
	svc.Register(echo{})
	rc := &Receiver{Service: svc, Source: "/test", Logger: slog.Default(), Auth: auth.None{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	data := `{"method": "echo", "username": "bob", "local_path_on_storage": "a", "relative_path": "b"}`
	for _, tc := range []struct {
		name, contentType, body string
		header                  map[string]string
	}{
		{"binary, no id", "application/json", data, map[string]string{"ce-specversion": "1.0", "ce-type": TypeRequest, "ce-source": "/test"}},
		{"binary, no source", "application/json", data, map[string]string{"ce-specversion": "1.0", "ce-type": TypeRequest, "ce-id": "1"}},
		{"structured, no id", "application/cloudevents+json", `{"specversion": "1.0", "type": "` + TypeRequest + `", "source": "/test", "data": ` + data + `}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.contentType)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnprocessableEntity {
				t.Errorf("status %d, want 422", resp.StatusCode)
			}
			if n := len(store.All()); n != 0 {
				t.Errorf("%d operations recorded", n)
			}
		})
	}
}

// gated waits for gate, then fails if its run was cancelled meanwhile.
type gated struct{ started, gate chan struct{} }

func (gated) Name() string           { return "gated" }
func (gated) Traits() staging.Traits { return staging.Traits{NeedsTarget: true} }
func (g gated) Prepare(ctx context.Context, req *staging.Request) (*staging.Plan, error) {
	return &staging.Plan{Run: func(ctx context.Context, _ *staging.Job) (*staging.Result, error) {
		g.started <- struct{}{}
		<-g.gate
		if ctx.Err() != nil {
			return nil, staging.Wrap(staging.Unavailable, "Staging was cancelled", ctx.Err())
		}
		return &staging.Result{Message: "done"}, nil
	}}, nil
}

// A broker that stops waiting for an event's answer (its delivery timeout)
// does not cancel the staging it asked for: the run ends, and succeeds.
func TestReceiverRunOutlivesTheDelivery(t *testing.T) {
	store := stagingtest.NewMemStore()
	svc := &staging.Service{Store: store}
	g := gated{started: make(chan struct{}, 1), gate: make(chan struct{})}
	svc.Register(g)
	rc := &Receiver{Service: svc, Source: "/test", Logger: slog.Default(), Auth: auth.None{}}
	hungUp := make(chan struct{}) // the server saw the broker hang up
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() { <-r.Context().Done(); close(hungUp) }()
		rc.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ev, _ := NewRequest("/broker", &staging.Request{Method: "gated", Username: "bob", Source: "a", Target: "b"})
	ctx, hangUp := context.WithCancel(context.Background())
	r, err := cehttp.NewHTTPRequestFromEvent(ctx, srv.URL, ev)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-g.started
		hangUp()
		<-hungUp
		close(g.gate)
	}()
	if resp, err := http.DefaultClient.Do(r); err == nil {
		resp.Body.Close()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ops := store.All(); len(ops) == 1 && ops[0].Status.Finished() {
			if ops[0].Status != staging.StatusSuccess {
				t.Fatalf("the run ended %s: %s", ops[0].Status, ops[0].ErrorReason)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no outcome: %+v", store.All())
		}
	}
}

// Without a credential of its own (EVENT_AUTH=none), a function hands the
// caller's token on, so the peer establishes the same caller.
func TestPeerWithoutCredentialsSendsTheCallersToken(t *testing.T) {
	rec := &recorder{status: 200}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	p := Peer{Name: "jupyter", URL: srv.URL, Source: "/skao/staging/stage"}
	req := &staging.Request{Method: "jupyter_copy", Username: "alice", Source: "a", Target: "b", OperationID: "op-1"}
	if err := p.Run(context.Background(), staging.Caller{Name: "alice", Token: "user-token"}, req); err != nil {
		t.Fatal(err)
	}
	if rec.auth[0] != "Bearer user-token" {
		t.Errorf("Authorization %q", rec.auth[0])
	}
}
