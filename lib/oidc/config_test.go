package oidc

import (
	"errors"
	"testing"
	"time"
)

func TestNewVerifierRefusesBadConfig(t *testing.T) {
	for _, c := range []Config{
		{Audience: "a"},
		{IssuerURL: "https://x", Audience: ""},
		{IssuerURL: "http://x.example.org", Audience: "a"},
		{IssuerURL: "https://x", Audience: "a", SigningAlgs: []string{"HS256"}},
		{IssuerURL: "https://x", Audience: "a", SigningAlgs: []string{"none"}},
		{IssuerURL: "https://x", Audience: "a", Leeway: time.Hour},
		{IssuerURL: "https://x", Audience: "a", JWKSURL: "http://keys.example.org"},
		{IssuerURL: "https://x", Audience: "a", Leeway: -time.Second},
		{IssuerURL: "iam.example.org", Audience: "a"},
		{IssuerURL: "https://iam.example.org/?x=1", Audience: "a"},
	} {
		if _, err := NewVerifier(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	for _, c := range []Config{
		{DiscoveryURL: "https://kubernetes.default.svc", Audience: "a"},
		{IssuerURL: "https://ska-iam.example.org/", Audience: "a", Leeway: MaxLeeway},
		{IssuerURL: "http://127.0.0.1:8080", Audience: "a"},
		{IssuerURL: "http://localhost:8080", Audience: "a", SigningAlgs: []string{"ES256"}},
	} {
		v, err := NewVerifier(c)
		if err != nil {
			t.Errorf("%+v: %v", c, err)
			continue
		}
		if v.cfg.UsernameClaim != DefaultUsernameClaim || v.cfg.HTTPClient == nil || v.cfg.Leeway == 0 {
			t.Errorf("defaults not applied: %+v", v.cfg)
		}
	}
}

func TestErrorKinds(t *testing.T) {
	for _, err := range []error{ErrNoToken, ErrMalformed, ErrSignature, ErrWrongIssuer, ErrWrongAudience, ErrExpired,
		ErrNotYetValid, ErrNoUsername, ErrUserinfoRefused, ErrBadStorageScopes} {
		if !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrUnavailable) {
			t.Errorf("%v: not an ErrUnauthenticated only", err)
		}
	}
	if errors.Is(ErrUnavailable, ErrUnauthenticated) {
		t.Error("ErrUnavailable is an ErrUnauthenticated")
	}
	if errors.Is(ErrExpired, ErrNotYetValid) {
		t.Error("reasons are not distinct")
	}
}

func TestLeewayDefaults(t *testing.T) {
	for _, tc := range []struct {
		in, want time.Duration
	}{{0, DefaultLeeway}, {NoLeeway, 0}, {30 * time.Second, 30 * time.Second}} {
		if got := (Config{Leeway: tc.in}).withDefaults().Leeway; got != tc.want {
			t.Errorf("Leeway %v -> %v, want %v", tc.in, got, tc.want)
		}
	}
}
