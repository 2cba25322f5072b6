// Package httpx holds the small HTTP helpers every function's doors share:
// JSON answers, {"detail": ...} errors, and routes that answer 404 and 405
// in JSON like the rest of the API.
package httpx

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"sort"
	"strings"

	staging "github.com/ska-telescope/skao-staging-service/lib"
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

// Error writes err as {"detail": ...} with its status.
func Error(w http.ResponseWriter, err error) {
	status, detail := staging.StatusOf(err)
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
			return staging.Errorf(http.StatusRequestEntityTooLarge, "Request body is larger than %d bytes", MaxBody)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The server's READ_TIMEOUT passed: the client was too slow.
			return staging.Wrap(http.StatusRequestTimeout, "Request body not received in time", err)
		}
		return staging.Wrap(http.StatusUnprocessableEntity, "Malformed JSON body: "+err.Error(), err)
	}
	return nil
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
				allow := append([]string(nil), m.methods[p]...)
				sort.Strings(allow)
				w.Header().Set("Allow", strings.Join(allow, ", "))
				JSON(w, http.StatusMethodNotAllowed, Detail{"Method " + r.Method + " not allowed on " + r.URL.Path})
			})
		}
		m.methods[p] = append(m.methods[p], method)
		if method == http.MethodGet {
			m.methods[p] = append(m.methods[p], http.MethodHead)
		}
	}
}
