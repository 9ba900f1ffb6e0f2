package order

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Defaults and bounds of Config.
const (
	DefaultStepTimeout        = 5 * time.Second
	DefaultMaxAttempts        = 5
	MaxMaxAttempts            = 20
	DefaultBackoffBase        = 100 * time.Millisecond
	DefaultBackoffMax         = 2 * time.Second
	DefaultLeaseTTL           = 30 * time.Second
	DefaultRecoveryInterval   = 5 * time.Second
	DefaultRetryLater         = 10 * time.Second
	DefaultMaxConcurrentSagas = 128
	MaxReservationTTL         = 24 * time.Hour
	DefaultWatchPollInterval  = time.Second
	DefaultReturnMargin       = 250 * time.Millisecond
	DefaultWait               = 10 * time.Second
	// RecoveryBatch bounds the sagas one recovery pass takes up.
	RecoveryBatch = 100
)

// Point is a place in a saga where Config.CrashPoint is asked whether to
// "crash".
type Point struct {
	OrderID string
	// Phase and Step say where the saga is. Without Done, they are the
	// state just read from the database: the step about to run (going
	// forward), or the highest step left to compensate.
	Phase Phase
	Step  Step
	// Done is true when the remote calls of Step (or of its compensation)
	// have succeeded but their outcome is not persisted yet.
	Done bool
}

// Config configures the order service. Only cmd/ fills it in (tests too);
// zero values take the documented defaults.
type Config struct {
	// Inventory, Payment and Shipping are the clients of the services the
	// saga calls. Required. The service does not close their connections.
	Inventory inventoryv1.InventoryServiceClient
	Payment   paymentv1.PaymentServiceClient
	Shipping  shippingv1.ShippingServiceClient

	// StepTimeout bounds one attempt of one saga step (all its remote
	// calls), on a context derived from the service's background context,
	// never from a caller's. Default 5s.
	StepTimeout time.Duration
	// MaxAttempts bounds the attempts of a step that fails with a transient
	// error (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED).
	// A forward step that runs out compensates; a compensation that runs
	// out is retried by recovery after RetryLater. Default 5, at most 20.
	MaxAttempts int
	// BackoffBase and BackoffMax shape the jittered exponential backoff
	// between attempts (a server's RetryInfo is honoured up to BackoffMax).
	// Defaults 100ms and 2s.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// LeaseTTL is how long a replica owns a saga without renewing the
	// lease; it renews before every attempt. A replica that dies holds its
	// sagas this long. It should exceed StepTimeout plus BackoffMax; a
	// shorter lease is still safe (steps are idempotent) but lets replicas
	// repeat each other's work. Default 30s.
	LeaseTTL time.Duration
	// RecoveryInterval is how often the recovery loop looks for unfinished
	// sagas whose lease is free or expired, and resumes them. Default 5s.
	RecoveryInterval time.Duration
	// RetryLater is how long a saga whose compensation keeps failing waits
	// before recovery tries again. Default 10s.
	RetryLater time.Duration
	// MaxConcurrentSagas bounds the sagas this replica drives at once.
	// Default 128.
	MaxConcurrentSagas int
	// ReservationTTL is how long inventory holds the stock of an order not
	// yet confirmed; 0 leaves inventory's default (15 minutes). At most 24h.
	ReservationTTL time.Duration
	// WatchPollInterval is how often a waiting reader (WatchOrder, or
	// PlaceOrder and CancelOrder waiting for the saga) re-reads the order
	// without being woken, which catches changes made by other replicas.
	// Default 1s.
	WatchPollInterval time.Duration
	// ReturnMargin: PlaceOrder and CancelOrder stop waiting for the saga
	// this long before the call's deadline and return the order as it is.
	// Default 250ms.
	ReturnMargin time.Duration
	// Wait bounds how long PlaceOrder and CancelOrder wait for the saga in
	// a call without a deadline. Default 10s.
	Wait time.Duration
	// Owner names this replica in saga leases; it must differ between
	// replicas. Default: a random UUID per Open.
	Owner string

	// OnConfirmed, when set, is called (at least once, with a StepTimeout
	// context) after an order is confirmed, to release its shipment for
	// pickup: the shipping API has no call for that. Optional.
	OnConfirmed func(ctx context.Context, orderID, shipmentID string)
	// Outbox receives the service's events (OrderPlaced,
	// OrderStatusChanged, OrderConfirmed, OrderCancelled) in the
	// transactions of the changes; Open creates its tables. Nil: the
	// service emits no events.
	Outbox *events.Outbox
	// CrashPoint, when set, is asked at every Point of every saga; when it
	// returns true, this replica stops driving that saga on the spot, as if
	// the process had died there: nothing more is done or persisted and the
	// lease is kept until it expires. For fault tests only; nil in
	// production.
	CrashPoint func(Point) bool
}

func (c *Config) setDefaults() error {
	if c.Inventory == nil || c.Payment == nil || c.Shipping == nil {
		return errors.New("order: Config.Inventory, Payment and Shipping are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.StepTimeout, DefaultStepTimeout)
	def(&c.BackoffBase, DefaultBackoffBase)
	def(&c.BackoffMax, DefaultBackoffMax)
	def(&c.LeaseTTL, DefaultLeaseTTL)
	def(&c.RecoveryInterval, DefaultRecoveryInterval)
	def(&c.RetryLater, DefaultRetryLater)
	def(&c.WatchPollInterval, DefaultWatchPollInterval)
	def(&c.ReturnMargin, DefaultReturnMargin)
	def(&c.Wait, DefaultWait)
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	c.MaxAttempts = min(c.MaxAttempts, MaxMaxAttempts)
	if c.MaxConcurrentSagas <= 0 {
		c.MaxConcurrentSagas = DefaultMaxConcurrentSagas
	}
	if c.ReservationTTL < 0 || c.ReservationTTL > MaxReservationTTL {
		return fmt.Errorf("order: Config.ReservationTTL %v is outside 0..%v", c.ReservationTTL, MaxReservationTTL)
	}
	if c.Owner == "" {
		c.Owner = uuid.NewString()
	}
	return nil
}

// Service implements orderv1.OrderServiceServer and drives the sagas that
// place orders. It is safe for concurrent use. Open starts its recovery
// loop; Close stops it and every saga goroutine.
type Service struct {
	orderv1.UnimplementedOrderServiceServer

	cfg    Config
	store  Store
	logger *slog.Logger
	table  *status.Table
	bc     *broadcaster

	// ctx is the background context of sagas, cancelled by Close.
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{} // one slot per saga being driven

	mu      sync.Mutex
	running map[string]struct{} // sagas with a goroutine here
	closed  bool
	wg      sync.WaitGroup
	loop    chan struct{} // closed when the recovery loop has returned
	once    sync.Once
}

var _ orderv1.OrderServiceServer = (*Service)(nil)

// Open runs the order migrations on db and returns the service, with its
// recovery loop started: unfinished sagas left by a crash (of this or
// another replica) are resumed once their lease expires. The caller keeps
// db and closes it after Close. logger may be nil.
func Open(ctx context.Context, db *sqldb.DB, cfg Config, logger *slog.Logger) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Outbox != nil {
		if err := events.Migrate(ctx, db.DB, events.Dialect(db.Dialect)); err != nil {
			return nil, fmt.Errorf("order: %w", err)
		}
	}
	if err := db.Migrate(ctx, Migrations, "migrations"); err != nil {
		return nil, fmt.Errorf("order: %w", err)
	}
	bg, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg:     cfg,
		store:   NewStore(db, cfg.Outbox),
		logger:  logger,
		table:   newTable(logger),
		bc:      newBroadcaster(),
		ctx:     bg,
		cancel:  cancel,
		sem:     make(chan struct{}, cfg.MaxConcurrentSagas),
		running: make(map[string]struct{}),
		loop:    make(chan struct{}),
	}
	go s.recoveryLoop()
	return s, nil
}

// Register registers the OrderService on r and adds the validation rules
// of its requests to rules.
func (s *Service) Register(r grpc.ServiceRegistrar, rules *validate.Set) {
	Rules(rules)
	orderv1.RegisterOrderServiceServer(r, s)
}

// Policy is the order service's authorization policy: every RPC is open to
// any verified user, acting on the user's own orders; the operator service
// may also read every order with GetOrder and ListOrders. Calls without a
// user are refused (PERMISSION_DENIED by the policy, UNAUTHENTICATED by the
// handler for the operator on the other RPCs).
func Policy() authz.Policy {
	user := authz.Rule{Roles: []string{authz.AnyUser}}
	userOrOperator := authz.Rule{Roles: []string{authz.AnyUser}, Services: []string{authz.Operator}}
	return authz.Policy{
		Service: orderv1.OrderService_ServiceDesc.ServiceName,
		Methods: map[string]authz.Rule{
			"PlaceOrder":  user,
			"GetOrder":    userOrOperator,
			"ListOrders":  userOrOperator,
			"CancelOrder": user,
			"WatchOrder":  user,
		},
	}
}

// Close stops the recovery loop and every saga this replica drives, and
// waits for them: a step in flight is cancelled and will be repeated by
// whichever replica resumes the saga. Leases of interrupted sagas are
// released so that another replica resumes them at once. Close is
// idempotent; it does not close the database or the clients.
func (s *Service) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		<-s.loop
		s.wg.Wait()
	})
	return nil
}

// recoveryLoop resumes unfinished sagas whose lease is free or expired,
// once at start and then every RecoveryInterval, until Close.
func (s *Service) recoveryLoop() {
	defer close(s.loop)
	t := time.NewTicker(s.cfg.RecoveryInterval)
	defer t.Stop()
	for {
		s.resumeSagas()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resumeSagas takes up as many claimable sagas as there are free slots.
func (s *Service) resumeSagas() {
	free := cap(s.sem) - len(s.sem)
	if free <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StepTimeout)
	defer cancel()
	ids, err := s.store.Claimable(ctx, time.Now(), min(free, RecoveryBatch))
	if err != nil {
		if s.ctx.Err() == nil {
			s.logger.LogAttrs(ctx, slog.LevelWarn, "order: recovery scan failed", slog.String("error", err.Error()))
		}
		return
	}
	for _, id := range ids {
		s.start(id, time.Time{})
	}
}

// start drives the saga of orderID in a new goroutine unless this replica
// already does or is closing. The goroutine waits for a free slot, claims
// the lease and runs the saga until it finishes, loses its lease, must
// wait, or the service closes. leaseUntil is the end of the lease this
// replica took when it created the order (zero for none): while more than
// half of it is left, it is not claimed again.
func (s *Service) start(orderID string, leaseUntil time.Time) {
	s.mu.Lock()
	if _, ok := s.running[orderID]; ok {
		s.mu.Unlock()
		return
	}
	if s.closed {
		s.mu.Unlock()
		s.releaseLease(orderID, time.Time{}) // if it is ours, let another replica take it
		return
	}
	s.running[orderID] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.running, orderID)
			s.mu.Unlock()
		}()
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			s.releaseLease(orderID, time.Time{})
			return
		}
		defer func() { <-s.sem }()
		if time.Until(leaseUntil) <= s.cfg.LeaseTTL/2 {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StepTimeout)
			ok, err := s.store.Claim(ctx, orderID, s.cfg.Owner, time.Now(), s.cfg.LeaseTTL)
			cancel()
			if err != nil || !ok {
				return
			}
		}
		s.drive(orderID)
	}()
}

// releaseLease frees this replica's lease on a saga, on a context of its
// own so that it works while closing.
func (s *Service) releaseLease(orderID string, nextRun time.Time) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), s.cfg.StepTimeout)
	defer cancel()
	if err := s.store.ReleaseLease(ctx, orderID, s.cfg.Owner, nextRun); err != nil {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "order: release saga lease",
			slog.String("order_id", orderID), slog.String("error", err.Error()))
	}
}
