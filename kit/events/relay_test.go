package events_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

func TestMigrateIsIdempotent(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) {
		if err := events.Migrate(t.Context(), db, d); err != nil {
			t.Fatalf("second Migrate(%s) = %v, want nil", d, err)
		}
		for _, table := range []string{events.OutboxTable, events.InboxTable, events.RelayLeaseTable} {
			if got := count(t, db, table); got != 0 {
				t.Errorf("rows in %s = %d, want 0", table, got)
			}
		}
		if err := events.Migrate(t.Context(), db, "oracle"); err == nil {
			t.Error(`Migrate("oracle") = nil, want an error`)
		}
	})
}

func TestOutboxRollbackPublishesNothing(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) {
		o := events.NewOutbox("inventory", d)
		tx, err := db.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Add(t.Context(), tx, "item-1", (*eventsv1.StockChanged)(nil)); err == nil {
			t.Fatal("Add(nil payload) = nil, want an error")
		}
		if _, err := o.Add(t.Context(), tx, "item-1", &eventsv1.StockChanged{ItemId: "item-1", Version: 1}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if got := count(t, db, events.OutboxTable); got != 0 {
			t.Errorf("outbox rows after rollback = %d, want 0", got)
		}
		tr := newFakeTransport()
		r := events.NewRelay(db, d, o, tr)
		if err := r.Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := tr.publishedCount(); got != 0 {
			t.Errorf("published after rollback = %d, want 0", got)
		}
	})
}

func TestRelayPublishesInCommitOrderPerSubject(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) {
		o := events.NewOutbox("inventory", d)
		tr := newFakeTransport()
		run(t, "Relay.Run", events.NewRelay(db, d, o, tr, events.WithBatchSize(7)).Run)

		subjects := []string{"a", "b", "c", "d"}
		const each = 25
		var wg sync.WaitGroup
		errs := make(chan error, len(subjects))
		for _, s := range subjects {
			wg.Go(func() {
				for i := 1; i <= each; i++ {
					if err := addEvent(t.Context(), db, o, s, i); err != nil {
						errs <- err
						return
					}
					o.Wake()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		waitUntil(t, "every event published", func() bool { return tr.publishedCount() >= len(subjects)*each })
		got := versionsBySubject(t, tr.published(), false)
		if diff := cmp.Diff(sequence(subjects, each), got); diff != "" {
			t.Errorf("published versions per subject mismatch (-want +got):\n%s", diff)
		}
		waitUntil(t, "outbox emptied", func() bool { return count(t, db, events.OutboxTable) == 0 })
	})
}

func TestRelayRestartAfterPublishBeforeMark(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) {
		o := events.NewOutbox("inventory", d)
		subjects := []string{"a", "b"}
		const each = 5
		for i := 1; i <= each; i++ {
			for _, s := range subjects {
				produceNoWake(t, db, o, s, i)
			}
		}
		produced := len(subjects) * each

		// The first relay dies right after the broker acknowledged the
		// third event, before it could mark its batch sent.
		tr := newFakeTransport()
		ctx, kill := context.WithCancel(t.Context())
		defer kill()
		tr.afterAck = func(n int, _ events.Message) {
			if n == 3 {
				kill()
			}
		}
		first := events.NewRelay(db, d, o, tr, events.WithInstance("first"))
		if err := first.Run(ctx); err != nil {
			t.Fatalf("first Run = %v, want nil", err)
		}
		if got := tr.publishedCount(); got != 3 {
			t.Fatalf("published before the crash = %d, want 3", got)
		}
		if got, want := count(t, db, events.OutboxTable), produced; got != want {
			t.Fatalf("outbox rows after the crash = %d, want %d (the batch is still unmarked)", got, want)
		}

		tr.afterAck = nil
		_, rec := startConsumer(t, db, tr, "audit")
		run(t, "second Relay.Run", events.NewRelay(db, d, o, tr, events.WithInstance("second")).Run)
		waitUntil(t, "every event handled", func() bool { return rec.len() >= produced })
		if got, want := tr.publishedCount(), produced+3; got != want {
			t.Errorf("published = %d, want %d (the first three twice)", got, want)
		}
		if diff := cmp.Diff(sequence(subjects, each), rec.bySubject()); diff != "" {
			t.Errorf("handled versions per subject mismatch (-want +got):\n%s", diff)
		}
		// The handler records before its transaction commits.
		waitUntil(t, fmt.Sprintf("%d inbox rows", produced), func() bool { return count(t, db, events.InboxTable) == produced })
	})
}

func TestTwoRelaysOneDatabase(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) {
		o := events.NewOutbox("inventory", d)
		tr := newFakeTransport()
		relays := []*events.Relay{
			events.NewRelay(db, d, o, tr, events.WithInstance("r1"), events.WithBatchSize(5)),
			events.NewRelay(db, d, o, tr, events.WithInstance("r2"), events.WithBatchSize(5)),
		}
		stops := []func(){run(t, "r1.Run", relays[0].Run), run(t, "r2.Run", relays[1].Run)}
		_, rec := startConsumer(t, db, tr, "audit")

		subjects := []string{"a", "b", "c"}
		const each = 30
		producePhase := func(from, to int) {
			var wg sync.WaitGroup
			for _, s := range subjects {
				wg.Go(func() {
					for i := from; i <= to; i++ {
						if err := addEvent(t.Context(), db, o, s, i); err != nil {
							t.Error(err)
							return
						}
						o.Wake()
					}
				})
			}
			wg.Wait()
		}
		producePhase(1, each/2)
		waitUntil(t, "first half published", func() bool { return tr.publishedCount() >= len(subjects)*each/2 })

		// Stop the lease holder; the other must take over.
		leader := -1
		waitUntil(t, "a leader", func() bool {
			for i, r := range relays {
				if r.Stats().Leader {
					leader = i
					return true
				}
			}
			return false
		})
		stops[leader]()
		survivor := relays[1-leader]
		before := survivor.Stats().Published

		producePhase(each/2+1, each)
		waitUntil(t, "every event handled", func() bool { return rec.len() >= len(subjects)*each })
		if diff := cmp.Diff(sequence(subjects, each), rec.bySubject()); diff != "" {
			t.Errorf("handled versions per subject mismatch (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(sequence(subjects, each), versionsBySubject(t, tr.published(), true)); diff != "" {
			t.Errorf("published versions per subject (first publish of each id) mismatch (-want +got):\n%s", diff)
		}
		if got := survivor.Stats().Published; got <= before {
			t.Errorf("%s published %d after the leader stopped, want more than %d", survivor.Instance(), got, before)
		}
		// The handler records before its transaction commits.
		waitUntil(t, "an inbox row per event", func() bool { return count(t, db, events.InboxTable) == len(subjects)*each })
	})
}

func TestRelayRetriesFailedPublish(t *testing.T) {
	tests := []struct {
		name string
		fail func(n int, m events.Message) (stored bool, err error)
	}{
		{"every third attempt fails", func(n int, _ events.Message) (bool, error) {
			if n%3 == 0 {
				return false, errBrokerDown
			}
			return false, nil
		}},
		{"broker down for the first five attempts", func(n int, _ events.Message) (bool, error) {
			if n <= 5 {
				return false, errBrokerDown
			}
			return false, nil
		}},
		{"acknowledgement lost after the broker stored it", func(n int, _ events.Message) (bool, error) {
			if n%4 == 0 {
				return true, fmt.Errorf("ack timeout: %w", context.DeadlineExceeded)
			}
			return false, nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) {
				o := events.NewOutbox("inventory", d)
				tr := newFakeTransport()
				tr.fail = tc.fail
				r := events.NewRelay(db, d, o, tr)
				_, rec := startConsumer(t, db, tr, "audit")
				run(t, "Relay.Run", r.Run)

				subjects := []string{"a", "b"}
				const each = 12
				for i := 1; i <= each; i++ {
					for _, s := range subjects {
						produce(t, db, o, s, i)
					}
				}
				waitUntil(t, "every event handled", func() bool { return rec.len() >= len(subjects)*each })
				if diff := cmp.Diff(sequence(subjects, each), rec.bySubject()); diff != "" {
					t.Errorf("handled versions per subject mismatch (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(sequence(subjects, each), versionsBySubject(t, tr.published(), true)); diff != "" {
					t.Errorf("published versions per subject (first publish of each id) mismatch (-want +got):\n%s", diff)
				}
				if got := r.Stats().PublishErrors; got == 0 {
					t.Errorf("PublishErrors = 0, want failures to have been retried")
				}
				waitUntil(t, "outbox emptied", func() bool { return count(t, db, events.OutboxTable) == 0 })
			})
		})
	}
}

// idleOptions make a relay that, unless woken, would not look at the
// outbox again within any test's lifetime.
var idleOptions = []events.RelayOption{events.WithPollInterval(time.Hour), events.WithLeaseTTL(3 * time.Hour)}

func TestWakePublishesWithoutWaitingForThePoll(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) {
		o := events.NewOutbox("inventory", d)
		tr := newFakeTransport()
		produceNoWake(t, db, o, "a", 1)
		r := events.NewRelay(db, d, o, tr, idleOptions...)
		run(t, "Relay.Run", r.Run)
		// The first pass at start publishes what is there; then the relay
		// sleeps for an hour unless woken.
		waitUntil(t, "the first event", func() bool { return tr.publishedCount() == 1 })
		for i := 2; i <= 4; i++ {
			produce(t, db, o, "a", i)
			waitUntil(t, fmt.Sprintf("event %d after Wake", i), func() bool { return tr.publishedCount() == i })
		}
	})
}

// A relay woken in the producer's process while another process's relay
// holds the lease passes the wake on with a notification, which reaches
// the lease holder, also after its listen connection died.
func TestPostgresNotifyWakesRelayInAnotherProcess(t *testing.T) {
	pg := sqltest.New(t, sqldb.Postgres, nil, "")
	db, d := pg.DB, events.Postgres
	if err := events.Migrate(t.Context(), db, d); err != nil {
		t.Fatal(err)
	}
	// Two processes: each has its Outbox and its relay, and the other's
	// Wake cannot reach it.
	tr := newFakeTransport()
	leader := events.NewRelay(db, d, events.NewOutbox("inventory", d), tr, idleOptions...)
	run(t, "leader Run", leader.Run)
	waitUntil(t, "the leader to hold the lease", func() bool { return leader.Stats().Leader })
	producer := events.NewOutbox("inventory", d)
	follower := events.NewRelay(db, d, producer, tr, idleOptions...)
	run(t, "follower Run", follower.Run)

	listeners := func() map[int]bool {
		pids := map[int]bool{}
		rows, err := db.QueryContext(t.Context(),
			`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN events_outbox'`)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			var pid int
			if err := rows.Scan(&pid); err != nil {
				t.Fatal(err)
			}
			pids[pid] = true
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return pids
	}
	var old map[int]bool
	waitUntil(t, "both relays to listen", func() bool { old = listeners(); return len(old) == 2 })
	produce(t, db, producer, "a", 1)
	waitUntil(t, "event 1 after the follower's notification", func() bool { return tr.publishedCount() == 1 })

	// The listen connections die; the relays reconnect and listen again.
	for pid := range old {
		if _, err := db.ExecContext(t.Context(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "new listen connections", func() bool {
		n := 0
		for pid := range listeners() {
			if !old[pid] {
				n++
			}
		}
		return n == 2
	})
	produce(t, db, producer, "a", 2)
	waitUntil(t, "event 2 after a notification on the new connections", func() bool { return tr.publishedCount() == 2 })
	if follower.Stats().Leader || follower.Stats().Published != 0 {
		t.Errorf("follower stats = %+v, want it never to have published", follower.Stats())
	}
	if diff := cmp.Diff(sequence([]string{"a"}, 2), versionsBySubject(t, tr.published(), false)); diff != "" {
		t.Errorf("published versions mismatch (-want +got):\n%s", diff)
	}
}

func TestDrain(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) {
		o := events.NewOutbox("inventory", d)
		const produced = 150 // more than one batch
		for i := 1; i <= produced; i++ {
			produceNoWake(t, db, o, fmt.Sprintf("s%d", i%7), i)
		}

		t.Run("broker down until ctx ends", func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			tr := newFakeTransport()
			tr.fail = func(n int, _ events.Message) (bool, error) {
				if n == 3 {
					cancel() // the shutdown deadline passes during the third attempt
				}
				return false, errBrokerDown
			}
			err := events.NewRelay(db, d, o, tr).Drain(ctx)
			if !errors.Is(err, context.Canceled) || !errors.Is(err, errBrokerDown) {
				t.Errorf("Drain with the broker down = %v, want the publish error and context.Canceled", err)
			}
			if got := count(t, db, events.OutboxTable); got != produced {
				t.Errorf("outbox rows = %d, want %d", got, produced)
			}
		})

		t.Run("lease held elsewhere", func(t *testing.T) {
			if _, err := db.ExecContext(t.Context(),
				`INSERT INTO events_relay_lease (name, holder, expires_at) VALUES ('outbox', 'elsewhere', $1)
				ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at`,
				time.Now().Add(time.Hour).UnixMicro()); err != nil {
				t.Fatal(err)
			}
			tr := newFakeTransport()
			if err := events.NewRelay(db, d, o, tr).Drain(t.Context()); err != nil {
				t.Errorf("Drain = %v, want nil (the holder publishes)", err)
			}
			if got := tr.publishedCount(); got != 0 {
				t.Errorf("published = %d, want 0", got)
			}
			if _, err := db.ExecContext(t.Context(), `DELETE FROM events_relay_lease`); err != nil {
				t.Fatal(err)
			}
		})

		t.Run("publishes everything", func(t *testing.T) {
			tr := newFakeTransport()
			if err := events.NewRelay(db, d, o, tr, events.WithInstance("drainer")).Drain(t.Context()); err != nil {
				t.Fatalf("Drain = %v", err)
			}
			if got := tr.publishedCount(); got != produced {
				t.Errorf("published = %d, want %d", got, produced)
			}
			if got := count(t, db, events.OutboxTable); got != 0 {
				t.Errorf("outbox rows after Drain = %d, want 0", got)
			}
			var expires int64
			if err := db.QueryRowContext(t.Context(),
				`SELECT expires_at FROM events_relay_lease WHERE holder = 'drainer'`).Scan(&expires); err != nil || expires != 0 {
				t.Errorf("lease after Drain expires at %d (%v), want 0 (released)", expires, err)
			}
		})
	})
}

func TestRunTwiceIsAnError(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) {
		r := events.NewRelay(db, d, nil, newFakeTransport(), idleOptions...)
		run(t, "Relay.Run", r.Run)
		waitUntil(t, "the relay to lead", func() bool { return r.Stats().Leader })
		if err := r.Run(t.Context()); !errors.Is(err, events.ErrRunning) {
			t.Errorf("second Run = %v, want ErrRunning", err)
		}
	})
}
