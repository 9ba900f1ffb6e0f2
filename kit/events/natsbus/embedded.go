package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultReadyTimeout bounds how long StartEmbedded waits for the server
// to accept connections.
const DefaultReadyTimeout = 10 * time.Second

// Embedded is a NATS server with JetStream running inside the process,
// listening on 127.0.0.1 only and keeping its streams in files. It is safe
// for concurrent use; Shutdown stops it.
type Embedded struct {
	srv  *server.Server
	once sync.Once
}

type embeddedConfig struct {
	port     int
	logger   *slog.Logger
	maxStore int64
	ready    time.Duration
}

// EmbeddedOption configures StartEmbedded.
type EmbeddedOption func(*embeddedConfig)

// WithPort has the server listen on the given loopback port instead of a
// free one (for example to restart it where clients expect it).
func WithPort(port int) EmbeddedOption {
	return func(c *embeddedConfig) { c.port = port }
}

// WithServerLogger sends the server's notices, warnings and errors to l.
// Without it the server logs nothing.
func WithServerLogger(l *slog.Logger) EmbeddedOption {
	return func(c *embeddedConfig) { c.logger = l }
}

// WithMaxStorage bounds the bytes JetStream may keep on disk; by default
// the server takes a share of the free disk space.
func WithMaxStorage(bytes int64) EmbeddedOption {
	return func(c *embeddedConfig) { c.maxStore = bytes }
}

// WithReadyTimeout bounds the wait for the server to accept connections
// (DefaultReadyTimeout).
func WithReadyTimeout(d time.Duration) EmbeddedOption {
	return func(c *embeddedConfig) { c.ready = d }
}

// StartEmbedded starts a NATS server with JetStream storing its files
// under dir and returns once it accepts connections. Starting it again on
// the same dir finds the streams, consumers and messages it had.
func StartEmbedded(dir string, opts ...EmbeddedOption) (*Embedded, error) {
	if dir == "" {
		return nil, errors.New("natsbus: embedded server needs a storage directory")
	}
	cfg := embeddedConfig{port: server.RANDOM_PORT, ready: DefaultReadyTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.port == 0 {
		cfg.port = server.RANDOM_PORT
	}
	if cfg.port < server.RANDOM_PORT || cfg.port > 65535 {
		return nil, fmt.Errorf("natsbus: embedded server port %d out of range", cfg.port)
	}
	sopts := &server.Options{
		ServerName:        "switchboard",
		Host:              "127.0.0.1",
		Port:              cfg.port,
		JetStream:         true,
		StoreDir:          dir,
		JetStreamMaxStore: cfg.maxStore,
		NoSigs:            true,
		NoLog:             cfg.logger == nil,
		MaxPayload:        1 << 20,
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("natsbus: embedded server: %w", err)
	}
	if cfg.logger != nil {
		srv.SetLoggerV2(serverLogger{l: cfg.logger}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(cfg.ready) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("natsbus: embedded server on port %d not ready within %v", cfg.port, cfg.ready)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("natsbus: embedded server started without JetStream")
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is the URL clients connect to, nats://127.0.0.1:<port>.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server, flushing its streams to disk, and returns
// once it has stopped. It is safe to call more than once.
func (e *Embedded) Shutdown() {
	e.once.Do(func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	})
}

// serverLogger adapts slog to the server's logger.
type serverLogger struct{ l *slog.Logger }

func (s serverLogger) log(level slog.Level, format string, v []any) {
	if s.l.Enabled(context.Background(), level) {
		s.l.LogAttrs(context.Background(), level, fmt.Sprintf(format, v...), slog.String("component", "nats-server"))
	}
}

func (s serverLogger) Noticef(format string, v ...any) { s.log(slog.LevelInfo, format, v) }
func (s serverLogger) Warnf(format string, v ...any)   { s.log(slog.LevelWarn, format, v) }
func (s serverLogger) Fatalf(format string, v ...any)  { s.log(slog.LevelError, format, v) }
func (s serverLogger) Errorf(format string, v ...any)  { s.log(slog.LevelError, format, v) }
func (s serverLogger) Debugf(format string, v ...any)  { s.log(slog.LevelDebug, format, v) }
func (s serverLogger) Tracef(format string, v ...any)  { s.log(slog.LevelDebug-4, format, v) }
