// Package function assembles what the service's functions start with, so
// each functions/<name>/main.go only wires its doors: configuration,
// logger, telemetry and store for every function; storage and the staging
// pipeline for the functions that stage; then the Knative server, the
// background work (the sweep of dead operations, log pruning) and an
// orderly shutdown. It knows no concrete staging method: a function hands
// it the list of methods.
package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/config"
	"github.com/ska-telescope/skao-staging-service/lib/eventauth"
	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/jupyterhub"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
	"github.com/ska-telescope/skao-staging-service/lib/oidc"
	"github.com/ska-telescope/skao-staging-service/lib/rucio"
	"github.com/ska-telescope/skao-staging-service/lib/server"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
	"github.com/ska-telescope/skao-staging-service/lib/store"
	"github.com/ska-telescope/skao-staging-service/lib/telemetry"
)

// Function is one running function's shared parts.
type Function struct {
	Name   string
	Source string // the CloudEvents source of what it sends: /skao/staging/<name>
	Config *config.Config
	Logger *slog.Logger
	Store  *store.Store
	// Auth establishes callers as AUTH_MODE says.
	Auth auth.Authenticator
	// Storage, Service and Sender are set for functions that stage, for functions that stage.
	Storage *storage.Storage
	Service *staging.Service
	Sender  *events.Sender // K_SINK; nil when unset

	background []func(ctx context.Context)
	stopping   []func()
	closers    []func() error
	migrated   atomic.Bool     // the store's schema is up to date
	logs       *logging.Writer // the log store's writer; nil with LOG_TO_STORE=false
	telemetry  *telemetry.Telemetry
}

// Go runs fn in the background while the function serves; its context ends
// when the function shuts down.
func (f *Function) Go(fn func(ctx context.Context)) { f.background = append(f.background, fn) }

// OnStopping runs fn once the function stops taking requests after
// SIGTERM, before in-flight requests are waited for: fn ends what would
// hold the drain for long (a log stream), which in-flight staging requests
// are not.
func (f *Function) OnStopping(fn func()) { f.stopping = append(f.stopping, fn) }

// Setup reads the configuration and opens the store; with all, it then
// sets up staging with those methods (see setupStaging), its configuration
// checked before anything is opened. Errors name what is wrong, for the
// start-up log.
func Setup(ctx context.Context, name string, all func(methods.Env) []staging.Method) (*Function, error) {
	cfg, err := config.FromEnv()
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	if all != nil {
		if err := checkStaging(cfg, all); err != nil {
			return nil, fmt.Errorf("configuration: %w", err)
		}
	}
	// Until the store is open, records go to stdout only.
	logger := slog.New(logging.New(os.Stdout, logging.Options{Level: cfg.LogLevel, Function: name}))
	slog.SetDefault(logger)
	tel, err := telemetry.Setup(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	db, err := store.New(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	var logs *logging.Writer
	if cfg.LogToStore {
		logs = logging.NewWriter(db, logging.WriterOptions{Stdout: logger})
		logger = slog.New(logging.New(os.Stdout, logging.Options{Level: cfg.LogLevel, Function: name, Store: logs}))
		slog.SetDefault(logger)
	}
	f := &Function{Name: name, Source: "/skao/staging/" + name, Config: cfg, Logger: logger, Store: db,
		logs: logs, telemetry: tel}
	if f.Auth, err = f.authenticator(); err != nil {
		db.Close()
		return nil, err
	}
	// A database that is away at start is no reason to crash-loop: the
	// function serves, says it is not ready, and migrates once it answers.
	if err := db.Migrate(ctx); err != nil {
		logger.Warn("database not ready; retrying in the background", "error", err)
		f.Go(f.migrateUntilReady)
	} else {
		f.migrated.Store(true)
	}
	if all != nil {
		if _, err := f.setupStaging(all); err != nil {
			db.Close()
			return nil, err
		}
		if f.migrated.Load() {
			// The first request finds its statements built and prepared.
			go db.Warm(ctx)
		}
	}
	return f, nil
}

// checkStaging checks what staging needs of the configuration: the two
// storage roots, ALLOWED_METHODS naming methods of the registry, and
// hand-offs through a broker that can prove who sent them.
func checkStaging(c *config.Config, all func(methods.Env) []staging.Method) error {
	if c.SourceStoragePath == "" || c.TargetStoragePath == "" {
		return errors.New("SOURCE_STORAGE_PATH and TARGET_STORAGE_PATH are required")
	}
	if c.Sink != "" && c.AuthMode != "none" && c.Events.Auth == eventauth.ModeNone {
		return fmt.Errorf("EVENT_AUTH: with AUTH_MODE=%s, async requests handed on through K_SINK must prove who sent them: set EVENT_AUTH to hmac or oidc", c.AuthMode)
	}
	var names []string
	for _, m := range all(methods.Env{}) {
		names = append(names, m.Name())
	}
	for _, m := range c.AllowedMethods {
		if !slices.Contains(names, m) {
			return fmt.Errorf("ALLOWED_METHODS: unknown method %q (known: %s)", m, strings.Join(names, ", "))
		}
	}
	return nil
}

// setupStaging opens the storage and builds the staging pipeline with every
// method all returns: those whose traits name this function run here, the
// others are handed to the function that runs them when its URL is
// configured. Async requests go to K_SINK when a SinkBinding set it.
func (f *Function) setupStaging(all func(methods.Env) []staging.Method) (*staging.Service, error) {
	c := f.Config
	st, err := storage.Open(c.SourceStoragePath, c.TargetStoragePath)
	if err != nil {
		return nil, err
	}
	f.Storage = st
	f.closers = append(f.closers, st.Close)
	svc := &staging.Service{
		Store:             telemetry.TraceStore(f.Store, dbSystem(f.Store.Dialect())),
		Function:          f.Name,
		Peers:             map[string]staging.Peer{},
		Logger:            f.Logger,
		Lease:             c.OperationLease,
		HandoffTimeout:    c.HandoffTimeout,
		PendingTTL:        c.PendingTTL,
		MaxWaitingPerUser: c.MaxWaitingPerUser,
		MaxPathDepth:      c.MaxPathDepth,
		MaxInflight:       c.MaxInflight,
		MaxOpenFiles:      c.MaxOpenFiles,
	}
	env := methods.Env{Storage: st, Logger: f.Logger, Alive: svc.Alive, Options: methods.Options{
		FileMode: c.StagedFileMode, DirMode: c.StagedDirMode, Workers: c.CopyWorkers, SymlinkTargetRoot: c.SymlinkTargetRoot,
		MaxDepth: c.MaxPathDepth,
		Owner: methods.Owner{ByName: c.StagedOwner.Mode == "user", Fixed: c.StagedOwner.Mode == "ids",
			UID: c.StagedOwner.UID, GID: c.StagedOwner.GID}}}
	if c.JupyterHubURL != "" {
		hub, err := jupyterhub.New(c.JupyterHubURL)
		if err != nil {
			return nil, err
		}
		env.Jupyter = methods.Jupyter{Hub: hub, ServiceToken: c.JupyterHubAPIToken, StartTimeout: c.JupyterHubStart}
	}
	for _, m := range all(env) {
		svc.Register(m)
	}
	if len(c.AllowedMethods) > 0 {
		svc.Allowed = func(m string) bool { return slices.Contains(c.AllowedMethods, m) }
	}
	creds, err := f.credentials()
	if err != nil {
		return nil, err
	}
	for name, url := range map[string]string{"jupyter": c.JupyterFunctionURL} {
		if url != "" && name != f.Name {
			svc.Peers[name] = events.Peer{Name: name, URL: url, Source: f.Source, Creds: creds}
		}
	}
	if c.Sink != "" {
		sender, err := events.NewSender(c.Sink, f.Source, creds, f.Logger)
		if err != nil {
			return nil, err
		}
		f.Sender, svc.Handoff, svc.Notifier = sender, sender, sender
	}
	if c.RucioRSE != "" {
		svc.DIDs = &rucio.RSE{Name: c.RucioRSE, Root: c.RucioRSERoot, Prefix: c.RucioRSEPrefix, Storage: st}
	}
	svc.Sources = st
	f.Service = svc
	f.Go(svc.Sweeper)
	return svc, nil
}

// credentials are how this function proves it sent the events it sends
// (EVENT_AUTH): the first shared secret signs them (hmac), or
// EVENT_TOKEN_FILE's token goes with them (oidc).
func (f *Function) credentials() (*events.Credentials, error) {
	e := f.Config.Events
	switch e.Auth {
	case eventauth.ModeHMAC:
		secrets, err := eventauth.ParseSecrets([]byte(e.HMACSecret))
		if err != nil || len(secrets) == 0 {
			return nil, fmt.Errorf("EVENT_HMAC_SECRET: %v", err)
		}
		return &events.Credentials{Secret: secrets[0]}, nil
	case eventauth.ModeOIDC:
		return &events.Credentials{TokenFile: e.TokenFile}, nil
	}
	return nil, nil
}

// Receiver is this function's CloudEvents door to its staging service:
// senders checked as EVENT_AUTH says, users as AUTH_MODE says.
func (f *Function) Receiver() (*events.Receiver, error) {
	e := f.Config.Events
	cfg := eventauth.Config{Mode: e.Auth, Issuer: e.Issuer, Audience: e.Audience, MaxAge: e.MaxAge}
	var err error
	if e.Senders != "" {
		if cfg.Senders, err = eventauth.ParseSenders(e.Senders); err != nil {
			return nil, fmt.Errorf("EVENT_SENDERS: %w", err)
		}
	}
	if e.Auth == eventauth.ModeHMAC {
		if cfg.HMACSecrets, err = eventauth.ParseSecrets([]byte(e.HMACSecret)); err != nil {
			return nil, fmt.Errorf("EVENT_HMAC_SECRET: %w", err)
		}
	}
	senders, err := eventauth.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("EVENT_AUTH: %w", err)
	}
	return &events.Receiver{Service: f.Service, Source: f.Source, Logger: f.Logger, Senders: senders,
		Auth: f.Auth, UsersMaySend: f.Config.AuthMode != "none"}, nil
}

// Serve runs handler on $PORT until SIGTERM, with the background work, then
// drains and closes everything.
func (f *Function) Serve(handler http.Handler) error {
	bgCtx, stopBackground := context.WithCancel(context.Background())
	go f.pruneLogs(bgCtx)
	for _, run := range f.background {
		go run(bgCtx)
	}
	return server.Run(server.Options{
		Host:        f.Config.Host,
		Port:        f.Config.Port,
		ReadTimeout: f.Config.ReadTimeout,
		Handler:     telemetry.Handler(handler),
		Logger:      f.Logger,
		Ready:       f.ready,
		Stopping: func() {
			for _, fn := range f.stopping {
				fn()
			}
		},
		Shutdown: func(ctx context.Context) {
			stopBackground()
			if f.Service != nil {
				if err := f.Service.Shutdown(ctx); err != nil {
					f.Logger.Warn("shut down", "error", err)
				}
			}
			if f.logs != nil {
				if err := f.logs.Close(ctx); err != nil {
					f.Logger.Warn("flush log records", "error", err)
				}
			}
			if err := f.telemetry.Shutdown(ctx); err != nil {
				f.Logger.Warn("flush telemetry", "error", err)
			}
			f.Store.Close()
			for _, close := range f.closers {
				close()
			}
		},
	})
}

// migrateUntilReady retries the migration with backoff until the database
// answers, or the function stops.
func (f *Function) migrateUntilReady(ctx context.Context) {
	for wait := 500 * time.Millisecond; ; wait = min(wait*2, 30*time.Second) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := f.Store.Migrate(ctx); err != nil {
			f.Logger.Warn("database not ready", "error", err, "retry_in", (min(wait*2, 30*time.Second)).String())
			continue
		}
		f.migrated.Store(true)
		f.Logger.Info("database ready")
		return
	}
}

// ready is the readiness of /readyz: a migrated store that answers.
func (f *Function) ready(ctx context.Context) error {
	if !f.migrated.Load() {
		return errors.New("the database has not been reached yet")
	}
	return f.Store.Ping(ctx)
}

// pruneLogs deletes log records older than LOG_RETENTION, soon after start
// and then hourly, at random moments: every replica of every function does
// it rarely, so it happens however the functions scale, and deleting twice
// does no harm.
func (f *Function) pruneLogs(ctx context.Context) {
	wait := time.Duration(rand.Int64N(int64(time.Minute)))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		n, err := f.Store.PruneLogs(ctx, time.Now().Add(-f.Config.LogRetention))
		if err != nil && ctx.Err() == nil {
			f.Logger.Warn("prune log records", "error", err)
		} else if n > 0 {
			f.Logger.Info("pruned log records", "deleted", n, "retention", f.Config.LogRetention.String())
		}
		wait = time.Hour + time.Duration(rand.Int64N(int64(10*time.Minute)))
	}
}

// dbSystem names a store dialect as OpenTelemetry does.
func dbSystem(dialect string) string {
	if dialect == store.DialectSQLite {
		return "sqlite"
	}
	return dialect
}

// Main runs a function that does not stage, built by build, and exits
// non-zero on failure.
func Main(name string, build func(f *Function) (http.Handler, error)) { run(name, nil, build) }

// MainStaging runs a function that stages with the methods all returns
// (f.Service is ready when build runs), and exits non-zero on failure.
func MainStaging(name string, all func(methods.Env) []staging.Method, build func(f *Function) (http.Handler, error)) {
	run(name, all, build)
}

func run(name string, all func(methods.Env) []staging.Method, build func(f *Function) (http.Handler, error)) {
	start := time.Now()
	time.AfterFunc(startWindow, holdGC())
	f, err := Setup(context.Background(), name, all)
	if err != nil {
		slog.Error("start-up failed", "function", name, "error", err)
		os.Exit(1)
	}
	h, err := build(f)
	if err != nil {
		f.Logger.Error("start-up failed", "error", err)
		os.Exit(1)
	}
	f.Logger.Debug("started", "ms", float64(time.Since(start).Microseconds())/1000)
	if err := f.Serve(h); err != nil {
		f.Logger.Error("server failed", "error", err)
		os.Exit(1)
	}
}

// startWindow and startHeapLimit bound holdGC: start-up and a first request
// allocate a few MiB (no collection within 16 MiB, measured), while work
// that begins in that second (a tree's tar download) must not grow the
// process: with 64 MiB, such a download's peak RSS went from 31 to 77 MiB.
const (
	startWindow    = time.Second
	startHeapLimit = 16 << 20
)

// holdGC keeps the collector from running while the function starts, as
// long as the Go runtime's memory stays under startHeapLimit (or
// GOMEMLIMIT, if lower): its first cycle would otherwise fall in the middle
// of Setup or of the first request, on a CPU the function needs. The
// returned func puts GOGC and GOMEMLIMIT back.
func holdGC() (release func()) {
	limit := debug.SetMemoryLimit(-1)
	percent := debug.SetGCPercent(-1)
	debug.SetMemoryLimit(min(limit, startHeapLimit))
	return func() {
		debug.SetMemoryLimit(limit)
		debug.SetGCPercent(percent)
	}
}

// Authenticator is the check of callers AUTH_MODE asks for (f.Auth).
func (f *Function) Authenticator() (auth.Authenticator, error) { return f.Auth, nil }

func (f *Function) authenticator() (auth.Authenticator, error) {
	c := f.Config
	switch c.AuthMode {
	case "jupyterhub":
		hub, err := jupyterhub.New(c.JupyterHubURL)
		if err != nil {
			return nil, err
		}
		return auth.NewJupyterHub(hub, c.JupyterHubService, 0), nil
	case "oidc":
		leeway := c.OIDC.Leeway
		if leeway == 0 {
			leeway = oidc.NoLeeway // OIDC_LEEWAY=0s means none, not the default
		}
		v, err := oidc.NewVerifier(oidc.Config{IssuerURL: c.OIDC.IssuerURL, Audience: c.OIDC.Audience,
			UsernameClaim: c.OIDC.UsernameClaim, GroupsClaim: c.OIDC.GroupsClaim, AdminGroups: c.OIDC.AdminGroups,
			StorageScopes: c.OIDC.StorageScopes, Leeway: leeway})
		if err != nil {
			return nil, fmt.Errorf("AUTH_MODE=oidc: %w", err)
		}
		return auth.NewOIDC(v, c.OIDC.StorageScopes), nil
	}
	if !loopback(c.Host) {
		f.Logger.Warn("AUTH_MODE=none: anyone who can reach this function may stage and read for any user; keep it on a private network, or set AUTH_MODE",
			"host", c.Host, "port", c.Port)
	}
	return auth.None{}, nil
}

// loopback reports whether host (HOST) listens on the loopback interface
// only; "" listens everywhere.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
