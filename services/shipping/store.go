package shipping

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

// Migrations holds the goose migrations of the shipping schema, in
// MigrationsDir.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// MigrationsDir is the directory of Migrations that holds them.
const MigrationsDir = "migrations"

// Store keeps shipments and their tracking events. Every method is one
// transaction at most, keeps the invariants in the package documentation in
// the database itself, and is safe for concurrent use, also by several
// processes on one database. Times are stored with microsecond precision.
type Store interface {
	// Create inserts the shipment n, status CREATED, with its first
	// tracking event, and returns it with created true. When n's order
	// already has a shipment it inserts nothing and returns that shipment
	// with created false, or a *MismatchError when its address or items
	// (compared as a set) differ from n's.
	Create(ctx context.Context, n NewShipment, now time.Time) (s Shipment, created bool, err error)
	// Get returns a shipment with its items and events, or a
	// *NotFoundError.
	Get(ctx context.Context, shipmentID string) (Shipment, error)
	// Events returns at most limit events of a shipment with a sequence
	// above after, oldest first. An unknown shipment has no events.
	Events(ctx context.Context, shipmentID string, after int32, limit int) ([]Event, error)
	// Cancel cancels a shipment the carrier has not picked up, recording a
	// CANCELLED event that mentions reason, and returns it with the
	// transition made. A shipment already cancelled is returned unchanged
	// with a nil transition. It fails with a *NotCancellableError once the
	// shipment is picked up, and with a *NotFoundError for an unknown one.
	Cancel(ctx context.Context, shipmentID, reason string, now time.Time) (Shipment, *Transition, error)
	// Release marks the CREATED shipment of an order ready for the
	// carrier, with its pickup due at due, and reports whether it did; a
	// shipment already released is left as it is (false, nil). It fails
	// with a *CancelledError for a cancelled shipment and a *NotFoundError
	// when the order has none.
	Release(ctx context.Context, orderID string, due time.Time) (bool, error)
	// ReleaseIn is Release inside the caller's transaction tx, which the
	// caller commits.
	ReleaseIn(ctx context.Context, tx *sql.Tx, orderID string, due time.Time) (bool, error)
	// Due returns at most limit shipments whose next carrier step is due
	// at now, the longest due first.
	Due(ctx context.Context, now time.Time, limit int) ([]DueShipment, error)
	// Advance moves a released shipment from status from to the next one
	// if it is still in from and its step is due at now, records the
	// event, and makes the following step due at nextDue (ignored when the
	// new status is terminal). It returns nil, nil when the shipment was
	// not advanced: someone else advanced or cancelled it, or it is not due.
	Advance(ctx context.Context, shipmentID string, from shippingv1.ShipmentStatus, now, nextDue time.Time) (*Transition, error)
}

// NewStore returns the Store on db, whose schema Migrations must have
// created, writing its events to outbox (nil: none). It is safe for
// concurrent use; the caller closes db.
func NewStore(db *sqldb.DB, outbox *events.Outbox) Store { return &sqlStore{db: db, outbox: outbox} }

// sqlStore is the Store on SQLite or PostgreSQL, in the portable dialect.
type sqlStore struct {
	db     *sqldb.DB
	outbox *events.Outbox // nil: no events
}

var _ Store = (*sqlStore)(nil)

// querier is what reads need: a *sql.DB or a *sql.Tx. Inside a
// transaction, reads must go through the *sql.Tx: SQLite has a single
// connection, which the transaction holds.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const (
	selectShipment = `SELECT shipment_id, order_id, recipient, line1, line2, city, postal_code, country_code,
	carrier, tracking_number, status, ready, last_sequence, create_us, update_us FROM shipments`
	selectShipmentByID    = selectShipment + ` WHERE shipment_id = $1`
	selectShipmentByOrder = selectShipment + ` WHERE order_id = $1`

	insertEvent = `INSERT INTO tracking_events (shipment_id, sequence, status, description, location, event_us)
	VALUES ($1, $2, $3, $4, $5, $6)`
)

func (s *sqlStore) Create(ctx context.Context, n NewShipment, now time.Time) (Shipment, bool, error) {
	us := sqldb.Micros(now)
	var (
		sh      Shipment
		created bool
	)
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		sh, created = Shipment{}, false
		a := n.Address
		var id string
		err := tx.QueryRowContext(ctx, `INSERT INTO shipments (shipment_id, order_id, recipient, line1, line2, city,
			postal_code, country_code, carrier, tracking_number, status, ready, due_us, last_sequence, create_us, update_us)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'CREATED', FALSE, NULL, 1, $11, $11)
			ON CONFLICT (order_id) DO NOTHING RETURNING shipment_id`,
			n.ID, n.OrderID, a.Recipient, a.Line1, a.Line2, a.City, a.PostalCode, a.CountryCode,
			n.Carrier, n.TrackingNumber, us).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			// The order has a shipment (committed, or its insert just
			// committed: ON CONFLICT waits for it).
			existing, err := getShipment(ctx, tx, selectShipmentByOrder, n.OrderID)
			if err != nil {
				return err
			}
			if !sameContent(existing.Address, existing.Items, n.Address, n.Items) {
				return &MismatchError{OrderID: n.OrderID, ShipmentID: existing.ID}
			}
			sh = existing
			return nil
		}
		if err != nil {
			return err
		}
		if err := insertItems(ctx, tx, n.ID, n.Items); err != nil {
			return err
		}
		desc, loc := createdEvent(n.Carrier)
		ev := Event{Sequence: 1, Status: shippingv1.ShipmentStatus_SHIPMENT_STATUS_CREATED, Description: desc, Location: loc, Time: sqldb.Time(us)}
		if _, err := tx.ExecContext(ctx, insertEvent, n.ID, ev.Sequence, statusName(ev.Status), desc, loc, us); err != nil {
			return err
		}
		sh = Shipment{
			ID: n.ID, OrderID: n.OrderID, Address: n.Address, Items: append([]Item(nil), n.Items...),
			Status: ev.Status, Carrier: n.Carrier, TrackingNumber: n.TrackingNumber,
			Events: []Event{ev}, Created: ev.Time, Updated: ev.Time,
		}
		created = true
		return s.emit(ctx, tx, n.ID, &eventsv1.ShipmentCreated{
			ShipmentId: n.ID, OrderId: n.OrderID, Carrier: n.Carrier, TrackingNumber: n.TrackingNumber,
		})
	})
	if err != nil {
		return Shipment{}, false, fmt.Errorf("create shipment for order %q: %w", n.OrderID, err)
	}
	s.wake()
	return sh, created, nil
}

// insertItems inserts the lines of a shipment in one statement.
func insertItems(ctx context.Context, tx *sql.Tx, shipmentID string, items []Item) error {
	if len(items) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO shipment_items (shipment_id, position, item_id, quantity) VALUES `)
	args := make([]any, 0, 1+3*len(items))
	args = append(args, shipmentID)
	for i, it := range items {
		if i > 0 {
			q.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&q, "($1, $%d, $%d, $%d)", n+1, n+2, n+3)
		args = append(args, i, it.ItemID, it.Quantity)
	}
	_, err := tx.ExecContext(ctx, q.String(), args...)
	return err
}

func (s *sqlStore) Get(ctx context.Context, shipmentID string) (Shipment, error) {
	sh, err := getShipment(ctx, s.db, selectShipmentByID, shipmentID)
	if err != nil {
		return Shipment{}, fmt.Errorf("get shipment: %w", err)
	}
	return sh, nil
}

// getShipment reads one shipment, selected by query (selectShipmentByID
// or selectShipmentByOrder) with key, and its items and events. The events
// are those up to the row's last_sequence, so they match its status even
// when the carrier moves on between the reads.
func getShipment(ctx context.Context, q querier, query, key string) (Shipment, error) {
	var (
		sh       Shipment
		st       string
		last     int32
		cus, uus int64
		a        = &sh.Address
	)
	err := q.QueryRowContext(ctx, query, key).Scan(&sh.ID, &sh.OrderID, &a.Recipient, &a.Line1, &a.Line2, &a.City,
		&a.PostalCode, &a.CountryCode, &sh.Carrier, &sh.TrackingNumber, &st, &sh.Ready, &last, &cus, &uus)
	if errors.Is(err, sql.ErrNoRows) {
		if query == selectShipmentByOrder {
			return Shipment{}, &NotFoundError{OrderID: key}
		}
		return Shipment{}, &NotFoundError{ShipmentID: key}
	}
	if err != nil {
		return Shipment{}, err
	}
	sh.Status, sh.Created, sh.Updated = parseStatus(st), sqldb.Time(cus), sqldb.Time(uus)
	if sh.Items, err = items(ctx, q, sh.ID); err != nil {
		return Shipment{}, err
	}
	if sh.Events, err = trackingEvents(ctx, q, sh.ID, 0, last, MaxEvents); err != nil {
		return Shipment{}, err
	}
	return sh, nil
}

// MaxItems bounds the lines of a shipment.
const MaxItems = 100

func items(ctx context.Context, q querier, shipmentID string) ([]Item, error) {
	rows, err := q.QueryContext(ctx, `SELECT item_id, quantity FROM shipment_items WHERE shipment_id = $1
		ORDER BY position LIMIT $2`, shipmentID, MaxItems)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []Item
	for rows.Next() {
		var it Item
		if err := rows.Scan(&it.ItemID, &it.Quantity); err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// trackingEvents reads at most limit events of a shipment with after < sequence
// <= upTo, oldest first.
func trackingEvents(ctx context.Context, q querier, shipmentID string, after, upTo int32, limit int) ([]Event, error) {
	rows, err := q.QueryContext(ctx, `SELECT sequence, status, description, location, event_us FROM tracking_events
		WHERE shipment_id = $1 AND sequence > $2 AND sequence <= $3 ORDER BY sequence LIMIT $4`,
		shipmentID, after, upTo, limit)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []Event
	for rows.Next() {
		var (
			ev Event
			st string
			us int64
		)
		if err := rows.Scan(&ev.Sequence, &st, &ev.Description, &ev.Location, &us); err != nil {
			return nil, err
		}
		ev.Status, ev.Time = parseStatus(st), sqldb.Time(us)
		out = append(out, ev)
	}
	return out, rows.Err()
}

func (s *sqlStore) Events(ctx context.Context, shipmentID string, after int32, limit int) ([]Event, error) {
	evs, err := trackingEvents(ctx, s.db, shipmentID, after, math.MaxInt32, limit)
	if err != nil {
		return nil, fmt.Errorf("shipment events: %w", err)
	}
	return evs, nil
}

func (s *sqlStore) Cancel(ctx context.Context, shipmentID, reason string, now time.Time) (Shipment, *Transition, error) {
	us := sqldb.Micros(now)
	var (
		sh Shipment
		tr *Transition
	)
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		sh, tr = Shipment{}, nil
		var (
			orderID string
			seq     int32
		)
		err := tx.QueryRowContext(ctx, `UPDATE shipments
			SET status = 'CANCELLED', due_us = NULL, last_sequence = last_sequence + 1, update_us = $2
			WHERE shipment_id = $1 AND status = 'CREATED' RETURNING order_id, last_sequence`,
			shipmentID, us).Scan(&orderID, &seq)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			// Not CREATED (or not there): cancelled already, or too late.
			if sh, err = getShipment(ctx, tx, selectShipmentByID, shipmentID); err != nil {
				return err
			}
			if sh.Status != shippingv1.ShipmentStatus_SHIPMENT_STATUS_CANCELLED {
				return &NotCancellableError{ShipmentID: shipmentID, Status: sh.Status}
			}
			return nil
		case err != nil:
			return err
		}
		desc, loc := cancelledEvent(reason)
		ev := Event{Sequence: seq, Status: shippingv1.ShipmentStatus_SHIPMENT_STATUS_CANCELLED, Description: desc, Location: loc, Time: sqldb.Time(us)}
		if _, err := tx.ExecContext(ctx, insertEvent, shipmentID, seq, statusName(ev.Status), desc, loc, us); err != nil {
			return err
		}
		tr = &Transition{ShipmentID: shipmentID, OrderID: orderID, From: shippingv1.ShipmentStatus_SHIPMENT_STATUS_CREATED, To: ev.Status, Event: ev}
		if sh, err = getShipment(ctx, tx, selectShipmentByID, shipmentID); err != nil {
			return err
		}
		if err := s.emitTransition(ctx, tx, tr); err != nil {
			return err
		}
		return s.emit(ctx, tx, shipmentID, &eventsv1.ShipmentCancelled{ShipmentId: shipmentID, OrderId: orderID, Reason: reason})
	})
	if err != nil {
		return Shipment{}, nil, fmt.Errorf("cancel shipment: %w", err)
	}
	s.wake()
	return sh, tr, nil
}

func (s *sqlStore) Release(ctx context.Context, orderID string, due time.Time) (bool, error) {
	return release(ctx, s.db, orderID, due)
}

func (s *sqlStore) ReleaseIn(ctx context.Context, tx *sql.Tx, orderID string, due time.Time) (bool, error) {
	return release(ctx, tx, orderID, due)
}

// execQuerier is what *sql.DB and *sql.Tx have in common.
type execQuerier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func release(ctx context.Context, db execQuerier, orderID string, due time.Time) (bool, error) {
	res, err := db.ExecContext(ctx, `UPDATE shipments SET ready = TRUE, due_us = $2
		WHERE order_id = $1 AND status = 'CREATED' AND NOT ready`, orderID, sqldb.Micros(due))
	if err != nil {
		return false, fmt.Errorf("release shipment: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, fmt.Errorf("release shipment: %w", err)
	} else if n == 1 {
		return true, nil
	}
	var (
		id, st string
		ready  bool
	)
	err = db.QueryRowContext(ctx, `SELECT shipment_id, status, ready FROM shipments WHERE order_id = $1`, orderID).
		Scan(&id, &st, &ready)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, fmt.Errorf("release shipment: %w", &NotFoundError{OrderID: orderID})
	case err != nil:
		return false, fmt.Errorf("release shipment: %w", err)
	case parseStatus(st) == shippingv1.ShipmentStatus_SHIPMENT_STATUS_CANCELLED:
		return false, fmt.Errorf("release shipment: %w", &CancelledError{ShipmentID: id, OrderID: orderID})
	}
	// Released already (the UPDATE only skips a non-cancelled shipment
	// that is ready).
	return false, nil
}

func (s *sqlStore) Due(ctx context.Context, now time.Time, limit int) ([]DueShipment, error) {
	rows, err := s.db.Reader().QueryContext(ctx, `SELECT shipment_id, status FROM shipments
		WHERE due_us IS NOT NULL AND due_us <= $1 ORDER BY due_us LIMIT $2`, sqldb.Micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("due shipments: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []DueShipment
	for rows.Next() {
		var (
			d  DueShipment
			st string
		)
		if err := rows.Scan(&d.ShipmentID, &st); err != nil {
			return nil, fmt.Errorf("due shipments: %w", err)
		}
		d.Status = parseStatus(st)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("due shipments: %w", err)
	}
	return out, nil
}

func (s *sqlStore) Advance(ctx context.Context, shipmentID string, from shippingv1.ShipmentStatus, now, nextDue time.Time) (*Transition, error) {
	to, ok := next(from)
	if !ok {
		return nil, nil
	}
	us := sqldb.Micros(now)
	var due sql.NullInt64
	if !Terminal(to) {
		due = sql.NullInt64{Int64: sqldb.Micros(nextDue), Valid: true}
	}
	var tr *Transition
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		tr = nil
		var (
			orderID, carrier, city string
			seq                    int32
		)
		err := tx.QueryRowContext(ctx, `UPDATE shipments
			SET status = $3, due_us = $4, last_sequence = last_sequence + 1, update_us = $5
			WHERE shipment_id = $1 AND status = $2 AND ready AND due_us <= $5
			RETURNING order_id, carrier, city, last_sequence`,
			shipmentID, statusName(from), statusName(to), due, us).Scan(&orderID, &carrier, &city, &seq)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		desc, loc := carrierEvent(to, carrier, city)
		if _, err := tx.ExecContext(ctx, insertEvent, shipmentID, seq, statusName(to), desc, loc, us); err != nil {
			return err
		}
		tr = &Transition{ShipmentID: shipmentID, OrderID: orderID, From: from, To: to, Event: Event{
			Sequence: seq, Status: to, Description: desc, Location: loc, Time: sqldb.Time(us),
		}}
		return s.emitTransition(ctx, tx, tr)
	})
	if err != nil {
		return nil, fmt.Errorf("advance shipment: %w", err)
	}
	if tr != nil {
		s.wake()
	}
	return tr, nil
}
