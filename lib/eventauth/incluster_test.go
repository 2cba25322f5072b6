package eventauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// apiServer stands for the in-cluster API server: TLS with its own
// certificate, answering with the Authorization it got.
func apiServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "https://elsewhere.example.org/steal", http.StatusFound)
			return
		}
		io.WriteString(w, r.Header.Get("Authorization"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &hits
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// podDir writes what the kubelet mounts: the cluster's CA and a token.
func podDir(t *testing.T, srv *httptest.Server, token string) string {
	t.Helper()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.TLS.Certificates[0].Certificate[0]})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestInClusterHTTPClient(t *testing.T) {
	api, _ := apiServer(t)
	dir := podDir(t, api, "token-1")
	c, err := InClusterHTTPClient(dir, api.URL)
	if err != nil {
		t.Fatal(err)
	}
	if status, body, err := get(c, api.URL+"/.well-known/openid-configuration"); err != nil || status != 200 || body != "Bearer token-1" {
		t.Fatalf("API server: %d %q %v", status, body, err)
	}

	// The kubelet renews the token: it is read again.
	c.Transport.(*bearerTransport).token.every = 0
	os.WriteFile(filepath.Join(dir, "token"), []byte("token-2"), 0o600)
	if _, body, _ := get(c, api.URL+"/openid/v1/jwks"); body != "Bearer token-2" {
		t.Fatalf("after renewal: %q", body)
	}
	// While it is being rewritten (empty), the last one is kept.
	os.WriteFile(filepath.Join(dir, "token"), nil, 0o600)
	if _, body, _ := get(c, api.URL+"/openid/v1/jwks"); body != "Bearer token-2" {
		t.Fatalf("during a rewrite: %q", body)
	}

	// The token goes to the API server only: not to another host, not in
	// clear, not after a redirect.
	other, otherHits := apiServer(t)
	if _, _, err := get(c, other.URL+"/"); err == nil || otherHits.Load() != 0 {
		t.Fatalf("request to another host: %v, %d hits", err, otherHits.Load())
	}
	if _, _, err := get(c, strings.Replace(api.URL, "https:", "http:", 1)+"/"); err == nil {
		t.Fatal("request in clear accepted")
	}
	if status, _, err := get(c, api.URL+"/redirect"); err != nil || status != http.StatusFound {
		t.Fatalf("redirect: %d %v, want the 302 itself", status, err)
	}

	// A server the cluster's CA did not certify is not trusted.
	impostor, hits := apiServer(t)
	os.WriteFile(filepath.Join(dir, "token"), []byte("token-3"), 0o600)
	c2, err := InClusterHTTPClient(dir, impostor.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := get(c2, impostor.URL+"/"); err == nil || !strings.Contains(err.Error(), "certificate") || hits.Load() != 0 {
		t.Fatalf("impostor: %v, %d requests reached it", err, hits.Load())
	}
}

func TestInClusterHTTPClientNeedsCredentials(t *testing.T) {
	api, _ := apiServer(t)
	dir := podDir(t, api, "t")
	for name, setup := range map[string]func(string){
		"no CA":       func(d string) { os.Remove(filepath.Join(d, "ca.crt")) },
		"CA not PEM":  func(d string) { os.WriteFile(filepath.Join(d, "ca.crt"), []byte("junk"), 0o644) },
		"no token":    func(d string) { os.Remove(filepath.Join(d, "token")) },
		"empty token": func(d string) { os.WriteFile(filepath.Join(d, "token"), []byte(" \n"), 0o600) },
	} {
		d := t.TempDir()
		for _, f := range []string{"ca.crt", "token"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			os.WriteFile(filepath.Join(d, f), b, 0o600)
		}
		setup(d)
		if _, err := InClusterHTTPClient(d, api.URL); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := InClusterHTTPClient(dir, "http://kubernetes.default.svc"); err == nil {
		t.Error("an http API server accepted")
	}
}
