package webui

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func startServer(t *testing.T, cfg ServerConfig, h http.Handler) *Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := NewServer(cfg, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
}

func get(t *testing.T, c *http.Client, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return -1
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// The bearer token guards the page and /metrics, not the probes.
func TestServerBearerToken(t *testing.T) {
	s := startServer(t, ServerConfig{BearerToken: "t0ken"}, okHandler())
	base := "http://" + s.Addr().String()
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/", "", 401}, {"/metrics", "", 401}, {"/metrics", "wrong", 401}, {"/", "t0ken", 200}, {"/metrics", "t0ken", 200},
		{"/healthz", "", 200}, {"/readyz", "", 200}, {"/livez", "", 200},
	} {
		if got := get(t, http.DefaultClient, base+tc.path, tc.token); got != tc.want {
			t.Errorf("GET %s with token %q: %d, want %d", tc.path, tc.token, got, tc.want)
		}
	}
}

// With a client CA, the page needs a client certificate it signed; the
// probes do not.
func TestServerClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, srvCert, srvKey, cliCert, cliKey := testPKI(t, dir)
	s := startServer(t, ServerConfig{TLSCert: srvCert, TLSKey: srvKey, ClientCA: ca}, okHandler())
	pool := x509.NewCertPool()
	raw, _ := os.ReadFile(ca)
	pool.AppendCertsFromPEM(raw)
	pair, err := tls.LoadX509KeyPair(cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	base := "https://" + s.Addr().String()
	if got := get(t, anon, base+"/", ""); got != 401 {
		t.Errorf("page without a client certificate: %d", got)
	}
	if got := get(t, anon, base+"/healthz", ""); got != 200 {
		t.Errorf("/healthz without a client certificate: %d", got)
	}
	if got := get(t, withCert, base+"/metrics", ""); got != 200 {
		t.Errorf("/metrics with a client certificate: %d", got)
	}
	if _, err := NewServer(ServerConfig{Listen: "127.0.0.1:0", ClientCA: ca}, okHandler(), nil); err == nil {
		t.Error("a client CA without a server certificate was accepted")
	}
}

// Connections beyond MaxConns are not accepted (they wait in the kernel's
// queue); idle keep-alive connections are closed after IdleTimeout, and at
// once when most of the slots are taken.
func TestServerBoundsAndClosesIdleConnections(t *testing.T) {
	s := startServer(t, ServerConfig{MaxConns: 8, IdleTimeout: 300 * time.Millisecond}, okHandler())
	addr := s.Addr().String()
	// A request on each of 8 connections, kept open.
	var conns []net.Conn
	for range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	// More connections than slots: the server never holds more than 8.
	var extra []net.Conn
	for range 20 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			extra = append(extra, c)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := s.Conns(); n > 8 {
		t.Errorf("%d connections open, bound is 8", n)
	}
	// Every held connection is closed by the server (keep-alive off under
	// pressure, or the idle timeout): reads end.
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range conns {
		_ = c.SetReadDeadline(deadline)
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("a held connection was not closed by the server: %v", err)
		}
		c.Close()
	}
	for _, c := range extra {
		c.Close()
	}
	waitUntil(t, 5*time.Second, func() bool { return s.Conns() == 0 })
	// And the server answers again.
	if got := get(t, http.DefaultClient, "http://"+addr+"/healthz", ""); got != 200 {
		t.Fatalf("after the flood: %d", got)
	}
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	var storage, source error
	h := &Health{}
	h.Check("storage", func(context.Context) error { return storage })
	h.Ready("hubble", func(context.Context) error { return source })
	h.Info(func() map[string]any { return map[string]any{"flows_read": 3} })
	s := startServer(t, ServerConfig{}, func() http.Handler {
		mux := http.NewServeMux()
		mux.Handle("/healthz", h.Healthz())
		mux.Handle("/readyz", h.Readyz())
		mux.Handle("/livez", h.Livez())
		return mux
	}())
	base := "http://" + s.Addr().String()
	body := func(path string) (int, map[string]any) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if c, m := body("/healthz"); c != 200 || m["status"] != "ok" || m["flows_read"] != 3.0 {
		t.Errorf("healthy: %d %v", c, m)
	}
	source = errors.New("no stream")
	if c, _ := body("/healthz"); c != 200 {
		t.Errorf("a source down is not a health failure: %d", c)
	}
	if c, m := body("/readyz"); c != 503 || m["failures"].(map[string]any)["hubble"] != "no stream" {
		t.Errorf("source down: /readyz %d %v", c, m)
	}
	storage = errors.New("spool append failing")
	if c, m := body("/healthz"); c != 503 || m["status"] != "failing" || m["failures"].(map[string]any)["storage"] != "spool append failing" {
		t.Errorf("storage failing: /healthz %d %v", c, m)
	}
	if c, _ := body("/livez"); c != 200 {
		t.Errorf("storage failing: /livez %d; a restart does not cure it", c)
	}
}

func TestExposed(t *testing.T) {
	for listen, want := range map[string]bool{"127.0.0.1:1": false, "[::1]:1": false, "localhost:1": false, "0.0.0.0:1": true, ":1": true, "10.1.2.3:1": true} {
		s := &Server{cfg: ServerConfig{Listen: listen}}
		if got, _ := s.Exposed(); got != want {
			t.Errorf("%s exposed: %v", listen, got)
		}
	}
}

// testPKI makes a CA, a server certificate for 127.0.0.1 and a client one.
func testPKI(t *testing.T, dir string) (ca, srvCert, srvKey, cliCert, cliKey string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caX, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caX, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kder)
	}
	ca = write("ca.crt", "CERTIFICATE", caDER)
	srvCert, srvKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return
}

// TestNewServerDoesNoIO: NewServer neither listens nor reads the
// certificates (a port in use and a missing certificate pass it); Listen
// does, and reports both; Serve returns Listen's error.
func TestNewServerDoesNoIO(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, err := NewServer(ServerConfig{Listen: busy.Addr().String()}, okHandler(), nil)
	if err != nil {
		t.Fatalf("NewServer on a busy port: %v (it should not listen yet)", err)
	}
	if s.Listen() == nil {
		t.Error("Listen on a busy port succeeded")
	}
	if s.Serve(context.Background()) == nil {
		t.Error("Serve without a listener returned nil")
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	s, err = NewServer(ServerConfig{Listen: "127.0.0.1:0", TLSCert: missing, TLSKey: missing}, okHandler(), nil)
	if err != nil {
		t.Fatalf("NewServer read the certificate: %v", err)
	}
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "TLS certificate") {
		t.Errorf("Listen with a missing certificate: %v", err)
	}
}
