package rabbitbus

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/events/eventstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// brokerURL is the RabbitMQ the tests use: the machine's, or
// SWITCHBOARD_TEST_RABBITMQ.
func brokerURL() string {
	if v := os.Getenv("SWITCHBOARD_TEST_RABBITMQ"); v != "" {
		return v
	}
	return DefaultURL
}

// requireBroker skips the test when RabbitMQ cannot be reached, or fails
// it under CI=true (sqltest.Unavailable).
func requireBroker(t *testing.T) {
	t.Helper()
	conn, err := amqp.DialConfig(brokerURL(), amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		sqltest.Unavailable(t, "RabbitMQ", err)
	}
	_ = conn.Close()
}

// ctxTimeout is the test's context, bounded by the suite's wait.
func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), eventstest.Wait)
	t.Cleanup(cancel)
	return ctx
}

// testLogger writes the transport's warnings into the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// namespace is one test's exchanges and queue prefix on the real broker;
// the queues of every group used through it and both exchanges are
// deleted when the test ends.
type namespace struct {
	opts Options

	mu     sync.Mutex
	groups map[string]bool
}

// newNamespace makes unique names from the test's name and registers
// their deletion.
func newNamespace(t *testing.T) *namespace {
	t.Helper()
	requireBroker(t)
	name := "test." + sanitize(t.Name()) + "." + strings.ToLower(rand.Text()[:10])
	ns := &namespace{
		opts: Options{
			URL:          brokerURL(),
			Exchange:     name,
			Prefix:       name + ".",
			Name:         "rabbitbus-test",
			Logger:       testLogger(t),
			MinReconnect: 20 * time.Millisecond,
			MaxReconnect: 500 * time.Millisecond,
		},
		groups: map[string]bool{},
	}
	t.Cleanup(func() { ns.delete(t) })
	return ns
}

// sanitize keeps the characters queue names read well with.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, s)
	return s[:min(len(s), 120)]
}

func (ns *namespace) use(group string) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.groups[group] = true
}

// transport opens a Transport in the namespace, closed when the test ends.
func (ns *namespace) transport(t *testing.T, opts Options) *Transport {
	t.Helper()
	tr, err := New(ctxTimeout(t), opts)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return tr
}

// factory is the namespace as the contract suite sees it.
func (ns *namespace) factory(t *testing.T) events.Transport {
	t.Helper()
	return &recording{Transport: ns.transport(t, ns.opts), ns: ns}
}

// delete removes the group queues and exchanges the test declared.
func (ns *namespace) delete(t *testing.T) {
	conn, err := amqp.DialConfig(ns.opts.URL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Errorf("cleanup: connecting: %v", err)
		return
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("cleanup: channel: %v", err)
		return
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for g := range ns.groups {
		live := ns.opts.Prefix + g
		for _, q := range []string{live, live + ".dlq"} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Errorf("cleanup: deleting queue %s: %v", q, err)
				return
			}
		}
	}
	for _, x := range []string{ns.opts.Exchange, ns.opts.Exchange + ".dlx"} {
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			t.Errorf("cleanup: deleting exchange %s: %v", x, err)
			return
		}
	}
}

// recording is a Transport that notes the groups it declares, for the
// namespace to delete.
type recording struct {
	*Transport
	ns *namespace
}

func (r *recording) Setup(ctx context.Context, sub events.Subscription) error {
	r.ns.use(sub.Group)
	return r.Transport.Setup(ctx, sub)
}

func (r *recording) Subscribe(ctx context.Context, sub events.Subscription, h events.Handler) error {
	r.ns.use(sub.Group)
	return r.Transport.Subscribe(ctx, sub, h)
}

// proxy forwards TCP connections to the broker and can cut them all at
// once, as a network failure would.
type proxy struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	conns    map[net.Conn]bool
	accepted int
	wg       sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		_ = ln.Close()
		p.kill()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.accepted++
		p.conns[c], p.conns[u] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		p.wg.Go(func() { pipe(u, c) })
		p.wg.Go(func() { pipe(c, u) })
	}
}

// kill closes every forwarded connection.
func (p *proxy) kill() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	n := len(p.conns) / 2
	clear(p.conns)
	return n
}

func (p *proxy) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// brokerAddr is the host:port of brokerURL.
func brokerAddr(t *testing.T) string {
	t.Helper()
	u, err := amqp.ParseURI(brokerURL())
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// url is the broker URL with the proxy as its host.
func (p *proxy) url(t *testing.T, broker string) string {
	t.Helper()
	u, err := url.Parse(broker)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// unique counts distinct message ids.
func unique(ds []events.Delivery) map[string]bool {
	m := make(map[string]bool, len(ds))
	for _, d := range ds {
		m[d.ID] = true
	}
	return m
}
