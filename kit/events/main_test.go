package events_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait bounds every wait in these tests.
const wait = 20 * time.Second

// eachDB runs fn on a fresh migrated database of each engine.
func eachDB(t *testing.T, fn func(t *testing.T, db *sql.DB, d events.Dialect)) {
	t.Helper()
	for _, sd := range sqltest.Dialects {
		t.Run(string(sd), func(t *testing.T) {
			db := sqltest.New(t, sd, nil, "")
			d := events.Dialect(sd)
			if err := events.Migrate(t.Context(), db.DB, d); err != nil {
				t.Fatalf("Migrate(%s) = %v", d, err)
			}
			fn(t, db.DB, d)
		})
	}
}

// waitUntil polls cond until it holds, failing the test after wait.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", wait, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// produce commits one StockChanged event about subject with version n and
// wakes the relays of o's process.
func produce(t *testing.T, db *sql.DB, o *events.Outbox, subject string, n int) {
	t.Helper()
	produceNoWake(t, db, o, subject, n)
	o.Wake()
}

// produceNoWake commits an event without waking anyone.
func produceNoWake(t *testing.T, db *sql.DB, o *events.Outbox, subject string, n int) {
	t.Helper()
	if err := addEvent(t.Context(), db, o, subject, n); err != nil {
		t.Fatal(err)
	}
}

func addEvent(ctx context.Context, db *sql.DB, o *events.Outbox, subject string, n int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := o.Add(ctx, tx, subject, &eventsv1.StockChanged{ItemId: subject, Version: int64(n)}); err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("Add(%s, %d) = %w", subject, n, err)
	}
	return tx.Commit()
}

// count returns the number of rows in table.
func count(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// fakeTransport is an in-memory broker for testing the logic above the
// transport: it keeps every acknowledged message in order, can fail
// publishes on demand and delivers to subscribers in publish order,
// retrying failed deliveries like a broker would.
type fakeTransport struct {
	// fail, if set, decides whether publish attempt n (counting from 1)
	// fails; stored reports whether the broker kept the message anyway
	// (an acknowledgement lost on the way back).
	fail func(n int, m events.Message) (stored bool, err error)
	// afterAck, if set, runs after the n-th message was acknowledged.
	afterAck func(n int, m events.Message)

	mu       sync.Mutex
	attempts int
	log      []events.Message
	changed  chan struct{}
	setups   []string
	dead     []events.Message
}

func newFakeTransport() *fakeTransport {
	return &fakeTransport{changed: make(chan struct{})}
}

var errBrokerDown = errors.New("broker unavailable")

func (f *fakeTransport) Publish(ctx context.Context, m events.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	f.attempts++
	if f.fail != nil {
		if stored, err := f.fail(f.attempts, m); err != nil {
			if stored {
				f.appendLocked(m)
			}
			f.mu.Unlock()
			return err
		}
	}
	n := f.appendLocked(m)
	f.mu.Unlock()
	if f.afterAck != nil {
		f.afterAck(n, m)
	}
	return nil
}

func (f *fakeTransport) appendLocked(m events.Message) int {
	f.log = append(f.log, m)
	close(f.changed)
	f.changed = make(chan struct{})
	return len(f.log)
}

func (f *fakeTransport) Setup(_ context.Context, sub events.Subscription) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setups = append(f.setups, sub.Group)
	return nil
}

// Subscribe delivers every message from the start of the log, one at a
// time, retrying a failed delivery before the next one.
func (f *fakeTransport) Subscribe(ctx context.Context, sub events.Subscription, h events.Handler) error {
	sub = sub.Normalize()
	for i := 0; ; i++ {
		f.mu.Lock()
		for len(f.log) <= i {
			changed := f.changed
			f.mu.Unlock()
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
			}
			f.mu.Lock()
		}
		m := f.log[i]
		f.mu.Unlock()
		for attempt := 1; ; attempt++ {
			err := h(ctx, events.Delivery{Message: m, Attempt: attempt})
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, events.ErrPermanent) || attempt >= sub.MaxDeliver {
				f.mu.Lock()
				f.dead = append(f.dead, m)
				f.mu.Unlock()
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func (f *fakeTransport) Close() error { return nil }

// published returns a copy of the acknowledged messages.
func (f *fakeTransport) published() []events.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]events.Message(nil), f.log...)
}

func (f *fakeTransport) publishedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.log)
}

var _ events.Transport = (*fakeTransport)(nil)

// run runs fn in the background until the test ends or the returned stop
// is called; stop waits for fn to return and checks its error.
func run(t *testing.T, name string, fn func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s = %v, want nil after cancel", name, err)
				}
			case <-time.After(wait):
				t.Errorf("%s did not return within %v after cancel", name, wait)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// record keeps what a consumer handled, in order.
type record struct {
	mu  sync.Mutex
	got []*eventsv1.StockChanged
}

func (r *record) handler(_ context.Context, _ *sql.Tx, env *eventsv1.Envelope) error {
	var sc eventsv1.StockChanged
	if err := env.GetPayload().UnmarshalTo(&sc); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, &sc)
	return nil
}

func (r *record) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// bySubject returns the versions handled per subject, in handling order.
func (r *record) bySubject() map[string][]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]int64{}
	for _, sc := range r.got {
		out[sc.GetItemId()] = append(out[sc.GetItemId()], sc.GetVersion())
	}
	return out
}

// startConsumer runs a consumer of tr's messages on db until the test
// ends, recording what it handles.
func startConsumer(t *testing.T, db *sql.DB, tr events.Transport, group string) (*events.Consumer, *record) {
	t.Helper()
	rec := &record{}
	c := events.NewConsumer(db, tr, events.Subscription{Group: group}, rec.handler)
	run(t, "Consumer.Run", c.Run)
	return c, rec
}

// versionsBySubject decodes published messages into the versions per
// subject, in publish order; with dedupe, only each id's first publish
// counts.
func versionsBySubject(t *testing.T, msgs []events.Message, dedupe bool) map[string][]int64 {
	t.Helper()
	seen := map[string]bool{}
	out := map[string][]int64{}
	for _, m := range msgs {
		if dedupe && seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		env, err := events.Decode(m)
		if err != nil {
			t.Fatalf("Decode(%s) = %v", m.ID, err)
		}
		var sc eventsv1.StockChanged
		if err := env.GetPayload().UnmarshalTo(&sc); err != nil {
			t.Fatal(err)
		}
		if m.Key != sc.GetItemId() {
			t.Errorf("message key = %q, want subject %q", m.Key, sc.GetItemId())
		}
		out[sc.GetItemId()] = append(out[sc.GetItemId()], sc.GetVersion())
	}
	return out
}

// sequence returns 1..n per subject.
func sequence(subjects []string, n int) map[string][]int64 {
	out := map[string][]int64{}
	for _, s := range subjects {
		for i := 1; i <= n; i++ {
			out[s] = append(out[s], int64(i))
		}
	}
	return out
}
