package staging

import (
	"errors"
	"fmt"
	"time"
)

// Kind says what sort of failure an error is. The domain speaks kinds; each
// door maps them to its own language (an HTTP status, an event outcome).
type Kind string

// The kinds of failure. Their names are stored with failed operations.
const (
	Internal            Kind = "internal"             // a fault of the service
	Invalid             Kind = "invalid"              // malformed or missing input, or over a limit
	Rejected            Kind = "rejected"             // well formed, but cannot be staged (unknown method, no such source)
	Unauthenticated     Kind = "unauthenticated"      // who is asking is not established
	Forbidden           Kind = "forbidden"            // the caller may not do this, or a path leaves its root
	NotFound            Kind = "not_found"            // the thing named does not exist
	Conflict            Kind = "conflict"             // something else is where the target should be
	TooLarge            Kind = "too_large"            // a body over its bound
	TooMany             Kind = "too_many"             // the service is at its limit of work in flight: try again
	ClientTimeout       Kind = "client_timeout"       // the client did not send its request in time
	Canceled            Kind = "canceled"             // the client went away
	Unavailable         Kind = "unavailable"          // a dependency (database, hub, another function) cannot be reached: try again
	Upstream            Kind = "upstream"             // a dependency answered with a failure
	UpstreamTimeout     Kind = "upstream_timeout"     // a dependency did not answer in time
	InsufficientStorage Kind = "insufficient_storage" // no space left where the data goes
)

// Transient reports whether a failure of kind k may go away by itself, so a
// broker should redeliver and a client may try again.
func (k Kind) Transient() bool {
	switch k {
	case Internal, TooMany, Unavailable, Upstream, UpstreamTimeout, InsufficientStorage:
		return true
	}
	return false
}

// Error is a failure of a kind with a detail that is safe to show the user.
// The cause is for logs only; it never reaches a client.
type Error struct {
	Kind   Kind
	Detail string
	Err    error
	// RetryAfter is how long a client should wait before it tries again,
	// when that is known to be longer than a moment (0).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Detail, e.Err)
	}
	return e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of kind with a formatted detail.
func Errorf(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error of kind with detail that keeps err as its cause.
func Wrap(kind Kind, detail string, err error) *Error {
	return &Error{Kind: kind, Detail: detail, Err: err}
}

// internalDetail is what a client sees of a failure that is not an *Error:
// its text may name internals, so it is logged, never shown.
const internalDetail = "Internal error"

// KindOf returns the kind of err and the detail a client may see: the
// *Error's own, or Internal with a generic detail for anything else.
func KindOf(err error) (Kind, string) {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind, e.Detail
	}
	return Internal, internalDetail
}

// RetryAfter returns how long the client of a failure should wait before it
// tries again, 0 when it may try again shortly.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// Transient reports whether err may go away by itself (see Kind.Transient).
func Transient(err error) bool {
	k, _ := KindOf(err)
	return k.Transient()
}

// Errors of the store, matched with errors.Is.
var (
	ErrNotFound  = errors.New("not found")
	ErrDuplicate = errors.New("duplicate key")
	// ErrLeaseLost is returned when an operation is no longer unfinished and
	// held by the caller: another replica took it for dead, or it finished.
	ErrLeaseLost = errors.New("operation not held under this lease")
)

// DatabaseUnavailable wraps a store failure: nothing is staged without its record.
func DatabaseUnavailable(err error) *Error {
	return Wrap(Unavailable, "Database unavailable", err)
}
