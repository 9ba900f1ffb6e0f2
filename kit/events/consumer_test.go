package events_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

// effects is a table a handler writes its effects to.
func createEffects(t *testing.T, db *sql.DB) {
	t.Helper()
	if _, err := db.ExecContext(t.Context(), `CREATE TABLE effects (event_id TEXT PRIMARY KEY, item_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
}

// delivery returns a delivery of a new StockChanged event.
func delivery(ctx context.Context, t *testing.T, subject string) (events.Delivery, *eventsv1.Envelope) {
	t.Helper()
	env, err := events.NewEnvelope(ctx, "inventory", subject, &eventsv1.StockChanged{ItemId: subject}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m, err := events.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	return events.Delivery{Message: m, Attempt: 1}, env
}

// writeEffect is a handler that records its effect, then fails with
// *fail if set.
func writeEffect(calls *atomic.Int32, fail *error) events.TxHandler {
	return func(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
		calls.Add(1)
		if _, err := tx.ExecContext(ctx, `INSERT INTO effects (event_id, item_id) VALUES ($1, $2)`, env.GetId(), env.GetSubject()); err != nil {
			return err
		}
		if fail != nil && *fail != nil {
			return *fail
		}
		return nil
	}
}

func TestConsumerDuplicateIsNoop(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, _ events.Dialect) {
		createEffects(t, db)
		var calls, after atomic.Int32
		c := events.NewConsumer(db, newFakeTransport(), events.Subscription{Group: "audit"}, writeEffect(&calls, nil),
			events.WithAfterCommit(func(context.Context, *eventsv1.Envelope) {
				// The handler's effect is visible: its transaction committed.
				if count(t, db, "effects") == 1 {
					after.Add(1)
				}
			}))
		d, _ := delivery(t.Context(), t, "item-1")
		for i := 1; i <= 3; i++ {
			d.Attempt = i
			if err := c.Handle(t.Context(), d); err != nil {
				t.Fatalf("Handle (delivery %d) = %v, want nil", i, err)
			}
		}
		if got := calls.Load(); got != 1 {
			t.Errorf("handler calls = %d, want 1", got)
		}
		if got := after.Load(); got != 1 {
			t.Errorf("after-commit calls that saw the effect = %d, want 1 (duplicates skip it)", got)
		}
		if got := count(t, db, "effects"); got != 1 {
			t.Errorf("effects = %d, want 1", got)
		}
		if got, want := c.Stats(), (events.ConsumerStats{Handled: 1, Duplicates: 2}); got != want {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}

		// Another group handles the same event for itself.
		other := events.NewConsumer(db, newFakeTransport(), events.Subscription{Group: "notify"},
			func(context.Context, *sql.Tx, *eventsv1.Envelope) error { calls.Add(1); return nil })
		if err := other.Handle(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		if got := calls.Load(); got != 2 {
			t.Errorf("handler calls after another group = %d, want 2", got)
		}
	})
}

func TestConsumerHandlerErrorRollsBack(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, _ events.Dialect) {
		createEffects(t, db)
		var calls atomic.Int32
		errOops := errors.New("downstream unavailable")
		fail := errOops
		c := events.NewConsumer(db, newFakeTransport(), events.Subscription{Group: "audit"}, writeEffect(&calls, &fail))
		d, _ := delivery(t.Context(), t, "item-1")

		if err := c.Handle(t.Context(), d); !errors.Is(err, errOops) {
			t.Fatalf("Handle = %v, want the handler's error", err)
		}
		if got := count(t, db, "effects"); got != 0 {
			t.Errorf("effects after a failed handler = %d, want 0", got)
		}
		if got := count(t, db, events.InboxTable); got != 0 {
			t.Errorf("inbox rows after a failed handler = %d, want 0", got)
		}

		fail = nil
		d.Attempt = 2
		if err := c.Handle(t.Context(), d); err != nil {
			t.Fatalf("Handle (retry) = %v, want nil", err)
		}
		if got := calls.Load(); got != 2 {
			t.Errorf("handler calls = %d, want 2 (the retry ran it again)", got)
		}
		wantCommitted(t, db, c, 1, events.ConsumerStats{Handled: 1, Failures: 1})
	})
}

// wantCommitted checks that n effects and inbox rows committed and that
// c's counters are stats.
func wantCommitted(t *testing.T, db *sql.DB, c *events.Consumer, n int, stats events.ConsumerStats) {
	t.Helper()
	if got := count(t, db, "effects"); got != n {
		t.Errorf("effects = %d, want %d", got, n)
	}
	if got := count(t, db, events.InboxTable); got != n {
		t.Errorf("inbox rows = %d, want %d", got, n)
	}
	if got := c.Stats(); got != stats {
		t.Errorf("Stats = %+v, want %+v", got, stats)
	}
}

func TestConsumerUndecodableIsPermanent(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, _ events.Dialect) {
		var calls atomic.Int32
		c := events.NewConsumer(db, newFakeTransport(), events.Subscription{Group: "audit"},
			func(context.Context, *sql.Tx, *eventsv1.Envelope) error { calls.Add(1); return nil })
		_, env := delivery(t.Context(), t, "item-1")
		env.Payload = nil
		noPayload, err := proto.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			data []byte
		}{
			{"not a protobuf", []byte("\xff\xfe{json?}")},
			{"no payload", noPayload},
		}
		for _, tc := range tests {
			err := c.Handle(t.Context(), events.Delivery{Message: events.Message{ID: "x", Data: tc.data}, Attempt: 1})
			if !errors.Is(err, events.ErrPermanent) {
				t.Errorf("Handle(%s) = %v, want an error wrapping ErrPermanent", tc.name, err)
			}
		}
		if got := calls.Load(); got != 0 {
			t.Errorf("handler calls = %d, want 0", got)
		}
		if got := count(t, db, events.InboxTable); got != 0 {
			t.Errorf("inbox rows = %d, want 0", got)
		}
	})
}

func TestConsumerSpanLinksToProducer(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, _ events.Dialect) {
		producerTP := sdktrace.NewTracerProvider()
		t.Cleanup(func() { _ = producerTP.Shutdown(context.Background()) })
		pctx, producerSpan := producerTP.Tracer("test").Start(t.Context(), "PlaceOrder")
		d, env := delivery(pctx, t, "order-1")
		producerSpan.End()

		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		c := events.NewConsumer(db, newFakeTransport(), events.Subscription{Group: "audit"},
			func(ctx context.Context, _ *sql.Tx, _ *eventsv1.Envelope) error {
				if !trace.SpanContextFromContext(ctx).IsValid() {
					return errors.New("handler context carries no span")
				}
				return nil
			}, events.WithTracerProvider(tp))
		if err := c.Handle(t.Context(), d); err != nil {
			t.Fatal(err)
		}

		spans := rec.Ended()
		if len(spans) != 1 {
			t.Fatalf("ended spans = %d, want 1", len(spans))
		}
		s := spans[0]
		if got, want := s.Name(), "audit process "+env.GetType(); got != want {
			t.Errorf("span name = %q, want %q", got, want)
		}
		if got, want := s.SpanKind(), trace.SpanKindConsumer; got != want {
			t.Errorf("span kind = %v, want %v", got, want)
		}
		want := producerSpan.SpanContext()
		if len(s.Links()) != 1 {
			t.Fatalf("span links = %d, want 1", len(s.Links()))
		}
		link := s.Links()[0].SpanContext
		if link.TraceID() != want.TraceID() || link.SpanID() != want.SpanID() {
			t.Errorf("span link = %s/%s, want the producer's %s/%s", link.TraceID(), link.SpanID(), want.TraceID(), want.SpanID())
		}
		if s.Parent().TraceID() == want.TraceID() {
			t.Errorf("consumer span is in the producer's trace, want a link only")
		}
	})
}

func TestConsumerRunSetupAndRedelivery(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, _ events.Dialect) {
		createEffects(t, db)
		tr := newFakeTransport()
		var calls atomic.Int32
		var failFirst atomic.Bool
		failFirst.Store(true)
		h := func(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
			if err := writeEffect(&calls, nil)(ctx, tx, env); err != nil {
				return err
			}
			if failFirst.CompareAndSwap(true, false) {
				return errors.New("first attempt fails")
			}
			return nil
		}
		c := events.NewConsumer(db, tr, events.Subscription{Group: "audit"}, h)
		if err := c.Setup(t.Context()); err != nil {
			t.Fatalf("Setup = %v", err)
		}
		if got := fmt.Sprint(tr.setups); got != "[audit]" {
			t.Errorf("groups set up = %s, want [audit]", got)
		}
		stop := run(t, "Consumer.Run", c.Run)

		// The same event published twice (an at-least-once relay) and
		// one other.
		dup, _ := delivery(t.Context(), t, "item-1")
		other, _ := delivery(t.Context(), t, "item-2")
		for _, m := range []events.Message{dup.Message, dup.Message, other.Message} {
			if err := tr.Publish(t.Context(), m); err != nil {
				t.Fatal(err)
			}
		}
		waitUntil(t, "both events handled", func() bool { return c.Stats().Handled == 2 && c.Stats().Duplicates == 1 })
		stop()
		if got := count(t, db, "effects"); got != 2 {
			t.Errorf("effects = %d, want 2", got)
		}
		if got := calls.Load(); got != 3 {
			t.Errorf("handler calls = %d, want 3 (one failed and was retried)", got)
		}
	})
}

func TestPurgeInbox(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, _ events.Dialect) {
		const old, recent = 1205, 3 // more old rows than one purge statement deletes
		tx, err := db.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		insert := func(group string, i int, at time.Time) {
			if _, err := tx.ExecContext(t.Context(), `INSERT INTO events_inbox (group_name, event_id, handled_at) VALUES ($1, $2, $3)`,
				group, fmt.Sprintf("e%d", i), at.UnixMicro()); err != nil {
				t.Fatal(err)
			}
		}
		for i := range old {
			insert("audit", i, time.Now().Add(-8*24*time.Hour))
		}
		for i := range recent {
			insert("audit", old+i, time.Now().Add(-time.Hour))
			insert("notify", i, time.Now().Add(-30*24*time.Hour))
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		c := events.NewConsumer(db, newFakeTransport(), events.Subscription{Group: "audit"},
			func(context.Context, *sql.Tx, *eventsv1.Envelope) error { return nil })
		n, err := c.PurgeInbox(t.Context())
		if err != nil || n != old {
			t.Errorf("PurgeInbox = %d, %v, want %d, nil", n, err, old)
		}
		if got, want := count(t, db, events.InboxTable), 2*recent; got != want {
			t.Errorf("inbox rows after purge = %d, want %d (recent ones and other groups' kept)", got, want)
		}

		// With a shorter retention, Run purges the recent rows too.
		short := events.NewConsumer(db, newFakeTransport(), events.Subscription{Group: "audit"},
			func(context.Context, *sql.Tx, *eventsv1.Envelope) error { return nil }, events.WithInboxRetention(time.Minute))
		run(t, "Consumer.Run", short.Run)
		waitUntil(t, "Run to purge", func() bool { return count(t, db, events.InboxTable) == recent })
	})
}

// groupRun handles first, whose handler blocks until the others have
// queued behind its transaction, then the others, each on its own
// goroutine, and returns each delivery's error and whether its Handle
// panicked, first's at index 0.
func groupRun(t *testing.T, c *events.Consumer, g *groupHandler, first events.Delivery, others []events.Delivery) (errs []error, panicked []bool) {
	t.Helper()
	all := append([]events.Delivery{first}, others...)
	errs, panicked = make([]error, len(all)), make([]bool, len(all))
	var wg sync.WaitGroup
	handle := func(i int) {
		wg.Go(func() {
			defer func() {
				if recover() != nil {
					panicked[i] = true
				}
			}()
			errs[i] = c.Handle(t.Context(), all[i])
		})
	}
	handle(0)
	<-g.entered
	for i := range others {
		handle(i + 1)
	}
	waitUntil(t, "the others to queue", func() bool { return events.Queued(c) == len(others) })
	close(g.release)
	wg.Wait()
	return errs, panicked
}

// groupHandler writes the effect of each event and records its
// transaction; the first event's call waits for release, and the
// call for an event whose subject is "fail" fails, "panic" panics.
type groupHandler struct {
	mu      sync.Mutex
	txs     map[string]*sql.Tx // by subject, of the last call
	calls   map[string]int
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

// newGroup returns a consumer whose handler is a groupHandler, in db
// with the effects table, a delivery of a "first" event and one of an
// event of each of subjects.
func newGroup(t *testing.T, db *sql.DB, subjects ...string) (*groupHandler, *events.Consumer, events.Delivery, []events.Delivery) {
	t.Helper()
	createEffects(t, db)
	g := &groupHandler{txs: map[string]*sql.Tx{}, calls: map[string]int{}, entered: make(chan struct{}), release: make(chan struct{})}
	c := events.NewConsumer(db, newFakeTransport(), events.Subscription{Group: "audit"}, g.handle)
	first, _ := delivery(t.Context(), t, "first")
	var others []events.Delivery
	for _, s := range subjects {
		d, _ := delivery(t.Context(), t, s)
		others = append(others, d)
	}
	return g, c, first, others
}

func (g *groupHandler) handle(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
	g.mu.Lock()
	g.txs[env.GetSubject()] = tx
	g.calls[env.GetSubject()]++
	g.mu.Unlock()
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	switch env.GetSubject() {
	case "fail":
		return errors.New("handler refused")
	case "panic":
		panic("handler bug")
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO effects (event_id, item_id) VALUES ($1, $2)`, env.GetId(), env.GetSubject())
	return err
}

// Deliveries that arrive while a transaction is written share the next
// one; a duplicate among them is recognised.
func TestConsumerGroupCommit(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, _ events.Dialect) {
		g, c, first, others := newGroup(t, db, "a", "b", "c", "d", "e")
		others = append(others, others[2]) // "c" delivered twice at once
		errs, _ := groupRun(t, c, g, first, others)
		for i, err := range errs {
			if err != nil {
				t.Errorf("Handle %d = %v", i, err)
			}
		}
		shared := g.txs["a"]
		for _, s := range []string{"a", "b", "c", "d", "e"} {
			if g.txs[s] != shared || g.calls[s] != 1 {
				t.Errorf("event %s: %d calls, shared transaction %v; want 1 call in the group's transaction", s, g.calls[s], g.txs[s] == shared)
			}
		}
		if g.txs["first"] == shared {
			t.Error("the first event, handled before the others queued, shares their transaction")
		}
		if got := count(t, db, "effects"); got != 6 {
			t.Errorf("effects = %d, want 6", got)
		}
		if got, want := c.Stats(), (events.ConsumerStats{Handled: 6, Duplicates: 1}); got != want {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}
	})
}

// A handler that fails in a group fails alone: the others are handled
// again, each in a transaction of its own, and commit once.
func TestConsumerGroupFailureIsolated(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, _ events.Dialect) {
		g, c, first, others := newGroup(t, db, "a", "fail", "b")
		errs, _ := groupRun(t, c, g, first, others)
		for i, err := range errs {
			if wantErr := i == 2; (err != nil) != wantErr {
				t.Errorf("Handle %d = %v, want error %v", i, err, wantErr)
			}
		}
		if g.txs["a"] == g.txs["b"] {
			t.Error("after the group failed, a and b still share a transaction")
		}
		wantCommitted(t, db, c, 3, events.ConsumerStats{Handled: 3, Failures: 1}) // first, a, b
	})
}

// A handler that panics in a group fails the group's deliveries, leaves
// no transaction open, and the consumer goes on.
func TestConsumerGroupPanic(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sql.DB, _ events.Dialect) {
		g, c, first, others := newGroup(t, db, "a", "panic", "b")
		errs, panicked := groupRun(t, c, g, first, others)
		if errs[0] != nil || panicked[0] {
			t.Errorf("first: Handle = %v, panicked %v; want nil", errs[0], panicked[0])
		}
		n := 0
		for i := 1; i < len(errs); i++ {
			switch {
			case panicked[i]:
				n++
			case errs[i] == nil:
				t.Errorf("Handle %d = nil in a group that panicked", i)
			}
		}
		if n != 1 {
			t.Errorf("%d Handle calls panicked, want 1 (the group's leader)", n)
		}
		// Nothing of the group committed, and the consumer handles again.
		if got := count(t, db, "effects"); got != 1 {
			t.Errorf("effects = %d, want 1 (first)", got)
		}
		for _, d := range []events.Delivery{others[0], others[2]} {
			if err := c.Handle(t.Context(), d); err != nil {
				t.Errorf("Handle after the panic = %v", err)
			}
		}
		if got := count(t, db, "effects"); got != 3 {
			t.Errorf("effects = %d, want 3", got)
		}
	})
}
