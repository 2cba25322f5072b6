package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
)

// The method registry (methods.All) is the only list of methods: the
// OpenAPI description's enum is the registry's names, the web page names
// no method and takes them from /config, and /config lists what the
// registry declares. (The Triggers are checked against it in
// internal/deploytest.)
func TestRegistryIsTheOnlyListOfMethods(t *testing.T) {
	names := methods.Names()

	var doc struct {
		Components struct {
			Schemas struct {
				Method struct {
					Enum []string `json:"enum"`
				} `json:"Method"`
			} `json:"schemas"`
		} `json:"components"`
	}
	must(t, json.Unmarshal(openAPI, &doc))
	if got := doc.Components.Schemas.Method.Enum; !slices.Equal(got, names) {
		t.Errorf("openapi.json's Method enum is %q, the registry %q", got, names)
	}

	for _, file := range []string{"web/app.js", "web/index.html"} {
		b, err := os.ReadFile(filepath.Join("web", filepath.Base(file)))
		must(t, err)
		for _, name := range names {
			if regexp.MustCompile(`\b` + name + `\b`).Match(b) {
				t.Errorf("%s names the method %s: the page must take methods and their traits from /config", file, name)
			}
		}
	}

	s := startStage(t, map[string]string{"JUPYTER_FUNCTION_URL": "http://127.0.0.1:9/"})
	r := testenv.Do(t, "GET", s.URL+"/config", nil)
	var cfg struct {
		Allowed []string `json:"allowed_methods"`
		Methods []struct {
			Name         string `json:"name"`
			Streams      bool   `json:"streams"`
			NeedsTarget  bool   `json:"needs_target"`
			JupyterToken bool   `json:"jupyter_token"`
		} `json:"methods"`
		AuthMode string `json:"auth_mode"`
	}
	must(t, json.Unmarshal([]byte(r.Body), &cfg))
	if !slices.Equal(cfg.Allowed, names) || len(cfg.Methods) != len(names) || cfg.AuthMode != "none" {
		t.Fatalf("/config: %+v, want every method of %q", cfg, names)
	}
	for i, m := range methods.All(methods.Env{}) {
		got, tr := cfg.Methods[i], m.Traits()
		if got.Name != m.Name() || got.Streams != tr.Streams || got.NeedsTarget != tr.NeedsTarget || got.JupyterToken != tr.JupyterToken {
			t.Errorf("/config says %+v of %s, which declares %+v", got, m.Name(), tr)
		}
	}
}
