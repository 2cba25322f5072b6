// Package function assembles what every function of the service starts
// with, so each functions/<name>/main.go only registers its methods and
// mounts its handlers: configuration, logger, storage, store, the staging
// pipeline, the start-up sweep, and the Knative server.
package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/config"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
	"github.com/ska-telescope/skao-staging-service/lib/server"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
	"github.com/ska-telescope/skao-staging-service/lib/store"
	"github.com/ska-telescope/skao-staging-service/lib/telemetry"
)

// Function is one running function's shared parts.
type Function struct {
	Name    string
	Config  *config.Config
	Logger  *slog.Logger
	Storage *storage.Storage
	Store   *store.Store
	Service *staging.Service
	Options methods.Options

	background []func(ctx context.Context)
	logs       *logging.Writer // the log store's writer; nil with LOG_TO_STORE=false
	telemetry  *telemetry.Telemetry
}

// OperationAlive reports whether an operation may still be running on some
// replica: it exists, is not finished, and its heartbeat is within the
// lease. A store error counts as alive, so nothing is removed in doubt.
func (f *Function) OperationAlive(ctx context.Context, id string) bool {
	op, err := f.Store.Get(ctx, id)
	if errors.Is(err, staging.ErrNotFound) {
		return false
	}
	return err != nil || f.Service.Alive(op)
}

// Go runs fn in the background while the function serves; its context ends
// when the function shuts down.
func (f *Function) Go(fn func(ctx context.Context)) { f.background = append(f.background, fn) }

// Setup reads the configuration and opens storage and store. Errors name
// what is wrong, for the start-up log.
func Setup(ctx context.Context, name string) (*Function, error) {
	cfg, err := config.FromEnv()
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	// Until the store is open, records go to stdout only.
	logger := slog.New(logging.New(os.Stdout, logging.Options{Level: cfg.LogLevel, Function: name}))
	slog.SetDefault(logger)
	tel, err := telemetry.Setup(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	st, err := storage.Open(cfg.SourceStoragePath, cfg.TargetStoragePath)
	if err != nil {
		return nil, err
	}
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	var logs *logging.Writer
	if cfg.LogToStore {
		logs = logging.NewWriter(db, logging.WriterOptions{Stdout: logger})
		logger = slog.New(logging.New(os.Stdout, logging.Options{Level: cfg.LogLevel, Function: name, Store: logs}))
		slog.SetDefault(logger)
	}
	f := &Function{Name: name, Config: cfg, Logger: logger, Storage: st, Store: db,
		Options: methods.OptionsFrom(cfg), logs: logs, telemetry: tel}
	f.Service = &staging.Service{Store: telemetry.TraceStore(db, dbSystem(db.Dialect())), Allowed: cfg.Allowed,
		Logger: logger, Lease: cfg.OperationLease}
	f.Service.Cleanup = methods.TempCleaner(st, logger)
	return f, nil
}

// Serve runs handler on $PORT until SIGTERM, sweeping leftovers of dead
// replicas in the background, then drains and closes everything.
func (f *Function) Serve(handler http.Handler) error {
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	go methods.Janitor(sweepCtx, f.Service, f.Logger)
	go f.pruneLogs(sweepCtx)
	for _, run := range f.background {
		go run(sweepCtx)
	}
	err := server.Run(server.Options{
		Host:        f.Config.Host,
		Port:        f.Config.Port,
		ReadTimeout: f.Config.ReadTimeout,
		Handler:     telemetry.Handler(handler),
		Logger:      f.Logger,
		Ready:       f.Store.Ping,
		Shutdown: func(ctx context.Context) {
			stopSweep()
			f.Service.Wait()
			if f.logs != nil {
				if err := f.logs.Close(ctx); err != nil {
					f.Logger.Warn("flush log records", "error", err)
				}
			}
			if err := f.telemetry.Shutdown(ctx); err != nil {
				f.Logger.Warn("flush telemetry", "error", err)
			}
			f.Store.Close()
			f.Storage.Close()
		},
	})
	return err
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

// Main runs a function built by build and exits non-zero on failure.
func Main(name string, build func(f *Function) (http.Handler, error)) {
	start := time.Now()
	f, err := Setup(context.Background(), name)
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
