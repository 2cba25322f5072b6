package staging

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strings"
	"unicode/utf8"
)

// Request is one staging request, whichever door it came through. Its JSON
// form is the wire form of the API's data items and of request events.
type Request struct {
	Method   string `json:"method"`
	Username string `json:"username"`
	Source   string `json:"local_path_on_storage,omitempty"`
	Target   string `json:"relative_path,omitempty"`
	// DID is a Rucio data identifier (scope:name) to stage instead of a
	// path: its replica is found in the local RSE, or awaited.
	DID string `json:"did,omitempty"`
	// JupyterToken is the user's JupyterHub token for jupyter_copy: a
	// credential, never stored and never logged.
	JupyterToken string `json:"jupyter_token,omitempty"`

	// OperationID names the pending operation a hand-off completes. Only the
	// event codec sets it; the service honours it only for a pending
	// operation of the same user, method and paths.
	OperationID string `json:"-"`
	// EventSource and EventID are those of the event the request came in by:
	// a redelivery (same source and id) returns the first outcome.
	EventSource string `json:"-"`
	EventID     string `json:"-"`
	// sentBy is the user who sent the event themselves (no sender
	// credential): their events are told apart from everyone else's.
	sentBy string
}

// eventKey identifies the delivered event the request came in by, "" for
// other doors and for hand-offs (which are keyed by their operation). A
// user chooses their event's source and id freely, so the key of a user's
// own event includes who sent it: nobody can take another's key, to learn
// their outcome or to have their event answered with someone else's.
func (r *Request) eventKey() string {
	switch {
	case r.EventID == "" || r.EventSource == "" || r.OperationID != "":
		return ""
	case r.sentBy != "":
		return hash("user event", r.sentBy, r.EventSource, r.EventID)
	}
	return EventKey(r.EventSource, r.EventID)
}

// Caller is who is asking, as a door established it from its credentials.
type Caller struct {
	// Name is the user (or, for an event, the sender) the credentials
	// belong to; "" when nobody is established.
	Name string
	// Admin may act for any user: a site administrator, a trusted event
	// sender, or anyone when authentication is off (AUTH_MODE=none).
	Admin bool
	// Token is the credential the caller proved who they are with, handed
	// on when another function runs the request; never stored or logged.
	Token string
	// Reads limits what the caller may read of the source storage (a
	// token's capability scopes, AUTHZ_STORAGE_SCOPES); nil reads all.
	Reads ReadScope
}

// ReadScope is what a caller may read of the source storage, by paths
// relative to it with every link resolved.
type ReadScope interface {
	// CanRead reports whether path may be read; isDir for a folder.
	CanRead(path string, isDir bool) bool
	// CanList reports whether the folder path may be listed: it may be
	// read, or it leads to something that may.
	CanList(path string) bool
}

// Anonymous reports whether nobody is established.
func (c Caller) Anonymous() bool { return c.Name == "" && !c.Admin }

// Trusted is the caller of AUTH_MODE=none: one trusted user on a private
// network, who may act for anyone.
var Trusted = Caller{Name: "trusted", Admin: true}

// System is the service itself acting on its records (completing requests
// that waited for a replica, expiring them).
var System = Caller{Name: "system", Admin: true}

// Options say how a door wants a request handled.
type Options struct {
	// Async records the request as pending and hands it on, answering at
	// once (Prefer: respond-async).
	Async bool
	// Stream is set by a door that can stream content to its client (a
	// single HTTP request); a method that streams is refused elsewhere.
	Stream bool
	// Fetch is set by a door that only fetches content (an HTTP GET): a
	// method that does not stream is refused there.
	Fetch bool
	// Detach runs the operation to its end even if the door's context ends
	// first: set by doors whose sender hangs up after a timeout of its own
	// and delivers again (a broker's events, Rucio's transfer-done), which
	// then finds the run going on or done, not cancelled and failed.
	Detach bool

	// held is what the door already holds in this process for the
	// request (see reserve): an operation slot of its batch, or the slot
	// its async door took for its run in the background.
	held *slot
	// collect takes over the run in this process of an async item, so
	// its batch runs them in the background in its own slots.
	collect func(Request)
}

// Limits of what a request may name; over them it is Invalid and nothing
// is recorded.
const (
	MaxPathBytes = 4096 // a path, as PATH_MAX
	MaxNameBytes = 255  // one element of a path, as NAME_MAX
	MaxDIDBytes  = 300
	MaxToken     = 8192 // a credential's bytes
)

// DefaultMaxPathDepth is how many elements a path may have unless
// MAX_PATH_DEPTH says otherwise.
const DefaultMaxPathDepth = 64

// methodPattern is what a method's name looks like, as refusals and
// ALLOWED_METHODS' check say it; ValidMethodName checks it by hand.
const methodPattern = `^[a-z][a-z0-9_]{0,63}$`

// ValidMethodName reports whether m matches methodPattern.
func ValidMethodName(m string) bool {
	if len(m) == 0 || len(m) > 64 || m[0] < 'a' || m[0] > 'z' {
		return false
	}
	for i := 1; i < len(m); i++ {
		if c := m[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// usernamePattern is what a username may look like (it names a directory),
// as refusals say it; ValidUsername checks it by hand, because compiling
// the expression costs every start more than all its checks in a while.
const usernamePattern = `^[A-Za-z0-9_][A-Za-z0-9._@+-]{0,127}$`

// ValidUsername reports whether u is an acceptable username: it matches
// usernamePattern and has no "..".
func ValidUsername(u string) bool {
	if len(u) == 0 || len(u) > 128 || strings.Contains(u, "..") {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_':
		case i > 0 && strings.IndexByte(".@+-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// CheckPath refuses, as Invalid naming field, a path over the limits (its
// bytes, a name's, maxDepth folders), with a NUL byte, or not UTF-8.
func CheckPath(field, p string, maxDepth int) error {
	if len(p) > MaxPathBytes {
		return Errorf(Invalid, "%s is longer than %d bytes", field, MaxPathBytes)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return Errorf(Invalid, "%s contains a NUL byte", field)
	}
	// Records and answers hold text: a name of other bytes could be
	// neither stored (MySQL refuses it) nor named back in JSON.
	if !utf8.ValidString(p) {
		return Errorf(Invalid, "%s is not valid UTF-8", field)
	}
	depth := 0
	for _, name := range strings.Split(p, "/") {
		if len(name) > MaxNameBytes {
			return Errorf(Invalid, "%s has a name longer than %d bytes", field, MaxNameBytes)
		}
		if name != "" && name != "." {
			depth++
		}
	}
	if depth > maxDepth {
		return Errorf(Invalid, "%s is deeper than %d folders", field, maxDepth)
	}
	return nil
}

// LockKey names a target for the store's lock: one per user and cleaned path.
func LockKey(username, target string) string { return hash("target", username, path.Clean(target)) }

// EventKey identifies a CloudEvent by its source and id, as the spec says
// they identify an event uniquely: the key of an event from a verified
// sender or an administrator.
func EventKey(source, id string) string { return hash("event", source, id) }

func hash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}
