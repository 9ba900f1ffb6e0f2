package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/events/kafkabus"
	"github.com/switchboard-rpc/switchboard/kit/events/natsbus"
	"github.com/switchboard-rpc/switchboard/kit/events/rabbitbus"
)

// broker is the run's event transport, shared by its services.
type broker struct {
	events.Transport
	// desc says what it is, for the table of addresses.
	desc  string
	close func() error
}

// openBroker connects the run to its broker: cfg.Broker when set
// (nats://, kafka://, amqp:// or amqps://), else a NATS JetStream server
// embedded in this process with its files under <data>/nats.
func openBroker(ctx context.Context, cfg Config) (*broker, error) {
	log := cfg.Logger.With(slog.String("component", "events"))
	if cfg.Broker == "" {
		emb, err := natsbus.StartEmbedded(filepath.Join(cfg.DataDir, "nats"), natsbus.WithServerLogger(cfg.Logger))
		if err != nil {
			return nil, fmt.Errorf("events: embedded NATS: %w", err)
		}
		tr, err := natsbus.New(ctx, natsbus.Options{URL: emb.ClientURL(), Logger: log})
		if err != nil {
			emb.Shutdown()
			return nil, fmt.Errorf("events: %w", err)
		}
		return &broker{Transport: tr, desc: "embedded NATS " + emb.ClientURL(), close: func() error {
			err := tr.Close()
			emb.Shutdown()
			return err
		}}, nil
	}
	u, err := url.Parse(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("events: broker URL: %w", err)
	}
	var tr events.Transport
	switch u.Scheme {
	case "nats", "tls":
		tr, err = natsbus.New(ctx, natsbus.Options{URL: cfg.Broker, Logger: log})
	case "kafka":
		tr, err = kafkabus.New(ctx, kafkabus.Options{Brokers: strings.Split(u.Host, ","), Logger: log})
	case "amqp", "amqps":
		tr, err = rabbitbus.New(ctx, rabbitbus.Options{URL: cfg.Broker, Logger: log})
	default:
		return nil, fmt.Errorf("events: broker %q: want nats://, kafka://, amqp:// or amqps://", u.Redacted())
	}
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	return &broker{Transport: tr, desc: u.Scheme + "://" + u.Host, close: tr.Close}, nil
}

// eventsOf is a service's part in the run's events: its outbox and relay,
// and its consumers.
type eventsOf struct {
	env       *Env
	db        *sqldb.DB
	outbox    *events.Outbox
	consumers []*events.Consumer

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Outbox returns the outbox of the service's events in db and starts the
// relay that publishes them; the relay stops after the service, once it
// has published what was committed (bounded by the shutdown timeout).
func (e *Env) Outbox(ctx context.Context, db *sqldb.DB) *events.Outbox {
	ev := e.eventsIn(db)
	if ev.outbox != nil {
		return ev.outbox
	}
	d := events.Dialect(db.Dialect)
	// The relay reads the outbox at once: its tables come first (the
	// service's Open creates them too; Migrate is idempotent).
	if err := events.Migrate(ctx, db.DB, d); err != nil {
		e.logger.LogAttrs(ctx, slog.LevelError, "event tables", slog.String("error", err.Error()))
	}
	ev.outbox = events.NewOutbox(e.name, d)
	relay := events.NewRelay(db.DB, d, ev.outbox, e.broker, events.WithLogger(e.logger), events.WithInstance(e.name+"-"+instanceID))
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := relay.Run(rctx); err != nil && !errors.Is(err, context.Canceled) {
			e.logger.LogAttrs(rctx, slog.LevelError, "event relay stopped", slog.String("error", err.Error()))
		}
	}()
	e.OnStop(func() error {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), e.cfg.ShutdownTimeout)
		defer dcancel()
		if err := relay.Drain(dctx); err != nil {
			return fmt.Errorf("%s: events not published at stop: %w", e.name, err)
		}
		return nil
	})
	return ev.outbox
}

// Consume subscribes the service (its consumer group is its name) to the
// events of the given types (all when none), handled by h in transactions
// of db with the inbox that makes redeliveries no-ops. The group is set
// up in the broker at once, so no event published from now on is missed;
// delivery starts once the service is open, and stops before it closes.
func (e *Env) Consume(ctx context.Context, db *sqldb.DB, types []string, h events.TxHandler, opts ...events.ConsumerOption) error {
	ev := e.eventsIn(db)
	if err := events.Migrate(ctx, db.DB, events.Dialect(db.Dialect)); err != nil {
		return err
	}
	c := events.NewConsumer(db.DB, e.broker, events.Subscription{Group: e.name, Types: types}, h,
		append([]events.ConsumerOption{events.WithLogger(e.logger)}, opts...)...)
	if err := c.Setup(ctx); err != nil {
		return err
	}
	ev.consumers = append(ev.consumers, c)
	return nil
}

// consumed subscribes comp's handler h (see Consume) and returns comp, or
// closes it if the subscription cannot be set up.
func (e *Env) consumed(ctx context.Context, db *sqldb.DB, comp Component, types []string, h events.TxHandler, opts ...events.ConsumerOption) (Component, error) {
	if err := e.Consume(ctx, db, types, h, opts...); err != nil {
		return nil, errors.Join(err, comp.Close())
	}
	return comp, nil
}

// eventsIn returns the service's events state, made on first use.
func (e *Env) eventsIn(db *sqldb.DB) *eventsOf {
	if e.events == nil {
		e.events = &eventsOf{env: e, db: db}
	}
	return e.events
}

// startConsumers runs the service's consumers until the returned function
// is called, which stops them and waits.
func (ev *eventsOf) startConsumers(ctx context.Context) func() error {
	if ev == nil || len(ev.consumers) == 0 {
		return func() error { return nil }
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ev.cancel = cancel
	errs := make([]error, len(ev.consumers))
	for i, c := range ev.consumers {
		ev.wg.Go(func() { errs[i] = c.Run(cctx) })
	}
	return func() error {
		cancel()
		ev.wg.Wait()
		return errors.Join(errs...)
	}
}

// instanceID tells this process's relays apart from other processes' in
// their leases.
var instanceID = uuid.NewString()[:8]
