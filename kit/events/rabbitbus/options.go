package rabbitbus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Defaults for Options fields left zero.
const (
	DefaultURL           = "amqp://guest:guest@127.0.0.1:5672/" //nolint:gosec // RabbitMQ's stock account, which it accepts only from localhost
	DefaultExchange      = "switchboard.events"
	DefaultPrefetch      = 64
	DefaultLanes         = 16
	DefaultDeliveryLimit = 20
	DefaultDialTimeout   = 10 * time.Second
	DefaultOpTimeout     = 10 * time.Second
	DefaultPublishWait   = 30 * time.Second
	DefaultHeartbeat     = 10 * time.Second
	DefaultMinReconnect  = 100 * time.Millisecond
	DefaultMaxReconnect  = 10 * time.Second
	DefaultName          = "switchboard"
)

// Upper bounds on Options fields.
const (
	MaxPrefetch      = 1024
	MaxLanes         = 256
	MaxDeliveryLimit = 1000
	// MaxHeaderBytes bounds the summed length of a message's header names
	// and values, well inside the broker's 128 KiB frame.
	MaxHeaderBytes = 64 << 10
	// maxName is AMQP's limit on a short string: exchange and queue names,
	// routing keys, message ids.
	maxName = 255
	// maxClientName leaves room in a consumer tag for a random suffix.
	maxClientName = 128
)

// Options configures a Transport. The zero value connects to the local
// broker as guest with every default.
type Options struct {
	// URL is the broker, amqp:// or amqps:// (default DefaultURL). It
	// carries the credentials; it is never logged.
	URL string
	// Exchange is the durable topic exchange every event is published to
	// (default "switchboard.events"), routed by event type.
	Exchange string
	// DeadLetterExchange is the durable direct exchange dead letters are
	// routed through to each group's dead-letter queue (default Exchange
	// + ".dlx").
	DeadLetterExchange string
	// Prefix starts every queue name (default Exchange + "."); a group's
	// queue is Prefix+Group and its dead-letter queue Prefix+Group+".dlq".
	Prefix string
	// Name tells the broker who the connections belong to; it shows in the
	// broker's connection list as Name+"/publish" and Name+"/consume"
	// (default "switchboard", at most 128 bytes).
	Name string
	// Logger receives connection losses, reconnects and handler failures;
	// nil discards them.
	Logger *slog.Logger
	// Prefetch bounds the unacknowledged deliveries one subscription holds
	// (1 to MaxPrefetch, default 64).
	Prefetch int
	// Lanes bounds how many handlers one subscription runs at once; keys
	// are hashed onto lanes, so one key's messages stay sequential (1 to
	// MaxLanes, default 16, at most Prefetch).
	Lanes int
	// DeliveryLimit is the queues' x-delivery-limit, the broker's own
	// safety net: a message returned to a group's queue this many times
	// (deliveries cut short by crashes, lost connections, or subscribers
	// stopping with the message prefetched or in hand; not handler
	// failures, which are retried in the subscriber) is dead-lettered by
	// the broker. 1 to MaxDeliveryLimit, default 20. A queue keeps the
	// limit it was declared with; declaring it again with another fails.
	DeliveryLimit int
	// TLS, if set, is the client TLS configuration; the URL must then be
	// amqps://. An amqps:// URL without it verifies the broker against
	// the system roots.
	TLS *tls.Config
	// DialTimeout bounds connecting, the TLS and the AMQP handshakes
	// (default 10s).
	DialTimeout time.Duration
	// OpTimeout bounds New's and Setup's declarations (retries included)
	// and closing a connection (default 10s). Every other round trip is
	// bounded by the heartbeat: a broker silent for three heartbeats is
	// taken for lost, which ends whatever waited on it.
	OpTimeout time.Duration
	// PublishWait bounds Publish, confirm included, when the caller's
	// context allows longer (default 30s).
	PublishWait time.Duration
	// Heartbeat is the AMQP heartbeat; a broker silent for three of them
	// counts as lost (default 10s).
	Heartbeat time.Duration
	// MinReconnect and MaxReconnect bound the doubling, jittered wait
	// between reconnection attempts (defaults 100ms and 10s).
	MinReconnect, MaxReconnect time.Duration
}

func (o Options) withDefaults() (Options, error) {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	uri, err := amqp.ParseURI(o.URL)
	if err != nil {
		// The parser's message can quote the URL, credentials included.
		return o, errors.New("rabbitbus: Options.URL is not a valid amqp:// or amqps:// URL")
	}
	if o.TLS != nil && uri.Scheme != "amqps" {
		return o, errors.New("rabbitbus: Options.TLS needs an amqps:// URL")
	}
	if o.Exchange == "" {
		o.Exchange = DefaultExchange
	}
	if o.DeadLetterExchange == "" {
		o.DeadLetterExchange = o.Exchange + ".dlx"
	}
	if o.Prefix == "" {
		o.Prefix = o.Exchange + "."
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	for _, n := range []struct{ field, v string }{
		{"Exchange", o.Exchange},
		{"DeadLetterExchange", o.DeadLetterExchange},
		{"Prefix", o.Prefix},
		{"Name", o.Name},
	} {
		if err := checkName(n.v); err != nil {
			return o, fmt.Errorf("rabbitbus: Options.%s: %w", n.field, err)
		}
	}
	if len(o.Name) > maxClientName {
		return o, fmt.Errorf("rabbitbus: Options.Name is %d bytes, want at most %d", len(o.Name), maxClientName)
	}
	if o.Exchange == o.DeadLetterExchange {
		return o, errors.New("rabbitbus: Options.Exchange and DeadLetterExchange must differ")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ints := []struct {
		field    string
		v        *int
		def, max int
	}{
		{"Prefetch", &o.Prefetch, DefaultPrefetch, MaxPrefetch},
		{"Lanes", &o.Lanes, DefaultLanes, MaxLanes},
		{"DeliveryLimit", &o.DeliveryLimit, DefaultDeliveryLimit, MaxDeliveryLimit},
	}
	for _, f := range ints {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 1 || *f.v > f.max {
			return o, fmt.Errorf("rabbitbus: Options.%s = %d, want 1 to %d", f.field, *f.v, f.max)
		}
	}
	o.Lanes = min(o.Lanes, o.Prefetch)
	durations := []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{
		{"DialTimeout", &o.DialTimeout, DefaultDialTimeout},
		{"OpTimeout", &o.OpTimeout, DefaultOpTimeout},
		{"PublishWait", &o.PublishWait, DefaultPublishWait},
		{"Heartbeat", &o.Heartbeat, DefaultHeartbeat},
		{"MinReconnect", &o.MinReconnect, DefaultMinReconnect},
		{"MaxReconnect", &o.MaxReconnect, DefaultMaxReconnect},
	}
	for _, f := range durations {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 0 {
			return o, fmt.Errorf("rabbitbus: Options.%s = %v, want a positive duration", f.field, *f.v)
		}
	}
	if o.Heartbeat < time.Second {
		return o, fmt.Errorf("rabbitbus: Options.Heartbeat = %v, want at least 1s", o.Heartbeat)
	}
	if o.MaxReconnect < o.MinReconnect {
		return o, fmt.Errorf("rabbitbus: Options.MaxReconnect = %v is below MinReconnect = %v", o.MaxReconnect, o.MinReconnect)
	}
	return o, nil
}
