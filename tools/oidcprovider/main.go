// Command oidcprovider is a small OpenID provider for the tests, built on the
// op package of github.com/zitadel/oidc/v3 (an OpenID-certified
// implementation): discovery, JWKS, the authorization code flow (with PKCE
// for public clients) through its own login page, client credentials,
// userinfo and introspection, all with RS256 JWT access tokens shaped like
// those of SKA IAM / INDIGO IAM.
//
// It is a test tool and nothing else: it listens on loopback, keeps
// passwords in plain text, and has unauthenticated controls under
// /testing/ that a test uses to rotate keys and to set the provider's clock:
//
//	POST /testing/rotate[?retire=1]  new signing key (retire: drop the old ones); answers {"kid": ...}
//	POST /testing/clock?offset=D     tokens are issued as if the time were now+D (e.g. -2h: expired)
//	GET  /testing/counts             requests served so far, by path
//
// Usage: oidcprovider -config FILE. The file is JSON (see Config); when the
// provider is up it prints one line, {"issuer": "http://127.0.0.1:PORT"}.
//
// It is a module of its own so that its dependencies stay out of the
// service's go.mod.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

func main() {
	configPath := flag.String("config", "", "JSON configuration file")
	flag.Parse()
	if err := run(*configPath); err != nil {
		log.Fatalf("oidcprovider: %v", err)
	}
}

func run(configPath string) error {
	if configPath == "" {
		return fmt.Errorf("-config is required")
	}
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(cfg.Addr); err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("addr %q: this test provider listens on a loopback address only", cfg.Addr)
	}
	s, err := newStorage(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	issuer := "http://" + ln.Addr().String()

	var opCfg op.Config
	if _, err := rand.Read(opCfg.CryptoKey[:]); err != nil {
		return err
	}
	opCfg.CodeMethodS256 = true
	opCfg.AuthMethodPost = true
	opCfg.SupportedUILocales = []language.Tag{language.English}
	provider, err := op.NewProvider(&opCfg, s, op.StaticIssuer(issuer), op.WithAllowInsecure())
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}

	counts := &counter{n: map[string]int{}}
	mux := http.NewServeMux()
	mux.Handle("/login", op.NewIssuerInterceptor(provider.IssuerFromRequest).Handler(
		&login{s: s, callback: op.AuthCallbackURL(provider)}))
	mux.HandleFunc("POST /testing/rotate", func(w http.ResponseWriter, r *http.Request) {
		kid, err := s.rotate(r.URL.Query().Get("retire") != "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]string{"kid": kid})
	})
	mux.HandleFunc("POST /testing/clock", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("offset"))
		if err != nil {
			http.Error(w, "offset: "+err.Error(), http.StatusBadRequest)
			return
		}
		s.setClock(d)
		writeJSON(w, map[string]string{"offset": d.String()})
	})
	mux.HandleFunc("GET /testing/counts", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, counts.snapshot())
	})
	mux.Handle("/", provider)

	srv := &http.Server{Handler: counts.wrap(mux), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	line, _ := json.Marshal(map[string]string{"issuer": issuer})
	fmt.Println(string(line))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-done:
		return err
	case <-sig:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// counter counts requests by path, so a test can see how often a verifier
// fetched the keys or asked userinfo.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/testing/") {
			c.mu.Lock()
			c.n[r.URL.Path]++
			c.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}
