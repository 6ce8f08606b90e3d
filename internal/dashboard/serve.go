package dashboard

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Config is where and how the dashboard listens (config keys dashboard_*).
type Config struct {
	// Addr is host:port; empty disables the dashboard.
	Addr string
	// TLSCert and TLSKey are PEM files; both or neither.
	TLSCert, TLSKey string
	// AllowHTTP lets a non-loopback Addr serve plain HTTP. Without TLS the
	// token and the page cross the network in clear, so it is refused
	// unless the operator says the network is trusted.
	AllowHTTP bool
}

// Validate checks the keys; errors name them.
func (c Config) Validate() error {
	if c.Addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("dashboard_addr: must be host:port like 127.0.0.1:7461: %v", err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("dashboard_tls_cert and dashboard_tls_key: set both or neither")
	}
	if c.TLSCert == "" && !c.AllowHTTP && !isLoopbackHost(host) {
		return fmt.Errorf("dashboard_addr %s is reachable from other machines: set dashboard_tls_cert and dashboard_tls_key "+
			"(the token would otherwise cross the network in clear), or dashboard_allow_http: true on a network you trust", c.Addr)
	}
	return nil
}

// Server is a running dashboard.
type Server struct {
	srv  *http.Server
	addr net.Addr
	tls  bool
}

// Listen validates cfg, binds its address and serves h until Close.
func Listen(cfg Config, h http.Handler) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("dashboard_tls_cert/dashboard_tls_key: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dashboard_addr %s: %w (set dashboard_addr to another port, or \"\" to turn the dashboard off)", cfg.Addr, err)
	}
	s := &Server{srv: srv, addr: ln.Addr(), tls: srv.TLSConfig != nil}
	if s.tls {
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	go srv.Serve(ln)
	return s, nil
}

// URL is where the dashboard answers.
func (s *Server) URL() string {
	scheme := "http"
	if s.tls {
		scheme = "https"
	}
	return scheme + "://" + s.addr.String() + "/"
}

// Close stops serving.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
