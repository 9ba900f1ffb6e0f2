package events

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/stdlib"
)

// errNoListen means the database driver cannot listen: the relay relies
// on its poll.
var errNoListen = errors.New("events: relay: the PostgreSQL driver is not pgx; relying on the poll interval")

// listen wakes the relay on every notification of the outbox channel
// until ctx ends, reconnecting with backoff when the connection fails.
func (r *Relay) listen(ctx context.Context, wake chan struct{}) {
	var fails backoff
	for {
		err := r.listenOnce(ctx, wake, &fails)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNoListen) {
			r.log.LogAttrs(ctx, slog.LevelWarn, err.Error(), slog.String("instance", r.instance))
			return
		}
		if fails.failures == 0 {
			r.log.LogAttrs(ctx, slog.LevelWarn, "events: relay: listen connection failed, reconnecting",
				slog.String("instance", r.instance), slog.Any("error", err))
		}
		if !sleep(ctx, fails.next()) {
			return
		}
	}
}

// listenOnce listens on one connection taken from the pool until it fails
// or ctx ends. The connection is discarded afterwards rather than
// returned to the pool, where it would keep collecting notifications.
func (r *Relay) listenOnce(ctx context.Context, wake chan struct{}, fails *backoff) error {
	conn, err := r.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("events: relay: listen: %w", err)
	}
	defer func() { _ = conn.Close() }()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("%w (driver connection %T)", errNoListen, dc)
		}
		pc := sc.Conn()
		if _, err := pc.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
			return fmt.Errorf("events: relay: listen: %w: %w", driver.ErrBadConn, err)
		}
		// Rows committed while nobody listened were not announced.
		signal(wake)
		for {
			if _, err := pc.WaitForNotification(ctx); err != nil {
				return fmt.Errorf("events: relay: wait for notification: %w: %w", driver.ErrBadConn, err)
			}
			fails.reset()
			signal(wake)
		}
	})
}
