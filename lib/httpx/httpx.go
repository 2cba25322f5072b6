// Package httpx holds the small HTTP helpers every function's doors share:
// the mapping of the domain's error kinds to HTTP statuses, JSON answers,
// {"detail": ...} errors, and routes that answer 404 and 405 in JSON like
// the rest of the API.
package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// MaxBody is the largest request body accepted (413 above).
const MaxBody = 1 << 20

// JSON writes v with status.
func JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Detail is the body of every error answer.
type Detail struct {
	Detail string `json:"detail"`
}

// statuses are the HTTP statuses of the domain's error kinds.
var statuses = map[staging.Kind]int{
	staging.Internal:            http.StatusInternalServerError,
	staging.Invalid:             http.StatusUnprocessableEntity,
	staging.Rejected:            http.StatusBadRequest,
	staging.Unauthenticated:     http.StatusUnauthorized,
	staging.Forbidden:           http.StatusForbidden,
	staging.NotFound:            http.StatusNotFound,
	staging.Conflict:            http.StatusConflict,
	staging.TooLarge:            http.StatusRequestEntityTooLarge,
	staging.TooMany:             http.StatusTooManyRequests,
	staging.ClientTimeout:       http.StatusRequestTimeout,
	staging.Canceled:            499, // nginx's "client closed request": the client is gone anyway
	staging.Unavailable:         http.StatusServiceUnavailable,
	staging.Upstream:            http.StatusBadGateway,
	staging.UpstreamTimeout:     http.StatusGatewayTimeout,
	staging.InsufficientStorage: http.StatusInsufficientStorage,
}

// Status is the HTTP status of err and the detail a client may see.
func Status(err error) (int, string) {
	kind, detail := staging.KindOf(err)
	if status, ok := statuses[kind]; ok {
		return status, detail
	}
	return http.StatusInternalServerError, detail
}

// KindOfStatus is the kind of failure an HTTP status stands for, so an
// answer relayed from another function keeps its kind.
func KindOfStatus(status int) staging.Kind {
	for kind, s := range statuses {
		if s == status {
			return kind
		}
	}
	if status >= 400 && status < 500 {
		return staging.Rejected
	}
	return staging.Upstream
}

// Error writes err as {"detail": ...} with its status; a client asked to
// come back later is told when (Retry-After): in a second, unless err
// says it will take longer (staging.RetryAfter).
func Error(w http.ResponseWriter, err error) {
	status, detail := Status(err)
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(staging.RetryAfter(err).Seconds())))))
	}
	JSON(w, status, Detail{detail})
}

// DecodeJSON reads a JSON body of at most MaxBody bytes into v: 413 when it
// is larger, 408 when it does not arrive in time, 422 when it is not JSON of
// the right shape.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, MaxBody)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return staging.Errorf(staging.TooLarge, "Request body is larger than %d bytes", MaxBody)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The server's READ_TIMEOUT passed: the client was too slow.
			return staging.Wrap(staging.ClientTimeout, "Request body not received in time", err)
		}
		return staging.Wrap(staging.Invalid, "Malformed JSON body: "+jsonProblem(err), err)
	}
	return nil
}

// jsonProblem says what is wrong with a JSON body in the client's terms,
// without the decoder's internal names.
func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ) && typ.Field != "":
		return fmt.Sprintf("%s must be %s, not %s", typ.Field, jsonType(typ.Type), typ.Value)
	case errors.As(err, &typ):
		return fmt.Sprintf("the body must be %s, not %s", jsonType(typ.Type), typ.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the body ends too early"
	}
	return "not JSON of the expected shape"
}

// jsonType names a Go type as JSON calls it.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Bool:
		return "true or false"
	}
	return "a number"
}

// Mux is an http.ServeMux whose unknown routes and wrong methods answer in
// JSON. Paths are registered with and without a trailing slash.
type Mux struct {
	*http.ServeMux
	methods map[string][]string
}

// NewMux returns an empty Mux whose fallback is a JSON 404.
func NewMux() *Mux {
	m := &Mux{ServeMux: http.NewServeMux(), methods: map[string][]string{}}
	m.ServeMux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		JSON(w, http.StatusNotFound, Detail{"Not found: " + r.URL.Path})
	})
	return m
}

// Route registers h for method on path and on path + "/"; any other method
// on those paths gets a JSON 405 with an Allow header.
func (m *Mux) Route(method, path string, h http.HandlerFunc) {
	paths := []string{path}
	if path != "/" {
		paths = append(paths, strings.TrimSuffix(path, "/")+"/{$}")
	} else {
		paths = []string{"/{$}"}
	}
	for _, p := range paths {
		if method == http.MethodGet {
			m.ServeMux.HandleFunc("HEAD "+p, h)
		}
		m.ServeMux.HandleFunc(method+" "+p, h)
		if _, seen := m.methods[p]; !seen {
			m.ServeMux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
				if p == "/{$}" && r.Method == http.MethodGet {
					JSON(w, http.StatusNotFound, Detail{"Not found: /"})
					return
				}
				notAllowed(w, r, m.methods[p])
			})
		}
		m.methods[p] = append(m.methods[p], method)
		if method == http.MethodGet {
			m.methods[p] = append(m.methods[p], http.MethodHead)
		}
	}
}

// Files registers h for GET and HEAD on pattern, as it is (it may end in
// a {name...} wildcard, for a tree of files); any other method there gets
// a JSON 405 with an Allow header, as with Route.
func (m *Mux) Files(pattern string, h http.HandlerFunc) {
	m.ServeMux.HandleFunc("GET "+pattern, h)
	m.ServeMux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		notAllowed(w, r, []string{http.MethodGet, http.MethodHead})
	})
}

// notAllowed answers a method r's path does not take: 405, naming those
// it takes in Allow.
func notAllowed(w http.ResponseWriter, r *http.Request, methods []string) {
	allow := append([]string(nil), methods...)
	sort.Strings(allow)
	w.Header().Set("Allow", strings.Join(allow, ", "))
	JSON(w, http.StatusMethodNotAllowed, Detail{"Method " + r.Method + " not allowed on " + r.URL.Path})
}
