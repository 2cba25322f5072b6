package eventauth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ServiceAccountDir is where Kubernetes mounts a pod's service-account
// credentials.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// tokenReread is how often the service-account token is read again: the
// kubelet renews projected tokens before they expire (client-go also reads
// it again every minute).
const tokenReread = time.Minute

// InClusterHTTPClient returns a client for the in-cluster API server at
// apiServer (e.g. https://kubernetes.default.svc): it trusts the cluster's
// CA (dir/ca.crt) and nothing else, and sends the pod's service-account
// token (dir/token, read again every minute) to that host and no other.
// Reading the issuer's discovery document and keys needs it: the API
// server serves them to authenticated service accounts.
func InClusterHTTPClient(dir, apiServer string) (*http.Client, error) {
	u, err := url.Parse(apiServer)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("API server %q: want an https URL", apiServer)
	}
	pem, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("the cluster's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("the cluster's CA: no certificate in %s", filepath.Join(dir, "ca.crt"))
	}
	src := &tokenFile{path: filepath.Join(dir, "token"), every: tokenReread}
	if _, err := src.get(); err != nil {
		return nil, err
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &bearerTransport{host: u.Host, token: src, next: base},
		// A redirect could lead elsewhere with the token: none is followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// bearerTransport adds the token to requests for one host.
type bearerTransport struct {
	host  string
	token *tokenFile
	next  http.RoundTripper
}

func (t *bearerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host || req.URL.Scheme != "https" {
		return nil, fmt.Errorf("eventauth: the in-cluster client only talks to https://%s, not %s://%s", t.host, req.URL.Scheme, req.URL.Host)
	}
	tok, err := t.token.get()
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+tok)
	return t.next.RoundTrip(req)
}

// tokenFile is the pod's token, read again once it is older than every.
type tokenFile struct {
	path  string
	every time.Duration

	mu   sync.Mutex
	tok  string
	read time.Time
}

func (f *tokenFile) get() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tok != "" && time.Since(f.read) < f.every {
		return f.tok, nil
	}
	b, err := os.ReadFile(f.path)
	if err == nil && strings.TrimSpace(string(b)) == "" {
		err = errors.New("empty")
	}
	if err != nil {
		if f.tok != "" {
			return f.tok, nil // keep the last one: the kubelet is rewriting it
		}
		return "", fmt.Errorf("the service-account token %s: %w", f.path, err)
	}
	f.tok, f.read = strings.TrimSpace(string(b)), time.Now()
	return f.tok, nil
}
