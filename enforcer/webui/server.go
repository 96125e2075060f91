package webui

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// ServerConfig configures the HTTP server serve runs on its listen
// address: the page, /metrics, /healthz, /readyz and /livez.
type ServerConfig struct {
	// Listen is the TCP address (default 127.0.0.1:9965).
	Listen string
	// MaxConns bounds the connections open at once (default 256; a
	// negative value: no bound). Connections beyond it wait in the
	// kernel's accept queue and hold no file descriptor of the process, so
	// a flood of them cannot starve ingest of descriptors.
	MaxConns int
	// IdleTimeout closes a keep-alive connection idle this long (default
	// 30s); a connection that sends no request header within
	// ReadHeaderTimeout (default 10s) is closed too. While more than three
	// quarters of MaxConns are open, idle connections are closed at once.
	IdleTimeout       time.Duration
	ReadHeaderTimeout time.Duration
	// TLSCert and TLSKey serve HTTPS. With ClientCA, the page and /metrics
	// require a client certificate signed by it (mTLS); /healthz and
	// /readyz do not, so that the kubelet's probes work.
	TLSCert, TLSKey, ClientCA string
	// BearerToken, when set, is required as "Authorization: Bearer <token>"
	// for the page and /metrics (not for /healthz and /readyz).
	BearerToken string
}

// Server is the hardened HTTP server.
type Server struct {
	cfg ServerConfig
	lis net.Listener
	srv *http.Server
	log *slog.Logger
	tls *tls.Config

	listenOnce sync.Once
	listenErr  error

	mu        sync.Mutex
	conns     int
	keepAlive bool
}

// Unauthenticated are the paths served without the bearer token or the
// client certificate: the probes.
var Unauthenticated = []string{"/healthz", "/readyz", "/livez"}

// NewServer validates cfg; it does no I/O. Listen loads the certificates
// and listens; Serve serves.
func NewServer(cfg ServerConfig, h http.Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:9965"
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 256
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("the TLS certificate and key go together")
	}
	if cfg.ClientCA != "" && cfg.TLSCert == "" {
		return nil, errors.New("a client CA (mTLS) needs the server's TLS certificate and key")
	}
	s := &Server{cfg: cfg, log: log, keepAlive: true}
	s.srv = &http.Server{
		Handler:           s.guard(h),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadHeaderTimeout + 20*time.Second,
		// The page may take its diff budget (10 s) and more to build.
		WriteTimeout:   2 * time.Minute,
		IdleTimeout:    cfg.IdleTimeout,
		MaxHeaderBytes: 64 << 10,
		ConnState:      s.connState,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Listen loads the certificates and opens the listen address, once; Serve
// calls it when it was not called. Call it first to meet its error, or to
// know Addr, before serving.
func (s *Server) Listen() error {
	s.listenOnce.Do(func() { s.listenErr = s.listen() })
	return s.listenErr
}

func (s *Server) listen() error {
	cfg := s.cfg
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if cfg.ClientCA != "" {
			pem, err := os.ReadFile(cfg.ClientCA)
			if err != nil {
				return fmt.Errorf("client CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("client CA %s: no PEM certificate in it", cfg.ClientCA)
			}
			// Verified when given; required by guard for all but the probes.
			s.tls.ClientCAs, s.tls.ClientAuth = pool, tls.VerifyClientCertIfGiven
		}
		s.srv.TLSConfig = s.tls
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	if cfg.MaxConns > 0 {
		lis = netutil.LimitListener(lis, cfg.MaxConns)
	}
	s.lis = lis
	return nil
}

// Addr is the address listened on (Listen is called first if it was
// not); nil when listening failed.
func (s *Server) Addr() net.Addr {
	if s.Listen() != nil {
		return nil
	}
	return s.lis.Addr()
}

// Exposed reports whether the listen address is reachable from other
// machines (not loopback), and how it is protected; serve warns about it.
func (s *Server) Exposed() (exposed bool, protection string) {
	host, _, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil {
		return true, ""
	}
	ip := net.ParseIP(host)
	exposed = host != "localhost" && (ip == nil || !ip.IsLoopback())
	var p []string
	if s.cfg.BearerToken != "" {
		p = append(p, "bearer token")
	}
	if s.cfg.ClientCA != "" {
		p = append(p, "client certificates")
	}
	return exposed, strings.Join(p, " and ")
}

// connState counts open connections; above three quarters of MaxConns it
// turns keep-alive off, which closes the idle connections and lets each
// one go after its request, until the count is down to half.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	if s.cfg.MaxConns <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateNew:
		s.conns++
	case http.StateClosed, http.StateHijacked:
		s.conns--
	default:
		return
	}
	if s.keepAlive && s.conns > s.cfg.MaxConns*3/4 {
		s.keepAlive = false
		go s.srv.SetKeepAlivesEnabled(false)
		s.log.Warn("many connections to the page's server: closing idle ones", "open", s.conns, "max", s.cfg.MaxConns)
	} else if !s.keepAlive && s.conns <= s.cfg.MaxConns/2 {
		s.keepAlive = true
		go s.srv.SetKeepAlivesEnabled(true)
	}
}

// Conns is the number of connections open now.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// guard requires the bearer token and the client certificate, when
// configured, on every path but the probes.
func (s *Server) guard(h http.Handler) http.Handler {
	if s.cfg.BearerToken == "" && s.cfg.ClientCA == "" {
		return h
	}
	want := []byte("Bearer " + s.cfg.BearerToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range Unauthenticated {
			if r.URL.Path == p {
				h.ServeHTTP(w, r)
				return
			}
		}
		if s.cfg.ClientCA != "" && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			http.Error(w, "a client certificate is required", http.StatusUnauthorized)
			return
		}
		if s.cfg.BearerToken != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="flowwarden"`)
			http.Error(w, "a bearer token is required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Serve serves until ctx ends, then shuts down (giving requests in flight
// 5 s).
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		var err error
		if s.tls != nil {
			err = s.srv.ServeTLS(s.lis, "", "")
		} else {
			err = s.srv.Serve(s.lis)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
