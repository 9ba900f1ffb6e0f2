package events_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/events/kafkabus"
	"github.com/switchboard-rpc/switchboard/kit/events/natsbus"
	"github.com/switchboard-rpc/switchboard/kit/events/rabbitbus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	// window bounds the events written and not yet handled.
	window = 64
	// subjects is how many subjects (keys) the events are spread over.
	subjects = 16
	// stall is how long the pipeline may go without handling an event
	// before the run fails.
	stall = 30 * time.Second
	// openTimeout bounds setting up a database or a transport.
	openTimeout = 30 * time.Second
	// maxLatency is the largest latency the histogram tracks.
	maxLatency = time.Minute
)

// opener sets up a broker namespace for one run and returns the
// transports of the producing service's relay and of the consuming
// service; both are closed when the run ends.
type opener func(tb testing.TB) (relay, consumer events.Transport)

// transports are the sub-benchmarks: bare is the baseline of the others.
var transports = []struct {
	name string
	open opener
}{
	{"bare", openDirect},
	{"nats", openNATS},
	{"kafka", openKafka},
	{"rabbitmq", openRabbit},
}

// BenchmarkEndToEnd measures b.N events from Outbox.Add to the consumer's
// commit through each transport.
func BenchmarkEndToEnd(b *testing.B) {
	for _, tc := range transports {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			p := newPipeline(b, tc.open)
			b.ResetTimer()
			res := p.run(b, b.N)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/res.elapsed.Seconds(), "events/s")
			b.ReportMetric(ms(res.latency.ValueAtQuantile(50)), "p50-ms")
			b.ReportMetric(ms(res.latency.ValueAtQuantile(99)), "p99-ms")
		})
	}
}

// TestEndToEnd runs each benchmark's pipeline once with a few events, so
// that the benchmarks keep working: every event is handled exactly once
// and its latency recorded.
func TestEndToEnd(t *testing.T) {
	const n = 200
	for _, tc := range transports {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeline(t, tc.open)
			res := p.run(t, n)
			if got := res.latency.TotalCount(); got != n {
				t.Errorf("latencies recorded = %d, want %d", got, n)
			}
			if got := p.consumer.Stats(); got.Handled != n+1 || got.Failures != 0 {
				t.Errorf("consumer stats = %+v, want %d handled (the warm-up event too) and no failures", got, n+1)
			}
			var inbox int
			if err := p.consumerDB.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM `+events.InboxTable).Scan(&inbox); err != nil {
				t.Fatal(err)
			}
			if inbox != n+1 {
				t.Errorf("inbox rows = %d, want %d", inbox, n+1)
			}
			if res.elapsed <= 0 {
				t.Errorf("elapsed = %v, want > 0", res.elapsed)
			}
		})
	}
}

// ms converts microseconds to milliseconds.
func ms(us int64) float64 { return float64(us) / 1000 }

// pipeline is a producing service (its database, outbox and relay) and a
// consuming service (its database and consumer) joined by a transport.
type pipeline struct {
	producer   *sqldb.DB
	consumerDB *sqldb.DB
	outbox     *events.Outbox
	consumer   *events.Consumer

	// slots holds a token per event written and not yet handled.
	slots chan struct{}

	mu      sync.Mutex
	hist    *hdrhistogram.Histogram
	handled int
	target  int
	done    chan struct{} // closed when handled reaches target
	last    time.Time     // when the last event was handled
}

// newPipeline sets the pipeline up on fresh SQLite files and the
// transports open returns, starts the relay and the consumer, and passes
// one event through it so that the subscription is live.
func newPipeline(tb testing.TB, open opener) *pipeline {
	tb.Helper()
	dir := tb.TempDir()
	p := &pipeline{
		producer:   openDB(tb, filepath.Join(dir, "producer.db")),
		consumerDB: openDB(tb, filepath.Join(dir, "consumer.db")),
		outbox:     events.NewOutbox("bench", events.SQLite),
		slots:      make(chan struct{}, window),
		hist:       hdrhistogram.New(1, maxLatency.Microseconds(), 3),
	}
	relayTr, consumerTr := open(tb)
	sub := events.Subscription{Group: "bench"}
	p.consumer = events.NewConsumer(p.consumerDB.DB, consumerTr, sub,
		func(context.Context, *sql.Tx, *eventsv1.Envelope) error { return nil },
		events.WithAfterCommit(p.handled1))
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	if err := p.consumer.Setup(ctx); err != nil {
		tb.Fatalf("Consumer.Setup() = %v", err)
	}
	relay := events.NewRelay(p.producer.DB, events.SQLite, p.outbox, relayTr)
	// Stopped in reverse: the relay first, so nothing is published to a
	// consumer that has stopped.
	background(tb, "Consumer.Run", p.consumer.Run)
	background(tb, "Relay.Run", relay.Run)
	p.run(tb, 1) // warm-up
	return p
}

// openDB opens a fresh SQLite database with the events tables.
func openDB(tb testing.TB, path string) *sqldb.DB {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	db, err := sqldb.Open(ctx, path)
	if err != nil {
		tb.Fatalf("sqldb.Open(%s) = %v", path, err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	if err := events.Migrate(ctx, db.DB, events.SQLite); err != nil {
		tb.Fatalf("events.Migrate() = %v", err)
	}
	return db
}

// background runs fn until the run ends; the cleanup cancels it and waits
// for it to return.
func background(tb testing.TB, name string, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("%s = %v, want nil", name, err)
			}
		case <-time.After(stall):
			tb.Errorf("%s still running %v after cancel", name, stall)
		}
	})
}

// handled1 runs after each consumer commit: it records the event's
// latency and frees its slot.
func (p *pipeline) handled1(_ context.Context, env *eventsv1.Envelope) {
	now := time.Now()
	lat := now.Sub(env.GetTime().AsTime())
	p.mu.Lock()
	// Latencies past maxLatency are recorded as maxLatency.
	_ = p.hist.RecordValue(min(max(lat.Microseconds(), 1), maxLatency.Microseconds()))
	p.handled++
	p.last = now
	if p.handled == p.target {
		close(p.done)
	}
	p.mu.Unlock()
	select {
	case <-p.slots:
	default:
	}
}

// result is one run's measurements.
type result struct {
	elapsed time.Duration
	latency *hdrhistogram.Histogram
}

// run writes n events, each in its own transaction, and returns once the
// consumer has handled them all.
func (p *pipeline) run(tb testing.TB, n int) result {
	tb.Helper()
	p.mu.Lock()
	p.hist.Reset()
	p.handled, p.target = 0, n
	done := make(chan struct{})
	p.done = done
	p.mu.Unlock()

	ctx := context.Background()
	start := time.Now()
	for i := range n {
		select {
		case p.slots <- struct{}{}:
		case <-time.After(stall):
			tb.Fatalf("event %d of %d: no event handled for %v (%d handled)", i+1, n, stall, p.count())
		}
		subject := fmt.Sprintf("item-%02d", i%subjects)
		if err := p.producer.Tx(ctx, func(tx *sql.Tx) error {
			_, err := p.outbox.Add(ctx, tx, subject, &eventsv1.StockChanged{ItemId: subject, Version: int64(i + 1)})
			return err
		}); err != nil {
			tb.Fatalf("produce event %d: %v", i+1, err)
		}
		p.outbox.Wake()
	}
	for {
		before := p.count()
		select {
		case <-done:
			p.mu.Lock()
			defer p.mu.Unlock()
			out := hdrhistogram.New(1, maxLatency.Microseconds(), 3)
			out.Merge(p.hist)
			return result{elapsed: p.last.Sub(start), latency: out}
		case <-time.After(stall):
			if p.count() == before {
				tb.Fatalf("no event handled for %v (%d of %d handled)", stall, before, n)
			}
		}
	}
}

// count returns how many events of the current run were handled.
func (p *pipeline) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.handled
}

// direct is the transport without a broker: Publish calls the subscribed
// handler in the caller's goroutine and returns its error, so the relay
// marks an event sent once the consumer has committed it.
type direct struct {
	mu    sync.Mutex
	h     events.Handler
	ready chan struct{} // closed once a handler subscribed
}

var errSubscribed = errors.New("direct transport: already subscribed")

// Publish hands msg to the handler, waiting for one to subscribe.
func (d *direct) Publish(ctx context.Context, msg events.Message) error {
	select {
	case <-d.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	d.mu.Lock()
	h := d.h
	d.mu.Unlock()
	return h(ctx, events.Delivery{Message: msg, Attempt: 1})
}

// Setup has nothing to set up: there is no broker state.
func (d *direct) Setup(context.Context, events.Subscription) error { return nil }

// Subscribe registers h until ctx ends. One handler at a time.
func (d *direct) Subscribe(ctx context.Context, _ events.Subscription, h events.Handler) error {
	d.mu.Lock()
	if d.h != nil {
		d.mu.Unlock()
		return errSubscribed
	}
	d.h = h
	close(d.ready)
	d.mu.Unlock()
	<-ctx.Done()
	return nil
}

// Close has nothing to release.
func (d *direct) Close() error { return nil }

func openDirect(testing.TB) (relay, consumer events.Transport) {
	d := &direct{ready: make(chan struct{})}
	return d, d
}

// openNATS starts an embedded JetStream server in a temporary directory.
func openNATS(tb testing.TB) (relay, consumer events.Transport) {
	tb.Helper()
	e, err := natsbus.StartEmbedded(tb.TempDir(), natsbus.WithMaxStorage(1<<30))
	if err != nil {
		tb.Fatalf("natsbus.StartEmbedded() = %v", err)
	}
	tb.Cleanup(e.Shutdown)
	opts := natsbus.Options{URL: e.ClientURL(), Stream: "BENCH", Subject: "bench", MaxBytes: 512 << 20}
	open := func() events.Transport {
		ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
		defer cancel()
		tr, err := natsbus.New(ctx, opts)
		if err != nil {
			tb.Fatalf("natsbus.New() = %v", err)
		}
		closeOnCleanup(tb, tr)
		return tr
	}
	return open(), open()
}

// openKafka starts an in-process Kafka cluster.
func openKafka(tb testing.TB) (relay, consumer events.Transport) {
	tb.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		tb.Fatalf("kfake.NewCluster() = %v", err)
	}
	tb.Cleanup(c.Close)
	opts := kafkabus.Options{
		Brokers:           c.ListenAddrs(),
		Topic:             "bench",
		HeartbeatInterval: 100 * time.Millisecond,
		FetchMaxWait:      200 * time.Millisecond,
	}
	open := func() events.Transport {
		ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
		defer cancel()
		tr, err := kafkabus.New(ctx, opts)
		if err != nil {
			tb.Fatalf("kafkabus.New() = %v", err)
		}
		closeOnCleanup(tb, tr)
		return tr
	}
	return open(), open()
}

// rabbitURL is the RabbitMQ the benchmark uses: the machine's, or
// SWITCHBOARD_TEST_RABBITMQ.
func rabbitURL() string {
	if v := os.Getenv("SWITCHBOARD_TEST_RABBITMQ"); v != "" {
		return v
	}
	return rabbitbus.DefaultURL
}

// openRabbit makes an exchange and queues of the run's own on RabbitMQ,
// deleted when the run ends. Without a reachable broker it is skipped,
// except under CI=true, where it fails (sqltest.Unavailable).
func openRabbit(tb testing.TB) (relay, consumer events.Transport) {
	tb.Helper()
	url := rabbitURL()
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		sqltest.Unavailable(tb, "RabbitMQ", err)
	}
	_ = conn.Close()
	name := "bench.events." + strings.ToLower(rand.Text()[:10])
	opts := rabbitbus.Options{URL: url, Exchange: name, Prefix: name + ".", Name: "events-bench"}
	tb.Cleanup(func() { deleteRabbit(tb, opts, "bench") })
	open := func() events.Transport {
		ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
		defer cancel()
		tr, err := rabbitbus.New(ctx, opts)
		if err != nil {
			tb.Fatalf("rabbitbus.New() = %v", err)
		}
		closeOnCleanup(tb, tr)
		return tr
	}
	return open(), open()
}

// deleteRabbit removes the group's queues and the exchanges.
func deleteRabbit(tb testing.TB, opts rabbitbus.Options, group string) {
	conn, err := amqp.DialConfig(opts.URL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		tb.Errorf("cleanup: connecting to RabbitMQ: %v", err)
		return
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		tb.Errorf("cleanup: channel: %v", err)
		return
	}
	for _, q := range []string{opts.Prefix + group, opts.Prefix + group + ".dlq"} {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			tb.Errorf("cleanup: deleting queue %s: %v", q, err)
			return
		}
	}
	for _, x := range []string{opts.Exchange, opts.Exchange + ".dlx"} {
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			tb.Errorf("cleanup: deleting exchange %s: %v", x, err)
			return
		}
	}
}

// closeOnCleanup closes tr when the run ends.
func closeOnCleanup(tb testing.TB, tr events.Transport) {
	tb.Cleanup(func() {
		if err := tr.Close(); err != nil {
			tb.Errorf("Close() = %v", err)
		}
	})
}
