package oidc

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keysServer is an issuer whose JWKS can be made to hang: the provider
// used elsewhere cannot be slowed down.
type keysServer struct {
	url  string
	key  *rsa.PrivateKey
	hang atomic.Bool
}

func newKeysServer(t *testing.T) *keysServer {
	t.Helper()
	s := &keysServer{key: rsaKey(t)}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": s.url, "jwks_uri": s.url + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		if s.hang.Load() {
			<-r.Context().Done()
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"keys": []jose.JSONWebKey{{Key: &s.key.PublicKey, KeyID: "k1", Use: "sig", Algorithm: "RS256"}}})
	})
	return s
}

// Keys that are due (KeyCacheTTL) but known still verify at once, while
// they are fetched again: a request waits neither for a provider slow to
// serve them nor for the next fetch a flood of unknown key ids allows.
func TestDueKeysDoNotHoldRequests(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay func(t *testing.T, s *keysServer, v *Verifier)
	}{
		{"the provider's keys hang", func(t *testing.T, s *keysServer, v *Verifier) { s.hang.Store(true) }},
		{"unknown key ids hold the next fetch back", func(t *testing.T, s *keysServer, v *Verifier) {
			forged := sign(t, rsaKey(t), jose.RS256, "made-up", validClaims(s.url, audience))
			go v.Verify(context.Background(), forged)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newKeysServer(t)
			v := newVerifierFor(t, Config{IssuerURL: s.url, Audience: audience, KeyCacheTTL: 200 * time.Millisecond,
				KeyRefreshInterval: 5 * time.Second, HTTPClient: &http.Client{Timeout: 5 * time.Second}})
			ctx := context.Background()
			good := sign(t, s.key, jose.RS256, "k1", validClaims(s.url, audience))
			if _, err := v.Verify(ctx, good); err != nil {
				t.Fatal(err)
			}
			tc.delay(t, s, v)
			time.Sleep(300 * time.Millisecond) // the keys are due
			start := time.Now()
			_, err := v.Verify(ctx, good)
			if took := time.Since(start); took > time.Second {
				t.Errorf("a token of a known key waited %v", took.Round(time.Millisecond))
			}
			if err != nil {
				t.Errorf("a token of a known key: %v", err)
			}
			// A key never seen is still refused.
			forged := sign(t, rsaKey(t), jose.RS256, "other", validClaims(s.url, audience))
			short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			if _, err := v.Verify(short, forged); err == nil {
				t.Error("a token of an unknown key was accepted")
			}
		})
	}
}

func newVerifierFor(t *testing.T, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
