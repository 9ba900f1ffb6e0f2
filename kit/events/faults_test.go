package events_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kfake"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/events/kafkabus"
	"github.com/switchboard-rpc/switchboard/kit/events/natsbus"
	"github.com/switchboard-rpc/switchboard/kit/events/rabbitbus"
)

// The fault tests run the outbox, the relay and the inbox consumer over
// the real transports, break something in the middle, and check what a
// user of the events package is promised: every committed event acted on
// exactly once, in commit order per subject.

// faultWait bounds every wait in the fault tests.
const faultWait = 45 * time.Second

// faultGroup is the consumer group of the fault tests.
const faultGroup = "effects"

// faultBroker is a real broker the fault tests run against.
type faultBroker struct {
	name string
	// dedupes reports whether the broker stores a message published
	// twice with one id only once (JetStream's duplicates window).
	dedupes bool
	// namespace sets up a fresh namespace on the broker for one test
	// (its own server, cluster or exchange and queues), removed when the
	// test ends, and returns a function that opens transports in it, as
	// separate processes would; each is closed when the test ends.
	namespace func(t *testing.T) func() events.Transport
}

// faultBrokers are NATS JetStream (an embedded server), Kafka (kfake, in
// process) and the machine's RabbitMQ.
var faultBrokers = []faultBroker{
	{name: "nats", dedupes: true, namespace: faultNATS},
	{name: "kafka", namespace: faultKafka},
	{name: "rabbitmq", namespace: faultRabbit},
}

// faultEach runs fn for every broker on a fresh migrated database of each
// engine.
func faultEach(t *testing.T, fn func(t *testing.T, b faultBroker, db *sql.DB, d events.Dialect)) {
	t.Helper()
	for _, b := range faultBrokers {
		t.Run(b.name, func(t *testing.T) {
			eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) { fn(t, b, db, d) })
		})
	}
}

// faultLogger writes warnings into the test's output.
func faultLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// faultOpenCtx bounds opening a transport.
func faultOpenCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// faultCloseOnCleanup closes tr when the test ends.
func faultCloseOnCleanup(t *testing.T, tr events.Transport) {
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
}

// faultNATS starts an embedded JetStream server in the test's directory.
func faultNATS(t *testing.T) func() events.Transport {
	t.Helper()
	e, err := natsbus.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatalf("StartEmbedded() = %v", err)
	}
	t.Cleanup(e.Shutdown)
	return faultNATSTransports(t, e.ClientURL())
}

// faultNATSTransports opens transports on the server at url.
func faultNATSTransports(t *testing.T, url string) func() events.Transport {
	opts := natsbus.Options{
		URL:            url,
		Stream:         "FAULTS",
		Subject:        "faults",
		MaxBytes:       32 << 20,
		RequestTimeout: 2 * time.Second,
		Logger:         faultLogger(t),
	}
	return func() events.Transport {
		t.Helper()
		tr, err := natsbus.New(faultOpenCtx(t), opts)
		if err != nil {
			t.Fatalf("natsbus.New(%s) = %v", url, err)
		}
		faultCloseOnCleanup(t, tr)
		return tr
	}
}

// faultKafka starts an in-process Kafka cluster.
func faultKafka(t *testing.T) func() events.Transport {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatalf("kfake.NewCluster() = %v", err)
	}
	t.Cleanup(c.Close)
	opts := kafkabus.Options{
		Brokers:           c.ListenAddrs(),
		Topic:             "faults",
		Partitions:        4,
		Logger:            faultLogger(t),
		HeartbeatInterval: 100 * time.Millisecond,
		FetchMaxWait:      200 * time.Millisecond,
	}
	return func() events.Transport {
		t.Helper()
		tr, err := kafkabus.New(faultOpenCtx(t), opts)
		if err != nil {
			t.Fatalf("kafkabus.New() = %v", err)
		}
		faultCloseOnCleanup(t, tr)
		return tr
	}
}

// faultRabbitURL is the RabbitMQ the fault tests use: the machine's, or
// SWITCHBOARD_TEST_RABBITMQ.
func faultRabbitURL() string {
	if v := os.Getenv("SWITCHBOARD_TEST_RABBITMQ"); v != "" {
		return v
	}
	return rabbitbus.DefaultURL
}

// faultRabbit makes an exchange and queue prefix of the test's own on the
// machine's RabbitMQ, skipping the test when it cannot be reached (failing
// it under CI=true). The queues of every group used and both exchanges
// are deleted when the test ends.
func faultRabbit(t *testing.T) func() events.Transport {
	t.Helper()
	conn, err := amqp.DialConfig(faultRabbitURL(), amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		sqltest.Unavailable(t, "RabbitMQ", err)
	}
	_ = conn.Close()
	name := "test.faults." + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, t.Name()) + "." + strings.ToLower(rand.Text()[:10])
	opts := rabbitbus.Options{
		URL:          faultRabbitURL(),
		Exchange:     name,
		Prefix:       name + ".",
		Name:         "events-faults-test",
		Logger:       faultLogger(t),
		MinReconnect: 20 * time.Millisecond,
		MaxReconnect: 500 * time.Millisecond,
	}
	groups := &faultGroups{seen: map[string]bool{}}
	t.Cleanup(func() { faultRabbitDelete(t, opts, groups.list()) })
	return func() events.Transport {
		t.Helper()
		tr, err := rabbitbus.New(faultOpenCtx(t), opts)
		if err != nil {
			t.Fatalf("rabbitbus.New() = %v", err)
		}
		faultCloseOnCleanup(t, tr)
		return &faultRecording{Transport: tr, groups: groups}
	}
}

// faultGroups notes the consumer groups a test declared on RabbitMQ.
type faultGroups struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (g *faultGroups) add(group string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seen[group] = true
}

func (g *faultGroups) list() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.seen))
	for k := range g.seen {
		out = append(out, k)
	}
	return out
}

// faultRecording is a RabbitMQ transport that notes the groups it
// declares, so that their queues are deleted.
type faultRecording struct {
	events.Transport
	groups *faultGroups
}

func (r *faultRecording) Setup(ctx context.Context, sub events.Subscription) error {
	r.groups.add(sub.Group)
	return r.Transport.Setup(ctx, sub)
}

func (r *faultRecording) Subscribe(ctx context.Context, sub events.Subscription, h events.Handler) error {
	r.groups.add(sub.Group)
	return r.Transport.Subscribe(ctx, sub, h)
}

// faultRabbitDelete removes the groups' queues and the exchanges.
func faultRabbitDelete(t *testing.T, opts rabbitbus.Options, groups []string) {
	conn, err := amqp.DialConfig(opts.URL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Errorf("cleanup: connecting to RabbitMQ: %v", err)
		return
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("cleanup: channel: %v", err)
		return
	}
	for _, g := range groups {
		for _, q := range []string{opts.Prefix + g, opts.Prefix + g + ".dlq"} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Errorf("cleanup: deleting queue %s: %v", q, err)
				return
			}
		}
	}
	for _, x := range []string{opts.Exchange, opts.Exchange + ".dlx"} {
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			t.Errorf("cleanup: deleting exchange %s: %v", x, err)
			return
		}
	}
}

// faultKillAfter forwards to a real transport and cancels the relay's
// context right after the k-th acknowledged publish, as if the relay's
// process died after the broker took the event and before the relay
// could mark its batch sent. A dead process publishes nothing more.
type faultKillAfter struct {
	events.Transport
	k    int64
	kill context.CancelFunc
	n    atomic.Int64
}

func (f *faultKillAfter) Publish(ctx context.Context, m events.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Transport.Publish(ctx, m); err != nil {
		return err
	}
	if f.n.Add(1) == f.k {
		f.kill()
	}
	return nil
}

// faultEvent is a produced event as the effects table records it.
type faultEvent struct {
	subject string
	version int64
}

// faultSubjects returns n subject names.
func faultSubjects(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("item-%02d", i)
	}
	return out
}

// faultCreateEffects creates the table the handlers write: one row per
// event acted on, in handling order. Nothing in it is unique, so an event
// acted on twice shows as two rows.
func faultCreateEffects(t *testing.T, db *sql.DB, d events.Dialect) {
	t.Helper()
	seq := "seq INTEGER PRIMARY KEY AUTOINCREMENT"
	if d == events.Postgres {
		seq = "seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
	}
	if _, err := db.ExecContext(t.Context(), `CREATE TABLE effects (`+seq+`,
		event_id TEXT   NOT NULL,
		subject  TEXT   NOT NULL,
		version  BIGINT NOT NULL
	)`); err != nil {
		t.Fatalf("create effects: %v", err)
	}
}

// faultEffect is the handler: it acts on a StockChanged event by writing
// one effects row in the consumer's transaction.
func faultEffect(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
	var sc eventsv1.StockChanged
	if err := env.GetPayload().UnmarshalTo(&sc); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO effects (event_id, subject, version) VALUES ($1, $2, $3)`,
		env.GetId(), env.GetSubject(), sc.GetVersion()); err != nil {
		return fmt.Errorf("effect: %w", err)
	}
	return nil
}

// faultProduce commits versions 1..each of a StockChanged event about
// every subject, one transaction per event and the subjects concurrently,
// each subject's events in order with pace between them. Event i of a
// subject is added through outboxes[i%len(outboxes)], which is woken
// after the commit. If halfway is not nil, it runs once every subject's
// first half is committed, and nothing more is committed until it
// returns. It returns every committed event by id.
func faultProduce(ctx context.Context, db *sql.DB, outboxes []*events.Outbox, subjects []string, each int, pace time.Duration, halfway func()) (map[string]faultEvent, error) {
	var (
		mu       sync.Mutex
		produced = make(map[string]faultEvent, len(subjects)*each)
		wg       sync.WaitGroup
		errs     = make(chan error, len(subjects))
		half     sync.WaitGroup
		resume   = make(chan struct{})
	)
	if halfway != nil {
		half.Add(len(subjects))
		wg.Go(func() {
			half.Wait()
			halfway()
			close(resume)
		})
	}
	for _, s := range subjects {
		wg.Go(func() {
			reached := halfway == nil
			defer func() {
				if !reached {
					half.Done() // failed before halfway: do not hold it up
				}
			}()
			for v := 1; v <= each; v++ {
				if v == each/2+1 && !reached {
					reached = true
					half.Done()
					select {
					case <-resume:
					case <-ctx.Done():
						errs <- ctx.Err()
						return
					}
				}
				o := outboxes[v%len(outboxes)]
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					errs <- fmt.Errorf("begin %s v%d: %w", s, v, err)
					return
				}
				env, err := o.Add(ctx, tx, s, &eventsv1.StockChanged{ItemId: s, Version: int64(v)})
				if err != nil {
					_ = tx.Rollback()
					errs <- fmt.Errorf("Add(%s, v%d) = %w", s, v, err)
					return
				}
				if err := tx.Commit(); err != nil {
					errs <- fmt.Errorf("commit %s v%d: %w", s, v, err)
					return
				}
				o.Wake()
				mu.Lock()
				produced[env.GetId()] = faultEvent{subject: s, version: int64(v)}
				mu.Unlock()
				if pace > 0 {
					select {
					case <-ctx.Done():
						errs <- ctx.Err()
						return
					case <-time.After(pace):
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return produced, errors.Join(all...)
}

// faultEventually polls cond until it holds, failing the test after
// faultWait with what and the state that status describes.
func faultEventually(t *testing.T, what string, cond func() bool, status func() string) {
	t.Helper()
	deadline := time.Now().Add(faultWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (%s)", faultWait, what, status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// faultStatus describes the tables and the consumer, for timeouts.
func faultStatus(t *testing.T, db *sql.DB, c *events.Consumer) func() string {
	return func() string {
		s := c.Stats()
		return fmt.Sprintf("effects %d, outbox %d, inbox %d; consumer handled %d, duplicates %d, failures %d",
			count(t, db, "effects"), count(t, db, events.OutboxTable), count(t, db, events.InboxTable),
			s.Handled, s.Duplicates, s.Failures)
	}
}

// faultCheckEffects checks the effects table against the produced events,
// less those in skip: each acted on exactly once and, with ordered, per
// subject in the order the events were produced. It returns the subjects
// whose events were first handled out of order.
func faultCheckEffects(t *testing.T, db *sql.DB, produced map[string]faultEvent, skip map[string]bool, ordered bool) (disordered []string) {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT event_id, subject, version FROM effects ORDER BY seq`)
	if err != nil {
		t.Fatalf("read effects: %v", err)
	}
	defer func() { _ = rows.Close() }()
	acted := map[string]int{}
	got := map[string][]int64{}
	n := 0
	for rows.Next() {
		var id string
		var e faultEvent
		if err := rows.Scan(&id, &e.subject, &e.version); err != nil {
			t.Fatalf("read effects: %v", err)
		}
		n++
		acted[id]++
		if acted[id] == 1 {
			got[e.subject] = append(got[e.subject], e.version)
		}
		if want, ok := produced[id]; !ok || skip[id] {
			t.Errorf("effect for event %s (%s v%d), which should not have been acted on", id, e.subject, e.version)
		} else if want != e {
			t.Errorf("effect for event %s = %s v%d, want %s v%d", id, e.subject, e.version, want.subject, want.version)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read effects: %v", err)
	}
	want := map[string][]int64{}
	for id, e := range produced {
		if skip[id] {
			continue
		}
		want[e.subject] = append(want[e.subject], e.version)
		if acted[id] != 1 {
			t.Errorf("event %s (%s v%d) acted on %d times, want 1", id, e.subject, e.version, acted[id])
		}
	}
	for _, vs := range want {
		slices.Sort(vs)
	}
	if wantN := len(produced) - len(skip); n != wantN {
		t.Errorf("effects = %d rows, want %d (one per event)", n, wantN)
	}
	for subject, vs := range want {
		if !slices.Equal(vs, got[subject]) {
			disordered = append(disordered, subject)
		}
	}
	slices.Sort(disordered)
	if diff := cmp.Diff(want, got); ordered && diff != "" {
		t.Errorf("versions per subject in order of first handling (-want +got):\n%s", diff)
	}
	return disordered
}

// faultSub is the subscription of the fault tests' consumer: quick
// retries and a short AckWait, so that redeliveries come soon.
func faultSub() events.Subscription {
	return events.Subscription{
		Group:   faultGroup,
		AckWait: 3 * time.Second,
		Backoff: []time.Duration{20 * time.Millisecond},
	}
}

// faultConsumer returns a consumer of sub on tr running h, set up so that
// the group keeps every event published from now on.
func faultConsumer(t *testing.T, db *sql.DB, tr events.Transport, sub events.Subscription, h events.TxHandler) *events.Consumer {
	t.Helper()
	c := events.NewConsumer(db, tr, sub, h, events.WithLogger(faultLogger(t)))
	ctx, cancel := context.WithTimeout(t.Context(), faultWait)
	defer cancel()
	if err := c.Setup(ctx); err != nil {
		t.Fatalf("Consumer.Setup() = %v", err)
	}
	return c
}

// TestFaultRelayKilledBetweenPublishAndMark kills a relay right after
// the broker acknowledged an event in the middle of a batch, before the
// batch was marked sent, and starts another relay: the unmarked events
// are published again, and the inbox makes the consumer act on each
// event exactly once, per subject in commit order.
func TestFaultRelayKilledBetweenPublishAndMark(t *testing.T) {
	const (
		subjects = 10
		each     = 30
		n        = subjects * each
		batch    = 100
		killAt   = 150
		marked   = killAt / batch * batch // the batches marked before the kill
	)
	faultEach(t, func(t *testing.T, b faultBroker, db *sql.DB, d events.Dialect) {
		faultCreateEffects(t, db, d)
		open := b.namespace(t)
		c := faultConsumer(t, db, open(), faultSub(), faultEffect)
		o := events.NewOutbox("inventory", d)
		produced, err := faultProduce(t.Context(), db, []*events.Outbox{o}, faultSubjects(subjects), each, 0, nil)
		if err != nil {
			t.Fatalf("produce: %v", err)
		}
		stopConsumer := run(t, "Consumer.Run", c.Run)

		ctx, kill := context.WithTimeout(t.Context(), faultWait)
		defer kill()
		dying := &faultKillAfter{Transport: open(), k: killAt, kill: kill}
		first := events.NewRelay(db, d, o, dying, events.WithInstance("first"), events.WithBatchSize(batch))
		if err := first.Run(ctx); err != nil {
			t.Fatalf("first Relay.Run() = %v, want nil", err)
		}
		if got := dying.n.Load(); got != killAt {
			t.Fatalf("publishes acknowledged before the kill = %d, want %d", got, killAt)
		}
		if got, want := count(t, db, events.OutboxTable), n-marked; got != want {
			t.Fatalf("outbox rows after the kill = %d, want %d (the batch in flight unmarked)", got, want)
		}

		second := events.NewRelay(db, d, o, open(), events.WithInstance("second"), events.WithBatchSize(batch))
		run(t, "second Relay.Run", second.Run)
		status := faultStatus(t, db, c)
		faultEventually(t, fmt.Sprintf("%d effects", n), func() bool { return count(t, db, "effects") >= n }, status)
		faultEventually(t, "an empty outbox", func() bool { return count(t, db, events.OutboxTable) == 0 }, status)
		if !b.dedupes {
			// The events published twice reach the consumer twice, each
			// before the last event of its subject, so they have been
			// delivered by now.
			if got, want := c.Stats().Duplicates, uint64(killAt-marked); got < want {
				t.Errorf("consumer duplicates = %d, want at least %d (the republished events)", got, want)
			}
		}
		stopConsumer()

		faultCheckEffects(t, db, produced, nil, true)
		if got := c.Stats().Handled; got != n {
			t.Errorf("consumer handled = %d, want %d", got, n)
		}
		if got := count(t, db, events.InboxTable); got != n {
			t.Errorf("inbox rows = %d, want %d", got, n)
		}
		t.Logf("%s: second relay published %d; consumer saw %d duplicates", b.name, second.Stats().Published, c.Stats().Duplicates)
	})
}

// TestFaultTwoRelaysAtOnce runs two relays, each with its own outbox
// handle and transport as two processes would, on one database while
// events are produced through both; halfway through, the relay that has
// been publishing stops and the other takes over. The lease lets one
// publish at a time, and every event is acted on exactly once, in order
// per subject.
func TestFaultTwoRelaysAtOnce(t *testing.T) {
	const (
		subjects = 10
		each     = 30
		n        = subjects * each
	)
	faultEach(t, func(t *testing.T, b faultBroker, db *sql.DB, d events.Dialect) {
		faultCreateEffects(t, db, d)
		open := b.namespace(t)
		c := faultConsumer(t, db, open(), faultSub(), faultEffect)
		stopConsumer := run(t, "Consumer.Run", c.Run)

		outboxes := []*events.Outbox{events.NewOutbox("inventory", d), events.NewOutbox("inventory", d)}
		var relays []*events.Relay
		var stops []func()
		for i, o := range outboxes {
			r := events.NewRelay(db, d, o, open(),
				events.WithInstance("relay-"+strconv.Itoa(i+1)),
				events.WithBatchSize(10),
				events.WithPollInterval(50*time.Millisecond),
				events.WithLeaseTTL(time.Second))
			stops = append(stops, run(t, r.Instance()+" Run", r.Run))
			relays = append(relays, r)
		}
		var stopped, other *events.Relay
		var otherBefore uint64
		produced, err := faultProduce(t.Context(), db, outboxes, faultSubjects(subjects), each, time.Millisecond, func() {
			i := 0
			if relays[1].Stats().Published > relays[0].Stats().Published {
				i = 1
			}
			stops[i]()
			stopped, other = relays[i], relays[1-i]
			otherBefore = other.Stats().Published
		})
		if err != nil {
			t.Fatalf("produce: %v", err)
		}
		status := faultStatus(t, db, c)
		faultEventually(t, fmt.Sprintf("%d effects", n), func() bool { return count(t, db, "effects") >= n }, status)
		faultEventually(t, "an empty outbox", func() bool { return count(t, db, events.OutboxTable) == 0 }, status)
		stopConsumer()

		faultCheckEffects(t, db, produced, nil, true)
		// The second half was committed after the first relay stopped.
		if got, want := other.Stats().Published-otherBefore, uint64(n-n/2); got < want {
			t.Errorf("%s published %d events after %s stopped, want at least %d", other.Instance(), got, stopped.Instance(), want)
		}
		t.Logf("%s: %s published %d, %s %d (%d after the handover)", b.name,
			stopped.Instance(), stopped.Stats().Published, other.Instance(), other.Stats().Published, other.Stats().Published-otherBefore)
	})
}

// errPoison is the error the poison event's handler always fails with.
var errPoison = errors.New("stock item cannot be processed")

// TestFaultPoisonEvent has the handler fail on one event every time: it is
// tried MaxDeliver times, then lands in the group's dead-letter
// destination with the error, and every other event, those after it about
// the same subject included, is acted on.
func TestFaultPoisonEvent(t *testing.T) {
	const (
		subjects   = 5
		each       = 8
		maxDeliver = 3
	)
	poison := faultEvent{subject: "item-02", version: 3}
	faultEach(t, func(t *testing.T, b faultBroker, db *sql.DB, d events.Dialect) {
		faultCreateEffects(t, db, d)
		open := b.namespace(t)
		var calls atomic.Int64
		sub := faultSub()
		sub.MaxDeliver = maxDeliver
		sub.Backoff = []time.Duration{10 * time.Millisecond}
		c := faultConsumer(t, db, open(), sub, func(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
			var sc eventsv1.StockChanged
			if err := env.GetPayload().UnmarshalTo(&sc); err != nil {
				return fmt.Errorf("payload: %w", err)
			}
			if (faultEvent{subject: env.GetSubject(), version: sc.GetVersion()}) == poison {
				calls.Add(1)
				return errPoison
			}
			return faultEffect(ctx, tx, env)
		})
		stopConsumer := run(t, "Consumer.Run", c.Run)

		var mu sync.Mutex
		var dead []events.Delivery
		dl := sub
		dl.DeadLetters = true
		dlTr := open()
		run(t, "dead-letter Subscribe", func(ctx context.Context) error {
			return dlTr.Subscribe(ctx, dl, func(_ context.Context, d events.Delivery) error {
				mu.Lock()
				defer mu.Unlock()
				dead = append(dead, d)
				return nil
			})
		})
		deadLetters := func() []events.Delivery {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(dead)
		}

		o := events.NewOutbox("inventory", d)
		run(t, "Relay.Run", events.NewRelay(db, d, o, open()).Run)
		produced, err := faultProduce(t.Context(), db, []*events.Outbox{o}, faultSubjects(subjects), each, 0, nil)
		if err != nil {
			t.Fatalf("produce: %v", err)
		}
		var poisonID string
		for id, e := range produced {
			if e == poison {
				poisonID = id
			}
		}
		n := len(produced)
		status := faultStatus(t, db, c)
		faultEventually(t, fmt.Sprintf("%d effects", n-1), func() bool { return count(t, db, "effects") >= n-1 }, status)
		faultEventually(t, "the dead letter", func() bool { return len(deadLetters()) > 0 }, status)
		stopConsumer()

		faultCheckEffects(t, db, produced, map[string]bool{poisonID: true}, true)
		if got := calls.Load(); got != maxDeliver {
			t.Errorf("poison event handled %d times, want MaxDeliver = %d", got, maxDeliver)
		}
		if got, want := count(t, db, events.InboxTable), n-1; got != want {
			t.Errorf("inbox rows = %d, want %d (the poison event's rolled back)", got, want)
		}
		dls := deadLetters()
		for _, dlv := range dls {
			if dlv.ID != poisonID {
				t.Errorf("dead letter %s, want only the poison event %s", dlv.ID, poisonID)
			}
		}
		got := dls[0]
		env, err := events.Decode(got.Message)
		if err != nil {
			t.Fatalf("Decode(dead letter) = %v", err)
		}
		if env.GetId() != poisonID || env.GetSubject() != poison.subject {
			t.Errorf("dead letter envelope = %s about %s, want %s about %s", env.GetId(), env.GetSubject(), poisonID, poison.subject)
		}
		if h := got.Header[events.HeaderError]; !strings.Contains(h, errPoison.Error()) {
			t.Errorf("dead letter %s = %q, want it to contain %q", events.HeaderError, h, errPoison.Error())
		}
		if h, want := got.Header[events.HeaderAttempts], strconv.Itoa(maxDeliver); h != want {
			t.Errorf("dead letter %s = %q, want %q", events.HeaderAttempts, h, want)
		}
		if h := got.Header[events.HeaderGroup]; h != faultGroup {
			t.Errorf("dead letter %s = %q, want %q", events.HeaderGroup, h, faultGroup)
		}
	})
}

// faultFreePort returns a loopback port nothing listens on right now.
func faultFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// TestFaultNATSBrokerRestartedMidStream shuts the embedded NATS server
// down and starts it again on the same directory and port while events
// are produced, published and consumed: publishes and acknowledgements
// fail while it is down, and still every event is acted on exactly once,
// in order per subject.
func TestFaultNATSBrokerRestartedMidStream(t *testing.T) {
	const (
		subjects = 10
		each     = 30
		n        = subjects * each
		down     = 500 * time.Millisecond
	)
	eachDB(t, func(t *testing.T, db *sql.DB, d events.Dialect) {
		faultCreateEffects(t, db, d)
		dir, port := t.TempDir(), faultFreePort(t)
		// Registered first so that it runs last, after the transports
		// closed: whichever server is running then is shut down.
		var srv *natsbus.Embedded
		t.Cleanup(func() {
			if srv != nil {
				srv.Shutdown()
			}
		})
		start := func() {
			t.Helper()
			e, err := natsbus.StartEmbedded(dir, natsbus.WithPort(port))
			if err != nil {
				t.Fatalf("StartEmbedded(port %d) = %v", port, err)
			}
			srv = e
		}
		start()
		open := faultNATSTransports(t, srv.ClientURL())

		c := faultConsumer(t, db, open(), faultSub(), faultEffect)
		stopConsumer := run(t, "Consumer.Run", c.Run)
		o := events.NewOutbox("inventory", d)
		// A publish whose request the restart swallowed waits for its
		// acknowledgement until the relay's lease runs out: a short lease
		// keeps that wait short.
		r := events.NewRelay(db, d, o, open(), events.WithPollInterval(100*time.Millisecond), events.WithLeaseTTL(2*time.Second))
		stopRelay := run(t, "Relay.Run", r.Run)

		type result struct {
			produced map[string]faultEvent
			err      error
		}
		done := make(chan result, 1)
		go func() {
			p, err := faultProduce(t.Context(), db, []*events.Outbox{o}, faultSubjects(subjects), each, 10*time.Millisecond, nil)
			done <- result{p, err}
		}()

		status := faultStatus(t, db, c)
		faultEventually(t, "a quarter of the events acted on", func() bool { return count(t, db, "effects") >= n/4 }, status)
		srv.Shutdown()
		t.Logf("server shut down with %d outbox rows and %d effects", count(t, db, events.OutboxTable), count(t, db, "effects"))
		time.Sleep(down)
		start()

		var res result
		select {
		case res = <-done:
		case <-time.After(faultWait):
			t.Fatal("producers did not finish")
		}
		if res.err != nil {
			t.Fatalf("produce: %v", res.err)
		}
		faultEventually(t, fmt.Sprintf("%d effects", n), func() bool { return count(t, db, "effects") >= n }, status)
		faultEventually(t, "an empty outbox", func() bool { return count(t, db, events.OutboxTable) == 0 }, status)
		stopRelay()
		stopConsumer()

		// Exactly once, but per subject order is only logged: events the
		// server had handed out when it stopped come back only after
		// AckWait, by when the subscriber has handled later events of
		// their subjects, although the stream holds every subject in order.
		disordered := faultCheckEffects(t, db, res.produced, nil, false)
		rs, cs := r.Stats(), c.Stats()
		if cs.Handled != n {
			t.Errorf("consumer handled = %d, want %d", cs.Handled, n)
		}
		t.Logf("relay published %d with %d failed publishes; consumer saw %d duplicates; subjects first handled out of order: %d %v",
			rs.Published, rs.PublishErrors, cs.Duplicates, len(disordered), disordered)
	})
}
