package main

// The provider's state, in memory: an op.Storage modelled on the example
// storage of github.com/zitadel/oidc/v3 (example/server/storage, Apache-2.0),
// cut down to the flows the tests drive (authorization code with or without
// PKCE, client credentials, userinfo) and changed where the tests need it:
// JWT access tokens for every client, users and groups from the
// configuration, capability scopes, keys that can be rotated, and a clock
// that can be set.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

var (
	_ op.Storage                        = (*storage)(nil)
	_ op.ClientCredentialsStorage       = (*storage)(nil)
	_ op.CanGetPrivateClaimsFromRequest = (*storage)(nil)
)

type storage struct {
	cfg *Config

	mu       sync.Mutex
	offset   time.Duration // the provider's clock minus the real one
	keys     []signingKey  // the last one signs
	requests map[string]*authRequest
	codes    map[string]string // code -> request id
	tokens   map[string]*token
}

// token is an access token issued. Tokens are kept in the state directory
// too: like a real provider's, they are still known after a restart.
type token struct {
	Subject  string    `json:"sub"`
	ClientID string    `json:"client_id"`
	Scopes   []string  `json:"scopes"`
	Expires  time.Time `json:"exp"`
}

func newStorage(cfg *Config) (*storage, error) {
	s := &storage{
		cfg:      cfg,
		requests: map[string]*authRequest{},
		codes:    map[string]string{},
		tokens:   map[string]*token{},
	}
	if err := s.loadKeys(); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(s.tokensFile()); err == nil {
		if err := json.Unmarshal(b, &s.tokens); err != nil {
			return nil, fmt.Errorf("%s: %w", s.tokensFile(), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if len(s.keys) == 0 {
		if _, err := s.rotate(false); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *storage) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Add(s.offset)
}

func (s *storage) setClock(offset time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset = offset
}

func (s *storage) user(id string) *User {
	for i := range s.cfg.Users {
		if s.cfg.Users[i].ID == id {
			return &s.cfg.Users[i]
		}
	}
	return nil
}

func (s *storage) client(id string) *Client {
	for i := range s.cfg.Clients {
		if s.cfg.Clients[i].ID == id {
			return &s.cfg.Clients[i]
		}
	}
	return nil
}

// granted keeps the requested scopes that are either standard OpenID ones
// or capability scopes the principal is entitled to (exact match).
func granted(requested, entitled []string) []string {
	var out []string
	for _, sc := range requested {
		switch {
		case sc == oidc.ScopeOpenID, sc == oidc.ScopeProfile, sc == oidc.ScopeEmail:
			out = append(out, sc)
		case slices.Contains(entitled, sc):
			out = append(out, sc)
		}
	}
	return out
}

// Keys.

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct{ signingKey }

func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.key.PublicKey }

func (s *storage) keysFile() string   { return filepath.Join(s.cfg.StateDir, "keys.json") }
func (s *storage) tokensFile() string { return filepath.Join(s.cfg.StateDir, "tokens.json") }

// save writes v to path in one step (a new file renamed over the old).
func (s *storage) save(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.cfg.StateDir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

func (s *storage) loadKeys() error {
	b, err := os.ReadFile(s.keysFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var jwks []jose.JSONWebKey
	if err := json.Unmarshal(b, &jwks); err != nil {
		return fmt.Errorf("%s: %w", s.keysFile(), err)
	}
	for _, j := range jwks {
		k, ok := j.Key.(*rsa.PrivateKey)
		if !ok {
			return fmt.Errorf("%s: key %s is not an RSA private key", s.keysFile(), j.KeyID)
		}
		s.keys = append(s.keys, signingKey{id: j.KeyID, key: k})
	}
	return nil
}

// rotate makes a new signing key; the old ones stay published unless retire
// is set, as a provider keeps them until the tokens they signed expire.
func (s *storage) rotate(retire bool) (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	nk := signingKey{id: uuid.NewString(), key: k}
	if retire {
		s.keys = nil
	}
	s.keys = append(s.keys, nk)
	jwks := make([]jose.JSONWebKey, len(s.keys))
	for i, k := range s.keys {
		jwks[i] = jose.JSONWebKey{Key: k.key, KeyID: k.id, Algorithm: string(jose.RS256), Use: "sig"}
	}
	return nk.id, s.save(s.keysFile(), jwks)
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[len(s.keys)-1], nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]op.Key, len(s.keys))
	for i, k := range s.keys {
		out[i] = publicKey{k}
	}
	return out, nil
}

// Authorization code flow.

// checkLogin is the login page's check: it binds the request to the user
// and keeps only the scopes the user is entitled to.
func (s *storage) checkLogin(requestID, username, password string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[requestID]
	if !ok {
		return errors.New("unknown or finished sign-in request")
	}
	for _, u := range s.cfg.Users {
		if u.Username == username && u.Password == password {
			req.userID = u.ID
			req.scopes = granted(req.scopes, u.Scopes)
			req.authTime = time.Now()
			req.done = true
			return nil
		}
	}
	return errors.New("wrong username or password")
}

func (s *storage) CreateAuthRequest(_ context.Context, r *oidc.AuthRequest, userID string) (op.AuthRequest, error) {
	if slices.Equal(r.Prompt, []string{oidc.PromptNone}) {
		return nil, oidc.ErrLoginRequired()
	}
	req := &authRequest{
		id:           uuid.NewString(),
		clientID:     r.ClientID,
		redirectURI:  r.RedirectURI,
		state:        r.State,
		nonce:        r.Nonce,
		scopes:       r.Scopes,
		responseType: r.ResponseType,
		responseMode: r.ResponseMode,
		userID:       userID,
	}
	if r.CodeChallenge != "" {
		req.challenge = &oidc.CodeChallenge{Challenge: r.CodeChallenge, Method: r.CodeChallengeMethod}
	}
	if c := s.client(r.ClientID); c != nil {
		req.audience = audience(c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[req.id] = req
	return req, nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.requests[id]; ok {
		return r, nil
	}
	return nil, errors.New("request not found")
}

func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("code invalid or expired")
	}
	return s.AuthRequestByID(ctx, id)
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for code, rid := range s.codes {
		if rid == id {
			delete(s.codes, code)
		}
	}
	return nil
}

// Tokens.

// ccRequest is a client credentials token request: the client acts for
// itself.
type ccRequest struct {
	client *Client
	scopes []string
}

func (r *ccRequest) GetSubject() string    { return r.client.Subject }
func (r *ccRequest) GetAudience() []string { return audience(r.client) }
func (r *ccRequest) GetScopes() []string   { return r.scopes }

func audience(c *Client) []string {
	// The client id stays in aud so its ID tokens satisfy an RP library
	// that checks aud against its client id.
	return append(slices.Clone(c.Audience), c.ID)
}

func (s *storage) CreateAccessToken(_ context.Context, r op.TokenRequest) (string, time.Time, error) {
	var c *Client
	switch r := r.(type) {
	case *authRequest:
		c = s.client(r.clientID)
	case *ccRequest:
		c = r.client
	}
	if c == nil {
		return "", time.Time{}, errors.New("token request of an unknown kind or client")
	}
	t := &token{Subject: r.GetSubject(), ClientID: c.ID, Scopes: r.GetScopes(), Expires: s.now().Add(c.lifetime)}
	id := uuid.NewString()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[id] = t
	return id, t.Expires, s.save(s.tokensFile(), s.tokens)
}

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errors.New("refresh tokens are not issued")
}

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}

func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) TerminateSession(context.Context, string, string) error { return nil }

func (s *storage) RevokeToken(_ context.Context, tokenID, _, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tokens[tokenID]; ok && t.ClientID == clientID {
		delete(s.tokens, tokenID)
		if err := s.save(s.tokensFile(), s.tokens); err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
	}
	return nil
}

// GetPrivateClaimsFromRequest adds to JWT access tokens what SKA IAM /
// INDIGO IAM put there: the granted scopes, the groups under the client's
// claim names, the username only when the client asks for it.
func (s *storage) GetPrivateClaimsFromRequest(_ context.Context, r op.TokenRequest, _ []string) (map[string]any, error) {
	var (
		c      *Client
		groups []string
		name   string
	)
	switch r := r.(type) {
	case *authRequest:
		c = s.client(r.clientID)
		if u := s.user(r.userID); u != nil {
			groups, name = u.Groups, u.Username
		}
	case *ccRequest:
		c = r.client
		groups = c.Groups
	}
	if c == nil {
		return nil, errors.New("token request of an unknown kind or client")
	}
	claims := map[string]any{}
	if sc := r.GetScopes(); len(sc) > 0 {
		claims["scope"] = strings.Join(sc, " ")
	}
	for _, name := range c.GroupsClaims {
		if len(groups) > 0 {
			claims[name] = groups
		}
		if name == "wlcg.groups" {
			claims["wlcg.ver"] = "1.0"
		}
	}
	if c.UsernameInToken && name != "" {
		claims["preferred_username"] = name
	}
	return claims, nil
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, errors.New("unused: GetPrivateClaimsFromRequest answers")
}

// Clients.

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	c := s.client(id)
	if c == nil {
		return nil, fmt.Errorf("client %q not found", id)
	}
	return &opClient{Client: c, s: s}, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	if c := s.client(id); c != nil && c.Secret != "" && c.Secret == secret {
		return nil
	}
	return errors.New("wrong client id or secret")
}

func (s *storage) ClientCredentials(ctx context.Context, id, secret string) (op.Client, error) {
	if err := s.AuthorizeClientIDSecret(ctx, id, secret); err != nil {
		return nil, err
	}
	return s.GetClientByClientID(ctx, id)
}

func (s *storage) ClientCredentialsTokenRequest(_ context.Context, id string, scopes []string) (op.TokenRequest, error) {
	c := s.client(id)
	if c == nil {
		return nil, fmt.Errorf("client %q not found", id)
	}
	return &ccRequest{client: c, scopes: granted(scopes, c.Scopes)}, nil
}

// Userinfo and introspection.

func (s *storage) setUserinfo(info *oidc.UserInfo, subject string, scopes []string) error {
	u := s.user(subject)
	if u == nil {
		// A client acting for itself: nothing to say but who it is.
		info.Subject = subject
		return nil
	}
	info.Subject = u.ID
	if slices.Contains(scopes, oidc.ScopeProfile) {
		info.PreferredUsername = u.Username
		info.Name = u.Username
	}
	if slices.Contains(scopes, oidc.ScopeEmail) {
		info.Email = u.Email
		info.EmailVerified = oidc.Bool(u.Email != "")
	}
	if len(u.Groups) > 0 {
		info.AppendClaims("groups", u.Groups)
	}
	return nil
}

func (s *storage) SetUserinfoFromScopes(_ context.Context, info *oidc.UserInfo, userID, _ string, scopes []string) error {
	return s.setUserinfo(info, userID, scopes)
}

func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || t.Subject != subject {
		return errors.New("token is invalid")
	}
	if s.now().After(t.Expires) {
		return errors.New("token is expired")
	}
	return s.setUserinfo(info, t.Subject, t.Scopes)
}

func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || t.Subject != subject || s.now().After(t.Expires) {
		return errors.New("token is invalid")
	}
	info := new(oidc.UserInfo)
	if err := s.setUserinfo(info, t.Subject, t.Scopes); err != nil {
		return err
	}
	resp.SetUserInfo(info)
	resp.Scope = t.Scopes
	resp.ClientID = t.ClientID
	resp.Expiration = oidc.FromTime(t.Expires)
	return nil
}

// The JWT profile grant is not offered.

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("the JWT profile grant is not offered")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("the JWT profile grant is not offered")
}

func (s *storage) Health(context.Context) error { return nil }

// authRequest is one sign-in in progress.
type authRequest struct {
	id           string
	clientID     string
	redirectURI  string
	state        string
	nonce        string
	scopes       []string
	audience     []string
	responseType oidc.ResponseType
	responseMode oidc.ResponseMode
	challenge    *oidc.CodeChallenge
	userID       string
	authTime     time.Time
	done         bool
}

func (r *authRequest) GetID() string                         { return r.id }
func (r *authRequest) GetACR() string                        { return "" }
func (r *authRequest) GetAMR() []string                      { return []string{"pwd"} }
func (r *authRequest) GetAudience() []string                 { return r.audience }
func (r *authRequest) GetAuthTime() time.Time                { return r.authTime }
func (r *authRequest) GetClientID() string                   { return r.clientID }
func (r *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return r.challenge }
func (r *authRequest) GetNonce() string                      { return r.nonce }
func (r *authRequest) GetRedirectURI() string                { return r.redirectURI }
func (r *authRequest) GetResponseType() oidc.ResponseType    { return r.responseType }
func (r *authRequest) GetResponseMode() oidc.ResponseMode    { return r.responseMode }
func (r *authRequest) GetScopes() []string                   { return r.scopes }
func (r *authRequest) GetState() string                      { return r.state }
func (r *authRequest) GetSubject() string                    { return r.userID }
func (r *authRequest) Done() bool                            { return r.done }

// opClient is a configured client as the op package sees it.
type opClient struct {
	*Client
	s *storage
}

func (c *opClient) GetID() string                    { return c.ID }
func (c *opClient) RedirectURIs() []string           { return c.Client.RedirectURIs }
func (c *opClient) PostLogoutRedirectURIs() []string { return nil }
func (c *opClient) LoginURL(id string) string        { return "/login?authRequestID=" + id }
func (c *opClient) AccessTokenType() op.AccessTokenType {
	return op.AccessTokenTypeJWT
}
func (c *opClient) IDTokenLifetime() time.Duration { return time.Hour }

// DevMode allows http redirect URIs on 127.0.0.1, where the tests' pages
// are served.
func (c *opClient) DevMode() bool { return true }

func (c *opClient) ApplicationType() op.ApplicationType {
	if c.Secret == "" {
		return op.ApplicationTypeUserAgent // a browser page: public, PKCE
	}
	return op.ApplicationTypeWeb
}

func (c *opClient) AuthMethod() oidc.AuthMethod {
	if c.Secret == "" {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}

func (c *opClient) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

func (c *opClient) GrantTypes() []oidc.GrantType {
	if c.Secret == "" {
		return []oidc.GrantType{oidc.GrantTypeCode}
	}
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeClientCredentials}
}

func (c *opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (c *opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// IsScopeAllowed lets every scope through the request; what a token carries
// is decided by the principal's entitlements when it is issued.
func (c *opClient) IsScopeAllowed(string) bool           { return true }
func (c *opClient) IDTokenUserinfoClaimsAssertion() bool { return false }

// ClockSkew is how the op package dates iat and nbf: now minus the skew.
// The provider's clock offset goes in here, so a test can have tokens
// issued in the past (expired) or in the future (not yet valid).
func (c *opClient) ClockSkew() time.Duration {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return -c.s.offset
}
