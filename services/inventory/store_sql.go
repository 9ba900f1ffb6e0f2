package inventory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

// sqlStore is the Store on a *sqldb.DB, in the SQL both engines accept.
type sqlStore struct {
	db     *sqldb.DB
	outbox *events.Outbox // nil: no events
}

var _ Store = (*sqlStore)(nil)

// newSQLStore returns the Store on db, whose migrations have been applied,
// writing its events to outbox (nil: none).
func newSQLStore(db *sqldb.DB, outbox *events.Outbox) *sqlStore {
	return &sqlStore{db: db, outbox: outbox}
}

// errInvariant reports a conditional update that found no row although the
// rows read in the same transaction said it would: a broken invariant in
// the data, never a caller's mistake.
var errInvariant = errors.New("inventory: stock invariant broken")

// levelsByID is a set of levels changed in one transaction, the last per
// item winning.
type levelsByID map[string]Level

func (m levelsByID) sorted() []Level {
	if len(m) == 0 {
		return nil
	}
	out := make([]Level, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[id])
	}
	return out
}

const itemColumns = "item_id, name, description, price_minor, currency, on_hand, reserved, version, update_us"

type scanner interface{ Scan(dest ...any) error }

func scanItem(row scanner) (Item, error) {
	var it Item
	var us int64
	err := row.Scan(&it.ID, &it.Name, &it.Description, &it.PriceMinor, &it.Currency, &it.OnHand, &it.Reserved, &it.Version, &us)
	it.Updated = sqldb.Time(us)
	return it, err
}

// scanLevel reads "item_id, on_hand, reserved, version, update_us".
func scanLevel(row scanner) (Level, error) {
	var l Level
	var us int64
	err := row.Scan(&l.ItemID, &l.OnHand, &l.Reserved, &l.Version, &us)
	l.Updated = sqldb.Time(us)
	return l, err
}

const levelColumns = "item_id, on_hand, reserved, version, update_us"

func (s *sqlStore) Item(ctx context.Context, id string) (Item, error) {
	it, err := scanItem(s.db.Reader().QueryRowContext(ctx, "SELECT "+itemColumns+" FROM items WHERE item_id = $1", id))
	if errors.Is(err, sql.ErrNoRows) {
		return Item{}, &ItemNotFoundError{ItemID: id}
	}
	if err != nil {
		return Item{}, fmt.Errorf("get item: %w", err)
	}
	return it, nil
}

func (s *sqlStore) Items(ctx context.Context, after string, limit int) ([]Item, error) {
	rows, err := s.db.Reader().QueryContext(ctx,
		"SELECT "+itemColumns+" FROM items WHERE item_id > $1 ORDER BY item_id LIMIT $2", after, limit)
	if err != nil {
		return nil, fmt.Errorf("list items: %w", err)
	}
	defer func() { _ = rows.Close() }()
	items := make([]Item, 0, limit)
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("list items: %w", err)
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list items: %w", err)
	}
	return items, nil
}

// levelsChunk bounds the parameters of one Levels query.
const levelsChunk = 100

func (s *sqlStore) Levels(ctx context.Context, ids []string) ([]Level, error) {
	var out []Level
	for start := 0; start < len(ids); start += levelsChunk {
		chunk := ids[start:min(start+levelsChunk, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		got, err := s.queryLevels(ctx, "SELECT "+levelColumns+" FROM items WHERE item_id IN ("+placeholders(1, len(chunk))+")", args...)
		if err != nil {
			return nil, fmt.Errorf("levels: %w", err)
		}
		out = append(out, got...)
	}
	return out, nil
}

func (s *sqlStore) queryLevels(ctx context.Context, query string, args ...any) ([]Level, error) {
	rows, err := s.db.Reader().QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []Level
	for rows.Next() {
		l, err := scanLevel(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// placeholders returns "$from, $from+1, ..." with n parameters.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(from + i))
	}
	return b.String()
}

func (s *sqlStore) RecordItems(ctx context.Context, items []ItemInput, now time.Time) ([]RecordResult, []Level, error) {
	var results []RecordResult
	var changed levelsByID
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		// The transaction may run again: start from scratch each time.
		results = make([]RecordResult, len(items))
		changed = make(levelsByID, len(items))
		for i := range items {
			r, l, err := recordItem(ctx, tx, &items[i], now)
			if err != nil {
				return err
			}
			results[i] = r
			if r.Outcome != Rejected {
				changed[l.ItemID] = l
			}
		}
		return s.emitLevels(ctx, tx, changed, eventsv1.StockChangeReason_STOCK_CHANGE_REASON_IMPORTED, "")
	})
	if err != nil {
		return nil, nil, fmt.Errorf("record items: %w", err)
	}
	s.wake()
	return results, changed.sorted(), nil
}

// recordItem creates or updates one item in tx. Every path is a single
// conditional statement whose outcome decides; the reads that follow a
// statement that matched nothing only explain the rejection.
func recordItem(ctx context.Context, tx *sql.Tx, in *ItemInput, now time.Time) (RecordResult, Level, error) {
	us := sqldb.Micros(now)
	if in.Name != "" && in.HasPrice {
		l, err := scanLevel(tx.QueryRowContext(ctx, `
INSERT INTO items (item_id, name, description, price_minor, currency, on_hand, reserved, version, update_us)
VALUES ($1, $2, $3, $4, $5, $6, 0, 1, $7)
ON CONFLICT (item_id) DO NOTHING
RETURNING `+levelColumns,
			in.ID, in.Name, in.Description, in.PriceMinor, in.Currency, in.Quantity, us))
		switch {
		case err == nil:
			return RecordResult{Outcome: Created}, l, nil
		case !errors.Is(err, sql.ErrNoRows):
			return RecordResult{}, Level{}, err
		}
		// The item exists: update it.
	}
	l, err := scanLevel(tx.QueryRowContext(ctx, `
UPDATE items SET
    name        = CASE WHEN $2 = '' THEN name ELSE $2 END,
    description = CASE WHEN $3 = '' THEN description ELSE $3 END,
    price_minor = CASE WHEN $4 THEN $5 ELSE price_minor END,
    currency    = CASE WHEN $4 THEN $6 ELSE currency END,
    on_hand     = $7,
    version     = version + 1,
    update_us   = $8
WHERE item_id = $1 AND reserved <= $7
RETURNING `+levelColumns,
		in.ID, in.Name, in.Description, in.HasPrice, in.PriceMinor, in.Currency, in.Quantity, us))
	switch {
	case err == nil:
		return RecordResult{Outcome: Updated}, l, nil
	case !errors.Is(err, sql.ErrNoRows):
		return RecordResult{}, Level{}, err
	}
	var reserved int64
	err = tx.QueryRowContext(ctx, "SELECT reserved FROM items WHERE item_id = $1", in.ID).Scan(&reserved)
	switch {
	case err == nil:
		return RecordResult{
			Outcome: Rejected, Field: "quantity", Reason: ReasonBelowReserved,
			Description: fmt.Sprintf("quantity %d is below the %d units reserved", in.Quantity, reserved),
		}, Level{}, nil
	case !errors.Is(err, sql.ErrNoRows):
		return RecordResult{}, Level{}, err
	case in.Name == "":
		return RecordResult{
			Outcome: Rejected, Field: "name", Reason: ReasonNameRequired,
			Description: "a new item needs a name",
		}, Level{}, nil
	default:
		return RecordResult{
			Outcome: Rejected, Field: "price", Reason: ReasonPriceRequired,
			Description: "a new item needs a price",
		}, Level{}, nil
	}
}

func (s *sqlStore) CreateMissing(ctx context.Context, items []ItemInput, now time.Time) (int, []Level, error) {
	var changed levelsByID
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		changed = make(levelsByID, len(items))
		for i := range items {
			in := &items[i]
			if in.Name == "" || !in.HasPrice {
				return fmt.Errorf("item %q: a new item needs a name and a price", in.ID)
			}
			l, err := scanLevel(tx.QueryRowContext(ctx, `
INSERT INTO items (item_id, name, description, price_minor, currency, on_hand, reserved, version, update_us)
VALUES ($1, $2, $3, $4, $5, $6, 0, 1, $7)
ON CONFLICT (item_id) DO NOTHING
RETURNING `+levelColumns,
				in.ID, in.Name, in.Description, in.PriceMinor, in.Currency, in.Quantity, sqldb.Micros(now)))
			switch {
			case err == nil:
				changed[l.ItemID] = l
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}
		return s.emitLevels(ctx, tx, changed, eventsv1.StockChangeReason_STOCK_CHANGE_REASON_IMPORTED, "")
	})
	if err != nil {
		return 0, nil, fmt.Errorf("create missing items: %w", err)
	}
	s.wake()
	return len(changed), changed.sorted(), nil
}

func (s *sqlStore) Reserve(ctx context.Context, orderID string, lines []Line, now, expires time.Time) (Reservation, []Level, error) {
	var res Reservation
	var changed levelsByID
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		changed = make(levelsByID, len(lines))
		us := sqldb.Micros(now)
		// Claim the order id first: a concurrent Reserve for the same order
		// waits here for ours to commit or roll back.
		var created int64
		err := tx.QueryRowContext(ctx, `
INSERT INTO reservations (order_id, status, reason, create_us, expire_us, update_us)
VALUES ($1, $2, '', $3, $4, $3)
ON CONFLICT (order_id) DO NOTHING
RETURNING create_us`, orderID, string(StatusHeld), us, sqldb.Micros(expires)).Scan(&created)
		if errors.Is(err, sql.ErrNoRows) {
			existing, err := loadReservation(ctx, tx, orderID)
			if err != nil {
				return err
			}
			if !sameLines(existing.Lines, lines) {
				return &ReservationMismatchError{OrderID: orderID}
			}
			res = existing
			return nil
		}
		if err != nil {
			return err
		}

		// The reservation's event before the stock: an item's row is
		// locked from its UPDATE to the commit, and popular items are what
		// concurrent orders queue on. A shortage rolls it back.
		res = Reservation{
			OrderID: orderID, Lines: slices.Clone(lines), Status: StatusHeld,
			Created: sqldb.Time(created), Expires: sqldb.Time(sqldb.Micros(expires)),
		}
		if err := s.emit(ctx, tx, orderID, reservedEvent(res)); err != nil {
			return err
		}

		// Take the stock, item by item in id order so that concurrent
		// reservations lock rows in the same order. Each take is one
		// conditional UPDATE: it happens only if enough is available.
		order := make([]int, len(lines))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int { return strings.Compare(lines[a].ItemID, lines[b].ItemID) })
		var short []Shortage
		for _, i := range order {
			ln := lines[i]
			if short != nil {
				// Already failing: only find out whether this line is short
				// too, without taking anything.
				s, err := shortage(ctx, tx, ln)
				if err != nil {
					return err
				}
				if s != nil {
					short = append(short, *s)
				}
				continue
			}
			l, err := scanLevel(tx.QueryRowContext(ctx, `
UPDATE items SET reserved = reserved + $2, version = version + 1, update_us = $3
WHERE item_id = $1 AND on_hand - reserved >= $2
RETURNING `+levelColumns, ln.ItemID, ln.Quantity, us))
			if err == nil {
				changed[l.ItemID] = l
				continue
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			s, err := shortage(ctx, tx, ln)
			if err != nil {
				return err
			}
			if s == nil {
				// The update matched nothing, yet the item has enough:
				// impossible inside one transaction.
				return errInvariant
			}
			short = append(short, *s)
		}
		if short != nil {
			return &InsufficientStockError{Shortages: short}
		}
		for i, ln := range lines {
			if _, err := tx.ExecContext(ctx,
				"INSERT INTO reservation_lines (order_id, line_no, item_id, quantity) VALUES ($1, $2, $3, $4)",
				orderID, i, ln.ItemID, ln.Quantity); err != nil {
				return err
			}
		}
		return s.emitLevels(ctx, tx, changed, eventsv1.StockChangeReason_STOCK_CHANGE_REASON_RESERVED, orderID)
	})
	if err != nil {
		return Reservation{}, nil, fmt.Errorf("reserve: %w", err)
	}
	s.wake()
	return res, changed.sorted(), nil
}

// shortage returns the shortage of ln, nil when the item has enough, or an
// *ItemNotFoundError. It only reads, to explain a refusal.
func shortage(ctx context.Context, tx *sql.Tx, ln Line) (*Shortage, error) {
	var avail int64
	err := tx.QueryRowContext(ctx, "SELECT on_hand - reserved FROM items WHERE item_id = $1", ln.ItemID).Scan(&avail)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, &ItemNotFoundError{ItemID: ln.ItemID}
	}
	if err != nil {
		return nil, err
	}
	if avail >= ln.Quantity {
		return nil, nil
	}
	return &Shortage{ItemID: ln.ItemID, Requested: ln.Quantity, Available: avail}, nil
}

// sameLines reports whether a and b hold the same quantities of the same
// items, in any order.
func sameLines(a, b []Line) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]int64, len(a))
	for _, l := range a {
		m[l.ItemID] = l.Quantity
	}
	for _, l := range b {
		if q, ok := m[l.ItemID]; !ok || q != l.Quantity {
			return false
		}
		delete(m, l.ItemID)
	}
	return true
}

// loadReservation reads a reservation and its lines in tx.
func loadReservation(ctx context.Context, tx *sql.Tx, orderID string) (Reservation, error) {
	res := Reservation{OrderID: orderID}
	var created, expires int64
	err := tx.QueryRowContext(ctx, "SELECT status, create_us, expire_us FROM reservations WHERE order_id = $1", orderID).
		Scan(&res.Status, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return Reservation{}, &ReservationNotFoundError{OrderID: orderID}
	}
	if err != nil {
		return Reservation{}, err
	}
	res.Created, res.Expires = sqldb.Time(created), sqldb.Time(expires)
	res.Lines, err = reservationLines(ctx, tx, orderID)
	if err != nil {
		return Reservation{}, err
	}
	return res, nil
}

func reservationLines(ctx context.Context, tx *sql.Tx, orderID string) ([]Line, error) {
	rows, err := tx.QueryContext(ctx,
		"SELECT item_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY line_no", orderID)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var lines []Line
	for rows.Next() {
		var l Line
		if err := rows.Scan(&l.ItemID, &l.Quantity); err != nil {
			return nil, err
		}
		lines = append(lines, l)
	}
	return lines, rows.Err()
}

// leaveHeld moves orderID from HELD to status to in tx (with notExpired,
// only if its expiry is still ahead of now), and returns whether it did.
// This conditional UPDATE is what makes a reservation leave HELD exactly
// once.
func leaveHeld(ctx context.Context, tx *sql.Tx, orderID string, to Status, reason string, now time.Time, notExpired bool) (bool, error) {
	q := "UPDATE reservations SET status = $2, reason = $3, update_us = $4 WHERE order_id = $1 AND status = 'HELD'"
	if notExpired {
		q += " AND expire_us > $4"
	}
	r, err := tx.ExecContext(ctx, q, orderID, string(to), reason, sqldb.Micros(now))
	if err != nil {
		return false, err
	}
	n, err := r.RowsAffected()
	return n == 1, err
}

// giveBack returns the quantities of lines to available stock in tx (or
// removes them from stock for good when sold), item by item in id order,
// each with a conditional UPDATE whose row count is checked.
func giveBack(ctx context.Context, tx *sql.Tx, qty map[string]int64, sold bool, now time.Time, changed levelsByID) error {
	q := `UPDATE items SET reserved = reserved - $2, version = version + 1, update_us = $3
WHERE item_id = $1 AND reserved >= $2
RETURNING ` + levelColumns
	if sold {
		q = `UPDATE items SET on_hand = on_hand - $2, reserved = reserved - $2, version = version + 1, update_us = $3
WHERE item_id = $1 AND reserved >= $2 AND on_hand >= $2
RETURNING ` + levelColumns
	}
	for _, id := range slices.Sorted(maps.Keys(qty)) {
		l, err := scanLevel(tx.QueryRowContext(ctx, q, id, qty[id], sqldb.Micros(now)))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: item %q holds less than %d reserved units", errInvariant, id, qty[id])
		}
		if err != nil {
			return err
		}
		changed[id] = l
	}
	return nil
}

func quantities(lines []Line) map[string]int64 {
	m := make(map[string]int64, len(lines))
	for _, l := range lines {
		m[l.ItemID] += l.Quantity
	}
	return m
}

func (s *sqlStore) Release(ctx context.Context, orderID, reason string, now time.Time) (Reservation, []Level, error) {
	var res Reservation
	var changed levelsByID
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		changed = make(levelsByID)
		left, err := leaveHeld(ctx, tx, orderID, StatusReleased, reason, now, false)
		if err != nil {
			return err
		}
		if res, err = loadReservation(ctx, tx, orderID); err != nil {
			return err
		}
		if left {
			if err := giveBack(ctx, tx, quantities(res.Lines), false, now, changed); err != nil {
				return err
			}
			if err := s.emit(ctx, tx, orderID, &eventsv1.StockReleased{OrderId: orderID, Reason: reason}); err != nil {
				return err
			}
			return s.emitLevels(ctx, tx, changed, eventsv1.StockChangeReason_STOCK_CHANGE_REASON_RELEASED, orderID)
		}
		if res.Status == StatusCommitted {
			return &ReservationStateError{OrderID: orderID, Status: res.Status, Op: "release"}
		}
		return nil // already released or expired
	})
	if err != nil {
		return Reservation{}, nil, fmt.Errorf("release: %w", err)
	}
	s.wake()
	return res, changed.sorted(), nil
}

func (s *sqlStore) Commit(ctx context.Context, orderID string, now time.Time) (Reservation, []Level, error) {
	var res Reservation
	var changed levelsByID
	var refused error
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		changed, refused = make(levelsByID), nil
		left, err := leaveHeld(ctx, tx, orderID, StatusCommitted, "", now, true)
		if err != nil {
			return err
		}
		if res, err = loadReservation(ctx, tx, orderID); err != nil {
			return err
		}
		switch {
		case left:
			// The event before the stock, whose rows stay locked to the
			// commit (see Reserve).
			if err := s.emit(ctx, tx, orderID, &eventsv1.ReservationCommitted{OrderId: orderID}); err != nil {
				return err
			}
			if err := giveBack(ctx, tx, quantities(res.Lines), true, now, changed); err != nil {
				return err
			}
			return s.emitLevels(ctx, tx, changed, eventsv1.StockChangeReason_STOCK_CHANGE_REASON_COMMITTED, orderID)
		case res.Status == StatusHeld:
			// Held but past its expiry: expire it now, as the loop would
			// have, and commit that; the caller gets the refusal.
			expired, err := leaveHeld(ctx, tx, orderID, StatusExpired, "", now, false)
			if err != nil {
				return err
			}
			if !expired {
				return errInvariant
			}
			res.Status = StatusExpired
			refused = &ReservationStateError{OrderID: orderID, Status: StatusExpired, Op: "commit"}
			if err := giveBack(ctx, tx, quantities(res.Lines), false, now, changed); err != nil {
				return err
			}
			if err := s.emit(ctx, tx, orderID, &eventsv1.StockReleased{OrderId: orderID, Expired: true}); err != nil {
				return err
			}
			return s.emitLevels(ctx, tx, changed, eventsv1.StockChangeReason_STOCK_CHANGE_REASON_EXPIRED, orderID)
		case res.Status != StatusCommitted:
			return &ReservationStateError{OrderID: orderID, Status: res.Status, Op: "commit"}
		}
		return nil // already committed
	})
	if err != nil {
		return Reservation{}, nil, fmt.Errorf("commit: %w", err)
	}
	s.wake()
	if refused != nil {
		return Reservation{}, changed.sorted(), fmt.Errorf("commit: %w", refused)
	}
	return res, changed.sorted(), nil
}

func (s *sqlStore) ExpireDue(ctx context.Context, now time.Time, limit int) (int, []Level, error) {
	var expired int
	var changed levelsByID
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		expired, changed = 0, make(levelsByID)
		us := sqldb.Micros(now)
		due, err := dueReservations(ctx, tx, us, limit)
		if err != nil {
			return err
		}
		qty := make(map[string]int64)
		for _, orderID := range due {
			// Conditional: a Commit or Release that got there first wins.
			left, err := leaveHeld(ctx, tx, orderID, StatusExpired, "", now, false)
			if err != nil {
				return err
			}
			if !left {
				continue
			}
			lines, err := reservationLines(ctx, tx, orderID)
			if err != nil {
				return err
			}
			for _, l := range lines {
				qty[l.ItemID] += l.Quantity
			}
			if err := s.emit(ctx, tx, orderID, &eventsv1.StockReleased{OrderId: orderID, Expired: true}); err != nil {
				return err
			}
			expired++
		}
		if err := giveBack(ctx, tx, qty, false, now, changed); err != nil {
			return err
		}
		return s.emitLevels(ctx, tx, changed, eventsv1.StockChangeReason_STOCK_CHANGE_REASON_EXPIRED, "")
	})
	if err != nil {
		return 0, nil, fmt.Errorf("expire reservations: %w", err)
	}
	s.wake()
	return expired, changed.sorted(), nil
}

func dueReservations(ctx context.Context, tx *sql.Tx, nowUs int64, limit int) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `
SELECT order_id FROM reservations
WHERE status = 'HELD' AND expire_us <= $1
ORDER BY expire_us, order_id
LIMIT $2`, nowUs, limit)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
