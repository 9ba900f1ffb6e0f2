package notify

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
)

// Migrations holds the goose migrations of the notify schema, in
// MigrationsDir.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// MigrationsDir is the directory of Migrations that holds them.
const MigrationsDir = "migrations"

// Store keeps the users and orders notify knows of, and the
// notifications. The methods that take a *sql.Tx run in the caller's
// transaction (the event consumer's) and touch the database only through
// it; the others are one transaction at most. Every method is safe for
// concurrent use, also by several processes on one database; times are
// stored with microsecond precision.
type Store interface {
	// PutUser records a user's address and name, replacing what was
	// known.
	PutUser(ctx context.Context, tx *sql.Tx, u User, now time.Time) error
	// User returns a user, or a *UnknownUserError.
	User(ctx context.Context, tx *sql.Tx, userID string) (User, error)
	// PutOrder records who placed an order. An order already known keeps
	// its user.
	PutOrder(ctx context.Context, tx *sql.Tx, orderID, userID string) error
	// OrderUser returns the user who placed an order, or a
	// *UnknownOrderError.
	OrderUser(ctx context.Context, tx *sql.Tx, orderID string) (string, error)
	// Add inserts n (PENDING, or FAILED with Finished set) and reports
	// whether it did: a notification for n.EventID already stored is left
	// as it is (false, nil).
	Add(ctx context.Context, tx *sql.Tx, n *Notification) (bool, error)

	// Due returns the ids of at most limit pending notifications due at
	// now, the longest due first.
	Due(ctx context.Context, now time.Time, limit int) ([]string, error)
	// Claim starts an attempt at a pending notification due at now: it
	// counts the attempt, makes the notification due again at leaseUntil
	// (so that another sender takes it over if this one dies), and
	// returns it with ok true. It returns ok false when the notification
	// is not pending or not due: another sender claimed it first.
	Claim(ctx context.Context, id string, now, leaseUntil time.Time) (n Notification, ok bool, err error)
	// Sent marks the claimed attempt sent at now.
	Sent(ctx context.Context, id string, attempt int, now time.Time) error
	// Retry records the claimed attempt's failure and makes the
	// notification due again at next.
	Retry(ctx context.Context, id string, attempt int, next time.Time, reason string) error
	// Fail gives up on the notification after the claimed attempt, at
	// now, with reason.
	Fail(ctx context.Context, id string, attempt int, now time.Time, reason string) error

	// Get returns a notification, or ErrNotFound.
	Get(ctx context.Context, id string) (Notification, error)
	// List returns at most limit finished (SENT or FAILED) notifications
	// of userID (of everyone when userID is empty), newest first by
	// Finished then ID, after the cursor when it is not nil.
	List(ctx context.Context, userID string, after *Cursor, limit int) ([]Notification, error)
}

// NewStore returns the Store on db, whose schema Migrations must have
// created. It is safe for concurrent use; the caller closes db.
func NewStore(db *sqldb.DB) Store { return &sqlStore{db: db} }

// sqlStore is the Store on SQLite or PostgreSQL, in the portable dialect.
type sqlStore struct {
	db *sqldb.DB
}

var _ Store = (*sqlStore)(nil)

const selectNotification = `SELECT notification_id, event_id, event_type, user_id, channel, recipient, recipient_name,
	subject, template, body, status, error, attempts, next_attempt_us, create_us, finish_us FROM notifications`

func (s *sqlStore) PutUser(ctx context.Context, tx *sql.Tx, u User, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO notify_users (user_id, email, display_name, update_us)
		VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE
		SET email = excluded.email, display_name = excluded.display_name, update_us = excluded.update_us`,
		u.ID, u.Email, u.DisplayName, sqldb.Micros(now)); err != nil {
		return fmt.Errorf("put user %q: %w", u.ID, err)
	}
	return nil
}

func (s *sqlStore) User(ctx context.Context, tx *sql.Tx, userID string) (User, error) {
	u := User{ID: userID}
	err := tx.QueryRowContext(ctx, `SELECT email, display_name FROM notify_users WHERE user_id = $1`, userID).
		Scan(&u.Email, &u.DisplayName)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return User{}, &UnknownUserError{UserID: userID}
	case err != nil:
		return User{}, fmt.Errorf("get user %q: %w", userID, err)
	}
	return u, nil
}

func (s *sqlStore) PutOrder(ctx context.Context, tx *sql.Tx, orderID, userID string) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO notify_orders (order_id, user_id) VALUES ($1, $2)
		ON CONFLICT (order_id) DO NOTHING`, orderID, userID); err != nil {
		return fmt.Errorf("put order %q: %w", orderID, err)
	}
	return nil
}

func (s *sqlStore) OrderUser(ctx context.Context, tx *sql.Tx, orderID string) (string, error) {
	var userID string
	err := tx.QueryRowContext(ctx, `SELECT user_id FROM notify_orders WHERE order_id = $1`, orderID).Scan(&userID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", &UnknownOrderError{OrderID: orderID}
	case err != nil:
		return "", fmt.Errorf("get order %q: %w", orderID, err)
	}
	return userID, nil
}

func (s *sqlStore) Add(ctx context.Context, tx *sql.Tx, n *Notification) (bool, error) {
	var next, finish sql.NullInt64
	if n.Status == StatusPending {
		next = sql.NullInt64{Int64: sqldb.Micros(n.NextAttempt), Valid: true}
	} else {
		finish = sql.NullInt64{Int64: sqldb.Micros(n.Finished), Valid: true}
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO notifications (notification_id, event_id, event_type, user_id, channel,
		recipient, recipient_name, subject, template, body, status, error, attempts, next_attempt_us, create_us, finish_us)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
		ON CONFLICT (event_id) DO NOTHING`,
		n.ID, n.EventID, n.EventType, n.UserID, n.Channel, n.Recipient, n.RecipientName, n.Subject, n.Template, n.Body,
		n.Status.String(), n.Error, n.Attempts, next, sqldb.Micros(n.Created), finish)
	if err != nil {
		return false, fmt.Errorf("add notification for event %q: %w", n.EventID, err)
	}
	added, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("add notification for event %q: %w", n.EventID, err)
	}
	return added == 1, nil
}

func (s *sqlStore) Due(ctx context.Context, now time.Time, limit int) ([]string, error) {
	rows, err := s.db.Reader().QueryContext(ctx, `SELECT notification_id FROM notifications
		WHERE status = 'PENDING' AND next_attempt_us <= $1 ORDER BY next_attempt_us LIMIT $2`, sqldb.Micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("due notifications: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("due notifications: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("due notifications: %w", err)
	}
	return ids, nil
}

func (s *sqlStore) Claim(ctx context.Context, id string, now, leaseUntil time.Time) (Notification, bool, error) {
	var n Notification
	claimed := false
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		claimed = false
		res, err := tx.ExecContext(ctx, `UPDATE notifications SET attempts = attempts + 1, next_attempt_us = $3
			WHERE notification_id = $1 AND status = 'PENDING' AND next_attempt_us <= $2`,
			id, sqldb.Micros(now), sqldb.Micros(leaseUntil))
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err != nil || k != 1 {
			return err
		}
		if n, err = scanNotification(tx.QueryRowContext(ctx, selectNotification+` WHERE notification_id = $1`, id)); err != nil {
			return err
		}
		claimed = true
		return nil
	})
	if err != nil {
		return Notification{}, false, fmt.Errorf("claim notification %q: %w", id, err)
	}
	return n, claimed, nil
}

func (s *sqlStore) Sent(ctx context.Context, id string, attempt int, now time.Time) error {
	return s.finish(ctx, "mark notification sent", `UPDATE notifications SET status = 'SENT', error = '',
		next_attempt_us = NULL, finish_us = $3 WHERE notification_id = $1 AND status = 'PENDING' AND attempts = $2`,
		id, attempt, sqldb.Micros(now))
}

func (s *sqlStore) Retry(ctx context.Context, id string, attempt int, next time.Time, reason string) error {
	return s.finish(ctx, "reschedule notification", `UPDATE notifications SET error = $4, next_attempt_us = $3
		WHERE notification_id = $1 AND status = 'PENDING' AND attempts = $2`,
		id, attempt, sqldb.Micros(next), reason)
}

func (s *sqlStore) Fail(ctx context.Context, id string, attempt int, now time.Time, reason string) error {
	return s.finish(ctx, "mark notification failed", `UPDATE notifications SET status = 'FAILED', error = $4,
		next_attempt_us = NULL, finish_us = $3 WHERE notification_id = $1 AND status = 'PENDING' AND attempts = $2`,
		id, attempt, sqldb.Micros(now), reason)
}

// finish runs one of the conditional updates that end an attempt. An
// attempt another sender took over meanwhile changes nothing, which is
// not an error: that sender finishes the notification.
func (s *sqlStore) finish(ctx context.Context, what, query string, args ...any) error {
	if _, err := s.db.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("%s %v: %w", what, args[0], err)
	}
	return nil
}

func (s *sqlStore) Get(ctx context.Context, id string) (Notification, error) {
	n, err := scanNotification(s.db.Reader().QueryRowContext(ctx, selectNotification+` WHERE notification_id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Notification{}, fmt.Errorf("notification %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Notification{}, fmt.Errorf("get notification %q: %w", id, err)
	}
	return n, nil
}

func (s *sqlStore) List(ctx context.Context, userID string, after *Cursor, limit int) ([]Notification, error) {
	var q strings.Builder
	q.WriteString(selectNotification + ` WHERE finish_us IS NOT NULL`)
	var args []any
	if userID != "" {
		args = append(args, userID)
		fmt.Fprintf(&q, ` AND user_id = $%d`, len(args))
	}
	if after != nil {
		args = append(args, sqldb.Micros(after.Finished), after.ID)
		fmt.Fprintf(&q, ` AND (finish_us < $%d OR (finish_us = $%d AND notification_id < $%d))`, len(args)-1, len(args)-1, len(args))
	}
	args = append(args, limit)
	fmt.Fprintf(&q, ` ORDER BY finish_us DESC, notification_id DESC LIMIT $%d`, len(args))
	rows, err := s.db.Reader().QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Notification
	for rows.Next() {
		n, err := scanNotification(rows)
		if err != nil {
			return nil, fmt.Errorf("list notifications: %w", err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	return out, nil
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// scanNotification reads the columns of selectNotification.
func scanNotification(row scanner) (Notification, error) {
	var (
		n            Notification
		status       string
		next, finish sql.NullInt64
		create       int64
	)
	if err := row.Scan(&n.ID, &n.EventID, &n.EventType, &n.UserID, &n.Channel, &n.Recipient, &n.RecipientName,
		&n.Subject, &n.Template, &n.Body, &status, &n.Error, &n.Attempts, &next, &create, &finish); err != nil {
		return Notification{}, err
	}
	n.Status, n.Created = parseStatus(status), sqldb.Time(create)
	if next.Valid {
		n.NextAttempt = sqldb.Time(next.Int64)
	}
	if finish.Valid {
		n.Finished = sqldb.Time(finish.Int64)
	}
	return n, nil
}
