package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Config is the provider's JSON configuration file. internal/testenv writes
// it; keep the two in step.
type Config struct {
	// Addr is where to listen, e.g. 127.0.0.1:0 (any free port) or a fixed
	// port to come back on after a restart.
	Addr string `json:"addr"`
	// StateDir keeps the signing keys, so a restarted provider signs and
	// publishes the same keys as before.
	StateDir string   `json:"state_dir"`
	Users    []User   `json:"users"`
	Clients  []Client `json:"clients"`
}

// User is someone who can sign in on the login page.
type User struct {
	ID       string   `json:"id"` // the sub claim
	Username string   `json:"username"`
	Password string   `json:"password"`
	Email    string   `json:"email,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	// Scopes are the capability scopes (e.g. storage.read:/alice) the user
	// is entitled to; a token carries those of them that were requested.
	Scopes []string `json:"scopes,omitempty"`
}

// Client is an OAuth client registered with the provider.
type Client struct {
	ID string `json:"id"`
	// Secret makes a confidential client (client_secret_basic or _post,
	// client credentials allowed); without one the client is public and must
	// use PKCE.
	Secret       string   `json:"secret,omitempty"`
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// Audience is the aud of its access tokens, besides the client id;
	// empty: the client id alone (as SKA IAM / INDIGO IAM do by default).
	Audience []string `json:"audience,omitempty"`
	// AccessTokenLifetime, e.g. "5m"; default 5 minutes.
	AccessTokenLifetime string `json:"access_token_lifetime,omitempty"`
	// UsernameInToken puts preferred_username in access tokens. Off, the
	// username is only in userinfo, as in INDIGO IAM's access tokens.
	UsernameInToken bool `json:"username_in_token,omitempty"`
	// GroupsClaims lists the claims that carry the user's groups in access
	// tokens, e.g. ["wlcg.groups"] or ["groups"]; none: no groups in tokens.
	GroupsClaims []string `json:"groups_claims,omitempty"`
	// Subject, Scopes and Groups describe the client itself in client
	// credentials tokens: sub (default the client id), the capability
	// scopes it may be granted and the groups it is in.
	Subject string   `json:"subject,omitempty"`
	Scopes  []string `json:"scopes,omitempty"`
	Groups  []string `json:"groups,omitempty"`

	lifetime time.Duration
}

func loadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.StateDir == "" {
		return nil, errors.New("state_dir is required")
	}
	ids := map[string]bool{}
	for i := range c.Clients {
		cl := &c.Clients[i]
		if cl.ID == "" || ids[cl.ID] {
			return nil, fmt.Errorf("client %d: empty or repeated id %q", i, cl.ID)
		}
		ids[cl.ID] = true
		cl.lifetime = 5 * time.Minute
		if cl.AccessTokenLifetime != "" {
			if cl.lifetime, err = time.ParseDuration(cl.AccessTokenLifetime); err != nil || cl.lifetime <= 0 {
				return nil, fmt.Errorf("client %s: access_token_lifetime %q: want a positive duration", cl.ID, cl.AccessTokenLifetime)
			}
		}
		if cl.Subject == "" {
			cl.Subject = cl.ID
		}
	}
	names := map[string]bool{}
	for i, u := range c.Users {
		if u.ID == "" || u.Username == "" || names[u.Username] || ids["user:"+u.ID] {
			return nil, fmt.Errorf("user %d: empty or repeated id or username", i)
		}
		names[u.Username] = true
		ids["user:"+u.ID] = true
	}
	return &c, nil
}
