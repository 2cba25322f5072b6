// Package config reads the service's configuration from the environment, the
// way Knative and the Helm chart hand it to every function. Bad values fail
// start-up with a message naming the variable.
package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Owner says who owns staged files: nobody in particular (the service's own
// user), the requesting user looked up by name, or a fixed uid:gid.
type Owner struct {
	Mode     string // "none", "user" or "ids"
	UID, GID int
}

// Config is every setting a function reads. Fields are filled from the
// variables named in their comments.
type Config struct {
	Port               int           // PORT, default 8080 (Knative's)
	Host               string        // HOST: address to listen on, default all interfaces
	SourceStoragePath  string        // SOURCE_STORAGE_PATH, required by the functions that stage
	TargetStoragePath  string        // TARGET_STORAGE_PATH, required by the functions that stage
	AllowedMethods     []string      // ALLOWED_METHODS: JSON list or comma-separated; empty allows every method
	LogLevel           slog.Level    // LOGGING_LEVEL: DEBUG, INFO, WARNING, ERROR
	LogToStore         bool          // LOG_TO_STORE: also write log records to the store, default true
	LogRetention       time.Duration // LOG_RETENTION: how long the store keeps log records, default 168h
	DatabaseURL        string        // DATABASE_URL, default sqlite under ./.data
	Sink               string        // K_SINK, set by a Knative SinkBinding
	JupyterHubURL      string        // JUPYTERHUB_URL
	JupyterHubService  string        // JUPYTERHUB_SERVICE_NAME: this service's name at the hub, if it is one
	RucioBaseURL       string        // RUCIO_BASE_URL
	StagedOwner        Owner         // STAGED_OWNER: none, user or <uid>:<gid>
	SymlinkTargetRoot  string        // SYMLINK_TARGET_ROOT: the source root as pods see it
	EnableFileCreator  bool          // ENABLE_FILE_CREATOR
	StagedFileMode     os.FileMode   // STAGED_FILE_MODE, octal, default 0440: the owner's group reads
	StagedDirMode      os.FileMode   // STAGED_DIR_MODE, octal, default 0550
	CopyWorkers        int           // COPY_WORKERS, parallel file copies per directory, default 8
	JupyterFunctionURL string        // JUPYTER_FUNCTION_URL: where the stage function hands jupyter_copy
	OperationLease     time.Duration // OPERATION_LEASE: how long a running operation may miss its heartbeat, default 15s
	ReadTimeout        time.Duration // READ_TIMEOUT: how long a client may take to send a whole request, default 2m
	JupyterHubAPIToken string        // JUPYTERHUB_API_TOKEN: the service's hub token; never logged or shown
	JupyterHubStart    time.Duration // JUPYTERHUB_START_TIMEOUT: how long to wait for a user's server, default 120s
	AuthMode           string        // AUTH_MODE: "none", "jupyterhub" (a hub token) or "oidc" (a bearer JWT of the site's identity provider)
	RucioRSE           string        // RUCIO_RSE: the local RSE's name; enables staging by DID
	RucioRSERoot       string        // RUCIO_RSE_ROOT: where the RSE is mounted, default SOURCE_STORAGE_PATH
	RucioRSEPrefix     string        // RUCIO_RSE_PREFIX: replica URL prefix that stands for RUCIO_RSE_ROOT
	PendingTTL         time.Duration // PENDING_TTL: how long a request waits for its replica, default 168h
	MaxWaitingPerUser  int           // MAX_WAITING_PER_USER: most requests of one user waiting for a replica, default 1000 (429 beyond)
	HandoffTimeout     time.Duration // HANDOFF_TIMEOUT: how long an async request may wait to be picked up, default 15m
	MaxPathDepth       int           // MAX_PATH_DEPTH: most folders in a request's path, default 64
	MaxLogStreams      int           // MAX_LOG_STREAMS: most live log streams (GET /logs?follow=true) one logs function serves, default 1000
	MaxInflight        int           // MAX_INFLIGHT: most staging operations in flight in one function process, default 64 (429 beyond)
	MaxOpenFiles       int           // MAX_OPEN_FILES: most files they may hold open at once, default half the process's open-file limit

	OIDC OIDC // AUTH_MODE=oidc
	// Events says who may send events (EVENT_AUTH and the EVENT_* variables).
	Events Events
}

// OIDC is how AUTH_MODE=oidc verifies users' access tokens and how the web
// page signs in.
type OIDC struct {
	IssuerURL     string        // OIDC_ISSUER_URL
	Audience      string        // OIDC_AUDIENCE, the aud tokens must carry
	UsernameClaim string        // OIDC_USERNAME_CLAIM, default preferred_username
	GroupsClaim   string        // OIDC_GROUPS_CLAIM, default wlcg.groups then groups
	AdminGroups   []string      // OIDC_ADMIN_GROUPS: JSON list or comma-separated
	Leeway        time.Duration // OIDC_LEEWAY: clock skew on exp and nbf, default 60s
	StorageScopes bool          // AUTHZ_STORAGE_SCOPES: sources must be covered by storage.read:<path> scopes
	ClientID      string        // OIDC_CLIENT_ID: the web page's public client (code flow with PKCE)
	Scopes        string        // OIDC_SCOPES: what the web page asks for, default "openid profile"
}

// Events is who may send events to a function (EVENT_AUTH) and how this
// function proves who it is when it sends them.
type Events struct {
	Auth       string // EVENT_AUTH: none, oidc or hmac
	Issuer     string // EVENT_OIDC_ISSUER, default the in-cluster API server
	Audience   string // EVENT_OIDC_AUDIENCE: this function's audience
	Senders    string // EVENT_SENDERS: who may send which event type
	HMACSecret string // EVENT_HMAC_SECRET, or the content of EVENT_HMAC_SECRET_FILE; never logged
	// TokenFile is a token (a projected service-account token) this
	// function sends with its own events in mode oidc (EVENT_TOKEN_FILE).
	TokenFile string
	// MaxAge is how old a signed event may be when it arrives, in mode
	// hmac (EVENT_MAX_AGE, default 2h: longer than a broker redelivers).
	MaxAge time.Duration
}

// DefaultDatabaseURL is the embedded SQLite used when DATABASE_URL is unset.
const DefaultDatabaseURL = "sqlite://.data/staging.db"

// FromEnv reads the configuration from the process environment.
func FromEnv() (*Config, error) { return Load(os.LookupEnv) }

// Load reads the configuration through lookup, so tests need not touch the
// process environment.
func Load(lookup func(string) (string, bool)) (*Config, error) {
	get := func(name, def string) string {
		if v, ok := lookup(name); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
		return def
	}
	c := &Config{
		Host:               get("HOST", ""),
		SourceStoragePath:  get("SOURCE_STORAGE_PATH", ""),
		TargetStoragePath:  get("TARGET_STORAGE_PATH", ""),
		DatabaseURL:        get("DATABASE_URL", DefaultDatabaseURL),
		Sink:               get("K_SINK", ""),
		JupyterHubURL:      get("JUPYTERHUB_URL", ""),
		JupyterHubService:  get("JUPYTERHUB_SERVICE_NAME", ""),
		RucioBaseURL:       get("RUCIO_BASE_URL", ""),
		RucioRSE:           get("RUCIO_RSE", ""),
		RucioRSEPrefix:     get("RUCIO_RSE_PREFIX", ""),
		SymlinkTargetRoot:  get("SYMLINK_TARGET_ROOT", ""),
		JupyterFunctionURL: get("JUPYTER_FUNCTION_URL", ""),
		JupyterHubAPIToken: get("JUPYTERHUB_API_TOKEN", ""),
	}
	var err error
	if c.Port, err = intVar("PORT", get("PORT", "8080"), 1, 65535); err != nil {
		return nil, err
	}
	if c.CopyWorkers, err = intVar("COPY_WORKERS", get("COPY_WORKERS", "8"), 1, 256); err != nil {
		return nil, err
	}
	if c.OperationLease, err = time.ParseDuration(get("OPERATION_LEASE", "15s")); err != nil || c.OperationLease < 100*time.Millisecond {
		return nil, fmt.Errorf("OPERATION_LEASE: %q is not a duration of at least 100ms, such as 15s", get("OPERATION_LEASE", ""))
	}
	if c.ReadTimeout, err = time.ParseDuration(get("READ_TIMEOUT", "2m")); err != nil || c.ReadTimeout < 100*time.Millisecond {
		return nil, fmt.Errorf("READ_TIMEOUT: %q is not a duration of at least 100ms, such as 2m", get("READ_TIMEOUT", ""))
	}
	if c.JupyterHubStart, err = time.ParseDuration(get("JUPYTERHUB_START_TIMEOUT", "120s")); err != nil || c.JupyterHubStart <= 0 {
		return nil, fmt.Errorf("JUPYTERHUB_START_TIMEOUT: %q is not a positive duration, such as 120s", get("JUPYTERHUB_START_TIMEOUT", ""))
	}
	switch c.AuthMode = strings.ToLower(get("AUTH_MODE", "none")); c.AuthMode {
	case "none":
	case "jupyterhub":
		if c.JupyterHubURL == "" {
			return nil, fmt.Errorf("AUTH_MODE: jupyterhub needs JUPYTERHUB_URL")
		}
	case "oidc":
		if c.OIDC, err = loadOIDC(get); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("AUTH_MODE: %q is not none, jupyterhub or oidc", c.AuthMode)
	}
	if c.Events, err = loadEvents(get); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"SOURCE_STORAGE_PATH", &c.SourceStoragePath}, {"TARGET_STORAGE_PATH", &c.TargetStoragePath}} {
		if *p.dst == "" {
			continue // required by the functions that stage, when they open the storage
		}
		abs, err := filepath.Abs(*p.dst)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		*p.dst = abs
	}
	if c.PendingTTL, err = time.ParseDuration(get("PENDING_TTL", "168h")); err != nil || c.PendingTTL < 100*time.Millisecond {
		return nil, fmt.Errorf("PENDING_TTL: %q is not a duration of at least 100ms, such as 168h", get("PENDING_TTL", ""))
	}
	if c.MaxWaitingPerUser, err = intVar("MAX_WAITING_PER_USER", get("MAX_WAITING_PER_USER", "1000"), 1, 100_000); err != nil {
		return nil, err
	}
	if c.HandoffTimeout, err = time.ParseDuration(get("HANDOFF_TIMEOUT", "15m")); err != nil || c.HandoffTimeout < time.Second {
		return nil, fmt.Errorf("HANDOFF_TIMEOUT: %q is not a duration of at least 1s, such as 15m", get("HANDOFF_TIMEOUT", ""))
	}
	if c.MaxPathDepth, err = intVar("MAX_PATH_DEPTH", get("MAX_PATH_DEPTH", "64"), 1, 2048); err != nil {
		return nil, err
	}
	if c.MaxLogStreams, err = intVar("MAX_LOG_STREAMS", get("MAX_LOG_STREAMS", "1000"), 1, 100_000); err != nil {
		return nil, err
	}
	if c.MaxInflight, err = intVar("MAX_INFLIGHT", get("MAX_INFLIGHT", "64"), 1, 100_000); err != nil {
		return nil, err
	}
	if c.MaxOpenFiles, err = maxOpenFiles(get("MAX_OPEN_FILES", ""), openFileLimit()); err != nil {
		return nil, err
	}
	if c.SourceStoragePath != "" {
		c.RucioRSERoot = filepath.Clean(get("RUCIO_RSE_ROOT", c.SourceStoragePath))
		if rel, err := filepath.Rel(c.SourceStoragePath, c.RucioRSERoot); err != nil || !filepath.IsAbs(c.RucioRSERoot) || !filepath.IsLocal(rel) {
			return nil, fmt.Errorf("RUCIO_RSE_ROOT: %q must be an absolute path under SOURCE_STORAGE_PATH", c.RucioRSERoot)
		}
	}
	if c.AllowedMethods, err = parseMethods(get("ALLOWED_METHODS", "")); err != nil {
		return nil, err
	}
	if c.LogLevel, err = logging.ParseLevel(get("LOGGING_LEVEL", "INFO")); err != nil {
		return nil, fmt.Errorf("LOGGING_LEVEL: %w", err)
	}
	if c.LogToStore, err = boolVar("LOG_TO_STORE", get("LOG_TO_STORE", "true")); err != nil {
		return nil, err
	}
	if c.LogRetention, err = time.ParseDuration(get("LOG_RETENTION", "168h")); err != nil || c.LogRetention < time.Minute {
		return nil, fmt.Errorf("LOG_RETENTION: %q is not a duration of at least 1m, such as 168h", get("LOG_RETENTION", ""))
	}
	if c.StagedOwner, err = parseOwner(get("STAGED_OWNER", "none")); err != nil {
		return nil, err
	}
	if c.StagedFileMode, err = modeVar("STAGED_FILE_MODE", get("STAGED_FILE_MODE", "0440")); err != nil {
		return nil, err
	}
	if c.StagedDirMode, err = modeVar("STAGED_DIR_MODE", get("STAGED_DIR_MODE", "0550")); err != nil {
		return nil, err
	}
	if c.EnableFileCreator, err = boolVar("ENABLE_FILE_CREATOR", get("ENABLE_FILE_CREATOR", "false")); err != nil {
		return nil, err
	}
	for name, v := range map[string]string{"K_SINK": c.Sink, "JUPYTERHUB_URL": c.JupyterHubURL,
		"RUCIO_BASE_URL": c.RucioBaseURL, "JUPYTER_FUNCTION_URL": c.JupyterFunctionURL} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s: %q is not an http(s) URL", name, v)
		}
	}
	if c.SymlinkTargetRoot != "" && !filepath.IsAbs(c.SymlinkTargetRoot) {
		return nil, fmt.Errorf("SYMLINK_TARGET_ROOT: %q is not an absolute path", c.SymlinkTargetRoot)
	}
	if !strings.HasPrefix(c.DatabaseURL, "mysql://") && !strings.HasPrefix(c.DatabaseURL, "sqlite://") {
		return nil, fmt.Errorf("DATABASE_URL: want mysql://user:pass@host:port/db or sqlite:///path/file.db")
	}
	return c, nil
}

// loadOIDC reads the OIDC_* variables of AUTH_MODE=oidc.
func loadOIDC(get func(name, def string) string) (OIDC, error) {
	o := OIDC{IssuerURL: get("OIDC_ISSUER_URL", ""), Audience: get("OIDC_AUDIENCE", ""),
		UsernameClaim: get("OIDC_USERNAME_CLAIM", "preferred_username"), GroupsClaim: get("OIDC_GROUPS_CLAIM", ""),
		ClientID: get("OIDC_CLIENT_ID", ""), Scopes: get("OIDC_SCOPES", "openid profile")}
	if o.IssuerURL == "" || o.Audience == "" {
		return o, fmt.Errorf("AUTH_MODE: oidc needs OIDC_ISSUER_URL and OIDC_AUDIENCE")
	}
	if u, err := url.Parse(o.IssuerURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return o, fmt.Errorf("OIDC_ISSUER_URL: %q is not an http(s) URL", o.IssuerURL)
	}
	var err error
	if o.AdminGroups, err = parseList(get("OIDC_ADMIN_GROUPS", "")); err != nil {
		return o, fmt.Errorf("OIDC_ADMIN_GROUPS: %w", err)
	}
	if o.Leeway, err = time.ParseDuration(get("OIDC_LEEWAY", "60s")); err != nil || o.Leeway < 0 || o.Leeway > 5*time.Minute {
		return o, fmt.Errorf("OIDC_LEEWAY: %q is not a duration from 0s to 5m, such as 60s", get("OIDC_LEEWAY", ""))
	}
	if o.StorageScopes, err = boolVar("AUTHZ_STORAGE_SCOPES", get("AUTHZ_STORAGE_SCOPES", "false")); err != nil {
		return o, err
	}
	return o, nil
}

// loadEvents reads EVENT_AUTH and the variables of its mode; the modes'
// own checks (eventauth.New) run when a function starts.
func loadEvents(get func(name, def string) string) (Events, error) {
	e := Events{Auth: strings.ToLower(get("EVENT_AUTH", "none")), Issuer: get("EVENT_OIDC_ISSUER", ""),
		Audience: get("EVENT_OIDC_AUDIENCE", ""), Senders: get("EVENT_SENDERS", ""),
		HMACSecret: get("EVENT_HMAC_SECRET", ""), TokenFile: get("EVENT_TOKEN_FILE", "")}
	switch e.Auth {
	case "none", "oidc", "hmac":
	default:
		return e, fmt.Errorf("EVENT_AUTH: %q is not none, oidc or hmac", e.Auth)
	}
	// Shorter than a broker's retry schedule, redeliveries would be
	// refused; a minute is the least that makes sense at all.
	maxAge := get("EVENT_MAX_AGE", "2h")
	d, err := time.ParseDuration(maxAge)
	if err != nil || d < time.Minute {
		return e, fmt.Errorf("EVENT_MAX_AGE: %q is not a duration of at least 1m, such as 2h", maxAge)
	}
	e.MaxAge = d
	if file := get("EVENT_HMAC_SECRET_FILE", ""); file != "" {
		if e.HMACSecret != "" {
			return e, fmt.Errorf("EVENT_HMAC_SECRET_FILE: give it or EVENT_HMAC_SECRET, not both")
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return e, fmt.Errorf("EVENT_HMAC_SECRET_FILE: %w", err)
		}
		e.HMACSecret = string(b)
	}
	return e, nil
}

// parseList reads a JSON list of strings or a comma-separated list.
func parseList(v string) ([]string, error) {
	if v == "" {
		return nil, nil
	}
	var list []string
	if strings.HasPrefix(v, "[") {
		if err := json.Unmarshal([]byte(v), &list); err != nil {
			return nil, fmt.Errorf("not a JSON list of strings: %w", err)
		}
		return list, nil
	}
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			list = append(list, item)
		}
	}
	return list, nil
}

// parseMethods accepts the Helm values' JSON list or a comma-separated list
// of method names; which names exist is the method registry's to say.
func parseMethods(v string) ([]string, error) {
	if v == "" {
		return nil, nil
	}
	var list []string
	if strings.HasPrefix(v, "[") {
		if err := json.Unmarshal([]byte(v), &list); err != nil {
			return nil, fmt.Errorf("ALLOWED_METHODS: not a JSON list of strings: %w", err)
		}
	} else {
		for _, m := range strings.Split(v, ",") {
			list = append(list, strings.TrimSpace(m))
		}
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("ALLOWED_METHODS: the list is empty; leave it unset to allow every method")
	}
	seen := map[string]bool{}
	out := list[:0]
	for _, m := range list {
		if !staging.ValidMethodName(m) {
			return nil, fmt.Errorf("ALLOWED_METHODS: %q is not a method name such as local_copy", m)
		}
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	return out, nil
}

func parseOwner(v string) (Owner, error) {
	switch strings.ToLower(v) {
	case "none":
		return Owner{Mode: "none"}, nil
	case "user":
		return Owner{Mode: "user"}, nil
	}
	u, g, ok := strings.Cut(v, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return Owner{}, fmt.Errorf("STAGED_OWNER: %q is not none, user or <uid>:<gid>", v)
	}
	return Owner{Mode: "ids", UID: uid, GID: gid}, nil
}

// spareFiles is how many of the process's file descriptors MAX_OPEN_FILES
// must leave to everything but staging: the listener and its connections,
// the store's pool, health checks, telemetry.
const spareFiles = 64

// maxOpenFiles reads MAX_OPEN_FILES against the process's limit of open
// files: by default half of it; never so much that fewer than spareFiles
// are left. limit 0 is unknown.
func maxOpenFiles(v string, limit int) (int, error) {
	if limit <= 0 {
		limit = 1024 // the usual soft limit
	}
	if v == "" {
		return max(limit/2, 1), nil
	}
	hi := max(limit-spareFiles, 1)
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > hi {
		return 0, fmt.Errorf("MAX_OPEN_FILES: %q is not a number from 1 to %d (the process may open %d files; %d are left for connections)", v, hi, limit, spareFiles)
	}
	return n, nil
}

// openFileLimit is the process's limit of open files (RLIMIT_NOFILE),
// which Go raises at start from the soft limit to the hard one; 0 when
// unknown.
func openFileLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return int(min(rl.Cur, 1<<30))
}

func intVar(name, v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s: %q is not a number from %d to %d", name, v, lo, hi)
	}
	return n, nil
}

func modeVar(name, v string) (os.FileMode, error) {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 0o777 {
		return 0, fmt.Errorf("%s: %q is not an octal permission such as 0400", name, v)
	}
	return os.FileMode(n), nil
}

func boolVar(name, v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s: %q is not true or false", name, v)
	}
	return b, nil
}
