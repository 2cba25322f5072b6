package config

import (
	"strings"
	"testing"
	"time"
)

func TestLoadJupyterHubSettings(t *testing.T) {
	c, err := Load(base(nil).lookup)
	if err != nil {
		t.Fatal(err)
	}
	if c.JupyterHubStart != 120*time.Second || c.AuthMode != "none" || c.JupyterHubAPIToken != "" {
		t.Fatalf("defaults: start %s, auth %q, token set %v", c.JupyterHubStart, c.AuthMode, c.JupyterHubAPIToken != "")
	}
	c, err = Load(base(env{"JUPYTERHUB_URL": "http://hub:8000", "JUPYTERHUB_API_TOKEN": " secret ",
		"JUPYTERHUB_START_TIMEOUT": "30s", "AUTH_MODE": "JupyterHub"}).lookup)
	if err != nil {
		t.Fatal(err)
	}
	if c.JupyterHubStart != 30*time.Second || c.AuthMode != "jupyterhub" || c.JupyterHubAPIToken != "secret" {
		t.Fatalf("got start %s, auth %q, token %q", c.JupyterHubStart, c.AuthMode, c.JupyterHubAPIToken)
	}
}

func TestLoadJupyterHubErrors(t *testing.T) {
	for _, tc := range []struct {
		env  env
		want string
	}{
		{env{"JUPYTERHUB_START_TIMEOUT": "soon"}, "JUPYTERHUB_START_TIMEOUT"},
		{env{"JUPYTERHUB_START_TIMEOUT": "-1s"}, "JUPYTERHUB_START_TIMEOUT"},
		{env{"AUTH_MODE": "oauth"}, "AUTH_MODE"},
		{env{"AUTH_MODE": "jupyterhub"}, "JUPYTERHUB_URL"},
	} {
		_, err := Load(base(tc.env).lookup)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.env, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows a token: %v", err)
		}
	}
}
