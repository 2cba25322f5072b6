// Package server runs a function's HTTP handler the way Knative's runtime
// contract expects: it listens on $PORT, answers /healthz and /readyz,
// fails readiness and drains in-flight requests on SIGTERM, then runs the
// function's own shutdown (waiting for async work, closing the store). It
// refuses browsers' cross-origin state-changing requests for every
// function.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"knative.dev/pkg/network/handlers"
	"knative.dev/pkg/signals"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
)

// Options describe one function's server.
type Options struct {
	Host    string // "" listens on all interfaces, as a pod must
	Port    int
	Handler http.Handler
	// Ready checks the function's dependencies (the database) for /readyz.
	Ready func(ctx context.Context) error
	// Stopping, when set, is called once as the server stops taking
	// requests after SIGTERM, before it waits for those in flight: it ends
	// long-lived responses (log streams), which draining would otherwise
	// wait for. Other requests in flight finish as ever.
	Stopping func()
	// Shutdown runs after in-flight requests have finished.
	Shutdown func(ctx context.Context)
	Logger   *slog.Logger
	// DrainTimeout bounds how long in-flight requests may take after SIGTERM
	// (Knative's revision timeout is the natural value).
	DrainTimeout time.Duration
	// ReadTimeout bounds how long a client may take to send a request,
	// headers and body, so a trickled one does not hold a worker (default 2m).
	ReadTimeout time.Duration
	// Listening, when set, is called with the bound address once the server
	// accepts connections.
	Listening func(addr net.Addr)
}

// Run serves until SIGTERM or SIGINT, then drains. It returns when done.
func Run(o Options) error { return RunContext(signals.NewContext(), o) }

// RunContext is Run with the stop signal given as a context.
func RunContext(ctx context.Context, o Options) error {
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 5 * time.Minute
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 2 * time.Minute // bodies are small (1 MiB at most)
	}
	var draining atomic.Bool
	ready := func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			httpx.JSON(w, http.StatusServiceUnavailable, httpx.Detail{Detail: "shutting down"})
			return
		}
		if o.Ready != nil {
			cctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := o.Ready(cctx); err != nil {
				// The cause names internals (addresses, drivers): logged, not shown.
				o.Logger.Debug("not ready", "error", err)
				httpx.JSON(w, http.StatusServiceUnavailable, httpx.Detail{Detail: "not ready: the database does not answer"})
				return
			}
		}
		httpx.JSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", ready)
	mux.Handle("/", crossOriginProtection(o.Handler))
	// Knative's drainer answers the kubelet's probes itself, whatever their
	// path: liveness (/healthz) must stay up while a dependency is away, or
	// a database blip restarts every pod; readiness follows it.
	probe := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			httpx.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
			return
		}
		ready(w, r)
	}
	drainer := &handlers.Drainer{Inner: mux, HealthCheck: probe, QuietPeriod: 200 * time.Millisecond}

	var handler http.Handler = noSniff(drainer)
	if IsLoopback(o.Host) {
		handler = LoopbackOnly(handler) // make run: each function's own port too, not only the ingress's
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: min(10*time.Second, o.ReadTimeout),
		ReadTimeout:       o.ReadTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if o.Stopping != nil {
		srv.RegisterOnShutdown(o.Stopping)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)))
	if err != nil {
		return fmt.Errorf("listen on port %d: %w", o.Port, err)
	}
	if o.Listening != nil {
		o.Listening(ln.Addr())
	}
	o.Logger.Info("listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	o.Logger.Info("draining")
	draining.Store(true)
	// Drain waits for a quiet period without requests; under steady load
	// that may never come, so it is bounded and Shutdown does the rest.
	drained := make(chan struct{})
	go func() { drainer.Drain(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.DrainTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if o.Shutdown != nil {
		o.Shutdown(sctx)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("drain: %w", err)
	}
	o.Logger.Info("stopped")
	return nil
}

// noSniff marks every answer nosniff, error answers, log streams and
// downloads included: a browser then takes JSON, text or a downloaded file
// for the type it is sent as, and never sniffs markup in it (a file name, a
// log line, a file's content) to render it as a page of the service's
// origin.
func noSniff(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// crossOriginProtection refuses a browser's cross-origin state-changing
// request (POST and the like, judged by Sec-Fetch-Site and Origin), so a
// page on another site cannot make a user's browser stage or create files;
// same-origin requests (the service's own page) and clients that are not
// browsers (curl, brokers) pass.
func crossOriginProtection(h http.Handler) http.Handler {
	c := http.NewCrossOriginProtection()
	c.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.JSON(w, http.StatusForbidden, httpx.Detail{Detail: "Cross-origin request refused: use the service's own page, or a client that is not a browser"})
	}))
	return c.Handler(h)
}

// IsLoopback says whether host names this machine only: localhost (and
// names under it, which browsers resolve to loopback themselves) or a
// loopback address.
func IsLoopback(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// LoopbackOnly answers only requests whose Host names this machine, as
// every client of a loopback listener does. A page of another site whose
// name its owner points at 127.0.0.1 (DNS rebinding) is same-origin to the
// browser, and with AUTH_MODE=none could otherwise read the storage and
// the history and create files through the user's browser.
func LoopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if name, _, err := net.SplitHostPort(host); err == nil {
			host = name
		}
		if !IsLoopback(host) {
			http.Error(w, fmt.Sprintf("Host %q is not served here: this service listens on loopback only", r.Host), http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}
