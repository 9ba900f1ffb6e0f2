package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Bounds of the Config fields.
const (
	MaxTTL             = MaxTTLSeconds * time.Second
	MaxExpiryBatch     = 10_000
	MaxRecordBatch     = 1000
	MaxSubscriberQueue = 65_536
	MaxResyncWindow    = time.Minute
	MaxExpiryInterval  = time.Hour
)

// expiryTimeout bounds one tick of the expiry loop.
const expiryTimeout = 30 * time.Second

// Config configures the inventory. The zero value gives the defaults; only
// cmd/ fills it in.
type Config struct {
	// DefaultTTL is how long a reservation made with ttl_seconds 0 is held
	// before it expires. Default 15 minutes; at most MaxTTL (24 hours).
	DefaultTTL time.Duration
	// ExpiryInterval is how often the expiry loop looks for held
	// reservations past their expiry. Default 5 seconds; at most an hour.
	ExpiryInterval time.Duration
	// ExpiryBatch bounds the reservations expired per tick of the loop, in
	// one transaction. Default 100; at most MaxExpiryBatch.
	ExpiryBatch int
	// RecordBatch is how many items RecordItems writes per transaction.
	// Default 100; at most MaxRecordBatch.
	RecordBatch int
	// SubscriberBuffer is how many changes are queued for one Subscribe
	// stream before it is resynced. Default 256; at most
	// MaxSubscriberQueue.
	SubscriberBuffer int
	// ResyncWindow is how soon after a resync a subscriber may fall behind
	// again, and how long it may stay behind, before it is ended with
	// RESOURCE_EXHAUSTED; also the retry delay it is given. Default 5
	// seconds; at most a minute.
	ResyncWindow time.Duration
	// Outbox receives the service's events (StockChanged, StockReserved,
	// StockReleased, ReservationCommitted) in the transactions of the
	// changes; Open creates its tables. Nil: the service emits no events.
	Outbox *events.Outbox
}

func (c Config) withDefaults() (Config, error) {
	setDefault(&c.DefaultTTL, 15*time.Minute)
	setDefault(&c.ExpiryInterval, 5*time.Second)
	setDefault(&c.ExpiryBatch, 100)
	setDefault(&c.RecordBatch, 100)
	setDefault(&c.SubscriberBuffer, 256)
	setDefault(&c.ResyncWindow, 5*time.Second)
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("inventory: config: "+format, args...))
		}
	}
	check(c.DefaultTTL > 0 && c.DefaultTTL <= MaxTTL, "DefaultTTL %s not in (0, %s]", c.DefaultTTL, MaxTTL)
	check(c.ExpiryInterval > 0 && c.ExpiryInterval <= MaxExpiryInterval, "ExpiryInterval %s not in (0, %s]", c.ExpiryInterval, MaxExpiryInterval)
	check(c.ExpiryBatch > 0 && c.ExpiryBatch <= MaxExpiryBatch, "ExpiryBatch %d not in [1, %d]", c.ExpiryBatch, MaxExpiryBatch)
	check(c.RecordBatch > 0 && c.RecordBatch <= MaxRecordBatch, "RecordBatch %d not in [1, %d]", c.RecordBatch, MaxRecordBatch)
	check(c.SubscriberBuffer > 0 && c.SubscriberBuffer <= MaxSubscriberQueue, "SubscriberBuffer %d not in [1, %d]", c.SubscriberBuffer, MaxSubscriberQueue)
	check(c.ResyncWindow > 0 && c.ResyncWindow <= MaxResyncWindow, "ResyncWindow %s not in (0, %s]", c.ResyncWindow, MaxResyncWindow)
	return c, errors.Join(errs...)
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Service implements inventoryv1.InventoryServiceServer on a Store. It is
// safe for concurrent use. Open starts its expiry loop; Close stops it.
type Service struct {
	inventoryv1.UnimplementedInventoryServiceServer

	cfg    Config
	store  Store
	hub    *hub
	table  *status.Table
	logger *slog.Logger
	// now is the clock, and recordLimit the bound of a RecordItems stream
	// (MaxRecordMessages); tests may change them before serving.
	now         func() time.Time
	recordLimit int

	stop      context.CancelFunc
	loopDone  chan struct{}
	closeOnce sync.Once
}

var _ inventoryv1.InventoryServiceServer = (*Service)(nil)

// Open applies the inventory's migrations to db, and returns the service
// with its expiry loop running. The caller keeps ownership of db and closes
// it after Close. A nil logger discards.
func Open(ctx context.Context, db *sqldb.DB, cfg Config, logger *slog.Logger) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := db.Migrate(ctx, Migrations, "migrations"); err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	if cfg.Outbox != nil {
		if err := events.Migrate(ctx, db.DB, events.Dialect(db.Dialect)); err != nil {
			return nil, fmt.Errorf("inventory: %w", err)
		}
	}
	s := newService(newSQLStore(db, cfg.Outbox), cfg, logger)
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = cancel
	s.loopDone = make(chan struct{})
	go s.expiryLoop(loopCtx)
	return s, nil
}

func newService(store Store, cfg Config, logger *slog.Logger) *Service {
	return &Service{
		cfg:    cfg,
		store:  store,
		hub:    newHub(),
		table:  newTable(logger),
		logger: logger,
		now:    time.Now,

		recordLimit: MaxRecordMessages,
	}
}

// Register registers the service on s and adds the validation rules of
// every request message to rules.
func (s *Service) Register(r grpc.ServiceRegistrar, rules *validate.Set) {
	Rules(rules)
	inventoryv1.RegisterInventoryServiceServer(r, s)
}

// Close stops the expiry loop and waits for it, at most the time a
// database call takes to notice its context is cancelled. It does not end
// Subscribe streams: the server's shutdown does. Close is idempotent.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			s.stop()
			<-s.loopDone
		}
	})
	return nil
}

// Policy is the inventory's authorization policy: stock is reserved,
// released and committed only by the order service, imported only by the
// operator, and read by any signed-in user and by the gateway, order and
// operator services.
func Policy() authz.Policy {
	read := authz.Rule{Services: []string{"gateway", "order", authz.Operator}, Roles: []string{authz.AnyUser}}
	order := authz.Rule{Services: []string{"order"}}
	return authz.Policy{
		Service: inventoryv1.InventoryService_ServiceDesc.ServiceName,
		Methods: map[string]authz.Rule{
			"GetItem":           read,
			"ListItems":         read,
			"Subscribe":         read,
			"Reserve":           order,
			"Release":           order,
			"CommitReservation": order,
			"RecordItems":       {Services: []string{authz.Operator}},
		},
	}
}

// expiryLoop expires due reservations, one bounded batch per tick, until
// ctx is cancelled.
func (s *Service) expiryLoop(ctx context.Context) {
	defer close(s.loopDone)
	t := time.NewTicker(s.cfg.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.expireOnce(ctx)
		}
	}
}

// expireOnce runs one tick of the expiry loop.
func (s *Service) expireOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, expiryTimeout)
	defer cancel()
	n, levels, err := s.store.ExpireDue(ctx, s.now(), s.cfg.ExpiryBatch)
	s.hub.publish(levels)
	switch {
	case err != nil && ctx.Err() == nil:
		s.logger.LogAttrs(ctx, slog.LevelError, "expire reservations", slog.String("error", err.Error()))
	case n > 0:
		s.logger.LogAttrs(ctx, slog.LevelDebug, "reservations expired", slog.Int("count", n))
	}
}

// Seed creates the items of a demo catalogue that do not exist yet, and
// leaves existing ones untouched, so that it can run on every start. Every
// item needs a valid id, a name and a price.
func (s *Service) Seed(ctx context.Context, items []*inventoryv1.RecordItemsRequest) error {
	inputs := make([]ItemInput, 0, len(items))
	for i, m := range items {
		if e := recordItemError(i, m); e != nil {
			return fmt.Errorf("inventory: seed item %d %q: %s: %s", i, m.GetItemId(), e.GetField(), e.GetDescription())
		}
		if m.GetName() == "" || m.GetPrice() == nil {
			return fmt.Errorf("inventory: seed item %d %q: needs a name and a price", i, m.GetItemId())
		}
		inputs = append(inputs, itemInput(m))
	}
	for start := 0; start < len(inputs); start += s.cfg.RecordBatch {
		batch := inputs[start:min(start+s.cfg.RecordBatch, len(inputs))]
		_, levels, err := s.store.CreateMissing(ctx, batch, s.now())
		s.hub.publish(levels)
		if err != nil {
			return fmt.Errorf("inventory: seed: %w", err)
		}
	}
	return nil
}
