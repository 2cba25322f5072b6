package oidc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// maxStale is how long keys fetched once keep verifying while the provider
// cannot be reached (the WLCG profile's key cache expiration, 2 days).
const maxStale = 48 * time.Hour

// keySet is the issuer's JWKS as go-oidc's KeySet. Unlike go-oidc's
// RemoteKeySet, which fetches the JWKS again for every signature that does
// not verify, it fetches only for a key id it does not know, at most once
// per KeyRefreshInterval, so forged tokens cannot make the service flood
// the provider; and it tells a provider it cannot reach (ErrUnavailable)
// from a token it does not accept (ErrSignature).
type keySet struct {
	url         string
	client      *http.Client
	algs        []jose.SignatureAlgorithm
	minInterval time.Duration
	ttl         time.Duration

	mu        sync.Mutex
	keys      map[string]jose.JSONWebKey // by kid
	fetched   time.Time                  // last successful fetch
	attempted time.Time                  // last fetch, successful or not
	inflight  chan struct{}              // closed when the running fetch ends
	lastErr   error                      // of the last fetch
}

// verifyState travels in the context from Verify to the key set: the
// parsed token, and what went wrong there, which go-oidc's error (a
// formatted string) would lose.
type verifyState struct {
	jws *jose.JSONWebSignature
	err error
}

type stateKey struct{}

// VerifySignature implements go-oidc's KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	st, _ := ctx.Value(stateKey{}).(*verifyState)
	if st == nil {
		st = &verifyState{}
	}
	payload, err := k.verify(ctx, st, raw)
	if err != nil {
		st.err = err
	}
	return payload, err
}

func (k *keySet) verify(ctx context.Context, st *verifyState, raw string) ([]byte, error) {
	jws := st.jws
	if jws == nil {
		var err error
		if jws, err = jose.ParseSigned(raw, k.algs); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("%w: %d signatures", ErrMalformed, len(jws.Signatures))
	}
	h := jws.Signatures[0].Header
	key, err := k.key(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != "" && key.Algorithm != h.Algorithm {
		return nil, fmt.Errorf("%w: key %q is for %s, the token says %s", ErrSignature, h.KeyID, key.Algorithm, h.Algorithm)
	}
	payload, err := jws.Verify(&key)
	if err != nil {
		return nil, fmt.Errorf("%w: key %q: %v", ErrSignature, h.KeyID, err)
	}
	return payload, nil
}

// key returns the key with the given id, fetching the JWKS when the id is
// unknown, or in the background when the keys are older than ttl.
func (k *keySet) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	k.mu.Lock()
	key, ok := k.keys[kid]
	age := time.Since(k.fetched)
	k.mu.Unlock()
	if ok && age < k.ttl {
		return key, nil
	}
	if ok && age < maxStale {
		// Due, but still good: fetched again in the background, so that
		// requests do not wait for a provider that is slow or down, nor
		// for the next fetch unknown key ids allow.
		k.start(ctx)
		return key, nil
	}
	err := k.refresh(ctx)
	k.mu.Lock()
	key, ok = k.keys[kid]
	age = time.Since(k.fetched)
	k.mu.Unlock()
	switch {
	case ok && (err == nil || age < maxStale):
		return key, nil
	case err != nil:
		return key, err
	default:
		return key, fmt.Errorf("%w: no key %q in the issuer's key set", ErrSignature, kid)
	}
}

// refresh fetches the JWKS, once for all the callers waiting for it, and
// not sooner than minInterval after the previous fetch. The fetch does not
// end with a caller's context: the others are waiting for it too.
func (k *keySet) refresh(ctx context.Context) error {
	ch := k.start(ctx)
	select {
	case <-ch:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for the issuer's keys: %v", ErrUnavailable, ctx.Err())
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lastErr
}

// start begins a fetch unless one is under way, and returns the channel
// closed when it ends.
func (k *keySet) start(ctx context.Context) chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.inflight == nil {
		k.inflight = make(chan struct{})
		wait := time.Duration(0)
		if !k.attempted.IsZero() {
			wait = k.minInterval - time.Since(k.attempted)
		}
		go k.fetch(context.WithoutCancel(ctx), wait, k.inflight)
	}
	return k.inflight
}

func (k *keySet) fetch(ctx context.Context, wait time.Duration, done chan struct{}) {
	if wait > 0 {
		time.Sleep(wait)
	}
	keys, err := k.get(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	k.attempted = now
	k.lastErr = err
	if err == nil {
		k.keys, k.fetched = keys, now
	}
	k.inflight = nil
	close(done)
}

// get reads the JWKS, keeping the public signing keys that have a key id
// (the only way a token names its key); a set without any is an error.
func (k *keySet) get(ctx context.Context) (map[string]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: keys: %v", ErrUnavailable, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: keys: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: keys: %v", ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: keys at %s: %s", ErrUnavailable, k.url, resp.Status)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("%w: keys at %s: %v", ErrUnavailable, k.url, err)
	}
	keys := map[string]jose.JSONWebKey{}
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		if json.Unmarshal(raw, &key) != nil {
			continue // a key type go-jose does not know: not one of ours
		}
		if key.KeyID == "" || !key.Valid() || !key.IsPublic() || (key.Use != "" && key.Use != "sig") {
			continue
		}
		keys[key.KeyID] = key
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: keys at %s: no public signing key with a key id", ErrUnavailable, k.url)
	}
	return keys, nil
}
