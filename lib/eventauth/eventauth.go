// Package eventauth says who sent a CloudEvent and whether they may send
// it (EVENT_AUTH), before the event is taken for a staging request:
//
//   - oidc: Knative Eventing's sender identity (the authentication-oidc
//     feature). The broker or source puts a JWT of the cluster's
//     service-account issuer in "Authorization: Bearer", with this
//     function's audience; it is verified against that issuer's discovery
//     document and JWKS (reached in the pod with its service-account CA and
//     token, as Knative's own verifier does), and its subject
//     (system:serviceaccount:<namespace>:<name>) must be allowed to send
//     the event's type (EVENT_SENDERS).
//   - hmac: for clusters without that feature, a secret shared by sender
//     and receiver signs the event's attributes and data; the signature
//     travels in a CloudEvents extension attribute, which a broker passes
//     on (an Authorization header it does not). The signed time bounds
//     when the event is accepted (MaxAge), so a captured one cannot be
//     sent again later.
//   - none: nobody is asked anything (the default, as before).
//
// Refusals are ErrUnauthenticated (401: no or bad credentials), ErrForbidden
// (403: a known sender, not allowed this type) or ErrUnavailable (503: the
// issuer cannot be asked). Tokens and secrets are never logged nor part of
// an error.
package eventauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ska-telescope/skao-staging-service/lib/oidc"
)

// Modes of EVENT_AUTH.
const (
	ModeNone = "none"
	ModeOIDC = "oidc"
	ModeHMAC = "hmac"
)

// DefaultIssuer is the in-cluster Kubernetes API server, whose
// service-account issuer signs Knative Eventing's tokens.
const DefaultIssuer = "https://kubernetes.default.svc"

var (
	// ErrUnauthenticated: no credentials, or credentials that do not hold.
	ErrUnauthenticated = errors.New("eventauth: sender not authenticated")
	// ErrForbidden: the sender is known but may not send this event type.
	ErrForbidden = errors.New("eventauth: sender not allowed to send this event type")
	// ErrUnavailable: the issuer could not be asked; the same value as
	// oidc.ErrUnavailable.
	ErrUnavailable = oidc.ErrUnavailable
)

// Sender is who sent an event, once verified.
type Sender struct {
	Mode string
	// Subject is the token's sub in mode oidc, HMACSubject in mode hmac,
	// empty in mode none.
	Subject string
}

// Config is how senders are checked. The variables named are those the
// service's configuration reads into it; New checks the values.
type Config struct {
	Mode string // EVENT_AUTH: none (default), oidc or hmac
	// Issuer is where the service-account issuer's discovery document is
	// (EVENT_OIDC_ISSUER, default DefaultIssuer); the issuer that document
	// names is the one tokens must carry, as in Knative's verifier.
	Issuer string
	// Audience is this function's audience (EVENT_OIDC_AUDIENCE): the
	// audience set on the Trigger's subscriber or announced in the
	// addressable's status.
	Audience string
	// Senders allows subjects per event type (EVENT_SENDERS, see
	// ParseSenders). Required in mode oidc: any pod can mount a token for
	// any audience, so the audience alone proves nothing. In mode hmac the
	// only sender is HMACSubject; empty means every type.
	Senders Senders
	// HMACSecrets verify signatures (EVENT_HMAC_SECRET, or the file
	// EVENT_HMAC_SECRET_FILE names; see ParseSecrets); the first one signs.
	HMACSecrets [][]byte
	// MaxAge is how old a signed event may be (EVENT_MAX_AGE); 0 is
	// DefaultMaxAge. Signed events must carry a time, at most MaxAge old
	// and at most MaxClockSkew ahead.
	MaxAge time.Duration
	// Now is the clock signed events' times are checked against; nil is
	// time.Now.
	Now func() time.Time
	// HTTPClient reaches the issuer. Nil: for the in-cluster API server, a
	// client with the pod's service-account CA and token; otherwise a plain
	// one.
	HTTPClient *http.Client
	// ServiceAccountDir holds the pod's ca.crt and token, default
	// /var/run/secrets/kubernetes.io/serviceaccount.
	ServiceAccountDir string
}

// ParseSecrets reads shared secrets, one per line (blank lines ignored),
// each at least MinSecretBytes long: the form of EVENT_HMAC_SECRET and of
// the file EVENT_HMAC_SECRET_FILE names. Several secrets let the secret be
// rotated: events are signed with the first and accepted when signed with
// any (add the new one second, then move it first, then drop the old).
func ParseSecrets(text []byte) ([][]byte, error) {
	var out [][]byte
	for _, line := range bytes.Split(text, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(line) < MinSecretBytes {
			return nil, fmt.Errorf("a secret of %d bytes: at least %d are required", len(line), MinSecretBytes)
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, errors.New("no secret")
	}
	return out, nil
}

// check refuses settings that could never let an event in, or would let
// any in.
func (c Config) check() error {
	switch c.Mode {
	case ModeNone:
		return nil
	case ModeOIDC:
		if c.Audience == "" {
			return errors.New("eventauth: oidc needs this function's audience (EVENT_OIDC_AUDIENCE)")
		}
		if len(c.Senders) == 0 {
			return errors.New("eventauth: oidc needs allowed senders (EVENT_SENDERS): any pod can get a token for this audience")
		}
		for typ, subjects := range c.Senders {
			for _, s := range subjects {
				if s == HMACSubject {
					return fmt.Errorf("eventauth: senders %s=%s: %q is the hmac mode's sender, the mode is oidc", typ, s, s)
				}
			}
		}
	case ModeHMAC:
		if len(c.HMACSecrets) == 0 {
			return errors.New("eventauth: hmac needs a secret (EVENT_HMAC_SECRET or EVENT_HMAC_SECRET_FILE)")
		}
		if c.MaxAge < 0 {
			return fmt.Errorf("eventauth: a maximum age of %s for signed events: it must be positive (EVENT_MAX_AGE)", c.MaxAge)
		}
		for _, s := range c.HMACSecrets {
			if len(s) < MinSecretBytes {
				return fmt.Errorf("eventauth: a secret of %d bytes: at least %d are required", len(s), MinSecretBytes)
			}
		}
		for typ, subjects := range c.Senders {
			for _, s := range subjects {
				if s != HMACSubject {
					return fmt.Errorf("eventauth: senders %s=%s: in mode hmac the only sender is %q", typ, s, HMACSubject)
				}
			}
		}
	default:
		return fmt.Errorf("eventauth: mode %q is not none, oidc or hmac", c.Mode)
	}
	return nil
}

// Verifier checks the senders of events. Safe for concurrent use.
type Verifier struct {
	cfg    Config
	tokens *oidc.TokenVerifier
}

// New checks cfg and returns a Verifier. In mode oidc it does not reach the
// issuer yet (see Discover).
func New(cfg Config) (*Verifier, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeNone
	}
	if cfg.Mode == ModeHMAC && len(cfg.Senders) == 0 {
		cfg.Senders = Senders{AnyType: {HMACSubject}}
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	v := &Verifier{cfg: cfg}
	if cfg.Mode != ModeOIDC {
		return v, nil
	}
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultIssuer
	}
	oc := oidc.Config{DiscoveryURL: cfg.Issuer, Audience: cfg.Audience, HTTPClient: cfg.HTTPClient}
	if cfg.HTTPClient == nil && isInCluster(cfg.Issuer) {
		dir := cfg.ServiceAccountDir
		if dir == "" {
			dir = ServiceAccountDir
		}
		client, err := InClusterHTTPClient(dir, cfg.Issuer)
		if err != nil {
			return nil, fmt.Errorf("eventauth: the issuer %s is the in-cluster API server: %w", cfg.Issuer, err)
		}
		oc.HTTPClient = client
		// The discovery document names the API server by its advertised
		// address; the same keys are served here, reached with the
		// cluster's CA, and the pod's token goes nowhere else.
		oc.JWKSURL = strings.TrimSuffix(cfg.Issuer, "/") + "/openid/v1/jwks"
	}
	tv, err := oidc.NewTokenVerifier(oc)
	if err != nil {
		return nil, fmt.Errorf("eventauth: %w", err)
	}
	v.tokens = tv
	return v, nil
}

// isInCluster reports whether issuer is the in-cluster API server.
func isInCluster(issuer string) bool {
	u, err := url.Parse(issuer)
	if err != nil {
		return false
	}
	h := u.Hostname()
	return h == "kubernetes.default.svc" || strings.HasPrefix(h, "kubernetes.default.svc.")
}

// Mode is the verifier's EVENT_AUTH.
func (v *Verifier) Mode() string { return v.cfg.Mode }

// Discover fetches the issuer's discovery document in mode oidc (e.g. at
// start, or for readiness); it is fetched at the first event otherwise.
func (v *Verifier) Discover(ctx context.Context) error {
	if v.tokens == nil {
		return nil
	}
	return v.tokens.Discover(ctx)
}

// ErrNoCredentials is returned by Verify when the event carries no
// sender credential of the mode at all: no signature (hmac), or no bearer
// token of the senders' issuer (oidc; a user's own token is not one). The
// caller may then authenticate it as a user's request instead.
var ErrNoCredentials = fmt.Errorf("%w: the event carries no sender credential", ErrUnauthenticated)

// Verify checks who sent ev, with the HTTP header it came with, and
// whether they may send its type.
func (v *Verifier) Verify(ctx context.Context, header http.Header, ev *event.Event) (Sender, error) {
	if err := v.hasCredentials(ctx, header, ev); err != nil {
		return Sender{}, err
	}
	switch v.cfg.Mode {
	case ModeOIDC:
		return v.verifyToken(ctx, header, ev)
	case ModeHMAC:
		if err := verifySignature(ev, v.cfg.HMACSecrets); err != nil {
			return Sender{}, err
		}
		// After the signature: the time checked is the one signed.
		if err := checkTime(ev, v.cfg.Now(), v.cfg.MaxAge); err != nil {
			return Sender{}, err
		}
		s := Sender{Mode: ModeHMAC, Subject: HMACSubject}
		return s, v.allow(s, ev)
	default:
		return Sender{Mode: ModeNone}, nil
	}
}

// hasCredentials reports ErrNoCredentials when ev carries nothing that
// claims to be a sender's credential of the mode.
func (v *Verifier) hasCredentials(ctx context.Context, header http.Header, ev *event.Event) error {
	switch v.cfg.Mode {
	case ModeHMAC:
		if _, ok := ev.Extensions()[ExtSignature]; !ok {
			return ErrNoCredentials
		}
	case ModeOIDC:
		raw := bearer(header)
		if raw == "" {
			return ErrNoCredentials
		}
		issuer, err := v.tokens.Issuer(ctx)
		if err != nil {
			return err
		}
		if oidc.UnverifiedIssuer(raw) != issuer {
			return ErrNoCredentials
		}
	}
	return nil
}

func (v *Verifier) verifyToken(ctx context.Context, header http.Header, ev *event.Event) (Sender, error) {
	raw := bearer(header)
	if raw == "" {
		return Sender{}, fmt.Errorf("%w: no Authorization: Bearer token", ErrUnauthenticated)
	}
	tok, err := v.tokens.Verify(ctx, raw)
	if errors.Is(err, oidc.ErrUnavailable) {
		return Sender{}, err
	}
	if err != nil {
		return Sender{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	s := Sender{Mode: ModeOIDC, Subject: tok.Subject}
	return s, v.allow(s, ev)
}

func (v *Verifier) allow(s Sender, ev *event.Event) error {
	if !v.cfg.Senders.Allows(ev.Type(), s.Subject) {
		return fmt.Errorf("%w: %s may not send %q", ErrForbidden, s.Subject, ev.Type())
	}
	return nil
}

// bearer returns the token of an "Authorization: Bearer" header, or "".
func bearer(h http.Header) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}
