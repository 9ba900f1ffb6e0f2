package rabbitbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/events/eventstest"
)

func TestContract(t *testing.T) {
	requireBroker(t)
	eventstest.Run(t, func(t *testing.T) eventstest.Factory {
		return newNamespace(t).factory
	})
}

// seq returns the number at the end of an id such as "k3-17".
func seq(t *testing.T, id string) int {
	t.Helper()
	n, err := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:])
	if err != nil {
		t.Fatalf("foreign id %q", id)
	}
	return n
}

// checkFirstOrder checks that per key, first deliveries come in publish
// order.
func checkFirstOrder(t *testing.T, got []events.Delivery) {
	t.Helper()
	last, seen := map[string]int{}, map[string]bool{}
	for _, d := range got {
		if seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		n := seq(t, d.ID)
		if prev, ok := last[d.Key]; ok && n < prev {
			t.Errorf("key %s: %s delivered after #%d", d.Key, d.ID, prev)
		}
		last[d.Key] = n
	}
}

func TestConcurrentPublish(t *testing.T) {
	ns := newNamespace(t)
	tr := ns.factory(t)
	sub := events.Subscription{Group: "concurrent"}
	if err := tr.Setup(ctxTimeout(t), sub); err != nil {
		t.Fatalf("Setup() = %v", err)
	}
	const publishers, each = 8, 40
	ctx := ctxTimeout(t)
	var wg sync.WaitGroup
	errs := make(chan error, publishers*each)
	for p := range publishers {
		wg.Go(func() {
			key := "k" + strconv.Itoa(p)
			for i := range each {
				id := fmt.Sprintf("%s-%d", key, i)
				if err := tr.Publish(ctx, events.Message{ID: id, Type: "test.Concurrent", Key: key, Data: []byte(id)}); err != nil {
					errs <- fmt.Errorf("Publish(%s) = %w", id, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c := eventstest.NewCollector(nil)
	eventstest.Subscribe(t, tr, sub, c.Handle)
	got := c.WaitFor(t, "every message", func(ds []events.Delivery) bool { return len(unique(ds)) >= publishers*each })
	if n := len(unique(got)); n != publishers*each {
		t.Errorf("got %d distinct messages, want %d", n, publishers*each)
	}
	for _, d := range got {
		if string(d.Data) != d.ID || !strings.HasPrefix(d.ID, d.Key+"-") {
			t.Errorf("delivery %s: key %q, data %q, want key and data to match the id", d.ID, d.Key, d.Data)
		}
	}
	checkFirstOrder(t, got)
}

// TestConnectionKilledMidStream cuts both connections while messages are
// being published and handled: the transport reconnects, publishing goes
// on, the subscription resumes, and every confirmed message arrives.
func TestConnectionKilledMidStream(t *testing.T) {
	ns := newNamespace(t)
	p := startProxy(t, brokerAddr(t))
	opts := ns.opts
	opts.URL = p.url(t, brokerURL())
	tr := ns.transport(t, opts)
	ns.use("killed")
	sub := events.Subscription{Group: "killed", Backoff: []time.Duration{20 * time.Millisecond}}
	if err := tr.Setup(ctxTimeout(t), sub); err != nil {
		t.Fatalf("Setup() = %v", err)
	}
	c := eventstest.NewCollector(nil)
	handler := func(ctx context.Context, d events.Delivery) error {
		// Slow enough that deliveries are in flight when the cut comes.
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		return c.Handle(ctx, d)
	}
	eventstest.Subscribe(t, tr, sub, handler)

	// Half the messages go before the cut, half after it; the cut comes
	// while the first half is still being handled.
	const keys, perKey = 4, 60
	ctx := ctxTimeout(t)
	cut := make(chan struct{})
	published := make(chan error, 1)
	go func() {
		for i := range perKey {
			if i == perKey/2 {
				select {
				case <-cut:
				case <-ctx.Done():
				}
			}
			for k := range keys {
				key := "k" + strconv.Itoa(k)
				id := fmt.Sprintf("%s-%d", key, i)
				if err := tr.Publish(ctx, events.Message{ID: id, Type: "test.Killed", Key: key, Data: []byte(id)}); err != nil {
					published <- fmt.Errorf("Publish(%s) = %w", id, err)
					return
				}
			}
		}
		published <- nil
	}()
	c.WaitFor(t, "a quarter of the messages", func(ds []events.Delivery) bool { return len(unique(ds)) >= keys*perKey/4 })
	if n := p.kill(); n != 2 {
		t.Errorf("cut %d connections, want 2 (publish and consume)", n)
	}
	t.Logf("cut after %d of %d messages were handled", len(unique(c.Snapshot())), keys*perKey)
	close(cut)
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	got := c.WaitFor(t, "every message after the cut", func(ds []events.Delivery) bool { return len(unique(ds)) >= keys*perKey })
	if n := len(unique(got)); n != keys*perKey {
		t.Errorf("got %d distinct messages, want %d", n, keys*perKey)
	}
	if n := p.connections(); n < 4 {
		t.Errorf("proxy saw %d connections, want at least 4 (both connections made again)", n)
	}
}

// TestSetupConflict: a queue that exists with other arguments is an
// error Setup and Subscribe report rather than retry.
func TestSetupConflict(t *testing.T) {
	ns := newNamespace(t)
	tr := ns.factory(t)
	ns.use("conflict")
	live, _ := tr.(*recording).Queues("conflict")
	conn, err := amqp.Dial(brokerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(live, true, false, false, false, nil); err != nil {
		t.Fatalf("declaring a classic queue %s: %v", live, err)
	}
	sub := events.Subscription{Group: "conflict"}
	var ae *amqp.Error
	if err := tr.Setup(ctxTimeout(t), sub); !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		t.Errorf("Setup() = %v, want PRECONDITION_FAILED", err)
	}
	if err := tr.Subscribe(ctxTimeout(t), sub, eventstest.NewCollector(nil).Handle); !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		t.Errorf("Subscribe() = %v, want PRECONDITION_FAILED", err)
	}
}

// TestCloseEndsSubscriptions: Close returns once Subscribe has returned
// nil, and the transport refuses work after.
func TestCloseEndsSubscriptions(t *testing.T) {
	ns := newNamespace(t)
	tr, err := New(ctxTimeout(t), ns.opts)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	ns.use("closing")
	sub := events.Subscription{Group: "closing"}
	entered := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- tr.Subscribe(context.Background(), sub, func(ctx context.Context, _ events.Delivery) error {
			once.Do(func() { close(entered) })
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	if err := tr.Setup(ctxTimeout(t), sub); err != nil {
		t.Fatalf("Setup() = %v", err)
	}
	if err := tr.Publish(ctxTimeout(t), events.Message{ID: "c-1", Type: "test.Close", Key: "k"}); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	select {
	case <-entered:
	case <-time.After(eventstest.Wait):
		t.Fatal("handler never called")
	}
	if err := tr.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Subscribe() = %v after Close, want nil", err)
		}
	default:
		t.Error("Close returned before Subscribe")
	}
	if err := tr.Publish(ctxTimeout(t), events.Message{ID: "c-2", Type: "test.Close"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish() after Close = %v, want ErrClosed", err)
	}
	if err := tr.Setup(ctxTimeout(t), sub); !errors.Is(err, ErrClosed) {
		t.Errorf("Setup() after Close = %v, want ErrClosed", err)
	}
	if err := tr.Subscribe(ctxTimeout(t), sub, eventstest.NewCollector(nil).Handle); !errors.Is(err, ErrClosed) {
		t.Errorf("Subscribe() after Close = %v, want ErrClosed", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

// TestHeadersRoundTrip: key, type, id, data and headers arrive as sent;
// the broker's own headers do not leak into Message.Header.
func TestHeadersRoundTrip(t *testing.T) {
	ns := newNamespace(t)
	tr := ns.factory(t)
	sub := events.Subscription{Group: "headers", Types: []string{"switchboard.events.v1.OrderPlaced"}}
	if err := tr.Setup(ctxTimeout(t), sub); err != nil {
		t.Fatalf("Setup() = %v", err)
	}
	want := events.Message{
		ID:     "h-1",
		Type:   "switchboard.events.v1.OrderPlaced",
		Key:    "order-17",
		Data:   []byte{0, 1, 2, 255},
		Header: map[string]string{"Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	}
	if err := tr.Publish(ctxTimeout(t), want); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	c := eventstest.NewCollector(nil)
	eventstest.Subscribe(t, tr, sub, c.Handle)
	d := c.WaitFor(t, "the message", func(ds []events.Delivery) bool { return len(ds) > 0 })[0]
	if d.ID != want.ID || d.Type != want.Type || d.Key != want.Key || string(d.Data) != string(want.Data) || d.Attempt != 1 {
		t.Errorf("got %s %s %s %v attempt %d, want %s %s %s %v attempt 1", d.ID, d.Type, d.Key, d.Data, d.Attempt, want.ID, want.Type, want.Key, want.Data)
	}
	if len(d.Header) != 1 || d.Header["Traceparent"] != want.Header["Traceparent"] {
		t.Errorf("Header = %v, want %v", d.Header, want.Header)
	}
}

// TestPublishRejects: messages the broker could not route as meant are
// refused before they are sent.
func TestPublishRejects(t *testing.T) {
	ns := newNamespace(t)
	tr := ns.factory(t)
	tests := []struct {
		name string
		msg  events.Message
	}{
		{"empty type", events.Message{ID: "1"}},
		{"star", events.Message{ID: "1", Type: "orders.*"}},
		{"hash", events.Message{ID: "1", Type: "orders.#"}},
		{"space", events.Message{ID: "1", Type: "orders placed"}},
		{"long type", events.Message{ID: "1", Type: strings.Repeat("a", 256)}},
		{"long id", events.Message{ID: strings.Repeat("a", 256), Type: "a"}},
		{"broker header", events.Message{ID: "1", Type: "a", Header: map[string]string{"x-delivery-count": "0"}}},
		{"huge headers", events.Message{ID: "1", Type: "a", Header: map[string]string{"h": strings.Repeat("a", MaxHeaderBytes)}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tr.Publish(ctxTimeout(t), tc.msg); !errors.Is(err, ErrInvalid) {
				t.Errorf("Publish() = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestNewUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	tr, err := New(ctx, Options{URL: "amqp://guest:guest@127.0.0.1:1/", DialTimeout: time.Second})
	if err == nil {
		_ = tr.Close()
		t.Fatal("New() to a closed port = nil error, want one")
	}
	if strings.Contains(err.Error(), "guest:guest") {
		t.Errorf("New() error %q shows the credentials", err)
	}
}

// TestBrokerDeliveryLimit: a message whose deliveries keep being cut short
// (the subscriber stops while handling it) is dead-lettered by the broker
// once the queue's delivery limit runs out, and reaches the group's
// dead-letter queue with the broker's reason.
func TestBrokerDeliveryLimit(t *testing.T) {
	ns := newNamespace(t)
	opts := ns.opts
	opts.DeliveryLimit = 1
	tr := ns.transport(t, opts)
	ns.use("limited")
	sub := events.Subscription{Group: "limited", MaxDeliver: 100}
	if err := tr.Setup(ctxTimeout(t), sub); err != nil {
		t.Fatalf("Setup() = %v", err)
	}
	if err := tr.Publish(ctxTimeout(t), events.Message{ID: "l-1", Type: "test.Limited", Key: "k"}); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	dl := sub
	dl.DeadLetters = true
	dead := eventstest.NewCollector(nil)
	eventstest.Subscribe(t, tr, dl, dead.Handle)
	var attempts []int
	for round := 0; round < 5 && len(dead.Snapshot()) == 0; round++ {
		entered := make(chan int, 1)
		stop := eventstest.Subscribe(t, tr, sub, func(ctx context.Context, d events.Delivery) error {
			select {
			case entered <- d.Attempt:
			default:
			}
			<-ctx.Done()
			return ctx.Err()
		})
		// Either the handler holds the message, or the broker has
		// dead-lettered it and there is nothing left to deliver.
		c := dead.WaitFor(t, "a delivery or the dead letter", func(ds []events.Delivery) bool {
			return len(ds) > 0 || len(entered) > 0
		})
		if len(c) == 0 {
			attempts = append(attempts, <-entered)
		}
		stop()
	}
	got := dead.WaitFor(t, "the broker's dead letter", func(ds []events.Delivery) bool { return len(ds) > 0 })
	if got[0].ID != "l-1" || !strings.Contains(got[0].Header[events.HeaderError], "delivery_limit") || got[0].Header[events.HeaderGroup] != "limited" {
		t.Errorf("dead letter = %s with Header %v, want l-1 with the broker's delivery_limit reason and group", got[0].ID, got[0].Header)
	}
	for i, a := range attempts {
		if a != i+1 {
			t.Errorf("delivery %d had Attempt %d, want %d (the queue's delivery count + 1)", i+1, a, i+1)
		}
	}
}

// TestPublishExchangeGone: a publish the broker refuses (its exchange was
// deleted) is an error, not a success or an endless retry, and the
// transport publishes again once the exchange is back.
func TestPublishExchangeGone(t *testing.T) {
	ns := newNamespace(t)
	tr := ns.factory(t)
	ns.use("gone")
	sub := events.Subscription{Group: "gone"}
	conn, err := amqp.Dial(brokerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDelete(ns.opts.Exchange, false, false); err != nil {
		t.Fatalf("deleting the exchange: %v", err)
	}
	var ae *amqp.Error
	err = tr.Publish(ctxTimeout(t), events.Message{ID: "g-1", Type: "test.Gone", Key: "k"})
	if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
		t.Errorf("Publish() to a deleted exchange = %v, want NOT_FOUND", err)
	}
	if err := tr.Setup(ctxTimeout(t), sub); err != nil {
		t.Fatalf("Setup() = %v", err)
	}
	if err := tr.Publish(ctxTimeout(t), events.Message{ID: "g-2", Type: "test.Gone", Key: "k"}); err != nil {
		t.Fatalf("Publish() after Setup declared the exchange again = %v", err)
	}
	c := eventstest.NewCollector(nil)
	eventstest.Subscribe(t, tr, sub, c.Handle)
	got := c.WaitFor(t, "g-2", func(ds []events.Delivery) bool { return len(ds) > 0 })
	if got[0].ID != "g-2" {
		t.Errorf("got %s, want g-2", got[0].ID)
	}
}

// TestQueueDeletedWhileSubscribed: when the broker cancels the consumer
// because its queue was deleted, the subscription declares the queue
// again and goes on receiving.
func TestQueueDeletedWhileSubscribed(t *testing.T) {
	ns := newNamespace(t)
	tr := ns.factory(t)
	sub := events.Subscription{Group: "deleted"}
	if err := tr.Setup(ctxTimeout(t), sub); err != nil {
		t.Fatalf("Setup() = %v", err)
	}
	c := eventstest.NewCollector(nil)
	eventstest.Subscribe(t, tr, sub, c.Handle)
	ctx := ctxTimeout(t)
	if err := tr.Publish(ctx, events.Message{ID: "d-0", Type: "test.Deleted", Key: "k"}); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	c.WaitFor(t, "d-0", func(ds []events.Delivery) bool { return len(ds) > 0 })

	conn, err := amqp.Dial(brokerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	live, _ := tr.(*recording).Queues(sub.Group)
	if _, err := ch.QueueDelete(live, false, false, false); err != nil {
		t.Fatalf("deleting %s: %v", live, err)
	}
	// Messages published before the queue is back are not kept for the
	// group; keep publishing until one arrives.
	for i := 1; ; i++ {
		id := "d-" + strconv.Itoa(i)
		if err := tr.Publish(ctx, events.Message{ID: id, Type: "test.Deleted", Key: "k"}); err != nil {
			t.Fatalf("Publish(%s) = %v", id, err)
		}
		if len(unique(c.Snapshot())) > 1 {
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no message arrived after the queue was deleted")
		}
	}
}
