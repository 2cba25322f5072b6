package oidc

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A discovery document that never ends, or an error page that never ends,
// is read only up to a bound: it neither fills the memory nor the error.
func TestDiscoveryIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
	}{
		{"a document that never ends", http.StatusOK},
		{"an error page that never ends", http.StatusInternalServerError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent atomic.Int64
			chunk := []byte(strings.Repeat(" ", 64<<10))
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(`{"issuer":`))
				for r.Context().Err() == nil {
					n, err := w.Write(chunk)
					sent.Add(int64(n))
					if err != nil {
						return
					}
				}
			}))
			defer srv.Close()
			v, err := NewVerifier(Config{IssuerURL: srv.URL, Audience: audience, HTTPClient: &http.Client{Timeout: 3 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = v.Discover(context.Background())
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Discover: %v, want ErrUnavailable", err)
			}
			if len(err.Error()) > 1000 {
				t.Errorf("an error of %d bytes", len(err.Error()))
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("Discover read for %v, until the client's timeout", took.Round(time.Millisecond))
			}
			if n := sent.Load(); n > 32<<20 {
				t.Errorf("%d MiB of the document were read", n>>20)
			}
		})
	}
}
