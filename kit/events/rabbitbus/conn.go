package rabbitbus

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// errConnecting is returned while a connection is being re-established.
var errConnecting = errors.New("rabbitbus: reconnecting to the broker")

// connector keeps one AMQP connection open: when the broker or the
// network drops it, it dials again with a doubling, jittered backoff until
// it succeeds or close is called.
type connector struct {
	role string
	opts *Options
	log  *slog.Logger

	mu    sync.Mutex
	conn  *amqp.Connection // nil while reconnecting
	ready chan struct{}    // closed while conn is set

	blocked atomic.Bool   // the broker stopped reading from conn (resource alarm)
	done    chan struct{} // closed by close
	stopped chan struct{} // closed when run returns
}

// dial opens a connection for role, bounded by DialTimeout.
func dial(opts *Options, role string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(opts.Name + "/" + role)
	cfg := amqp.Config{
		Heartbeat:  opts.Heartbeat,
		Properties: props,
		// Bounds the TCP connect and, as a deadline the library clears once
		// the connection is open, the TLS and AMQP handshakes.
		Dial: amqp.DefaultDial(opts.DialTimeout),
	}
	if opts.TLS != nil {
		cfg.TLSClientConfig = opts.TLS.Clone()
	}
	return amqp.DialConfig(opts.URL, cfg)
}

// newConnector watches first and replaces it whenever it is lost.
func newConnector(first *amqp.Connection, role string, opts *Options) *connector {
	c := &connector{
		role:    role,
		opts:    opts,
		log:     opts.Logger.With(slog.String("connection", role)),
		conn:    first,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	close(c.ready)
	c.watchBlocked(first)
	go c.run(first)
	return c
}

// get returns the current connection, waiting while it is re-established.
// The connection may be lost at any moment after; callers treat its
// errors as transient.
func (c *connector) get(ctx context.Context) (*amqp.Connection, error) {
	select {
	case <-c.done:
		return nil, ErrClosed
	default:
	}
	c.mu.Lock()
	conn, ready := c.conn, c.ready
	c.mu.Unlock()
	if conn != nil {
		return conn, nil
	}
	select {
	case <-ready:
		c.mu.Lock()
		conn = c.conn
		c.mu.Unlock()
		if conn == nil {
			return nil, errConnecting
		}
		return conn, nil
	case <-c.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, errors.Join(errConnecting, context.Cause(ctx))
	}
}

func (c *connector) run(conn *amqp.Connection) {
	defer close(c.stopped)
	for {
		lost := conn.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case <-c.done:
			_ = conn.CloseDeadline(time.Now().Add(c.opts.OpTimeout))
			return
		case err := <-lost:
			if err != nil {
				c.log.LogAttrs(context.Background(), slog.LevelWarn, "rabbitbus: connection lost",
					slog.Int("code", err.Code), slog.String("reason", err.Reason))
			} else {
				c.log.LogAttrs(context.Background(), slog.LevelWarn, "rabbitbus: connection closed")
			}
		}
		c.mu.Lock()
		c.conn = nil
		c.ready = make(chan struct{})
		c.mu.Unlock()
		conn = c.redial()
		if conn == nil {
			return
		}
		c.mu.Lock()
		c.conn = conn
		close(c.ready)
		c.mu.Unlock()
	}
}

// redial dials until it succeeds (returning the connection) or close is
// called (returning nil).
func (c *connector) redial() *amqp.Connection {
	for attempt := 1; ; attempt++ {
		if !sleep(c.done, backoff(c.opts.MinReconnect, c.opts.MaxReconnect, attempt)) {
			return nil
		}
		conn, err := dial(c.opts, c.role)
		if err == nil {
			select {
			case <-c.done:
				_ = conn.CloseDeadline(time.Now().Add(c.opts.OpTimeout))
				return nil
			default:
			}
			c.log.LogAttrs(context.Background(), slog.LevelInfo, "rabbitbus: reconnected",
				slog.Int("attempts", attempt))
			c.blocked.Store(false)
			c.watchBlocked(conn)
			return conn
		}
		c.log.LogAttrs(context.Background(), slog.LevelWarn, "rabbitbus: reconnect failed",
			slog.Int("attempt", attempt), slog.String("error", err.Error()))
	}
}

// watchBlocked tracks the broker's connection.blocked notices for conn;
// the library closes the notice channel when conn closes.
func (c *connector) watchBlocked(conn *amqp.Connection) {
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	go func() {
		for b := range blocks {
			c.blocked.Store(b.Active)
			c.log.LogAttrs(context.Background(), slog.LevelWarn, "rabbitbus: broker flow control",
				slog.Bool("blocked", b.Active), slog.String("reason", b.Reason))
		}
	}()
}

// close closes the connection and stops reconnecting; it waits until the
// connection is closed.
func (c *connector) close() {
	close(c.done)
	<-c.stopped
}

// backoff is the wait before reconnection attempt (from 1): doubling from
// lo to hi, with up to a quarter of jitter so instances spread out.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if q := int64(d / 4); q > 0 {
		d -= time.Duration(rand.Int64N(q)) //nolint:gosec // jitter needs no secrecy
	}
	return d
}

// sleep waits d unless stop closes first; it reports whether it waited.
func sleep(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}
