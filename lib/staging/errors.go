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
	// ErrRefused is returned when the database refuses a value as data
	// (not valid in its column's character set, too long for it, out of
	// its range): asking again with the same value is refused again.
	// Match it with errors.Is; *Refusal carries the column.
	ErrRefused = errors.New("value refused by the database")
	// ErrLeaseLost is returned when an operation is no longer unfinished and
	// held by the caller: another replica took it for dead, or it finished.
	ErrLeaseLost = errors.New("operation not held under this lease")
)

// Refusal is a value the database refused as data. It matches ErrRefused.
type Refusal struct {
	Column string // the column that refused it, "" when the database did not say
	Reason string // why, in words safe to show: "is too long for its column"
	Err    error  // the driver's error, for the operator's log
}

func (r *Refusal) Error() string {
	if r.Column == "" {
		return fmt.Sprintf("%v: %v", ErrRefused, r.Err)
	}
	return fmt.Sprintf("%v (column %s): %v", ErrRefused, r.Column, r.Err)
}

func (r *Refusal) Unwrap() error { return r.Err }

func (r *Refusal) Is(target error) bool { return target == ErrRefused }

// DatabaseUnavailable wraps a store failure: nothing is staged without its record.
func DatabaseUnavailable(err error) *Error {
	return Wrap(Unavailable, "Database unavailable", err)
}

// StoreFailure is the failure of a store call: a value the database
// refused as data (StoreRefused) is no outage and is never a reason to
// try again; anything else is DatabaseUnavailable.
func StoreFailure(err error) *Error {
	if errors.Is(err, ErrRefused) {
		return StoreRefused(err)
	}
	return DatabaseUnavailable(err)
}

// StoreRefused is the failure of a store that refused a value as data:
// Invalid, since the request's values are what the store holds and the
// same request is refused again however often it is sent (Unavailable
// would have clients and brokers send it forever, and operators look for
// an outage). The detail names the column and the limit, never the value;
// the driver's error stays the cause, logged at ERROR (logCause).
func StoreRefused(err error) *Error {
	detail := "The database refused a value of this request"
	var r *Refusal
	if errors.As(err, &r) {
		switch {
		case r.Column != "" && r.Reason != "":
			detail = fmt.Sprintf("The database refused %s: it %s", r.Column, r.Reason)
		case r.Column != "":
			detail = fmt.Sprintf("The database refused %s", r.Column)
		}
	}
	return Wrap(Invalid, detail, err)
}
