package events

import (
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/ska-telescope/skao-staging-service/lib/eventauth"
)

// Credentials are how this function proves it sent an event (EVENT_AUTH):
// an HMAC over the event with the shared secret, or a token (a projected
// service-account token of Knative Eventing's OIDC feature) in the
// Authorization header. The zero value sends none.
type Credentials struct {
	Secret    []byte // hmac: signs every event sent
	TokenFile string // oidc: its content is the bearer token, re-read as the kubelet renews it

	mu      sync.Mutex
	token   string
	readAt  time.Time
	readErr error
}

// tokenTTL is how long a token read from TokenFile is used before the file
// is read again; the kubelet renews projected tokens well before expiry.
const tokenTTL = time.Minute

// sign signs ev in place when a secret is set. The time is set first:
// the CloudEvents client would set it after, outside the signature.
func (c *Credentials) sign(ev *cloudevents.Event) error {
	if c == nil || len(c.Secret) == 0 {
		return nil
	}
	if ev.Time().IsZero() {
		ev.SetTime(time.Now())
	}
	return eventauth.Sign(ev, c.Secret)
}

// header sets the Authorization header when a token file is set.
func (c *Credentials) header(h http.Header) error {
	if c == nil || c.TokenFile == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == "" || time.Since(c.readAt) > tokenTTL {
		b, err := os.ReadFile(c.TokenFile)
		c.token, c.readAt, c.readErr = strings.TrimSpace(string(b)), time.Now(), err
	}
	if c.readErr != nil {
		return c.readErr
	}
	h.Set("Authorization", "Bearer "+c.token)
	return nil
}
