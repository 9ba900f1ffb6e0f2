package natsbus_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/events/eventstest"
	"github.com/switchboard-rpc/switchboard/kit/events/natsbus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// localURL is the machine's NATS server (SWITCHBOARD_TEST_NATS overrides).
func localURL() string {
	if v := os.Getenv("SWITCHBOARD_TEST_NATS"); v != "" {
		return v
	}
	return "nats://127.0.0.1:4222"
}

// requireLocal returns the machine's NATS URL, skipping the test when it
// cannot be reached (failing it under CI=true).
func requireLocal(t *testing.T) string {
	t.Helper()
	url := localURL()
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second), nats.NoReconnect())
	if err != nil {
		sqltest.Unavailable(t, "NATS at "+url, err)
	}
	nc.Close()
	return url
}

// startEmbedded starts an embedded server under dir, shut down when the
// test ends.
func startEmbedded(t *testing.T, dir string, opts ...natsbus.EmbeddedOption) *natsbus.Embedded {
	t.Helper()
	e, err := natsbus.StartEmbedded(dir, opts...)
	if err != nil {
		t.Fatalf("StartEmbedded = %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

// backend is a broker the integration tests run against.
type backend struct {
	name string
	url  func(t *testing.T) string
}

// backends are the machine's server and an embedded one, started on first
// use and shut down when the parent test ends.
func backends(t *testing.T) []backend {
	var (
		once sync.Once
		e    *natsbus.Embedded
		err  error
	)
	dir := t.TempDir()
	t.Cleanup(func() {
		if e != nil {
			e.Shutdown()
		}
	})
	embedded := func(t *testing.T) string {
		once.Do(func() { e, err = natsbus.StartEmbedded(dir) })
		if err != nil {
			t.Fatalf("StartEmbedded = %v", err)
		}
		return e.ClientURL()
	}
	return []backend{{"local", requireLocal}, {"embedded", embedded}}
}

// namespace returns Options with a stream and subject prefix of the
// test's own; both streams are deleted when the test ends.
func namespace(t *testing.T, url string) natsbus.Options {
	t.Helper()
	var b strings.Builder
	for _, r := range t.Name() {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	name += "_" + rand.Text()[:8]
	opts := natsbus.Options{
		URL:            url,
		Stream:         "T_" + name,
		Subject:        "test." + name,
		MaxAge:         time.Hour,
		MaxBytes:       32 << 20,
		Duplicates:     time.Minute,
		RequestTimeout: 5 * time.Second,
	}
	anchor(t, url)
	t.Cleanup(func() { deleteStreams(t, url, opts.Stream, opts.Stream+"_DLQ") })
	return opts
}

// connectJS connects to the server at url for the test's length.
func connectJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second), nats.NoReconnect())
	if err != nil {
		t.Fatalf("connect %s = %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New = %v", err)
	}
	return js
}

// anchored holds the servers that have an anchor stream.
var anchored sync.Map

// anchor keeps one stream on the server that no test deletes. The server
// removes its account's streams directory out of band when the last stream
// is deleted, racing a stream created right after (the create fails with
// "could not create storage directory"); with the anchor in place the
// directory is never empty.
func anchor(t *testing.T, url string) {
	t.Helper()
	if _, done := anchored.Load(url); done {
		return
	}
	js := connectJS(t, url)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     "T_ANCHOR",
		Subjects: []string{"test.anchor"},
		Storage:  jetstream.FileStorage,
		MaxBytes: 1 << 20,
	}); err != nil {
		t.Fatalf("creating the anchor stream: %v", err)
	}
	anchored.Store(url, true)
}

func deleteStreams(t *testing.T, url string, names ...string) {
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second), nats.NoReconnect())
	if err != nil {
		t.Errorf("connecting to delete streams %v: %v", names, err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Errorf("jetstream.New = %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range names {
		if err := js.DeleteStream(ctx, n); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("DeleteStream(%s) = %v", n, err)
		}
	}
}

// open returns a transport closed when the test ends.
func open(t *testing.T, opts natsbus.Options) *natsbus.Transport {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tr, err := natsbus.New(ctx, opts)
	if err != nil {
		t.Fatalf("New(%s) = %v", opts.URL, err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
	})
	return tr
}

func factory(url string) func(t *testing.T) eventstest.Factory {
	return func(t *testing.T) eventstest.Factory {
		opts := namespace(t, url)
		return func(t *testing.T) events.Transport { return open(t, opts) }
	}
}

func TestContractLocal(t *testing.T) {
	eventstest.Run(t, factory(requireLocal(t)))
}

func TestContractEmbedded(t *testing.T) {
	e := startEmbedded(t, t.TempDir())
	eventstest.Run(t, factory(e.ClientURL()))
}

// deliveries records what a handler received.
type deliveries struct {
	mu   sync.Mutex
	got  []events.Delivery
	fail func(d events.Delivery) error
}

func (c *deliveries) handle(_ context.Context, d events.Delivery) error {
	c.mu.Lock()
	c.got = append(c.got, d)
	c.mu.Unlock()
	if c.fail != nil {
		return c.fail(d)
	}
	return nil
}

func (c *deliveries) snapshot() []events.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]events.Delivery(nil), c.got...)
}

func (c *deliveries) count(id string) int {
	n := 0
	for _, d := range c.snapshot() {
		if d.ID == id {
			n++
		}
	}
	return n
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func publish(t *testing.T, tr *natsbus.Transport, msgs ...events.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, m := range msgs {
		if err := tr.Publish(ctx, m); err != nil {
			t.Fatalf("Publish(%s) = %v", m.ID, err)
		}
	}
}

func TestDuplicateIDDeliveredOnce(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			tr := open(t, namespace(t, b.url(t)))
			sub := events.Subscription{Group: "dedup"}
			if err := tr.Setup(t.Context(), sub); err != nil {
				t.Fatalf("Setup = %v", err)
			}
			first := events.Message{ID: "dup-1", Type: "switchboard.events.v1.Test", Key: "k", Data: []byte("first")}
			again := first
			again.Data = []byte("again")
			publish(t, tr, first, again, events.Message{ID: "after", Type: "switchboard.events.v1.Test", Key: "k", Data: []byte("after")})
			c := &deliveries{}
			stop := eventstest.Subscribe(t, tr, sub, c.handle)
			waitUntil(t, 30*time.Second, "the message after the duplicate", func() bool { return c.count("after") > 0 })
			stop()
			if got := c.count("dup-1"); got != 1 {
				t.Errorf("deliveries of dup-1 = %d, want 1", got)
			}
			for _, d := range c.snapshot() {
				if d.ID == "dup-1" && string(d.Data) != "first" {
					t.Errorf("dup-1 Data = %q, want the first publish's %q", d.Data, "first")
				}
			}
		})
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			tr := open(t, namespace(t, b.url(t)))
			sub := events.Subscription{Group: "orders.projection v1", Backoff: []time.Duration{10 * time.Millisecond}}
			dl := sub
			dl.DeadLetters = true
			for _, s := range []events.Subscription{sub, dl} {
				if err := tr.Setup(t.Context(), s); err != nil {
					t.Fatalf("Setup(DeadLetters=%v) = %v", s.DeadLetters, err)
				}
			}
			want := events.Message{
				ID:     "rt-1",
				Type:   "switchboard.events.v1.OrderPlaced",
				Key:    "order 42/ü",
				Data:   []byte{0, 1, 2, '\n', 0xff},
				Header: map[string]string{"Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "x-lower": "v"},
			}
			publish(t, tr, want)
			c := &deliveries{fail: func(events.Delivery) error { return fmt.Errorf("no schema: %w", events.ErrPermanent) }}
			eventstest.Subscribe(t, tr, sub, c.handle)
			dead := &deliveries{}
			eventstest.Subscribe(t, tr, dl, dead.handle)
			waitUntil(t, 30*time.Second, "the dead letter", func() bool { return len(dead.snapshot()) > 0 })

			got := c.snapshot()[0]
			if diff := cmp.Diff(events.Delivery{Message: want, Attempt: 1}, got); diff != "" {
				t.Errorf("delivery differs from the published message (-want +got):\n%s", diff)
			}
			wantDead := want
			wantDead.Header = map[string]string{
				"Traceparent":         want.Header["Traceparent"],
				"x-lower":             "v",
				events.HeaderError:    "no schema: events: permanent failure",
				events.HeaderAttempts: "1",
				events.HeaderGroup:    sub.Group,
			}
			if diff := cmp.Diff(events.Delivery{Message: wantDead, Attempt: 1}, dead.snapshot()[0]); diff != "" {
				t.Errorf("dead letter differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDifferentKeysRunConcurrently(t *testing.T) {
	e := startEmbedded(t, t.TempDir())
	opts := namespace(t, e.ClientURL())
	opts.Lanes = 8
	tr := open(t, opts)
	sub := events.Subscription{Group: "lanes"}
	if err := tr.Setup(t.Context(), sub); err != nil {
		t.Fatalf("Setup = %v", err)
	}
	var msgs []events.Message
	for k := range 16 {
		msgs = append(msgs, events.Message{ID: fmt.Sprintf("m-%d", k), Type: "T", Key: fmt.Sprintf("key-%d", k)})
	}
	publish(t, tr, msgs...)
	others := make(chan struct{}, len(msgs))
	blocked := make(chan bool, 1)
	eventstest.Subscribe(t, tr, sub, func(ctx context.Context, d events.Delivery) error {
		if d.ID != "m-0" {
			others <- struct{}{}
			return nil
		}
		// The first key holds its lane until another key was handled.
		select {
		case <-others:
			blocked <- false
		case <-ctx.Done():
			blocked <- true
		}
		return nil
	})
	select {
	case wasBlocked := <-blocked:
		if wasBlocked {
			t.Error("no other key was handled while key-0's handler ran")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("key-0 never delivered")
	}
}

func TestCloseEndsSubscriptions(t *testing.T) {
	e := startEmbedded(t, t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tr, err := natsbus.New(ctx, namespace(t, e.ClientURL()))
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	sub := events.Subscription{Group: "closing"}
	if err := tr.Setup(ctx, sub); err != nil {
		t.Fatalf("Setup = %v", err)
	}
	done := make(chan error, 1)
	go func() {
		done <- tr.Subscribe(t.Context(), sub, func(context.Context, events.Delivery) error { return nil })
	}()
	time.Sleep(100 * time.Millisecond)
	if err := tr.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, natsbus.ErrClosed) {
			t.Errorf("Subscribe after Close = %v, want nil or ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe did not return after Close")
	}
	if err := tr.Publish(ctx, events.Message{ID: "x", Type: "T"}); !errors.Is(err, natsbus.ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestInvalidInputRejected(t *testing.T) {
	e := startEmbedded(t, t.TempDir())
	tr := open(t, namespace(t, e.ClientURL()))
	ok := events.Message{ID: "id", Type: "switchboard.events.v1.OrderPlaced", Key: "k"}
	with := func(f func(m *events.Message)) events.Message {
		m := ok
		m.Header = map[string]string{}
		f(&m)
		return m
	}
	bad := []struct {
		name string
		msg  events.Message
	}{
		{"empty type", with(func(m *events.Message) { m.Type = "" })},
		{"empty token", with(func(m *events.Message) { m.Type = "a..b" })},
		{"leading dot", with(func(m *events.Message) { m.Type = ".a" })},
		{"trailing dot", with(func(m *events.Message) { m.Type = "a." })},
		{"star", with(func(m *events.Message) { m.Type = "a.*" })},
		{"star inside a token", with(func(m *events.Message) { m.Type = "a*b" })},
		{"greater-than", with(func(m *events.Message) { m.Type = "a.>" })},
		{"space", with(func(m *events.Message) { m.Type = "Order Placed" })},
		{"tab", with(func(m *events.Message) { m.Type = "a\tb" })},
		{"no-break space", with(func(m *events.Message) { m.Type = "a\u00a0b" })},
		{"long type", with(func(m *events.Message) { m.Type = strings.Repeat("a", 256) })},
		{"empty id", with(func(m *events.Message) { m.ID = "" })},
		{"line break in id", with(func(m *events.Message) { m.ID = "a\r\nb" })},
		{"line break in key", with(func(m *events.Message) { m.Key = "a\nb" })},
		{"reserved Nats header", with(func(m *events.Message) { m.Header["Nats-Msg-Id"] = "x" })},
		{"reserved key header", with(func(m *events.Message) { m.Header["switchboard-key"] = "x" })},
		{"colon in header name", with(func(m *events.Message) { m.Header["a:b"] = "x" })},
		{"empty header name", with(func(m *events.Message) { m.Header[""] = "x" })},
		{"line break in header value", with(func(m *events.Message) { m.Header["A"] = "x\r\nB: y" })},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := tr.Publish(t.Context(), tc.msg); !errors.Is(err, natsbus.ErrInvalid) {
				t.Errorf("Publish(%+v) = %v, want ErrInvalid", tc.msg, err)
			}
		})
	}
	if err := tr.Publish(t.Context(), with(func(m *events.Message) { m.Header["X-Ok"] = "fine\tvalue" })); err != nil {
		t.Errorf("Publish(valid) = %v, want nil", err)
	}

	badSubs := []events.Subscription{
		{Group: ""},
		{Group: "g", Types: []string{"a.*"}},
		{Group: "g", Types: []string{"ok", "a b"}},
	}
	for _, s := range badSubs {
		if err := tr.Setup(t.Context(), s); !errors.Is(err, natsbus.ErrInvalid) {
			t.Errorf("Setup(%+v) = %v, want ErrInvalid", s, err)
		}
		if err := tr.Subscribe(t.Context(), s, func(context.Context, events.Delivery) error { return nil }); !errors.Is(err, natsbus.ErrInvalid) {
			t.Errorf("Subscribe(%+v) = %v, want ErrInvalid", s, err)
		}
	}
	if err := tr.Subscribe(t.Context(), events.Subscription{Group: "g"}, nil); !errors.Is(err, natsbus.ErrInvalid) {
		t.Errorf("Subscribe(nil handler) = %v, want ErrInvalid", err)
	}
}

func TestNewRejectsInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opts natsbus.Options
	}{
		{"dot in stream", natsbus.Options{Stream: "a.b"}},
		{"space in stream", natsbus.Options{Stream: "a b"}},
		{"long stream", natsbus.Options{Stream: strings.Repeat("S", 61)}},
		{"wildcard subject", natsbus.Options{Subject: "events.*"}},
		{"empty token in subject", natsbus.Options{Subject: "events..x"}},
		{"too many lanes", natsbus.Options{Lanes: 257}},
		{"too many in flight", natsbus.Options{MaxInFlight: 4097}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The URL is never dialled: options are checked first.
			tc.opts.URL = "nats://127.0.0.1:1"
			tr, err := natsbus.New(t.Context(), tc.opts)
			if !errors.Is(err, natsbus.ErrInvalid) {
				t.Errorf("New(%+v) = %v, want ErrInvalid", tc.opts, err)
			}
			if tr != nil {
				_ = tr.Close()
			}
		})
	}
}

func TestNewFailsWithoutServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	tr, err := natsbus.New(ctx, natsbus.Options{URL: "nats://" + addr, ConnectTimeout: time.Second})
	if err == nil {
		_ = tr.Close()
		t.Fatalf("New(%s) with no server = nil error, want a connection error", addr)
	}
}

func TestSeveralTypes(t *testing.T) {
	// Servers before 2.10 filter on one subject only; the transport then
	// filters in the subscriber. Both paths must give the same result.
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			tr := open(t, namespace(t, b.url(t)))
			sub := events.Subscription{Group: "two", Types: []string{"v1.A", "v1.B", "v1.A"}}
			if err := tr.Setup(t.Context(), sub); err != nil {
				t.Fatalf("Setup = %v", err)
			}
			publish(t, tr,
				events.Message{ID: "1", Type: "v1.A", Key: "k"},
				events.Message{ID: "2", Type: "v1.C", Key: "k"},
				events.Message{ID: "3", Type: "v1.B", Key: "k"},
				events.Message{ID: "4", Type: "v1.A.Sub", Key: "k"},
				events.Message{ID: "5", Type: "v1.A", Key: "k"},
			)
			c := &deliveries{}
			stop := eventstest.Subscribe(t, tr, sub, c.handle)
			waitUntil(t, 30*time.Second, "message 5", func() bool { return c.count("5") > 0 })
			stop()
			var got []string
			for _, d := range c.snapshot() {
				got = append(got, d.ID+"/"+d.Type)
			}
			if want := []string{"1/v1.A", "3/v1.B", "5/v1.A"}; !cmp.Equal(got, want) {
				t.Errorf("deliveries = %v, want %v", got, want)
			}
		})
	}
}

func TestSetupAppliesChangedTypes(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			tr := open(t, namespace(t, b.url(t)))
			for _, types := range [][]string{{"A"}, {"A", "C"}, nil, {"B"}} {
				if err := tr.Setup(t.Context(), events.Subscription{Group: "g", Types: types}); err != nil {
					t.Fatalf("Setup(Types %v) = %v", types, err)
				}
			}
			publish(t, tr,
				events.Message{ID: "a1", Type: "A", Key: "k"},
				events.Message{ID: "b1", Type: "B", Key: "k"},
				events.Message{ID: "c1", Type: "C", Key: "k"},
				events.Message{ID: "b2", Type: "B", Key: "k"},
			)
			c := &deliveries{}
			stop := eventstest.Subscribe(t, tr, events.Subscription{Group: "g", Types: []string{"B"}}, c.handle)
			waitUntil(t, 30*time.Second, "b2", func() bool { return c.count("b2") > 0 })
			stop()
			var got []string
			for _, d := range c.snapshot() {
				got = append(got, d.ID)
			}
			if want := []string{"b1", "b2"}; !cmp.Equal(got, want) {
				t.Errorf("deliveries after changing Types to [B] = %v, want %v", got, want)
			}
		})
	}
}
