package rabbitbus

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

func TestCheckMessage(t *testing.T) {
	tests := []struct {
		name string
		msg  events.Message
		ok   bool
	}{
		{"proto full name", events.Message{ID: "1", Type: "switchboard.events.v1.OrderPlaced"}, true},
		{"no id", events.Message{Type: "a"}, true},
		{"headers", events.Message{Type: "a", Header: map[string]string{"Traceparent": "t", events.HeaderError: "e"}}, true},
		{"empty type", events.Message{ID: "1"}, false},
		{"star", events.Message{Type: "a.*"}, false},
		{"hash", events.Message{Type: "#"}, false},
		{"space", events.Message{Type: "a b"}, false},
		{"tab", events.Message{Type: "a\tb"}, false},
		{"invalid utf-8", events.Message{Type: "a\xff"}, false},
		{"long type", events.Message{Type: strings.Repeat("a", 256)}, false},
		{"long id", events.Message{ID: strings.Repeat("a", 256), Type: "a"}, false},
		{"x- header", events.Message{Type: "a", Header: map[string]string{"x-death": ""}}, false},
		{"X- header", events.Message{Type: "a", Header: map[string]string{"X-Death": ""}}, false},
		{"empty header name", events.Message{Type: "a", Header: map[string]string{"": "v"}}, false},
		{"huge key", events.Message{Type: "a", Key: strings.Repeat("k", MaxHeaderBytes)}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkMessage(tc.msg)
			if got := err == nil; got != tc.ok {
				t.Errorf("checkMessage() = %v, want ok = %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("checkMessage() = %v, want it to wrap ErrInvalid", err)
			}
		})
	}
}

// delivered is what the broker hands back for p.
func delivered(p amqp.Publishing, broker amqp.Table) *amqp.Delivery {
	h := amqp.Table{}
	for k, v := range p.Headers {
		h[k] = v
	}
	for k, v := range broker {
		h[k] = v
	}
	return &amqp.Delivery{Headers: h, MessageId: p.MessageId, Type: p.Type, Body: p.Body, RoutingKey: p.Type}
}

func TestMessageRoundTrip(t *testing.T) {
	msg := events.Message{
		ID: "id-1", Type: "switchboard.events.v1.OrderPlaced", Key: "order-1", Data: []byte("data"),
		Header: map[string]string{"Traceparent": "tp"},
	}
	p := publishing(msg)
	if p.DeliveryMode != amqp.Persistent {
		t.Errorf("DeliveryMode = %d, want persistent", p.DeliveryMode)
	}
	got := message(delivered(p, amqp.Table{"x-delivery-count": int64(2), "x-opt": []byte("b")}), "g")
	if diff := cmp.Diff(msg, got); diff != "" {
		t.Errorf("message(publishing(msg)) differs (-want +got):\n%s", diff)
	}
}

func TestDeadLetterHeaders(t *testing.T) {
	msg := events.Message{ID: "id-1", Type: "a", Key: "k", Data: []byte("d")}
	long := errors.New(strings.Repeat("é", maxErrorHeader))
	tests := []struct {
		name      string
		cause     error
		wantError string
	}{
		{"short", errors.New("boom"), "boom"},
		{"cut on a rune boundary", long, strings.Repeat("é", maxErrorHeader/2)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := message(delivered(deadLetter(msg, "grp", 3, tc.cause), nil), "grp")
			want := map[string]string{events.HeaderError: tc.wantError, events.HeaderAttempts: "3", events.HeaderGroup: "grp"}
			if diff := cmp.Diff(want, got.Header); diff != "" {
				t.Errorf("dead letter headers differ (-want +got):\n%s", diff)
			}
			if got.ID != msg.ID || got.Key != msg.Key || got.Type != msg.Type {
				t.Errorf("dead letter = %s %s %s, want %s %s %s", got.ID, got.Key, got.Type, msg.ID, msg.Key, msg.Type)
			}
		})
	}
}

func TestBrokerDeadLetter(t *testing.T) {
	p := publishing(events.Message{ID: "1", Type: "a", Key: "k"})
	got := message(delivered(p, amqp.Table{"x-first-death-reason": "delivery_limit"}), "grp")
	if !strings.Contains(got.Header[events.HeaderError], "delivery_limit") || got.Header[events.HeaderGroup] != "grp" {
		t.Errorf("broker dead letter Header = %v, want the broker's reason and the group", got.Header)
	}
}

func TestDeliveryCount(t *testing.T) {
	tests := []struct {
		v    any
		want int
	}{
		{nil, 0},
		{int64(3), 3},
		{int32(4), 4},
		{int16(5), 5},
		{uint8(6), 6},
		{int64(-1), 0},
		{int64(1 << 40), 1 << 30},
		{"7", 0},
	}
	for _, tc := range tests {
		d := &amqp.Delivery{Headers: amqp.Table{"x-delivery-count": tc.v}}
		if got := deliveryCount(d); got != tc.want {
			t.Errorf("deliveryCount(%#v) = %d, want %d", tc.v, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, time.Second
	tests := []struct {
		attempt int
		base    time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{1000, time.Second},
	}
	for _, tc := range tests {
		got := backoff(lo, hi, tc.attempt)
		if got > tc.base || got < tc.base*3/4 {
			t.Errorf("backoff(%d) = %v, want within [%v, %v]", tc.attempt, got, tc.base*3/4, tc.base)
		}
	}
}

func TestOptions(t *testing.T) {
	got, err := Options{}.withDefaults()
	if err != nil {
		t.Fatalf("zero Options: %v", err)
	}
	if got.Exchange != DefaultExchange || got.DeadLetterExchange != DefaultExchange+".dlx" || got.Prefix != DefaultExchange+"." ||
		got.Prefetch != DefaultPrefetch || got.Lanes != DefaultLanes || got.Logger == nil {
		t.Errorf("defaults = %+v", got)
	}
	if got, _ := (Options{Prefetch: 4}).withDefaults(); got.Lanes != 4 {
		t.Errorf("Lanes with Prefetch 4 = %d, want 4", got.Lanes)
	}

	bad := []struct {
		name string
		opts Options
	}{
		{"bad url", Options{URL: "http://guest:secret@host/"}},
		{"tls without amqps", Options{TLS: &tls.Config{MinVersion: tls.VersionTLS12}}},
		{"exchange with space", Options{Exchange: "a b"}},
		{"long name", Options{Name: strings.Repeat("n", 129)}},
		{"same exchanges", Options{Exchange: "a", DeadLetterExchange: "a"}},
		{"prefetch too big", Options{Prefetch: MaxPrefetch + 1}},
		{"negative prefetch", Options{Prefetch: -1}},
		{"lanes too many", Options{Lanes: MaxLanes + 1}},
		{"delivery limit", Options{DeliveryLimit: MaxDeliveryLimit + 1}},
		{"negative timeout", Options{OpTimeout: -time.Second}},
		{"short heartbeat", Options{Heartbeat: time.Millisecond}},
		{"reconnect bounds", Options{MinReconnect: time.Second, MaxReconnect: time.Millisecond}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.opts.withDefaults()
			if err == nil {
				t.Fatal("withDefaults() = nil error, want one")
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}
