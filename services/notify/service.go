package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	notifyv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/notify/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Defaults and bounds of Config.
const (
	DefaultFrom            = "Switchboard Shop <shop@switchboard.local>"
	DefaultShopName        = "Switchboard Shop"
	DefaultPollInterval    = time.Second
	MinPollInterval        = time.Millisecond
	DefaultBatchSize       = 100
	MaxBatchSize           = 1000
	DefaultMaxAttempts     = 8
	MaxMaxAttempts         = 100
	DefaultRetryBackoff    = time.Second
	DefaultMaxRetryBackoff = 5 * time.Minute
	DefaultSendTimeout     = 30 * time.Second
	// maxBatchesPerTick bounds how many full batches one sender tick
	// works through before it waits for the next tick.
	maxBatchesPerTick = 16
	// leaseMargin is added to SendTimeout to make the lease of a claimed
	// notification: how long another sender waits before it takes over
	// the attempt of a sender that died.
	leaseMargin = 30 * time.Second
)

// Config configures the service. Only cmd/ fills it in; the zero value
// gives the documented defaults, except that one of Sender and MailDir is
// required. Negative values are errors.
type Config struct {
	// Sender delivers the mail. When nil, a FileSender writes .eml files
	// to MailDir.
	Sender Sender
	// MailDir is the directory of the default FileSender.
	MailDir string
	// From is the sender of every message, an RFC 5322 address with or
	// without a display name. Default "Switchboard Shop
	// <shop@switchboard.local>".
	From string
	// ShopName is the shop's name in the templates. Default "Switchboard
	// Shop".
	ShopName string
	// PollInterval is how often the sender loop looks for due
	// notifications when Wake does not call it sooner. Default 1s, at
	// least 1ms.
	PollInterval time.Duration
	// BatchSize bounds the notifications the sender loop takes per batch;
	// a tick works through at most 16 full batches. Default 100, at most
	// 1000.
	BatchSize int
	// MaxAttempts bounds the attempts at sending one notification; after
	// the last one fails it is marked FAILED with the error. Default 8,
	// at most 100.
	MaxAttempts int
	// RetryBackoff is the wait after the first failed attempt; it doubles
	// after each further one, up to MaxRetryBackoff. Defaults 1s and 5m.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// SendTimeout bounds one attempt. Default 30s.
	SendTimeout time.Duration
}

// withDefaults returns c with zero values replaced by defaults, or an
// error when a value is out of range.
func (c Config) withDefaults() (Config, error) {
	if c.PollInterval < 0 || c.RetryBackoff < 0 || c.MaxRetryBackoff < 0 || c.SendTimeout < 0 {
		return c, errors.New("notify: negative duration in Config")
	}
	if c.BatchSize < 0 || c.BatchSize > MaxBatchSize {
		return c, fmt.Errorf("notify: Config.BatchSize %d is not between 0 and %d", c.BatchSize, MaxBatchSize)
	}
	if c.MaxAttempts < 0 || c.MaxAttempts > MaxMaxAttempts {
		return c, fmt.Errorf("notify: Config.MaxAttempts %d is not between 0 and %d", c.MaxAttempts, MaxMaxAttempts)
	}
	if c.Sender == nil && c.MailDir == "" {
		return c, errors.New("notify: Config needs a Sender or a MailDir")
	}
	if c.From = strings.TrimSpace(c.From); c.From == "" {
		c.From = DefaultFrom
	}
	if c.ShopName = strings.TrimSpace(c.ShopName); c.ShopName == "" {
		c.ShopName = DefaultShopName
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	c.PollInterval = max(c.PollInterval, MinPollInterval)
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	c.MaxRetryBackoff = max(c.MaxRetryBackoff, c.RetryBackoff)
	if c.SendTimeout == 0 {
		c.SendTimeout = DefaultSendTimeout
	}
	return c, nil
}

// Service is the notify service: the event handler that records
// notifications, the sender loop that Open starts and Close stops, and the
// gRPC API that lists them. It is safe for concurrent use.
type Service struct {
	store     Store
	cfg       Config
	from      *mail.Address
	sender    Sender
	templates *Templates
	logger    *slog.Logger
	table     *status.Table

	wake   chan struct{} // nudges the sender loop
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Open runs the notify migrations on db, and returns the service with its
// sender loop running. The caller must Close it, then close db. A nil
// logger discards.
func Open(ctx context.Context, db *sqldb.DB, cfg Config, logger *slog.Logger) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	from, err := parseFrom(cfg.From)
	if err != nil {
		return nil, err
	}
	tpl, err := ParseTemplates()
	if err != nil {
		return nil, err
	}
	sender := cfg.Sender
	if sender == nil {
		if sender, err = NewFileSender(cfg.MailDir); err != nil {
			return nil, err
		}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := db.Migrate(ctx, Migrations, MigrationsDir); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Service{
		store:     NewStore(db),
		cfg:       cfg,
		from:      from,
		sender:    sender,
		templates: tpl,
		logger:    logger,
		table:     newTable(logger),
		wake:      make(chan struct{}, 1),
		cancel:    cancel,
	}
	s.wg.Add(1)
	go s.runSender(loopCtx)
	return s, nil
}

// Close stops the sender loop, waiting for its current attempt to end (it
// is cancelled; the notification is tried again after its lease, by this
// or another instance). It is idempotent and returns nil; it does not
// close the database or the Sender. HandleEvent and ListNotifications keep
// working on the database, but nothing is sent any more.
func (s *Service) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

// Wake makes the sender loop look for due notifications now rather than at
// its next poll. The consumer calls it after each transaction in which
// HandleEvent recorded a notification has committed. It never blocks.
func (s *Service) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Register registers the gRPC implementation on r and adds the validation
// rules of every request message to rules.
func (s *Service) Register(r grpc.ServiceRegistrar, rules *validate.Set) {
	Rules(rules)
	notifyv1.RegisterNotifyServiceServer(r, &handlers{svc: s})
}

// Policy is the notify service's authorization policy: any verified user
// may list their own notifications (through the gateway or any other
// service), and the operator may list anyone's.
func Policy() authz.Policy {
	return authz.Policy{
		Service: notifyv1.NotifyService_ServiceDesc.ServiceName,
		Methods: map[string]authz.Rule{
			"ListNotifications": {Roles: []string{authz.AnyUser}, Services: []string{authz.Operator}},
		},
	}
}
