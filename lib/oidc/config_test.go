package oidc

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

func TestLoad(t *testing.T) {
	c, err := Load(env{
		"OIDC_ISSUER_URL":      "https://ska-iam.example.org/",
		"OIDC_AUDIENCE":        "staging",
		"OIDC_ADMIN_GROUPS":    " /ska/admins , /ska/ops,",
		"OIDC_LEEWAY":          "30s",
		"AUTHZ_STORAGE_SCOPES": "true",
	}.lookup)
	if err != nil {
		t.Fatal(err)
	}
	if c.IssuerURL != "https://ska-iam.example.org/" || c.Audience != "staging" || c.Leeway != 30*time.Second ||
		!c.StorageScopes || !slices.Equal(c.AdminGroups, []string{"/ska/admins", "/ska/ops"}) {
		t.Fatalf("%+v", c)
	}
	c, err = Load(env{"OIDC_ISSUER_URL": "http://127.0.0.1:8080", "OIDC_AUDIENCE": "a",
		"OIDC_ADMIN_GROUPS": `["a,b", "c"]`, "OIDC_USERNAME_CLAIM": "sub", "OIDC_GROUPS_CLAIM": "groups"}.lookup)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.AdminGroups, []string{"a,b", "c"}) || c.UsernameClaim != "sub" || c.GroupsClaim != "groups" || c.Leeway != 0 {
		t.Fatalf("%+v", c)
	}
	if d := c.withDefaults(); d.Leeway != DefaultLeeway || d.HTTPClient == nil {
		t.Fatalf("defaults %+v", d)
	}

	base := env{"OIDC_ISSUER_URL": "https://iam.example.org", "OIDC_AUDIENCE": "a"}
	for _, tc := range []struct {
		set  env
		want string // in the error
	}{
		{env{"OIDC_ISSUER_URL": ""}, "OIDC_ISSUER_URL is required"},
		{env{"OIDC_AUDIENCE": ""}, "OIDC_AUDIENCE is required"},
		{env{"OIDC_ISSUER_URL": "http://iam.example.org"}, "https is required"},
		{env{"OIDC_ISSUER_URL": "iam.example.org"}, "OIDC_ISSUER_URL"},
		{env{"OIDC_ISSUER_URL": "https://iam.example.org/?x=1"}, "OIDC_ISSUER_URL"},
		{env{"OIDC_LEEWAY": "10m"}, "OIDC_LEEWAY"},
		{env{"OIDC_LEEWAY": "0s"}, "OIDC_LEEWAY"},
		{env{"OIDC_LEEWAY": "soon"}, "OIDC_LEEWAY"},
		{env{"AUTHZ_STORAGE_SCOPES": "yes please"}, "AUTHZ_STORAGE_SCOPES"},
		{env{"OIDC_ADMIN_GROUPS": "[not json"}, "OIDC_ADMIN_GROUPS"},
	} {
		e := env{}
		for k, v := range base {
			e[k] = v
		}
		for k, v := range tc.set {
			e[k] = v
		}
		if _, err := Load(e.lookup); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error about %s", tc.set, err, tc.want)
		}
	}
}

func TestNewVerifierRefusesBadConfig(t *testing.T) {
	for _, c := range []Config{
		{Audience: "a"},
		{IssuerURL: "https://x", Audience: ""},
		{IssuerURL: "http://x.example.org", Audience: "a"},
		{IssuerURL: "https://x", Audience: "a", SigningAlgs: []string{"HS256"}},
		{IssuerURL: "https://x", Audience: "a", SigningAlgs: []string{"none"}},
		{IssuerURL: "https://x", Audience: "a", Leeway: time.Hour},
		{IssuerURL: "https://x", Audience: "a", JWKSURL: "http://keys.example.org"},
	} {
		if _, err := NewVerifier(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := NewVerifier(Config{DiscoveryURL: "https://kubernetes.default.svc", Audience: "a"}); err != nil {
		t.Errorf("discovery URL without issuer: %v", err)
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
