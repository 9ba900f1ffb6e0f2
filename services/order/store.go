package order

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

// Migrations are the goose migrations of the order database, in
// migrations/.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// MaxListLimit bounds the orders one ListOrders store call returns.
const MaxListLimit = 100

// MaxEventsLimit bounds the events one Events store call returns.
const MaxEventsLimit = 100

// Cursor is a position in the newest-first listing of orders: the listing
// resumes after the order created at CreateTime with id OrderID.
type Cursor struct {
	CreateTime time.Time
	OrderID    string
}

// Cond is the condition a conditional update requires of the order's row.
// Zero fields are not checked.
type Cond struct {
	// Owner is the replica that must hold the saga's lease.
	Owner string
	// Phase is the saga phase the order must be in.
	Phase Phase
	// Step is the saga step the order must be at.
	Step Step
	// Statuses lists the statuses the order may have.
	Statuses []orderv1.OrderStatus
}

// Prices are what pricing found: the unit price of each line, in line
// order, in Currency, and their Total.
type Prices struct {
	Currency string
	Total    int64
	Unit     []int64
}

// Change is what a conditional update sets. Zero fields are left as they
// are.
type Change struct {
	Phase Phase
	// Step is set when SetStep is true (StepNone is a valid value).
	Step    Step
	SetStep bool
	// Status, when set, is a status change: it is numbered and recorded as
	// an Event in the same transaction.
	Status          orderv1.OrderStatus
	CancelReason    string
	AccountID       string
	AuthorizationID string
	ShipmentID      string
	Prices          *Prices
	// LeaseUntil extends the lease of the Cond's owner.
	LeaseUntil time.Time
	// ReleaseLease frees the lease (LeaseUntil is then ignored).
	ReleaseLease bool
}

// visible reports whether c changes what the API shows of the order, so
// that its update time moves.
func (c *Change) visible() bool {
	return c.Status != 0 || c.CancelReason != "" || c.AuthorizationID != "" || c.ShipmentID != "" || c.Prices != nil
}

// Store keeps orders, their lines, their status history and the state of
// their sagas. Every invariant is enforced by the database: the unique
// (user_id, idempotency_key) makes placing idempotent, and every change of
// an existing order is a conditional update whose row count is checked.
// Implementations are safe for concurrent use.
type Store interface {
	// CreateOrder inserts o with its lines and its first Event, unless the
	// user already has an order with o's idempotency key. It returns the
	// stored order and whether this call created it.
	CreateOrder(ctx context.Context, o *Order) (*Order, bool, error)
	// Order returns an order with its lines, or ErrNotFound.
	Order(ctx context.Context, orderID string) (*Order, error)
	// ListOrders returns up to limit (at most MaxListLimit) orders of
	// userID, of every user when userID is "", newest first, starting after
	// the cursor when it is not nil.
	ListOrders(ctx context.Context, userID string, after *Cursor, limit int) ([]*Order, error)
	// Events returns up to limit (at most MaxEventsLimit) status changes of
	// an order with a sequence number above afterSeq, oldest first.
	Events(ctx context.Context, orderID string, afterSeq int64, limit int) ([]Event, error)
	// Update applies change to the order if its row satisfies when. It
	// returns ErrNotFound when there is no such order and ErrStale when the
	// condition does not hold.
	Update(ctx context.Context, orderID string, when Cond, change Change, now time.Time) error
	// UpdateIn is Update inside the caller's transaction tx, which the
	// caller commits, or rolls back on an error.
	UpdateIn(ctx context.Context, tx *sql.Tx, orderID string, when Cond, change Change, now time.Time) error
	// StatusIn reads the order's status inside tx, or returns a
	// *NotFoundError.
	StatusIn(ctx context.Context, tx *sql.Tx, orderID string) (orderv1.OrderStatus, error)
	// Claim gives owner the lease on the saga of an unfinished order until
	// now+ttl, if the lease is free, expired, or owner's already. Of
	// concurrent claimers of a free lease exactly one wins.
	Claim(ctx context.Context, orderID, owner string, now time.Time, ttl time.Duration) (bool, error)
	// ReleaseLease frees owner's lease on an order's saga; recovery may
	// take the saga up again from nextRun.
	ReleaseLease(ctx context.Context, orderID, owner string, nextRun time.Time) error
	// Claimable returns up to limit ids of unfinished orders whose lease is
	// free or expired and whose next run is due, least recently updated
	// first.
	Claimable(ctx context.Context, now time.Time, limit int) ([]string, error)
}

// sqlStore is the Store on a SQL database.
type sqlStore struct {
	db     *sqldb.DB
	outbox *events.Outbox // nil: no events
}

var _ Store = (*sqlStore)(nil)

// NewStore returns the Store on db, which must have Migrations applied.
func NewStore(db *sqldb.DB, outbox *events.Outbox) Store { return &sqlStore{db: db, outbox: outbox} }

// orderColumns are the columns of orders that scanOrder reads, prefixed
// with the alias o.
const orderColumns = `o.order_id, o.user_id, o.idempotency_key, o.request_hash, o.status, o.status_seq,
	o.cancel_reason, o.currency_code, o.total_minor, o.recipient, o.line1, o.line2, o.city,
	o.postal_code, o.country_code, o.account_id, o.authorization_id, o.shipment_id,
	o.saga_phase, o.saga_step, o.lease_owner, o.lease_until_us, o.next_run_us, o.create_us, o.update_us`

// lineColumns follow orderColumns in joined reads.
const lineColumns = `l.item_id, l.quantity, l.unit_price_minor`

func (s *sqlStore) CreateOrder(ctx context.Context, o *Order) (*Order, bool, error) {
	var created bool
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		created = false
		a := o.Address
		var id string
		err := tx.QueryRowContext(ctx, `
			INSERT INTO orders (order_id, user_id, idempotency_key, request_hash, status, status_seq,
				recipient, line1, line2, city, postal_code, country_code,
				saga_phase, saga_step, lease_owner, lease_until_us, create_us, update_us)
			VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16)
			ON CONFLICT (user_id, idempotency_key) DO NOTHING
			RETURNING order_id`,
			o.ID, o.UserID, o.IdempotencyKey, o.RequestHash, int64(o.Status),
			a.Recipient, a.Line1, a.Line2, a.City, a.PostalCode, a.CountryCode,
			string(o.Phase), int64(o.Step), o.LeaseOwner, sqldb.Micros(o.LeaseUntil), sqldb.Micros(o.CreateTime),
		).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // the key is taken: the caller gets that order
		}
		if err != nil {
			return err
		}
		for i, l := range o.Lines {
			if _, err := tx.ExecContext(ctx, `
				INSERT INTO order_lines (order_id, line_no, item_id, quantity, unit_price_minor)
				VALUES ($1, $2, $3, $4, $5)`, o.ID, i, l.ItemID, l.Quantity, l.UnitPrice); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO order_events (order_id, seq, status, cancel_reason, authorization_id, shipment_id, at_us)
			VALUES ($1, 1, $2, '', '', '', $3)`, o.ID, int64(o.Status), sqldb.Micros(o.CreateTime)); err != nil {
			return err
		}
		placed := &eventsv1.OrderPlaced{OrderId: o.ID, UserId: o.UserID}
		for _, l := range o.Lines {
			placed.Lines = append(placed.Lines, &orderv1.OrderLine{ItemId: l.ItemID, Quantity: l.Quantity})
		}
		if err := s.emit(ctx, tx, o.ID, placed); err != nil {
			return err
		}
		created = true
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("create order: %w", err)
	}
	s.wake()
	var got *Order
	if created {
		got, err = s.Order(ctx, o.ID)
	} else {
		got, err = s.orderByKey(ctx, o.UserID, o.IdempotencyKey)
	}
	if err != nil {
		return nil, false, err
	}
	return got, created, nil
}

func (s *sqlStore) Order(ctx context.Context, orderID string) (*Order, error) {
	orders, err := s.query(ctx, `SELECT `+orderColumns+`, `+lineColumns+`
		FROM orders o JOIN order_lines l ON l.order_id = o.order_id
		WHERE o.order_id = $1
		ORDER BY l.line_no`, orderID)
	if err != nil {
		return nil, fmt.Errorf("read order: %w", err)
	}
	if len(orders) == 0 {
		return nil, &NotFoundError{OrderID: orderID}
	}
	return orders[0], nil
}

// orderByKey returns the user's order placed with key.
func (s *sqlStore) orderByKey(ctx context.Context, userID, key string) (*Order, error) {
	orders, err := s.query(ctx, `SELECT `+orderColumns+`, `+lineColumns+`
		FROM orders o JOIN order_lines l ON l.order_id = o.order_id
		WHERE o.user_id = $1 AND o.idempotency_key = $2
		ORDER BY l.line_no`, userID, key)
	if err != nil {
		return nil, fmt.Errorf("read order by key: %w", err)
	}
	if len(orders) == 0 {
		// Only possible if the order was deleted between the insert and
		// this read, which nothing does.
		return nil, fmt.Errorf("read order by key: %w", ErrStale)
	}
	return orders[0], nil
}

func (s *sqlStore) ListOrders(ctx context.Context, userID string, after *Cursor, limit int) ([]*Order, error) {
	limit = min(max(limit, 1), MaxListLimit)
	var where []string
	var args []any
	if userID != "" {
		args = append(args, userID)
		where = append(where, "user_id = $"+strconv.Itoa(len(args)))
	}
	if after != nil {
		args = append(args, sqldb.Micros(after.CreateTime), after.OrderID)
		n := len(args)
		where = append(where, fmt.Sprintf("(create_us < $%d OR (create_us = $%d AND order_id < $%d))", n-1, n-1, n))
	}
	cond := ""
	if len(where) > 0 {
		cond = "WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit)
	q := `SELECT ` + orderColumns + `, ` + lineColumns + `
		FROM (SELECT * FROM orders ` + cond + `
		      ORDER BY create_us DESC, order_id DESC LIMIT $` + strconv.Itoa(len(args)) + `) o
		JOIN order_lines l ON l.order_id = o.order_id
		ORDER BY o.create_us DESC, o.order_id DESC, l.line_no`
	orders, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	return orders, nil
}

// query runs a joined read of orders and their lines, ordered by order
// then line, and groups the rows into orders.
func (s *sqlStore) query(ctx context.Context, q string, args ...any) ([]*Order, error) {
	rows, err := s.db.Reader().QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var orders []*Order
	for rows.Next() {
		var (
			o                                         Order
			status, step                              int64
			phase                                     string
			leaseUntil, nextRun, createdUs, updatedUs int64
			l                                         Line
		)
		if err := rows.Scan(&o.ID, &o.UserID, &o.IdempotencyKey, &o.RequestHash, &status, &o.StatusSeq,
			&o.CancelReason, &o.Currency, &o.Total, &o.Address.Recipient, &o.Address.Line1, &o.Address.Line2,
			&o.Address.City, &o.Address.PostalCode, &o.Address.CountryCode, &o.AccountID, &o.AuthorizationID,
			&o.ShipmentID, &phase, &step, &o.LeaseOwner, &leaseUntil, &nextRun, &createdUs, &updatedUs,
			&l.ItemID, &l.Quantity, &l.UnitPrice); err != nil {
			return nil, err
		}
		if n := len(orders); n > 0 && orders[n-1].ID == o.ID {
			orders[n-1].Lines = append(orders[n-1].Lines, l)
			continue
		}
		o.Status = orderv1.OrderStatus(status) //nolint:gosec // written from an OrderStatus
		o.Phase = Phase(phase)
		o.Step = Step(step)
		o.LeaseUntil = sqldb.Time(leaseUntil)
		o.NextRun = sqldb.Time(nextRun)
		o.CreateTime = sqldb.Time(createdUs)
		o.UpdateTime = sqldb.Time(updatedUs)
		o.Lines = []Line{l}
		orders = append(orders, &o)
	}
	return orders, rows.Err()
}

func (s *sqlStore) Events(ctx context.Context, orderID string, afterSeq int64, limit int) ([]Event, error) {
	limit = min(max(limit, 1), MaxEventsLimit)
	rows, err := s.db.Reader().QueryContext(ctx, `
		SELECT seq, status, cancel_reason, authorization_id, shipment_id, at_us
		FROM order_events WHERE order_id = $1 AND seq > $2
		ORDER BY seq LIMIT $3`, orderID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var events []Event
	for rows.Next() {
		var e Event
		var status, at int64
		if err := rows.Scan(&e.Seq, &status, &e.CancelReason, &e.AuthorizationID, &e.ShipmentID, &at); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		e.Status = orderv1.OrderStatus(status) //nolint:gosec // written from an OrderStatus
		e.Time = sqldb.Time(at)
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return events, nil
}

// updateSQL builds the conditional UPDATE of change under when.
func updateSQL(orderID string, when Cond, c Change, now time.Time) (string, []any) {
	var sets, where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if c.visible() {
		sets = append(sets, "update_us = "+arg(sqldb.Micros(now)))
	}
	if c.Phase != "" {
		sets = append(sets, "saga_phase = "+arg(string(c.Phase)))
	}
	if c.SetStep {
		sets = append(sets, "saga_step = "+arg(int64(c.Step)))
	}
	if c.Status != 0 {
		sets = append(sets, "status = "+arg(int64(c.Status)), "status_seq = status_seq + 1")
	}
	for _, f := range []struct{ col, v string }{
		{"cancel_reason", c.CancelReason},
		{"account_id", c.AccountID},
		{"authorization_id", c.AuthorizationID},
		{"shipment_id", c.ShipmentID},
	} {
		if f.v != "" {
			sets = append(sets, f.col+" = "+arg(f.v))
		}
	}
	if c.Prices != nil {
		sets = append(sets, "currency_code = "+arg(c.Prices.Currency), "total_minor = "+arg(c.Prices.Total))
	}
	switch {
	case c.ReleaseLease:
		sets = append(sets, "lease_owner = ''", "lease_until_us = 0")
	case !c.LeaseUntil.IsZero():
		sets = append(sets, "lease_until_us = "+arg(sqldb.Micros(c.LeaseUntil)))
	}
	if len(sets) == 0 {
		sets = append(sets, "order_id = order_id")
	}
	where = append(where, "order_id = "+arg(orderID))
	if when.Owner != "" {
		where = append(where, "lease_owner = "+arg(when.Owner))
	}
	if when.Phase != "" {
		where = append(where, "saga_phase = "+arg(string(when.Phase)))
	}
	if when.Step != StepNone {
		where = append(where, "saga_step = "+arg(int64(when.Step)))
	}
	if len(when.Statuses) > 0 {
		in := make([]string, len(when.Statuses))
		for i, st := range when.Statuses {
			in[i] = arg(int64(st))
		}
		where = append(where, "status IN ("+strings.Join(in, ", ")+")")
	}
	return `UPDATE orders SET ` + strings.Join(sets, ", ") + ` WHERE ` + strings.Join(where, " AND ") +
		` RETURNING status_seq, status, cancel_reason, authorization_id, shipment_id, user_id, currency_code, total_minor`, args
}

func (s *sqlStore) Update(ctx context.Context, orderID string, when Cond, change Change, now time.Time) error {
	err := s.db.Tx(ctx, func(tx *sql.Tx) error { return s.updateIn(ctx, tx, orderID, when, change, now) })
	if err != nil {
		return fmt.Errorf("update order: %w", err)
	}
	if change.Status != 0 {
		s.wake()
	}
	return nil
}

func (s *sqlStore) UpdateIn(ctx context.Context, tx *sql.Tx, orderID string, when Cond, change Change, now time.Time) error {
	if err := s.updateIn(ctx, tx, orderID, when, change, now); err != nil {
		return fmt.Errorf("update order: %w", err)
	}
	return nil
}

func (s *sqlStore) StatusIn(ctx context.Context, tx *sql.Tx, orderID string) (orderv1.OrderStatus, error) {
	var status int64
	err := tx.QueryRowContext(ctx, `SELECT status FROM orders WHERE order_id = $1`, orderID).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, &NotFoundError{OrderID: orderID}
	}
	if err != nil {
		return 0, fmt.Errorf("read order status: %w", err)
	}
	return orderv1.OrderStatus(status), nil //nolint:gosec // written from an OrderStatus
}

// updateIn applies change in tx, records a status change in order_events
// and writes its events to the outbox.
func (s *sqlStore) updateIn(ctx context.Context, tx *sql.Tx, orderID string, when Cond, change Change, now time.Time) error {
	q, args := updateSQL(orderID, when, change, now)
	{
		var e Event
		var status int64
		var o statusOf
		err := tx.QueryRowContext(ctx, q, args...).Scan(&e.Seq, &status, &e.CancelReason, &e.AuthorizationID, &e.ShipmentID,
			&o.userID, &o.currency, &o.total)
		if errors.Is(err, sql.ErrNoRows) {
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM orders WHERE order_id = $1`, orderID).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return &NotFoundError{OrderID: orderID}
			}
			if err != nil {
				return err
			}
			return ErrStale
		}
		if err != nil {
			return err
		}
		if p := change.Prices; p != nil {
			for i, price := range p.Unit {
				res, err := tx.ExecContext(ctx, `UPDATE order_lines SET unit_price_minor = $1
					WHERE order_id = $2 AND line_no = $3`, price, orderID, i)
				if err != nil {
					return err
				}
				if n, err := res.RowsAffected(); err != nil || n != 1 {
					return errors.Join(fmt.Errorf("price line %d: %d rows", i, n), err)
				}
			}
		}
		if change.Status != 0 {
			_, err := tx.ExecContext(ctx, `
				INSERT INTO order_events (order_id, seq, status, cancel_reason, authorization_id, shipment_id, at_us)
				VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				orderID, e.Seq, status, e.CancelReason, e.AuthorizationID, e.ShipmentID, sqldb.Micros(now))
			if err != nil {
				return err
			}
			e.Status = orderv1.OrderStatus(status) //nolint:gosec // written from an OrderStatus
			return s.emitStatus(ctx, tx, orderID, o, e)
		}
		return nil
	}
}

func (s *sqlStore) Claim(ctx context.Context, orderID, owner string, now time.Time, ttl time.Duration) (bool, error) {
	res, err := s.db.ExecContext(ctx, `
		UPDATE orders SET lease_owner = $1, lease_until_us = $2
		WHERE order_id = $3 AND saga_phase <> 'done' AND (lease_owner = $1 OR lease_until_us < $4)`,
		owner, sqldb.Micros(now.Add(ttl)), orderID, sqldb.Micros(now))
	if err != nil {
		return false, fmt.Errorf("claim saga: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim saga: %w", err)
	}
	return n == 1, nil
}

func (s *sqlStore) ReleaseLease(ctx context.Context, orderID, owner string, nextRun time.Time) error {
	var next int64
	if !nextRun.IsZero() {
		next = sqldb.Micros(nextRun)
	}
	_, err := s.db.ExecContext(ctx, `
		UPDATE orders SET lease_owner = '', lease_until_us = 0, next_run_us = $1
		WHERE order_id = $2 AND lease_owner = $3`, next, orderID, owner)
	if err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	return nil
}

func (s *sqlStore) Claimable(ctx context.Context, now time.Time, limit int) ([]string, error) {
	limit = min(max(limit, 1), MaxListLimit)
	rows, err := s.db.Reader().QueryContext(ctx, `
		SELECT order_id FROM orders
		WHERE saga_phase IN ('forward', 'compensate') AND lease_until_us < $1 AND next_run_us <= $1
		ORDER BY update_us, order_id LIMIT $2`, sqldb.Micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("find unfinished sagas: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("find unfinished sagas: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find unfinished sagas: %w", err)
	}
	return ids, nil
}
