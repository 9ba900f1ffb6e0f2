package shipping

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Defaults and bounds of Config.
const (
	DefaultStepInterval    = 2 * time.Second
	DefaultBatchSize       = 100
	MaxBatchSize           = 1000
	DefaultTrackResync     = time.Second
	DefaultMaxTrackStreams = 1000
	DefaultCarrier         = "Switchboard Post"
	// MaxPollInterval caps the default PollInterval.
	MaxPollInterval = time.Second
	// MinPollInterval floors PollInterval and TrackResync.
	MinPollInterval = time.Millisecond
	// maxBatchesPerTick bounds how many full batches one carrier tick
	// works through before it waits for the next tick.
	maxBatchesPerTick = 16
)

// Config configures the service. Only cmd/ fills it in; the zero value
// gives the documented defaults. Negative durations and sizes are errors.
type Config struct {
	// StepInterval is how long the carrier takes from one status to the
	// next once it has picked a shipment up. Default 2s.
	StepInterval time.Duration
	// PickupDelay is how long after Release the carrier picks a shipment
	// up. Default 0: at the carrier's next tick.
	PickupDelay time.Duration
	// PollInterval is how often the carrier looks for due shipments.
	// Default StepInterval/2, between 1ms and 1s.
	PollInterval time.Duration
	// BatchSize bounds the shipments the carrier advances per batch; a
	// tick works through at most 16 full batches. Default 100, at most
	// 1000.
	BatchSize int
	// TrackResync is the longest a Track stream waits before it re-reads
	// its shipment's events from the database even though this process
	// reported no change: how late it sees changes that another replica
	// made. Default 1s, at least 1ms.
	TrackResync time.Duration
	// MaxTrackStreams bounds the Track streams open at once on this
	// instance; more are refused with RESOURCE_EXHAUSTED. Default 1000.
	MaxTrackStreams int
	// Carrier is the carrier name on shipments. Default "Switchboard Post".
	Carrier string
	// OnStatusChange, if set, is called after each committed status
	// change of a shipment made by this instance, creation included (from
	// SHIPMENT_STATUS_UNSPECIFIED to CREATED), in order per shipment. It
	// is at most once: a crash between the commit and the call loses it;
	// for what must not be lost, use the events in Outbox. It runs on the carrier loop or in the
	// RPC that made the change, so it must be quick, must not panic and
	// must be safe for concurrent use; ctx ends when that loop or call
	// does. Close waits for a call in progress.
	OnStatusChange func(ctx context.Context, shipmentID, orderID string, from, to shippingv1.ShipmentStatus)
	// Outbox receives the service's events (ShipmentCreated,
	// ShipmentStatusChanged, ShipmentCancelled) in the transactions of the
	// changes; Open creates its tables. Nil: the service emits no events.
	Outbox *events.Outbox
}

// withDefaults returns c with zero values replaced by defaults, or an
// error when a value is out of range.
func (c Config) withDefaults() (Config, error) {
	if c.StepInterval < 0 || c.PickupDelay < 0 || c.PollInterval < 0 || c.TrackResync < 0 {
		return c, errors.New("shipping: negative duration in Config")
	}
	if c.BatchSize < 0 || c.BatchSize > MaxBatchSize {
		return c, fmt.Errorf("shipping: Config.BatchSize %d is not between 0 and %d", c.BatchSize, MaxBatchSize)
	}
	if c.MaxTrackStreams < 0 {
		return c, errors.New("shipping: negative Config.MaxTrackStreams")
	}
	if c.StepInterval == 0 {
		c.StepInterval = DefaultStepInterval
	}
	if c.PollInterval == 0 {
		c.PollInterval = min(c.StepInterval/2, MaxPollInterval)
	}
	c.PollInterval = max(c.PollInterval, MinPollInterval)
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.TrackResync == 0 {
		c.TrackResync = DefaultTrackResync
	}
	c.TrackResync = max(c.TrackResync, MinPollInterval)
	if c.MaxTrackStreams == 0 {
		c.MaxTrackStreams = DefaultMaxTrackStreams
	}
	if c.Carrier = strings.TrimSpace(c.Carrier); c.Carrier == "" {
		c.Carrier = DefaultCarrier
	}
	return c, nil
}

// Service is the shipping service: the gRPC API, Release for the order
// service, and the carrier loop that Open starts and Close stops. It is
// safe for concurrent use.
type Service struct {
	store  Store
	cfg    Config
	logger *slog.Logger
	table  *status.Table
	hub    hub

	streams atomic.Int64  // open Track streams
	wake    chan struct{} // nudges the carrier after a Release
	done    chan struct{} // closed by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
}

// Open runs the shipping migrations on db, and returns the service with its
// carrier loop running. The caller must Close it, then close db. A nil
// logger discards.
func Open(ctx context.Context, db *sqldb.DB, cfg Config, logger *slog.Logger) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := db.Migrate(ctx, Migrations, MigrationsDir); err != nil {
		return nil, fmt.Errorf("shipping: %w", err)
	}
	if cfg.Outbox != nil {
		if err := events.Migrate(ctx, db.DB, events.Dialect(db.Dialect)); err != nil {
			return nil, fmt.Errorf("shipping: %w", err)
		}
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Service{
		store:  NewStore(db, cfg.Outbox),
		cfg:    cfg,
		logger: logger,
		table:  newTable(logger),
		hub:    hub{topics: make(map[string]*topic)},
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		cancel: cancel,
	}
	s.wg.Add(1)
	go s.runCarrier(loopCtx)
	return s, nil
}

// Close stops the carrier loop, waiting for its current step to end (its
// database calls are cancelled), and ends open Track streams with
// UNAVAILABLE. It is idempotent and returns nil; it does not close the
// database. Stop serving before closing: the unary RPCs and Release keep
// working on the database, but nothing moves shipments any more.
func (s *Service) Close() error {
	s.once.Do(func() {
		close(s.done)
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

// Register registers the gRPC implementation on r and adds the validation
// rules of every request message to rules.
func (s *Service) Register(r grpc.ServiceRegistrar, rules *validate.Set) {
	Rules(rules)
	shippingv1.RegisterShippingServiceServer(r, &handlers{svc: s})
}

// Policy is the shipping service's authorization policy: only the order
// service creates and cancels shipments; the gateway, the order service,
// the operator and any verified user may read and track them.
func Policy() authz.Policy {
	readers := authz.Rule{Services: []string{"gateway", "order", authz.Operator}, Roles: []string{authz.AnyUser}}
	return authz.Policy{
		Service: shippingv1.ShippingService_ServiceDesc.ServiceName,
		Methods: map[string]authz.Rule{
			"CreateShipment": {Services: []string{"order"}},
			"CancelShipment": {Services: []string{"order"}},
			"GetShipment":    readers,
			"Track":          readers,
		},
	}
}

// Release hands the shipment of an order to the carrier, which picks it up
// Config.PickupDelay later. The order service calls it once the order is
// confirmed; until then the shipment stays CREATED, so a saga compensation
// can still cancel it. It is idempotent: releasing a released shipment does
// nothing. It returns domain errors, not gRPC statuses: one matching
// ErrNotFound when the order has no shipment, and ErrCancelled when the
// shipment was cancelled.
func (s *Service) Release(ctx context.Context, orderID string) error {
	released, err := s.store.Release(ctx, orderID, time.Now().Add(s.cfg.PickupDelay))
	if err != nil {
		return err
	}
	if released {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// create creates the shipment of an order, or returns the existing one.
func (s *Service) create(ctx context.Context, orderID string, addr Address, items []Item) (Shipment, error) {
	n := NewShipment{
		ID:             uuid.NewString(),
		OrderID:        orderID,
		Address:        addr,
		Items:          items,
		Carrier:        s.cfg.Carrier,
		TrackingNumber: trackingNumber(),
	}
	sh, created, err := s.store.Create(ctx, n, time.Now())
	if err != nil {
		return Shipment{}, err
	}
	if created {
		s.changed(ctx, &Transition{
			ShipmentID: sh.ID, OrderID: sh.OrderID,
			From: shippingv1.ShipmentStatus_SHIPMENT_STATUS_UNSPECIFIED, To: sh.Status, Event: sh.Events[0],
		})
	}
	return sh, nil
}

// cancelShipment cancels a shipment not yet picked up.
func (s *Service) cancelShipment(ctx context.Context, shipmentID, reason string) (Shipment, error) {
	sh, tr, err := s.store.Cancel(ctx, shipmentID, reason, time.Now())
	if err != nil {
		return Shipment{}, err
	}
	if tr != nil {
		s.changed(ctx, tr)
	}
	return sh, nil
}

// changed reports a committed transition to Track streams and the hook.
func (s *Service) changed(ctx context.Context, tr *Transition) {
	s.hub.notify(tr.ShipmentID)
	if s.cfg.OnStatusChange != nil {
		s.cfg.OnStatusChange(ctx, tr.ShipmentID, tr.OrderID, tr.From, tr.To)
	}
}

// trackingNumber returns a new carrier tracking number: "SB" and 16
// upper-case hex digits.
func trackingNumber() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	return "SB" + strings.ToUpper(hex.EncodeToString(b[:]))
}
