package events

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// leaseName is the one lease row: one relay per database publishes.
const leaseName = "outbox"

// releaseTimeout bounds giving the lease back when a relay stops.
const releaseTimeout = 5 * time.Second

// failureLogEvery bounds how often a relay logs a failure that keeps
// recurring.
const failureLogEvery = time.Minute

// ErrRunning is returned by Run when the relay is already running.
var ErrRunning = errors.New("events: relay already running")

// Relay publishes the rows of an outbox table through a Transport, in the
// order they were inserted, and deletes each row only after the broker
// acknowledged it. If the process dies in between, the row is published
// again when a relay next runs: delivery is at least once, and consumers
// deduplicate by event id.
//
// Any number of relays may run against one database, in one process or
// many: a lease row lets one of them publish at a time, so events with the
// same subject keep their order, and another takes over within the lease
// TTL when it stops or dies. A relay checks its lease before each event
// and never publishes past it.
//
// A Relay is safe for concurrent use: Run and Drain may be called from
// different goroutines.
type Relay struct {
	db       *sql.DB
	dialect  Dialect
	outbox   *Outbox
	tr       Transport
	log      *slog.Logger
	poll     time.Duration
	batch    int
	leaseTTL time.Duration
	instance string

	running atomic.Bool

	// mu serializes publishing passes (Run's and Drain's) and guards
	// leaseUntil.
	mu         sync.Mutex
	leaseUntil time.Time

	leader        atomic.Bool
	published     atomic.Uint64
	publishErrors atomic.Uint64
}

// NewRelay returns a relay for the outbox table in db, whose engine is d,
// publishing through tr. o, if not nil, is the Outbox of this process:
// its Wake makes the relay publish at once, or, on PostgreSQL, notify the
// relays of other processes when another holds the lease. On PostgreSQL
// the relay also listens for those notifications, holding one connection
// of db for it while it runs. The caller keeps ownership of db
// and tr.
func NewRelay(db *sql.DB, d Dialect, o *Outbox, tr Transport, opts ...RelayOption) *Relay {
	r := &Relay{
		db:       db,
		dialect:  d,
		outbox:   o,
		tr:       tr,
		log:      discard,
		poll:     DefaultPollInterval,
		batch:    DefaultBatchSize,
		leaseTTL: DefaultLeaseTTL,
	}
	for _, opt := range opts {
		opt.applyRelay(r)
	}
	if r.instance == "" {
		host, _ := os.Hostname()
		r.instance = host + "-" + uuid.NewString()[:8]
	}
	return r
}

// RelayStats are a relay's counters since it was created.
type RelayStats struct {
	// Published counts events the broker acknowledged, duplicates
	// included.
	Published uint64
	// PublishErrors counts failed publish attempts.
	PublishErrors uint64
	// Leader reports whether the relay held the lease at its last check.
	Leader bool
}

// Stats returns the relay's counters. It is cheap and safe to call at any
// time.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Published:     r.published.Load(),
		PublishErrors: r.publishErrors.Load(),
		Leader:        r.leader.Load(),
	}
}

// Instance returns the name the relay holds its lease under.
func (r *Relay) Instance() string { return r.instance }

// Run publishes outbox rows until ctx ends, then gives up its lease and
// returns nil. It publishes when woken by Outbox.Wake, by a PostgreSQL
// notification, and every poll interval. A failed publish stops the
// batch, so no later event overtakes it, and is retried with backoff
// (50 ms doubling to 5 s, jittered) for as long as Run runs. It returns
// ErrRunning if the relay is already running.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)

	// local is woken by this process's Outbox.Wake, notified by the
	// relays of other processes.
	local, notified := make(chan struct{}, 1), make(chan struct{}, 1)
	if r.outbox != nil {
		defer r.outbox.register(local)()
	}
	var wg sync.WaitGroup
	listenCtx, stopListen := context.WithCancel(ctx)
	defer func() {
		stopListen()
		wg.Wait()
	}()
	if r.dialect == Postgres {
		wg.Go(func() { r.listen(listenCtx, notified) })
	}
	defer r.release()

	var fails backoff
	var lastLog time.Time
	woken := false // by local, since the last pass
	for {
		held, sent, err := r.pass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if woken && !held {
			r.passOn(ctx)
		}
		woken = false
		if err != nil && sent > 0 {
			// Progress before the failure: the broker is up, so retry
			// soon rather than after a long backoff.
			fails.reset()
		}
		if err != nil {
			if time.Since(lastLog) >= failureLogEvery {
				lastLog = time.Now()
				r.log.LogAttrs(ctx, slog.LevelWarn, "events: relay failed, retrying",
					slog.String("instance", r.instance), slog.Int("attempt", fails.failures+1), slog.Any("error", err))
			}
			// A wake during the backoff does not cut it short: commits
			// keep coming while the broker is down.
			if !sleep(ctx, fails.next()) {
				return nil
			}
			continue
		}
		if fails.failures > 0 {
			r.log.LogAttrs(ctx, slog.LevelInfo, "events: relay recovered",
				slog.String("instance", r.instance), slog.Int("failed_attempts", fails.failures))
			fails.reset()
			lastLog = time.Time{}
		}
		t := time.NewTimer(r.idle())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-local:
			t.Stop()
			woken = true
		case <-notified:
			t.Stop()
		case <-t.C:
		}
	}
}

// passOn wakes, on PostgreSQL, the relay of another process that holds
// the lease, after this process committed events this relay could not
// publish. Only wakes from this process are passed on, so relays never
// wake each other back and forth; a failure is left to the lease holder's
// poll.
func (r *Relay) passOn(ctx context.Context) {
	if r.dialect != Postgres {
		return
	}
	nctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	if _, err := r.db.ExecContext(nctx, `SELECT pg_notify('`+notifyChannel+`', '')`); err != nil && ctx.Err() == nil {
		r.log.LogAttrs(ctx, slog.LevelWarn, "events: relay: notify the lease holder",
			slog.String("instance", r.instance), slog.Any("error", err))
	}
}

// idle is how long Run waits between passes when nothing wakes it: the
// poll interval, but often enough to renew a lease (or notice that its
// holder died).
func (r *Relay) idle() time.Duration {
	return min(r.poll, r.leaseTTL/3)
}

// Drain publishes every event committed before it was called, then
// returns nil; a graceful shutdown calls it after Run has returned, with
// a ctx bounding how long it may take. Failed publishes are retried until
// ctx ends, when Drain returns an error wrapping ctx's. If another
// instance holds the lease, Drain returns nil at once: publishing is that
// instance's job. Unless Run is running, Drain gives the lease up when it
// returns.
func (r *Relay) Drain(ctx context.Context) error {
	defer func() {
		// Without Run, nobody would renew the lease: hand it over now.
		if !r.running.Load() {
			r.release()
		}
	}()
	var fails backoff
	for {
		_, sent, err := r.pass(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("events: relay drain: %w", errors.Join(err, ctx.Err()))
		}
		if sent > 0 {
			fails.reset()
		}
		if fails.failures == 0 {
			r.log.LogAttrs(ctx, slog.LevelWarn, "events: relay drain failed, retrying",
				slog.String("instance", r.instance), slog.Any("error", err))
		}
		if !sleep(ctx, fails.next()) {
			return fmt.Errorf("events: relay drain: %w", errors.Join(err, ctx.Err()))
		}
	}
}

// row is one outbox row.
type row struct {
	seq int64
	msg Message
}

// markTimeout bounds marking a batch sent.
const markTimeout = 10 * time.Second

// pass takes or renews the lease and, if it holds it, publishes rows in
// order until the table is empty, an error stops it or the lease is lost.
// It reports whether it held the lease throughout and how many rows it
// published; with a nil error and held, every row visible when it started
// has been published.
func (r *Relay) pass(ctx context.Context) (held bool, sent int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if held, err = r.acquire(ctx); err != nil || !held {
		return false, 0, err
	}
	for {
		rows, err := r.fetch(ctx)
		if err != nil {
			return true, sent, err
		}
		done := make([]any, 0, len(rows))
		for _, rw := range rows {
			if time.Until(r.leaseUntil) < r.leaseTTL/2 {
				if held, err = r.acquire(ctx); err != nil || !held {
					break
				}
			}
			if err = r.publish(ctx, rw.msg); err != nil {
				break
			}
			done = append(done, rw.seq)
		}
		// The rows published are marked in one statement per batch, by
		// their exact sequence numbers: a row with a lower sequence that
		// committed late is not among them and stays to be published.
		if merr := r.markSent(ctx, done); merr != nil {
			return held, sent, errors.Join(err, merr)
		}
		sent += len(done)
		if err != nil || !held {
			return held, sent, err
		}
		if len(rows) < r.batch {
			return true, sent, nil
		}
	}
}

// markSent deletes the outbox rows with the sequence numbers seqs, which
// the broker acknowledged. If this fails they are published again later:
// at least once.
func (r *Relay) markSent(ctx context.Context, seqs []any) error {
	if len(seqs) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString(`DELETE FROM events_outbox WHERE seq IN (`)
	for i := range seqs {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("$")
		q.WriteString(strconv.Itoa(i + 1))
	}
	q.WriteString(")")
	mctx, cancel := context.WithTimeout(ctx, markTimeout)
	defer cancel()
	if _, err := r.db.ExecContext(mctx, q.String(), seqs...); err != nil {
		return fmt.Errorf("events: relay: mark %d events sent: %w", len(seqs), err)
	}
	return nil
}

// publish sends one message, bounded by the lease so it cannot complete
// after another relay took over.
func (r *Relay) publish(ctx context.Context, m Message) error {
	pctx, cancel := context.WithDeadline(ctx, r.leaseUntil)
	defer cancel()
	if err := r.tr.Publish(pctx, m); err != nil {
		r.publishErrors.Add(1)
		return fmt.Errorf("events: relay: publish %s %s: %w", m.Type, m.ID, err)
	}
	r.published.Add(1)
	return nil
}

// fetch reads the oldest unsent rows.
func (r *Relay) fetch(ctx context.Context) ([]row, error) {
	rows, err := r.db.QueryContext(ctx,
		`SELECT seq, id, type, subject, data FROM events_outbox ORDER BY seq LIMIT $1`, r.batch)
	if err != nil {
		return nil, fmt.Errorf("events: relay: read outbox: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []row
	for rows.Next() {
		var rw row
		if err := rows.Scan(&rw.seq, &rw.msg.ID, &rw.msg.Type, &rw.msg.Key, &rw.msg.Data); err != nil {
			return nil, fmt.Errorf("events: relay: read outbox: %w", err)
		}
		out = append(out, rw)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("events: relay: read outbox: %w", err)
	}
	return out, nil
}

// acquire takes the lease if it is free or expired, or renews it if this
// relay holds it, and reports whether the relay holds it now. Caller
// holds r.mu.
func (r *Relay) acquire(ctx context.Context) (bool, error) {
	now := time.Now()
	until := now.Add(r.leaseTTL)
	res, err := r.db.ExecContext(ctx,
		`INSERT INTO events_relay_lease (name, holder, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE events_relay_lease.holder = excluded.holder OR events_relay_lease.expires_at < $4`,
		leaseName, r.instance, until.UnixMicro(), now.UnixMicro())
	if err != nil {
		r.leader.Store(false)
		r.leaseUntil = time.Time{}
		return false, fmt.Errorf("events: relay: lease: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		r.leader.Store(false)
		r.leaseUntil = time.Time{}
		return false, fmt.Errorf("events: relay: lease: %w", err)
	}
	if n != 1 {
		r.leader.Store(false)
		r.leaseUntil = time.Time{}
		return false, nil
	}
	r.leaseUntil = until
	r.leader.Store(true)
	return true, nil
}

// release gives the lease up, if this relay holds it, so another relay
// takes over at once.
func (r *Relay) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leader.Store(false)
	r.leaseUntil = time.Time{}
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if _, err := r.db.ExecContext(ctx,
		`UPDATE events_relay_lease SET expires_at = 0 WHERE name = $1 AND holder = $2`,
		leaseName, r.instance); err != nil {
		r.log.LogAttrs(ctx, slog.LevelWarn, "events: relay: release lease",
			slog.String("instance", r.instance), slog.Any("error", err))
	}
}
