package natsbus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

// Defaults for Options fields left zero.
const (
	DefaultURL            = nats.DefaultURL
	DefaultStream         = "SWITCHBOARD"
	DefaultSubject        = "switchboard.events"
	DefaultName           = "switchboard"
	DefaultMaxAge         = 7 * 24 * time.Hour
	DefaultMaxBytes       = 1 << 30
	DefaultDuplicates     = 2 * time.Minute
	DefaultLanes          = 8
	DefaultMaxInFlight    = 256
	DefaultMaxAckPending  = 1024
	DefaultConnectTimeout = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
)

// Bounds on names and header values.
const (
	maxTypeLen        = 255
	maxStreamNameLen  = 64
	maxConsumerLen    = 48
	maxErrorHeaderLen = 1024
	maxBatch          = 128
	maxLanes          = 256
	maxInFlight       = 4096
)

// Header keys the transport sets itself; a message may not carry them.
const (
	headerKey = "Switchboard-Key"
	headerID  = "Switchboard-Id"
)

// ErrInvalid reports a message, subscription or option the transport
// cannot represent in NATS (an empty id, a type with a wildcard, a header
// with a line break). Retrying does not help.
var ErrInvalid = errors.New("natsbus: invalid")

// ErrClosed is returned by a Transport after Close.
var ErrClosed = errors.New("natsbus: transport closed")

// Options configures a Transport. Zero fields take the defaults above.
type Options struct {
	// URL is the server URL, or several separated by commas
	// (nats://127.0.0.1:4222 by default).
	URL string
	// Stream names the stream of live messages; dead letters go to
	// Stream+"_DLQ". It may hold only letters, digits, '_' and '-'.
	Stream string
	// Subject is the subject prefix: messages are published on
	// Subject+"."+type and dead letters on Subject+"-dlq."+group+"."+type.
	Subject string
	// Replicas is the number of stream replicas on a cluster (1 by
	// default).
	Replicas int
	// MaxAge bounds how long the streams keep a message.
	MaxAge time.Duration
	// MaxBytes bounds each stream's size. A full stream refuses new
	// messages (the outbox keeps them) rather than dropping old ones that a
	// group may not have received yet.
	MaxBytes int64
	// Duplicates is the window in which a message id is stored only once.
	// It is at most MaxAge.
	Duplicates time.Duration
	// Lanes is how many handlers one Subscribe runs concurrently, each for
	// its own share of the keys (at most 256).
	Lanes int
	// MaxInFlight bounds the messages one Subscribe has fetched and not
	// yet finished (at most 4096).
	MaxInFlight int
	// MaxAckPending bounds the unacknowledged messages of a group across
	// all its subscribers.
	MaxAckPending int
	// ConnectTimeout bounds the first connection (and each dial).
	ConnectTimeout time.Duration
	// RequestTimeout bounds each publish, and any JetStream request whose
	// context has no deadline.
	RequestTimeout time.Duration
	// Name is the connection name the server shows ("switchboard").
	Name string
	// TLS, if set, secures the connection.
	TLS *tls.Config
	// Logger receives connection changes and delivery failures; nil
	// discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.Subject == "" {
		o.Subject = DefaultSubject
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Duplicates <= 0 {
		o.Duplicates = DefaultDuplicates
	}
	o.Duplicates = min(o.Duplicates, o.MaxAge)
	if o.Lanes <= 0 {
		o.Lanes = DefaultLanes
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = DefaultMaxAckPending
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Lanes > maxLanes {
		return o, fmt.Errorf("%w: at most %d lanes", ErrInvalid, maxLanes)
	}
	if o.MaxInFlight > maxInFlight {
		return o, fmt.Errorf("%w: at most %d messages in flight", ErrInvalid, maxInFlight)
	}
	if err := checkStreamName(o.Stream + "_DLQ"); err != nil {
		return o, err
	}
	if err := checkTokens(o.Subject); err != nil {
		return o, fmt.Errorf("subject prefix: %w", err)
	}
	return o, nil
}

// Transport is an events.Transport over NATS JetStream. It is safe for
// concurrent use; Close ends its subscriptions and its connection.
type Transport struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger

	stream, dlqStream string
	prefix, dlqPrefix string
	lanes             int
	maxInFlight       int
	maxAckPending     int
	requestTimeout    time.Duration

	mu     sync.Mutex
	closed bool
	nextID uint64
	subs   map[uint64]context.CancelFunc
	wg     sync.WaitGroup
}

var _ events.Transport = (*Transport)(nil)

// New connects to NATS and creates or updates the live and dead-letter
// streams. The first connection must succeed within ctx and
// Options.ConnectTimeout; after that the connection reconnects forever
// with backoff.
func New(ctx context.Context, opts Options) (*Transport, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Transport{
		log:            opts.Logger,
		stream:         opts.Stream,
		dlqStream:      opts.Stream + "_DLQ",
		prefix:         opts.Subject,
		dlqPrefix:      opts.Subject + "-dlq",
		lanes:          opts.Lanes,
		maxInFlight:    opts.MaxInFlight,
		maxAckPending:  max(opts.MaxAckPending, opts.MaxInFlight),
		requestTimeout: opts.RequestTimeout,
		subs:           map[uint64]context.CancelFunc{},
	}
	dial := opts.ConnectTimeout
	if dl, ok := ctx.Deadline(); ok {
		dial = min(dial, time.Until(dl))
	}
	if dial <= 0 {
		return nil, fmt.Errorf("natsbus: connect: %w", context.DeadlineExceeded)
	}
	log := opts.Logger
	nopts := []nats.Option{
		nats.Name(opts.Name),
		nats.Timeout(dial),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DrainTimeout(10 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.LogAttrs(context.Background(), slog.LevelWarn, "nats disconnected", slog.Any("error", err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.LogAttrs(context.Background(), slog.LevelInfo, "nats reconnected", slog.String("url", nc.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.LogAttrs(context.Background(), slog.LevelWarn, "nats asynchronous error", slog.Any("error", err))
		}),
	}
	if opts.TLS != nil {
		nopts = append(nopts, nats.Secure(opts.TLS))
	}
	nc, err := nats.Connect(opts.URL, nopts...)
	if err != nil {
		return nil, fmt.Errorf("natsbus: connect: %w", err)
	}
	if err := ctx.Err(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbus: connect: %w", err)
	}
	t.nc = nc
	t.js, err = jetstream.New(nc, jetstream.WithDefaultTimeout(opts.RequestTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbus: jetstream: %w", err)
	}
	for _, sc := range []jetstream.StreamConfig{
		t.streamConfig(opts, t.stream, t.prefix+".>", "switchboard events"),
		t.streamConfig(opts, t.dlqStream, t.dlqPrefix+".>", "switchboard dead letters"),
	} {
		if _, err := t.js.CreateOrUpdateStream(ctx, sc); err != nil {
			nc.Close()
			return nil, fmt.Errorf("natsbus: create or update stream %s: %w", sc.Name, err)
		}
	}
	return t, nil
}

func (t *Transport) streamConfig(opts Options, name, subject, desc string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: desc,
		Subjects:    []string{subject},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		Replicas:    opts.Replicas,
		MaxAge:      opts.MaxAge,
		MaxBytes:    opts.MaxBytes,
		Duplicates:  opts.Duplicates,
	}
}

// reconnectDelay grows from 100ms to 5s with up to 20% jitter.
func reconnectDelay(attempts int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempts && d < 5*time.Second; i++ {
		d *= 2
	}
	d = min(d, 5*time.Second)
	return d + rand.N(d/5+1) //nolint:gosec // jitter, not a secret
}

// Publish stores msg in the stream and returns once JetStream has
// acknowledged it or ctx ends. Publishing an id again within the
// duplicates window succeeds without storing it twice.
func (t *Transport) Publish(ctx context.Context, msg events.Message) error {
	if t.isClosed() {
		return ErrClosed
	}
	subject, err := typeSubject(t.prefix, msg.Type)
	if err != nil {
		return err
	}
	if err := checkMessage(msg); err != nil {
		return err
	}
	nm := &nats.Msg{Subject: subject, Data: msg.Data, Header: make(nats.Header, len(msg.Header)+2)}
	for k, v := range msg.Header {
		nm.Header[k] = []string{v}
	}
	nm.Header[jetstream.MsgIDHeader] = []string{msg.ID}
	if msg.Key != "" {
		nm.Header[headerKey] = []string{msg.Key}
	}
	// Each attempt is bounded by RequestTimeout even under a longer
	// deadline: an acknowledgement lost while the server restarts must not
	// stall the caller (a relay) for the rest of its deadline. Publishing
	// again is safe: the id deduplicates.
	pctx, cancel := context.WithTimeout(ctx, t.requestTimeout)
	defer cancel()
	if _, err := t.js.PublishMsg(pctx, nm, jetstream.WithExpectStream(t.stream)); err != nil {
		return fmt.Errorf("natsbus: publish %s: %w", msg.ID, err)
	}
	return nil
}

// publishDeadLetter stores a dead letter of d for the group.
func (t *Transport) publishDeadLetter(ctx context.Context, consumer, group string, d events.Delivery, cause error, attempts int) error {
	subject := t.dlqPrefix + "." + consumer + "." + d.Type
	nm := &nats.Msg{Subject: subject, Data: d.Data, Header: make(nats.Header, len(d.Header)+6)}
	for k, v := range d.Header {
		nm.Header[k] = []string{v}
	}
	nm.Header[jetstream.MsgIDHeader] = []string{consumer + ":" + d.ID}
	nm.Header[headerID] = []string{d.ID}
	if d.Key != "" {
		nm.Header[headerKey] = []string{d.Key}
	}
	nm.Header[events.HeaderError] = []string{headerValue(cause.Error())}
	nm.Header[events.HeaderAttempts] = []string{strconv.Itoa(attempts)}
	nm.Header[events.HeaderGroup] = []string{headerValue(group)}
	if _, err := t.js.PublishMsg(ctx, nm, jetstream.WithExpectStream(t.dlqStream)); err != nil {
		return fmt.Errorf("natsbus: dead-letter %s: %w", d.ID, err)
	}
	return nil
}

// Setup creates or updates the group's durable consumer: on the live
// stream, or on the dead-letter stream when sub.DeadLetters is set. The
// dead-letter stream itself exists from New on.
func (t *Transport) Setup(ctx context.Context, sub events.Subscription) error {
	if t.isClosed() {
		return ErrClosed
	}
	_, _, err := t.setup(ctx, sub.Normalize())
	return err
}

// consumerSpec is what Setup derived from a subscription.
type consumerSpec struct {
	name   string
	stream string
	base   string          // subject prefix before the type
	types  map[string]bool // types to hand over when the server cannot filter; nil for all
}

func (t *Transport) spec(sub events.Subscription) (consumerSpec, []string, error) {
	name, err := consumerName(sub.Group)
	if err != nil {
		return consumerSpec{}, nil, err
	}
	cs := consumerSpec{name: name, stream: t.stream, base: t.prefix}
	if sub.DeadLetters {
		cs.stream, cs.base = t.dlqStream, t.dlqPrefix+"."+name
	}
	var filters []string
	seen := map[string]bool{}
	for _, typ := range sub.Types {
		s, err := typeSubject(cs.base, typ)
		if err != nil {
			return consumerSpec{}, nil, err
		}
		if !seen[s] {
			seen[s] = true
			filters = append(filters, s)
		}
	}
	if len(filters) == 0 {
		filters = []string{cs.base + ".>"}
	}
	return cs, filters, nil
}

func (t *Transport) setup(ctx context.Context, sub events.Subscription) (consumerSpec, jetstream.Consumer, error) {
	cs, filters, err := t.spec(sub)
	if err != nil {
		return cs, nil, err
	}
	maxDeliver := brokerMaxDeliver(sub)
	backoff := brokerBackoff(sub, maxDeliver)
	cfg := jetstream.ConsumerConfig{
		Durable:       cs.name,
		Description:   "switchboard group " + headerValue(sub.Group),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       backoff[0],
		BackOff:       backoff,
		MaxDeliver:    maxDeliver,
		MaxAckPending: t.maxAckPending,
	}
	switch {
	case len(filters) == 1:
		cfg.FilterSubject = filters[0]
	case serverAtLeast(t.nc.ConnectedServerVersion(), 2, 10):
		cfg.FilterSubjects = filters
	default:
		// Servers before 2.10 filter on one subject only: take every type
		// and acknowledge the others without handing them over.
		cfg.FilterSubject = cs.base + ".>"
		cs.types = map[string]bool{}
		for _, typ := range sub.Types {
			cs.types[typ] = true
		}
	}
	cons, err := t.js.CreateOrUpdateConsumer(ctx, cs.stream, cfg)
	if err != nil {
		return cs, nil, fmt.Errorf("natsbus: create or update consumer %s on %s: %w", cs.name, cs.stream, err)
	}
	return cs, cons, nil
}

// brokerMaxDeliver is the consumer's MaxDeliver. Subscribers count
// handler attempts themselves (a retry in process is no redelivery) and
// dead-letter after sub.MaxDeliver of them; a stopping subscriber returns
// what it holds, which the broker counts as deliveries. So the broker's
// limit leaves room for those, for the delivery on which a subscriber
// dead-letters a message that was never finished (see unhandledGrace), and
// for a few retries of that dead-lettering.
func brokerMaxDeliver(sub events.Subscription) int {
	return sub.Normalize().MaxDeliver + unhandledGrace + 4
}

// brokerBackoff is the consumer's BackOff: the broker redelivers a message
// that was not acknowledged within AckWait plus the subscription's backoff
// for that delivery (a subscriber keeps messages it still holds alive). It
// has fewer entries than maxDeliver, as the broker requires; the last one
// repeats.
func brokerBackoff(sub events.Subscription, maxDeliver int) []time.Duration {
	sub = sub.Normalize()
	n := min(len(sub.Backoff), maxDeliver-1)
	b := make([]time.Duration, n)
	for i, d := range sub.Backoff[:n] {
		b[i] = sub.AckWait + max(d, 0)
	}
	return b
}

// Subscribe sets up the group and delivers its messages to h until ctx
// ends or the transport is closed; then it waits for running handlers
// (their context is cancelled), returns unfinished messages to the broker
// and returns nil.
func (t *Transport) Subscribe(ctx context.Context, sub events.Subscription, h events.Handler) error {
	if h == nil {
		return fmt.Errorf("%w: nil handler", ErrInvalid)
	}
	if t.isClosed() {
		return ErrClosed
	}
	sub = sub.Normalize()
	cs, cons, err := t.setup(ctx, sub)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	id, ok := t.register(cancel)
	if !ok {
		return ErrClosed
	}
	defer t.unregister(id)
	s := newSubscriber(t, sub, cs, cons, h)
	s.run(ctx)
	return nil
}

func (t *Transport) register(cancel context.CancelFunc) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, false
	}
	t.nextID++
	t.subs[t.nextID] = cancel
	t.wg.Add(1)
	return t.nextID, true
}

func (t *Transport) unregister(id uint64) {
	t.mu.Lock()
	delete(t.subs, id)
	t.mu.Unlock()
	t.wg.Done()
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// Close ends the transport's subscriptions, waits for them to return,
// flushes and closes the connection. It always returns nil (a flush that
// fails only means some acknowledgements are redelivered) and is safe to
// call more than once.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for _, cancel := range t.subs {
		cancel()
	}
	t.mu.Unlock()
	t.wg.Wait()
	if t.nc.IsConnected() {
		if err := t.nc.FlushTimeout(t.requestTimeout); err != nil {
			// What did not reach the broker is redelivered; nothing to undo.
			t.log.LogAttrs(context.Background(), slog.LevelWarn, "flushing before close", slog.Any("error", err))
		}
	}
	t.nc.Close()
	return nil
}

// typeSubject returns base+"."+typ, or ErrInvalid when typ is not a
// sequence of non-empty subject tokens without wildcards or spaces.
func typeSubject(base, typ string) (string, error) {
	if len(typ) > maxTypeLen {
		return "", fmt.Errorf("%w: type longer than %d bytes", ErrInvalid, maxTypeLen)
	}
	if err := checkTokens(typ); err != nil {
		return "", fmt.Errorf("type %q: %w", typ, err)
	}
	return base + "." + typ, nil
}

// checkTokens reports whether s is a literal subject: tokens separated by
// single dots, none empty, none holding a wildcard, space or control
// character.
func checkTokens(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty subject", ErrInvalid)
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" {
			return fmt.Errorf("%w: empty subject token in %q", ErrInvalid, s)
		}
		if tok == "*" || tok == ">" {
			return fmt.Errorf("%w: wildcard in %q", ErrInvalid, s)
		}
		for _, r := range tok {
			if r <= ' ' || r == 0x7f || r == '*' || r == '>' || isSpace(r) {
				return fmt.Errorf("%w: character %q in %q", ErrInvalid, r, s)
			}
		}
	}
	return nil
}

func isSpace(r rune) bool {
	switch r {
	case 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200A
}

// checkStreamName reports whether name is a valid stream name.
func checkStreamName(name string) error {
	if name == "" || len(name) > maxStreamNameLen {
		return fmt.Errorf("%w: stream name %q must have 1 to %d bytes", ErrInvalid, name, maxStreamNameLen)
	}
	for _, r := range name {
		if !nameRune(r) {
			return fmt.Errorf("%w: character %q in stream name %q", ErrInvalid, r, name)
		}
	}
	return nil
}

func nameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

// consumerName maps a group to a durable consumer name: characters other
// than letters, digits, '_' and '-' become '_', and a changed or shortened
// name gets a hash of the group appended, so distinct groups never meet.
func consumerName(group string) (string, error) {
	if group == "" {
		return "", fmt.Errorf("%w: empty group", ErrInvalid)
	}
	var b strings.Builder
	changed := false
	for _, r := range group {
		if nameRune(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
			changed = true
		}
	}
	name := b.String()
	if len(name) > maxConsumerLen {
		name, changed = name[:maxConsumerLen], true
	}
	if changed {
		name += "_" + strconv.FormatUint(uint64(fnv32(group)), 16)
	}
	return name, nil
}

// fnv32 is FNV-1a over s.
func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// checkMessage rejects what NATS headers cannot carry or the transport
// keeps for itself.
func checkMessage(msg events.Message) error {
	if msg.ID == "" {
		return fmt.Errorf("%w: message without id", ErrInvalid)
	}
	if !headerSafe(msg.ID) {
		return fmt.Errorf("%w: control character in id %q", ErrInvalid, msg.ID)
	}
	if !headerSafe(msg.Key) {
		return fmt.Errorf("%w: control character in key of %s", ErrInvalid, msg.ID)
	}
	for k, v := range msg.Header {
		if k == "" || strings.ContainsAny(k, ": \t") || !headerSafe(k) {
			return fmt.Errorf("%w: header name %q in %s", ErrInvalid, k, msg.ID)
		}
		if reservedHeader(k) {
			return fmt.Errorf("%w: header %q is reserved", ErrInvalid, k)
		}
		if !headerSafe(v) {
			return fmt.Errorf("%w: control character in header %s of %s", ErrInvalid, k, msg.ID)
		}
	}
	return nil
}

func reservedHeader(k string) bool {
	return len(k) >= 5 && strings.EqualFold(k[:5], "Nats-") ||
		strings.EqualFold(k, headerKey) || strings.EqualFold(k, headerID)
}

func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// headerValue makes s safe for a header: control characters become
// spaces and the value is cut to maxErrorHeaderLen bytes on a rune
// boundary.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= maxErrorHeaderLen {
		return s
	}
	cut := maxErrorHeaderLen
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut]
}

// serverAtLeast reports whether version ("2.10.4", "v2.11.0-beta") is at
// least major.minor.
func serverAtLeast(version string, major, minor int) bool {
	version = strings.TrimPrefix(version, "v")
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.SplitN(parts[1], "-", 2)[0])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
