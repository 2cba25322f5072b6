// Package function assembles what every function of the service starts
// with, so each functions/<name>/main.go only registers its methods and
// mounts its handlers: configuration, logger, storage, store, the staging
// pipeline, the start-up sweep, and the Knative server.
package function

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/config"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
	"github.com/ska-telescope/skao-staging-service/lib/server"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
	"github.com/ska-telescope/skao-staging-service/lib/store"
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
	logger := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.LogLevel})).With("function", name)
	slog.SetDefault(logger)
	st, err := storage.Open(cfg.SourceStoragePath, cfg.TargetStoragePath)
	if err != nil {
		return nil, err
	}
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	f := &Function{Name: name, Config: cfg, Logger: logger, Storage: st, Store: db,
		Options: methods.OptionsFrom(cfg)}
	f.Service = &staging.Service{Store: db, Allowed: cfg.Allowed, Logger: logger, Lease: cfg.OperationLease}
	return f, nil
}

// Serve runs handler on $PORT until SIGTERM, sweeping leftovers of dead
// replicas in the background, then drains and closes everything.
func (f *Function) Serve(handler http.Handler) error {
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	go methods.Janitor(sweepCtx, f.Service, f.Storage, f.Logger)
	for _, run := range f.background {
		go run(sweepCtx)
	}
	err := server.Run(server.Options{
		Host:    f.Config.Host,
		Port:    f.Config.Port,
		Handler: handler,
		Logger:  f.Logger,
		Ready:   f.Store.Ping,
		Shutdown: func(ctx context.Context) {
			stopSweep()
			f.Service.Wait()
			f.Store.Close()
			f.Storage.Close()
		},
	})
	return err
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
