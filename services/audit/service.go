package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/audit/v1"
	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Defaults and bounds of Config.
const (
	DefaultTailResync     = time.Second
	DefaultMaxTailStreams = 1000
	DefaultTailBatch      = 100
	MaxTailBatch          = 1000
	DefaultMaxTailLag     = 10000
	DefaultVerifyBatch    = 1000
	MaxVerifyBatch        = 10000
	// MinTailResync floors TailResync.
	MinTailResync = time.Millisecond
)

// Limits of what the log records. An envelope over them is refused with
// events.ErrPermanent.
const (
	// MaxEnvelopeBytes bounds a marshalled envelope, so that a Query page
	// or a Tail message stays well under gRPC's 4 MiB message limit.
	MaxEnvelopeBytes = 256 << 10
	// MaxFieldLen bounds the event id, type, source and subject, in bytes.
	MaxFieldLen = 256
)

// Config configures the service. Only cmd/ fills it in; the zero value
// gives the documented defaults. Negative values are errors.
type Config struct {
	// TailResync is the longest a Tail stream waits before it re-reads the
	// log even though this process reported no append: how late it sees
	// records appended by another replica. Default 1s, at least 1ms.
	TailResync time.Duration
	// MaxTailStreams bounds the Tail streams open at once on this
	// instance; more are refused with RESOURCE_EXHAUSTED. Default 1000.
	MaxTailStreams int
	// TailBatch is how many records a Tail stream reads from the database
	// at a time. Default 100, at most 1000.
	TailBatch int
	// MaxTailLag is how far, in records, a Tail stream that has caught up
	// with the log may fall behind it again before it is ended with
	// RESOURCE_EXHAUSTED (reason TAIL_TOO_SLOW, naming where to resume).
	// Default 10000.
	MaxTailLag int
	// VerifyBatch is how many records Verify reads at a time. Default
	// 1000, at most 10000.
	VerifyBatch int
}

// withDefaults returns c with zero values replaced by defaults, or an
// error when a value is out of range.
func (c Config) withDefaults() (Config, error) {
	if c.TailResync < 0 || c.MaxTailStreams < 0 || c.MaxTailLag < 0 {
		return c, errors.New("audit: negative value in Config")
	}
	if c.TailBatch < 0 || c.TailBatch > MaxTailBatch {
		return c, fmt.Errorf("audit: Config.TailBatch %d is not between 0 and %d", c.TailBatch, MaxTailBatch)
	}
	if c.VerifyBatch < 0 || c.VerifyBatch > MaxVerifyBatch {
		return c, fmt.Errorf("audit: Config.VerifyBatch %d is not between 0 and %d", c.VerifyBatch, MaxVerifyBatch)
	}
	if c.TailResync == 0 {
		c.TailResync = DefaultTailResync
	}
	c.TailResync = max(c.TailResync, MinTailResync)
	if c.MaxTailStreams == 0 {
		c.MaxTailStreams = DefaultMaxTailStreams
	}
	if c.TailBatch == 0 {
		c.TailBatch = DefaultTailBatch
	}
	if c.MaxTailLag == 0 {
		c.MaxTailLag = DefaultMaxTailLag
	}
	if c.VerifyBatch == 0 {
		c.VerifyBatch = DefaultVerifyBatch
	}
	return c, nil
}

// Service is the audit service: the event handler that appends to the
// log, and the gRPC API that reads and verifies it. It is safe for
// concurrent use.
type Service struct {
	store  Store
	cfg    Config
	logger *slog.Logger
	table  *status.Table
	hub    hub

	streams atomic.Int64  // open Tail streams
	done    chan struct{} // closed by Close
	once    sync.Once
}

// Open runs the audit migrations on db and returns the service. The
// caller must Close it, then close db. A nil logger discards.
func Open(ctx context.Context, db *sqldb.DB, cfg Config, logger *slog.Logger) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := db.Migrate(ctx, Migrations, MigrationsDir); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &Service{
		store:  NewStore(db),
		cfg:    cfg,
		logger: logger,
		table:  newTable(logger),
		hub:    hub{ch: make(chan struct{})},
		done:   make(chan struct{}),
	}, nil
}

// Close ends open Tail streams with UNAVAILABLE and refuses new ones. It is
// idempotent and returns nil; it does not close the database. HandleEvent
// and the unary RPCs keep working on the database.
func (s *Service) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

// Register registers the gRPC implementation on r and adds the validation
// rules of every request message to rules.
func (s *Service) Register(r grpc.ServiceRegistrar, rules *validate.Set) {
	Rules(rules)
	auditv1.RegisterAuditServiceServer(r, &handlers{svc: s})
}

// Policy is the audit service's authorization policy: the log is for
// operators only, through the operator certificate.
func Policy() authz.Policy {
	operator := authz.Rule{Services: []string{authz.Operator}}
	return authz.Policy{
		Service: auditv1.AuditService_ServiceDesc.ServiceName,
		Methods: map[string]authz.Rule{
			"Query":  operator,
			"Tail":   operator,
			"Verify": operator,
		},
	}
}

// EventTypes returns the event types the service consumes: nil, meaning
// every type.
func (s *Service) EventTypes() []string { return nil }

// HandleEvent appends env to the log within tx, the consumer's transaction,
// touching the database only through tx; it may be re-run after a
// rollback, and an event id already in the log is a no-op. An envelope
// without an id or type, with a field longer than MaxFieldLen or not
// UTF-8, or marshalling to more than MaxEnvelopeBytes, is refused with an
// error wrapping events.ErrPermanent. Call Wake once tx has committed, so
// that Tail streams send the record at once.
func (s *Service) HandleEvent(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
	e, err := entry(env)
	if err != nil {
		return fmt.Errorf("audit: %w: %w", events.ErrPermanent, err)
	}
	if _, _, err := s.store.Append(ctx, tx, e, time.Now()); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// Wake tells this instance's Tail streams that records were committed.
// The consumer calls it after each transaction in which HandleEvent
// appended; without it, streams see new records within
// Config.TailResync. It never blocks.
func (s *Service) Wake() { s.hub.notify() }

// entry checks env and returns what the log records of it.
func entry(env *eventsv1.Envelope) (Entry, error) {
	if env == nil {
		return Entry{}, errors.New("nil envelope")
	}
	fields := []struct{ name, v string }{
		{"id", env.GetId()}, {"type", env.GetType()}, {"source", env.GetSource()}, {"subject", env.GetSubject()},
	}
	for _, f := range fields {
		if len(f.v) > MaxFieldLen || !utf8.ValidString(f.v) {
			return Entry{}, fmt.Errorf("envelope %s is not UTF-8 of at most %d bytes", f.name, MaxFieldLen)
		}
	}
	if env.GetId() == "" || env.GetType() == "" {
		return Entry{}, errors.New("envelope without id or type")
	}
	var t time.Time
	if ts := env.GetTime(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return Entry{}, fmt.Errorf("envelope time: %w", err)
		}
		t = ts.AsTime()
	}
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(env)
	if err != nil {
		return Entry{}, fmt.Errorf("marshal envelope: %w", err)
	}
	if len(payload) > MaxEnvelopeBytes {
		return Entry{}, fmt.Errorf("envelope of %d bytes exceeds %d", len(payload), MaxEnvelopeBytes)
	}
	return Entry{
		EventID: env.GetId(), EventType: env.GetType(), Source: env.GetSource(), Subject: env.GetSubject(),
		EventTime: t, Payload: payload,
	}, nil
}
