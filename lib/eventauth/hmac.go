package eventauth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// ExtSignature is the CloudEvents extension attribute that carries the
// signature of mode hmac: "v1=" and the unpadded base64url HMAC-SHA256 of
// the event's canonical form under the shared secret. An extension, unlike
// an HTTP header, reaches the subscriber through a broker.
const ExtSignature = "stagingsignature"

// ExtMethod is the extension attribute Triggers filter staging requests on;
// it is signed with the rest.
const ExtMethod = "stagingmethod"

// MinSecretBytes is the shortest shared secret accepted: the output size of
// SHA-256.
const MinSecretBytes = 32

const sigPrefix = "v1="

// Canonical is the byte string mode hmac signs (version 1): the line
// "skao-staging-event-hmac-v1\n", then, as netstrings (<length>:<bytes>,),
// the attributes specversion, id, source, type, subject, time,
// datacontenttype, the stagingmethod extension, then the data. An absent
// attribute is the empty string; time is written in UTC as RFC 3339 with
// nanoseconds as needed (the way the CloudEvents SDK writes it), so a
// broker that writes the same instant differently does not break the
// signature; JSON data (application/json, text/json, */*+json) is signed
// without the whitespace around the value, which an event in structured
// mode does not keep. Other extensions (those brokers add, tracing) are not
// signed.
// The time is what makes a signed event expire: Verify refuses one without
// a time, or whose time is not within its window (see checkTime), so an
// event captured on the network cannot be sent again once a broker would
// have stopped redelivering it. Within the window the staging service
// keys each event by its source and id, which are signed too.
func Canonical(ev *event.Event) ([]byte, error) {
	var b strings.Builder
	b.WriteString("skao-staging-event-hmac-v1\n")
	field := func(v string) {
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
		b.WriteByte(',')
	}
	var when string
	if t := ev.Time(); !t.IsZero() {
		when = types.FormatTime(t)
	}
	var method string
	if x, ok := ev.Extensions()[ExtMethod]; ok {
		s, err := types.Format(x)
		if err != nil {
			return nil, fmt.Errorf("extension %s: %w", ExtMethod, err)
		}
		method = s
	}
	data := ev.Data()
	if isJSON(ev.DataContentType()) {
		data = bytes.TrimSpace(data)
	}
	for _, v := range []string{ev.SpecVersion(), ev.ID(), ev.Source(), ev.Type(), ev.Subject(), when,
		ev.DataContentType(), method, string(data)} {
		field(v)
	}
	return []byte(b.String()), nil
}

func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(strings.ToLower(contentType), ";")
	mt = strings.TrimSpace(mt)
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// Sign signs ev with secret (at least MinSecretBytes long), setting its
// ExtSignature extension. An event without a time gets the current time
// first: receivers refuse signed events without one. Sign after the last
// change to the event, and just before sending it: its time starts the
// window in which receivers accept it (MaxAge).
func Sign(ev *event.Event, secret []byte) error {
	if len(secret) < MinSecretBytes {
		return fmt.Errorf("eventauth: a secret of %d bytes: at least %d are required", len(secret), MinSecretBytes)
	}
	if ev.Time().IsZero() {
		ev.SetTime(time.Now())
	}
	c, err := Canonical(ev)
	if err != nil {
		return fmt.Errorf("eventauth: sign: %w", err)
	}
	ev.SetExtension(ExtSignature, sigPrefix+base64.RawURLEncoding.EncodeToString(mac(secret, c)))
	return nil
}

// Signer returns the secret events are signed with in mode hmac (the first
// one configured), or nil in the other modes.
func (c Config) Signer() []byte {
	if c.Mode != ModeHMAC || len(c.HMACSecrets) == 0 {
		return nil
	}
	return c.HMACSecrets[0]
}

func mac(secret, msg []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write(msg)
	return h.Sum(nil)
}

// verifySignature accepts ev if its signature was made with one of secrets.
func verifySignature(ev *event.Event, secrets [][]byte) error {
	x, ok := ev.Extensions()[ExtSignature]
	if !ok {
		return fmt.Errorf("%w: no %s extension", ErrUnauthenticated, ExtSignature)
	}
	s, _ := x.(string)
	enc, ok := strings.CutPrefix(s, sigPrefix)
	if !ok {
		return fmt.Errorf("%w: %s is not a version 1 signature", ErrUnauthenticated, ExtSignature)
	}
	sig, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(sig) != sha256.Size {
		return fmt.Errorf("%w: %s is not a signature", ErrUnauthenticated, ExtSignature)
	}
	c, err := Canonical(ev)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	for _, secret := range secrets {
		if hmac.Equal(sig, mac(secret, c)) { // constant time
			return nil
		}
	}
	return fmt.Errorf("%w: %w", ErrUnauthenticated, errBadSignature)
}

var errBadSignature = errors.New("the signature does not match the event")

// DefaultMaxAge is how old a signed event may be when it arrives
// (EVENT_MAX_AGE's default). A Knative broker redelivers an event with the
// time it was signed with; as the deployments set its delivery (5 retries,
// exponential backoff from 0.5 s, 600 s per attempt) its last attempt
// starts at most 5 × 600 s + 31 s, about 51 minutes, after the first.
// Twice that, rounded up, leaves room for a broker's queue and clocks.
const DefaultMaxAge = 2 * time.Hour

// MaxClockSkew is how far ahead of this replica's clock a signed event's
// time may be: the sender's clock may run ahead of ours.
const MaxClockSkew = 5 * time.Minute

// ErrStale is returned by Verify for a signed event, its signature good,
// whose time is missing, older than MaxAge or more than MaxClockSkew
// ahead: a replay of a captured event, or a sender whose clock is off.
var ErrStale = fmt.Errorf("%w: the signed event's time is missing or outside the accepted window", ErrUnauthenticated)

// checkTime accepts ev if its time lies between maxAge before now and
// MaxClockSkew after it. Redeliveries of an event keep its time, so
// maxAge must exceed the broker's retry schedule.
func checkTime(ev *event.Event, now time.Time, maxAge time.Duration) error {
	t := ev.Time()
	switch {
	case t.IsZero():
		return fmt.Errorf("%w: it has no time", ErrStale)
	case t.Before(now.Add(-maxAge)):
		return fmt.Errorf("%w: its time %s is %s old, more than %s (EVENT_MAX_AGE)", ErrStale,
			types.FormatTime(t), now.Sub(t).Round(time.Second), maxAge)
	case t.After(now.Add(MaxClockSkew)):
		return fmt.Errorf("%w: its time %s is %s ahead, more than %s", ErrStale,
			types.FormatTime(t), t.Sub(now).Round(time.Second), MaxClockSkew)
	}
	return nil
}
