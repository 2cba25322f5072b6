package staging

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a failure with the HTTP status a door answers with and a detail
// that is safe to show the user. Methods return Errors; doors render them.
type Error struct {
	Status int
	Detail string
	Err    error // the cause, for logs; never shown
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Detail, e.Err)
	}
	return e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given status and a formatted detail.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Detail: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with status and detail that keeps err as its cause.
func Wrap(status int, detail string, err error) *Error {
	return &Error{Status: status, Detail: detail, Err: err}
}

// StatusOf returns the HTTP status and user-facing detail for err: the
// *Error's own, or 500 with a generic detail for anything else.
func StatusOf(err error) (int, string) {
	var e *Error
	if errors.As(err, &e) {
		return e.Status, e.Detail
	}
	return http.StatusInternalServerError, "Internal error: " + err.Error()
}

// Transient reports whether err is worth retrying (a 5xx): a broker should
// redeliver the event, a client may try again later.
func Transient(err error) bool {
	status, _ := StatusOf(err)
	return status >= 500
}

// Errors of the store, matched with errors.Is.
var (
	ErrNotFound  = errors.New("not found")
	ErrDuplicate = errors.New("duplicate key")
)

// Unavailable wraps a store failure: nothing is staged without its record.
func Unavailable(err error) *Error {
	return Wrap(http.StatusServiceUnavailable, "Database unavailable", err)
}
