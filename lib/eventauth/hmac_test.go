package eventauth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

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
	// The events of these tests are a minute old (newEvent's time).
	v, err := New(Config{Mode: ModeHMAC, HMACSecrets: secrets, Senders: s, Now: func() time.Time { return eventTime.Add(time.Minute) }})
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

// A signed event is accepted from its time until MaxAge later, and up to
// MaxClockSkew before it (the sender's clock may run ahead); it must have
// a time, and the time is signed, so a replay cannot be moved into the
// window. The signature is checked first: an unsigned or forged event is
// refused as such whatever its time.
func TestHMACTimeWindow(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	maxAge := 90 * time.Minute
	v, err := New(Config{Mode: ModeHMAC, HMACSecrets: [][]byte{secret}, MaxAge: maxAge, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	at := func(when time.Time) event.Event {
		ev := newEvent("w-1", typeRequest)
		ev.SetTime(when)
		return signed(t, ev, secret)
	}
	for _, tc := range []struct {
		name   string
		ev     event.Event
		stale  bool   // refused as not current
		reason string // in the error, when refused
	}{
		{"fresh", at(now), false, ""},
		{"a redelivery near the end of the window", at(now.Add(-maxAge + time.Second)), false, ""},
		{"older than the maximum age", at(now.Add(-maxAge - time.Second)), true, "more than 1h30m0s (EVENT_MAX_AGE)"},
		{"a day old", at(now.Add(-24 * time.Hour)), true, "24h0m0s old"},
		{"ahead within the clock skew", at(now.Add(MaxClockSkew - time.Second)), false, ""},
		{"too far ahead", at(now.Add(MaxClockSkew + time.Second)), true, "ahead, more than 5m0s"},
		{"without a time", signedAsIs(t, newEvent("w-1", typeRequest), secret), true, "no time"},
		{"time moved into the window after signing", func() event.Event {
			ev := at(now.Add(-24 * time.Hour))
			ev.SetTime(now)
			return ev
		}(), false, "does not match"},
		{"time moved out of the window after signing", func() event.Event {
			ev := at(now)
			ev.SetTime(now.Add(-24 * time.Hour))
			return ev
		}(), false, "does not match"},
		{"old and unsigned", func() event.Event {
			ev := newEvent("w-1", typeRequest)
			ev.SetTime(now.Add(-24 * time.Hour))
			return ev
		}(), false, "no sender credential"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := tc.ev.Clone()
			s, err := v.Verify(context.Background(), http.Header{}, &ev)
			if tc.reason == "" {
				if err != nil || s.Subject != HMACSubject {
					t.Fatalf("refused: %+v %v", s, err)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrStale) != tc.stale || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("%v, want 401 (stale %v) about %q", err, tc.stale, tc.reason)
			}
		})
	}
	// Through a receiver, in both modes: the time survives either encoding.
	url := receiver(t, v)
	for _, structured := range []bool{false, true} {
		if status, body := deliver(t, url, at(now.Add(-time.Hour)), structured, ""); status != 200 {
			t.Errorf("structured=%v, an hour old: %d %s", structured, status, body)
		}
		if status, body := deliver(t, url, at(now.Add(-2*time.Hour)), structured, ""); status != 401 || !strings.Contains(body, "outside the accepted window") {
			t.Errorf("structured=%v, two hours old: %d %s", structured, status, body)
		}
	}
}

// Without MaxAge the window is DefaultMaxAge, which outlasts the
// deployments' broker retry schedule (5 retries, exponential from 0.5 s,
// 600 s per attempt: the last starts within 51 minutes).
func TestHMACDefaultMaxAge(t *testing.T) {
	now := time.Now()
	v, err := New(Config{Mode: ModeHMAC, HMACSecrets: [][]byte{secret}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	schedule := 5 * 600 * time.Second
	for i := 1; i <= 5; i++ {
		schedule += 500 * time.Millisecond << i
	}
	if DefaultMaxAge < 2*schedule {
		t.Fatalf("DefaultMaxAge %s is less than twice the retry schedule %s", DefaultMaxAge, schedule)
	}
	for _, tc := range []struct {
		age time.Duration
		ok  bool
	}{{schedule, true}, {DefaultMaxAge - time.Second, true}, {DefaultMaxAge + time.Second, false}} {
		ev := newEvent("d-1", typeRequest)
		ev.SetTime(now.Add(-tc.age))
		ev = signed(t, ev, secret)
		if _, err := v.Verify(context.Background(), http.Header{}, &ev); (err == nil) != tc.ok {
			t.Errorf("%s old: %v, want accepted %v", tc.age, err, tc.ok)
		}
	}
}

// Sign gives an event without a time the current one, inside the
// signature; a time already set is kept.
func TestSignSetsTime(t *testing.T) {
	ev := newEvent("s-1", typeRequest)
	ev.SetTime(time.Time{})
	before := time.Now()
	if err := Sign(&ev, secret); err != nil {
		t.Fatal(err)
	}
	if got := ev.Time(); got.Before(before) || got.After(time.Now()) {
		t.Fatalf("time %s, want the signing time", got)
	}
	if err := verifySignature(&ev, [][]byte{secret}); err != nil {
		t.Fatalf("the time set is not the one signed: %v", err)
	}
	kept := newEvent("s-2", typeRequest)
	if err := Sign(&kept, secret); err != nil || !kept.Time().Equal(eventTime) {
		t.Fatalf("time %s %v, want %s kept", kept.Time(), err, eventTime)
	}
}

// signedAsIs signs ev as it is, without a time when it has none, as a
// sender with its own signing code could.
func signedAsIs(t *testing.T, ev event.Event, key []byte) event.Event {
	t.Helper()
	ev.SetTime(time.Time{})
	c, err := Canonical(&ev)
	if err != nil {
		t.Fatal(err)
	}
	ev.SetExtension(ExtSignature, sigPrefix+base64.RawURLEncoding.EncodeToString(mac(key, c)))
	return ev
}
