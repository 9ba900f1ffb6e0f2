package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd"
)

// Config configures an embedded etcd server.
type Config struct {
	// Dir holds the server's data; restarting on the same Dir keeps every
	// key and lease.
	Dir string
	// Host is the address the server listens on (default 127.0.0.1).
	Host string
	// ClientPort and PeerPort are its ports; 0 picks a free one.
	ClientPort, PeerPort int
	// StartTimeout bounds the wait for the server to be ready (default
	// 30s).
	StartTimeout time.Duration
	// Logger receives etcd's logs; its informational messages at debug.
	// Nil discards them.
	Logger *slog.Logger
}

// Server is a running embedded etcd.
type Server struct {
	e        *embed.Etcd
	endpoint string
	cfg      Config
	once     sync.Once
}

// Start starts the server and waits until it serves or ctx or the start
// timeout ends.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedded etcd: no data directory")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var err error
	if cfg.ClientPort == 0 {
		if cfg.ClientPort, err = freePort(cfg.Host); err != nil {
			return nil, err
		}
	}
	if cfg.PeerPort == 0 {
		if cfg.PeerPort, err = freePort(cfg.Host); err != nil {
			return nil, err
		}
	}
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.ClientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.PeerPort))}
	ec := embed.NewConfig()
	ec.Name = "switchboard"
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(etcd.ZapLogger(logger.With(slog.String("component", "etcd"))))
	// Small and quick: this server holds registrations, not data.
	ec.QuotaBackendBytes = 64 << 20
	ec.SnapshotCount = 10_000
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	t := time.NewTimer(cfg.StartTimeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-t.C:
		e.Close()
		return nil, fmt.Errorf("embedded etcd: not ready after %s", cfg.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", context.Cause(ctx))
	}
	return &Server{e: e, endpoint: clientURL.String(), cfg: cfg}, nil
}

// Endpoint is the URL clients connect to, e.g. "http://127.0.0.1:2379".
func (s *Server) Endpoint() string { return s.endpoint }

// Config returns the configuration the server runs with, ports filled in:
// Start(ctx, s.Config()) after Close restarts it on the same data and
// ports.
func (s *Server) Config() Config { return s.cfg }

// Close stops the server, closing client connections. It is safe to call
// more than once.
func (s *Server) Close() { s.once.Do(s.e.Close) }

// freePort returns a port free on host at the time of the call.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("embedded etcd: finding a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
