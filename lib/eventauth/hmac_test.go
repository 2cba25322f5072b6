package eventauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
)

var (
	secret    = []byte("0123456789abcdef0123456789abcdef-shared")
	newSecret = []byte("fedcba9876543210fedcba9876543210-rotated")
)

func hmacVerifier(t *testing.T, senders string, secrets ...[]byte) *Verifier {
	t.Helper()
	s, err := ParseSenders(senders)
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(Config{Mode: ModeHMAC, HMACSecrets: secrets, Senders: s})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func signed(t *testing.T, ev event.Event, key []byte) event.Event {
	t.Helper()
	if err := Sign(&ev, key); err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestHMAC(t *testing.T) {
	url := receiver(t, hmacVerifier(t, typeRequest+"=hmac", secret))
	good := signed(t, newEvent("h-1", typeRequest), secret)

	change := func(f func(*event.Event)) event.Event {
		ev := good.Clone()
		f(&ev)
		return ev
	}
	for _, tc := range []struct {
		name   string
		ev     event.Event
		status int
		want   string
	}{
		{"signed", good, 200, `"Subject":"hmac"`},
		{"a broker's extensions added", change(func(e *event.Event) {
			e.SetExtension("knativearrivaltime", "2026-03-14T15:09:27Z")
			e.SetExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		}), 200, `"Mode":"hmac"`},
		{"data changed", change(func(e *event.Event) {
			e.SetData("application/json", map[string]string{"method": "local_copy", "username": "root"})
		}), 401, "does not match"},
		{"one byte of data changed", change(func(e *event.Event) {
			e.DataEncoded = bytes.Replace(e.Data(), []byte("alice"), []byte("alicf"), 1)
		}), 401, "does not match"},
		{"whitespace around JSON data", change(func(e *event.Event) {
			e.DataEncoded = append(append([]byte("\n "), e.Data()...), "\n"...)
		}), 200, `"Mode":"hmac"`},
		{"id changed", change(func(e *event.Event) { e.SetID("h-2") }), 401, "does not match"},
		{"source changed", change(func(e *event.Event) { e.SetSource("/elsewhere") }), 401, "does not match"},
		{"subject changed", change(func(e *event.Event) { e.SetSubject("obs/other.ms") }), 401, "does not match"},
		{"method extension changed", change(func(e *event.Event) { e.SetExtension(ExtMethod, "local_symlink") }), 401, "does not match"},
		{"method extension removed", change(func(e *event.Event) { e.SetExtension(ExtMethod, nil) }), 401, "does not match"},
		{"time changed", change(func(e *event.Event) { e.SetTime(e.Time().Add(1)) }), 401, "does not match"},
		{"content type changed", change(func(e *event.Event) { e.SetDataContentType("text/plain") }), 401, "does not match"},
		{"no signature", newEvent("h-1", typeRequest), 401, "no sender credential"},
		{"not a signature", change(func(e *event.Event) { e.SetExtension(ExtSignature, "v1=short") }), 401, "not a signature"},
		{"another version", change(func(e *event.Event) { e.SetExtension(ExtSignature, "v2=AAAA") }), 401, "not a version 1"},
		{"signed with another secret", signed(t, newEvent("h-1", typeRequest), newSecret), 401, "does not match"},
		{"a type not allowed, signed", signed(t, newEvent("h-3", typeRucio), secret), 403, "may not send"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, structured := range []bool{false, true} {
				status, body := deliver(t, url, tc.ev, structured, "")
				if status != tc.status || !strings.Contains(body, tc.want) {
					t.Fatalf("structured=%v: %d %q, want %d with %q", structured, status, body, tc.status, tc.want)
				}
			}
		})
	}
}

// Two secrets during a rotation: events signed with either pass; Signer
// is the first.
func TestHMACRotation(t *testing.T) {
	v := hmacVerifier(t, "*=hmac", newSecret, secret)
	for _, key := range [][]byte{secret, newSecret} {
		ev := signed(t, newEvent("r", typeRucio), key)
		if s, err := v.Verify(context.Background(), http.Header{}, &ev); err != nil || s.Subject != HMACSubject {
			t.Fatalf("signed with %q: %+v %v", key[:8], s, err)
		}
	}
	ev := signed(t, newEvent("r", typeRucio), []byte(strings.Repeat("x", 32)))
	if _, err := v.Verify(context.Background(), http.Header{}, &ev); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("a third secret: %v", err)
	}
	if string(v.cfg.Signer()) != string(newSecret) {
		t.Fatal("Signer is not the first secret")
	}
}

// A broker that writes the same instant another way (or re-encodes a
// structured event) does not break the signature: the time is signed as an
// instant, the data as bytes.
func TestHMACSurvivesReformattedTime(t *testing.T) {
	ev := signed(t, newEvent("t-1", typeRequest), secret)
	raw, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["time"] = "2026-03-14T16:09:26.535897+01:00" // the same instant
	raw, _ = json.Marshal(m)
	var back event.Event
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	v := hmacVerifier(t, "*=hmac", secret)
	if _, err := v.Verify(context.Background(), http.Header{}, &back); err != nil {
		t.Fatalf("time written another way: %v", err)
	}
	m["time"] = "2026-03-14T16:09:27.535897+01:00" // a second later
	raw, _ = json.Marshal(m)
	back = event.Event{}
	json.Unmarshal(raw, &back)
	if _, err := v.Verify(context.Background(), http.Header{}, &back); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("another time: %v", err)
	}
}

func TestCanonicalIsUnambiguous(t *testing.T) {
	// Moving bytes from one attribute to the next must change the form.
	a := newEvent("ab", typeRequest)
	a.SetSource("/c")
	b := newEvent("a", typeRequest)
	b.SetSource("b/c")
	ca, _ := Canonical(&a)
	cb, _ := Canonical(&b)
	if bytes.Equal(ca, cb) {
		t.Fatal("two events with the same canonical form")
	}
	if !bytes.HasPrefix(ca, []byte("skao-staging-event-hmac-v1\n3:1.0,2:ab,2:/c,")) {
		t.Fatalf("canonical form %q", ca)
	}
	// Whitespace is data, except around a JSON value.
	for _, tc := range []struct {
		contentType string
		same        bool
	}{{"text/plain", false}, {"application/octet-stream", false}, {"application/json; charset=utf-8", true}, {"application/cloudevents+json", true}} {
		x, y := newEvent("w", typeRequest), newEvent("w", typeRequest)
		x.SetData(tc.contentType, []byte(`"v"`))
		y.SetData(tc.contentType, []byte(" \"v\"\n"))
		cx, _ := Canonical(&x)
		cy, _ := Canonical(&y)
		if same := bytes.Equal(cx, cy); same != tc.same {
			t.Errorf("%s: whitespace around the data makes the same canonical form: %v, want %v", tc.contentType, same, tc.same)
		}
	}
}

func TestSignRefusesShortSecrets(t *testing.T) {
	ev := newEvent("s", typeRequest)
	if err := Sign(&ev, []byte("too short")); err == nil {
		t.Fatal("a 9-byte secret accepted")
	}
	if _, ok := ev.Extensions()[ExtSignature]; ok {
		t.Fatal("signed anyway")
	}
	if _, err := New(Config{Mode: ModeHMAC, HMACSecrets: [][]byte{[]byte("short")}, Senders: Senders{"*": {"hmac"}}}); err == nil {
		t.Fatal("a verifier with a short secret")
	}
}
