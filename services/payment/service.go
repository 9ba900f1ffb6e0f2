package payment

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Defaults of Config.
const (
	DefaultSignupCurrency       = "USD"
	DefaultSignupCredit         = 10_000 // 100.00 in a currency with cents
	DefaultIdempotencyRetention = 7 * 24 * time.Hour
	DefaultPruneInterval        = time.Hour
	DefaultMaxPagesPerStream    = 1000
)

// Bounds of the idempotency pruning: at most pruneBatches statements of
// pruneBatch rows each per round, so one round never holds the database
// for long; what is left waits for the next round.
const (
	pruneBatch   = 1000
	pruneBatches = 100
)

// Config configures the payment service. Only cmd/ fills it in; the zero
// value gives the defaults.
type Config struct {
	// SignupCurrency is the currency of the account OpenSignupAccount
	// opens for a newly registered user. Default "USD".
	SignupCurrency string
	// SignupCredit is the opening credit, in minor units, of the account
	// OpenSignupAccount opens. 0 means DefaultSignupCredit (10000); a
	// negative value opens the account without credit. At most MaxAmount.
	SignupCredit int64
	// IdempotencyRetention is how long an idempotency key is remembered:
	// a call replayed later than that runs again. Default 7 days, at
	// least a minute.
	IdempotencyRetention time.Duration
	// PruneInterval is how often keys older than IdempotencyRetention are
	// deleted. Default 1 hour, at least a second.
	PruneInterval time.Duration
	// MaxPagesPerStream bounds the pages one ListLedgerEntries stream
	// sends; a longer ledger ends the stream with a next_page_token to
	// resume from. Default 1000, at most 100000.
	MaxPagesPerStream int
	// Outbox receives the service's events (AccountOpened,
	// PaymentAuthorized, PaymentCaptured, PaymentVoided, PaymentRefunded)
	// in the transactions of the changes; Open creates its tables. Nil:
	// the service emits no events.
	Outbox *events.Outbox
}

// withDefaults returns c with its zero fields set to the defaults, or an
// error naming the first field out of range.
func (c Config) withDefaults() (Config, error) {
	if c.SignupCurrency == "" {
		c.SignupCurrency = DefaultSignupCurrency
	}
	if c.SignupCredit == 0 {
		c.SignupCredit = DefaultSignupCredit
	}
	if c.IdempotencyRetention == 0 {
		c.IdempotencyRetention = DefaultIdempotencyRetention
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = DefaultPruneInterval
	}
	if c.MaxPagesPerStream == 0 {
		c.MaxPagesPerStream = DefaultMaxPagesPerStream
	}
	switch {
	case !isCurrency(c.SignupCurrency):
		return c, fmt.Errorf("payment: SignupCurrency %q is not an ISO 4217 currency", c.SignupCurrency)
	case c.SignupCredit > MaxAmount:
		return c, fmt.Errorf("payment: SignupCredit %d is more than %d", c.SignupCredit, MaxAmount)
	case c.IdempotencyRetention < time.Minute:
		return c, fmt.Errorf("payment: IdempotencyRetention %v is less than a minute", c.IdempotencyRetention)
	case c.PruneInterval < time.Second:
		return c, fmt.Errorf("payment: PruneInterval %v is less than a second", c.PruneInterval)
	case c.MaxPagesPerStream < 1 || c.MaxPagesPerStream > 100_000:
		return c, fmt.Errorf("payment: MaxPagesPerStream %d is not in 1..100000", c.MaxPagesPerStream)
	}
	return c, nil
}

// Service is the payment service: its gRPC API, OpenForUser for the
// consumer of UserRegistered events, and a background loop that prunes old
// idempotency keys. It is safe for concurrent use. Close stops the loop;
// the database belongs to the caller, who closes it after Close.
type Service struct {
	store  Store
	cfg    Config
	logger *slog.Logger
	table  *status.Table

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// Open runs the payment migrations on db and returns the service, with
// its pruning loop started. ctx bounds the migrations; the loop runs until
// Close. A nil logger discards.
func Open(ctx context.Context, db *sqldb.DB, cfg Config, logger *slog.Logger) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := db.Migrate(ctx, Migrations, MigrationsDir); err != nil {
		return nil, fmt.Errorf("payment: %w", err)
	}
	if cfg.Outbox != nil {
		if err := events.Migrate(ctx, db.DB, events.Dialect(db.Dialect)); err != nil {
			return nil, fmt.Errorf("payment: %w", err)
		}
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Service{
		store:  newSQLStore(db, cfg.Outbox),
		cfg:    cfg,
		logger: logger,
		table:  newStatusTable(logger),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go s.pruneLoop(loopCtx)
	return s, nil
}

// Close stops the pruning loop and waits for it; a round in progress
// stops at its next statement. It does not close the database. Close is
// idempotent and returns nil.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
	})
	return nil
}

func (s *Service) pruneLoop(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.prune(ctx)
		}
	}
}

// prune deletes idempotency keys older than the retention, in bounded
// batches, and returns how many it deleted.
func (s *Service) prune(ctx context.Context) int64 {
	before := time.Now().Add(-s.cfg.IdempotencyRetention)
	var total int64
	for range pruneBatches {
		n, err := s.store.PruneIdempotency(ctx, before, pruneBatch)
		total += n
		if err != nil {
			if ctx.Err() == nil {
				s.logger.LogAttrs(ctx, slog.LevelWarn, "prune idempotency keys", slog.String("error", err.Error()))
			}
			return total
		}
		if n < pruneBatch {
			break
		}
	}
	return total
}

// Register registers the PaymentService on r and adds the validation
// rules of every one of its requests to rules.
func (s *Service) Register(r grpc.ServiceRegistrar, rules *validate.Set) {
	addRules(rules)
	paymentv1.RegisterPaymentServiceServer(r, &api{svc: s})
}

// RoleSupport is the user role that may refund.
const RoleSupport = "support"

// Policy is the payment service's authorization policy; every method not
// listed is denied:
//
//   - OpenAccount: the identity service (accounts of new users) and the
//     operator;
//   - GetAccount, ListLedgerEntries: the order and operator services, and
//     any verified user, through any service (the gateway included); a
//     user sees only their own accounts, which the handlers check since a
//     policy cannot know ownership. The gateway is deliberately not listed
//     as a service: a listed service is admitted without a user (see
//     kit/authz), so listing it would let anonymous callers of the gateway
//     read any account by id;
//   - Authorize, Capture, Void: the order service only (its saga);
//   - Refund: the order service and users with the support role.
func Policy() authz.Policy {
	read := authz.Rule{Services: []string{"order", authz.Operator}, Roles: []string{authz.AnyUser}}
	order := authz.Rule{Services: []string{"order"}}
	return authz.Policy{
		Service: paymentv1.PaymentService_ServiceDesc.ServiceName,
		Methods: map[string]authz.Rule{
			"OpenAccount":       {Services: []string{"identity", authz.Operator}},
			"GetAccount":        read,
			"ListLedgerEntries": read,
			"Authorize":         order,
			"Capture":           order,
			"Void":              order,
			"Refund":            {Services: []string{"order"}, Roles: []string{RoleSupport}},
		},
	}
}

// OpenForUser opens userID's account in currency with an opening credit of
// credit minor units (0 for none), for the consumer of UserRegistered
// events. It is idempotent however often the event is delivered: when the
// user already has an account in the currency, however it was opened, it
// returns that account unchanged. Invalid arguments give an
// INVALID_ARGUMENT status error; other errors are the store's, wrapped.
func (s *Service) OpenForUser(ctx context.Context, userID, currency string, credit int64) (*paymentv1.Account, error) {
	idem, p, err := signupRequest(userID, currency, credit)
	if err != nil {
		return nil, err
	}
	a, err := s.store.OpenAccount(ctx, idem, p)
	if _, exists := as[*AccountExistsError](err); exists || errors.Is(err, ErrIdempotencyKeyReused) {
		a, err = s.store.AccountByOwner(ctx, userID, currency)
	}
	if err != nil {
		return nil, fmt.Errorf("payment: open account for user %q: %w", userID, err)
	}
	return accountProto(a), nil
}

// signupRequest is the idempotent OpenAccount of a user's signup account.
// The key is derived from the user and currency, so every delivery of the
// event uses the same one; hashed, to fit MaxKeyLen.
func signupRequest(userID, currency string, credit int64) (Idempotency, OpenAccountParams, error) {
	sum := sha256.Sum256([]byte(userID))
	req := &paymentv1.OpenAccountRequest{
		IdempotencyKey: "signup/" + currency + "/" + hex.EncodeToString(sum[:]),
		OwnerId:        userID,
		CurrencyCode:   currency,
	}
	if credit != 0 {
		req.OpeningCredit = &typev1.Money{AmountMinor: credit, CurrencyCode: currency}
	}
	var v validate.Violations
	checkOpenAccount(req, &v)
	if err := v.Err(); err != nil {
		return Idempotency{}, OpenAccountParams{}, err
	}
	return Idempotency{Key: req.GetIdempotencyKey(), RequestHash: requestHash(req)},
		OpenAccountParams{OwnerID: userID, Currency: currency, OpeningCredit: credit}, nil
}

// EventTypes are the events HandleEvent consumes.
func EventTypes() []string {
	return []string{string((&eventsv1.UserRegistered{}).ProtoReflect().Descriptor().FullName())}
}

// HandleEvent consumes UserRegistered: it opens the new user's account in
// SignupCurrency with SignupCredit, inside tx (the consumer's transaction,
// which records the event as handled). A user who has an account in the
// currency already keeps it unchanged. An event of another type, or one
// that cannot be decoded, fails with events.ErrPermanent.
func (s *Service) HandleEvent(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
	var ev eventsv1.UserRegistered
	if err := env.GetPayload().UnmarshalTo(&ev); err != nil {
		return fmt.Errorf("payment: event %s of type %s: %w: %w", env.GetId(), env.GetType(), events.ErrPermanent, err)
	}
	idem, p, err := signupRequest(ev.GetUserId(), s.cfg.SignupCurrency, max(s.cfg.SignupCredit, 0))
	if err != nil {
		return fmt.Errorf("payment: event %s: %w: %w", env.GetId(), events.ErrPermanent, err)
	}
	if _, err := s.store.OpenAccountIn(ctx, tx, idem, p); err != nil {
		return fmt.Errorf("payment: signup account of user %q: %w", ev.GetUserId(), err)
	}
	return nil
}

// OpenSignupAccount is OpenForUser with the Config's SignupCurrency and
// SignupCredit.
func (s *Service) OpenSignupAccount(ctx context.Context, userID string) (*paymentv1.Account, error) {
	return s.OpenForUser(ctx, userID, s.cfg.SignupCurrency, max(s.cfg.SignupCredit, 0))
}
