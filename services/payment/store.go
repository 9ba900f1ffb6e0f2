package payment

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

// Migrations are the goose migrations of the payment database, in
// migrations/.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// MigrationsDir is the directory of Migrations that holds the files.
const MigrationsDir = "migrations"

// Store keeps accounts, authorizations, the ledger and the idempotency
// records. Every mutating method is idempotent by its Idempotency: it
// commits its effect, its ledger entries and its idempotency record in one
// transaction, and a later call with the same key and request hash returns
// the stored result without effect. Implementations are safe for
// concurrent use and keep every invariant of the package documentation
// under any interleaving of calls.
type Store interface {
	// OpenAccount opens the owner's customer account in the currency and
	// moves the opening credit, if any, from the house account. The owner
	// having an account in the currency already is an *AccountExistsError.
	OpenAccount(ctx context.Context, idem Idempotency, p OpenAccountParams) (Account, error)
	// OpenAccountIn is OpenAccount inside the caller's transaction tx,
	// which the caller commits, or rolls back on an error. When the owner
	// has an account in the currency already, it writes nothing and
	// reports false.
	OpenAccountIn(ctx context.Context, tx *sql.Tx, idem Idempotency, p OpenAccountParams) (opened bool, err error)
	// Account returns the account with the id, or a *NotFoundError.
	Account(ctx context.Context, id string) (Account, error)
	// AccountByOwner returns the owner's account in the currency, or a
	// *NotFoundError.
	AccountByOwner(ctx context.Context, ownerID, currency string) (Account, error)
	// Authorize moves the amount from the account's available money to the
	// holds account, or fails with *InsufficientFundsError,
	// *CurrencyMismatchError, *SystemAccountError or *NotFoundError.
	Authorize(ctx context.Context, idem Idempotency, p AuthorizeParams) (Authorization, error)
	// Capture moves the captured amount from holds to revenue and releases
	// the rest of the hold to the account.
	Capture(ctx context.Context, idem Idempotency, p CaptureParams) (Authorization, error)
	// Void releases the whole hold of an AUTHORIZED authorization.
	Void(ctx context.Context, idem Idempotency, p VoidParams) (Authorization, error)
	// Refund moves captured money from revenue back to the account, never
	// more than captured minus refunded.
	Refund(ctx context.Context, idem Idempotency, p RefundParams) (Refund, error)
	// LedgerEntries returns up to limit entries of the account with a
	// sequence greater than after, in sequence order.
	LedgerEntries(ctx context.Context, accountID string, after int64, limit int) ([]Entry, error)
	// PruneIdempotency deletes up to limit idempotency records created
	// before the time and returns how many it deleted.
	PruneIdempotency(ctx context.Context, before time.Time, limit int) (int64, error)
}

// sqlStore is the Store on a SQL database (SQLite or PostgreSQL).
//
// Locks are taken in one order in every transaction, so that concurrent
// calls cannot deadlock: the idempotency record, the authorization, the
// customer account, then the system accounts house, holds and revenue.
type sqlStore struct {
	db     *sqldb.DB
	now    func() time.Time
	outbox *events.Outbox // nil: no events
}

var _ Store = (*sqlStore)(nil)

// newSQLStore returns the Store on db, whose migrations have run, writing
// its events to outbox (nil: none).
func newSQLStore(db *sqldb.DB, outbox *events.Outbox) *sqlStore {
	return &sqlStore{db: db, outbox: outbox, now: func() time.Time { return sqldb.Time(sqldb.Micros(time.Now())) }}
}

// Idempotency methods: the scope of a key. The same key may be used once
// per method, so a saga can key every step of an order by the order id.
const (
	methodOpenAccount = "OpenAccount"
	methodAuthorize   = "Authorize"
	methodCapture     = "Capture"
	methodVoid        = "Void"
	methodRefund      = "Refund"
)

// idempotent runs effect in a transaction under the idempotency record of
// (method, idem.Key). The record is claimed first, with an INSERT ... ON
// CONFLICT DO NOTHING: a concurrent call with the same key waits on the
// unique key until the first commits (PostgreSQL) or runs after it
// (SQLite), then finds the record and returns the stored result. Then
// effect runs, its result is recorded as the response, and the money
// movement it asks for is posted last, so that the contended account rows
// (a customer's, and the currency's holds and revenue accounts) stay locked
// for the fewest statements before the commit. The effect, the movement
// and the record commit together, so money moves once; an effect that
// fails rolls its claim back, and the key stays free.
func idempotent[T any](ctx context.Context, s *sqlStore, method string, idem Idempotency, effect func(tx *sql.Tx, now time.Time) (T, *movement, error)) (T, error) {
	var out T
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = idempotentIn(ctx, tx, s, method, idem, effect)
		return err
	})
	if err != nil {
		var zero T
		return zero, fmt.Errorf("%s: %w", method, err)
	}
	if s.outbox != nil {
		s.outbox.Wake()
	}
	return out, nil
}

// idempotentIn is idempotent inside the caller's transaction tx, which
// the caller commits, or rolls back if it fails.
func idempotentIn[T any](ctx context.Context, tx *sql.Tx, s *sqlStore, method string, idem Idempotency, effect func(tx *sql.Tx, now time.Time) (T, *movement, error)) (T, error) {
	var out T
	err := func() error {
		now := s.now()
		res, err := tx.ExecContext(ctx,
			`INSERT INTO idempotency (method, idem_key, request_hash, response, created_us)
			 VALUES ($1, $2, $3, '', $4) ON CONFLICT (method, idem_key) DO NOTHING`,
			method, idem.Key, idem.RequestHash, sqldb.Micros(now))
		if err != nil {
			return fmt.Errorf("claim idempotency key: %w", err)
		}
		claimed, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if claimed == 0 {
			var hash, response string
			err := tx.QueryRowContext(ctx,
				`SELECT request_hash, response FROM idempotency WHERE method = $1 AND idem_key = $2`,
				method, idem.Key).Scan(&hash, &response)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				// Pruned between the two statements.
				return errConcurrentUpdate
			case err != nil:
				return err
			case hash != idem.RequestHash:
				return ErrIdempotencyKeyReused
			case response == "":
				// Only the claiming transaction can see its own claim.
				return errors.New("idempotency record without a response")
			}
			return json.Unmarshal([]byte(response), &out)
		}
		v, m, err := effect(tx, now)
		if err != nil {
			return err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx,
			`UPDATE idempotency SET response = $1 WHERE method = $2 AND idem_key = $3`,
			string(b), method, idem.Key); err != nil {
			return fmt.Errorf("record response: %w", err)
		}
		// The event goes in before the ledger is posted: posting updates
		// the system accounts every payment shares, so it comes last and
		// their row locks are held for as little as possible. A refused
		// posting rolls the event back with everything else.
		if m != nil && m.event != nil && s.outbox != nil {
			if _, err := s.outbox.Add(ctx, tx, m.subject, m.event); err != nil {
				return err
			}
		}
		if m != nil && len(m.legs) > 0 {
			err := post(ctx, tx, now, m.txn, m.legs)
			if refused := (*legRefusedError)(nil); errors.As(err, &refused) && m.refused != nil {
				return m.refused()
			}
			if err != nil {
				return err
			}
		}
		out = v
		return nil
	}()
	return out, err
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

const accountColumns = `id, kind, owner_id, currency_code, available, held, created_us`

// queryer is what *sql.DB and *sql.Tx have in common.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func scanAccount(row *sql.Row) (Account, error) {
	var a Account
	var kind string
	var created int64
	if err := row.Scan(&a.ID, &kind, &a.OwnerID, &a.Currency, &a.Available, &a.Held, &created); err != nil {
		return Account{}, err
	}
	a.Kind = AccountKind(kind)
	a.CreateTime = sqldb.Time(created)
	return a, nil
}

func accountByID(ctx context.Context, q queryer, id string) (Account, error) {
	a, err := scanAccount(q.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, &NotFoundError{Resource: ResourceAccount, ID: id}
	}
	return a, err
}

// Account implements Store.
func (s *sqlStore) Account(ctx context.Context, id string) (Account, error) {
	return accountByID(ctx, s.db, id)
}

// AccountByOwner implements Store.
func (s *sqlStore) AccountByOwner(ctx context.Context, ownerID, currency string) (Account, error) {
	a, err := scanAccount(s.db.Reader().QueryRowContext(ctx,
		`SELECT `+accountColumns+` FROM accounts WHERE owner_id = $1 AND currency_code = $2`, ownerID, currency))
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, &NotFoundError{Resource: ResourceAccount, OwnerID: ownerID, Currency: currency}
	}
	return a, err
}

// OpenAccount implements Store.
func (s *sqlStore) OpenAccount(ctx context.Context, idem Idempotency, p OpenAccountParams) (Account, error) {
	return idempotent(ctx, s, methodOpenAccount, idem, s.openAccount(ctx, p))
}

// OpenAccountIn implements Store.
func (s *sqlStore) OpenAccountIn(ctx context.Context, tx *sql.Tx, idem Idempotency, p OpenAccountParams) (bool, error) {
	var exists bool
	if err := tx.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM accounts WHERE owner_id = $1 AND currency_code = $2)`,
		p.OwnerID, p.Currency).Scan(&exists); err != nil {
		return false, fmt.Errorf("%s: %w", methodOpenAccount, err)
	}
	if exists {
		return false, nil
	}
	if _, err := idempotentIn(ctx, tx, s, methodOpenAccount, idem, s.openAccount(ctx, p)); err != nil {
		return false, fmt.Errorf("%s: %w", methodOpenAccount, err)
	}
	return true, nil
}

// openAccount is the effect of OpenAccount.
func (s *sqlStore) openAccount(ctx context.Context, p OpenAccountParams) func(tx *sql.Tx, now time.Time) (Account, *movement, error) {
	return func(tx *sql.Tx, now time.Time) (Account, *movement, error) {
		us := sqldb.Micros(now)
		// The system accounts of the currency, made on first use. Once
		// they exist this inserts nothing and locks nothing.
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO accounts (id, kind, owner_id, currency_code, created_us, updated_us) VALUES
			 ($1, 'house',   'system:house',   $4, $5, $5),
			 ($2, 'holds',   'system:holds',   $4, $5, $5),
			 ($3, 'revenue', 'system:revenue', $4, $5, $5)
			 ON CONFLICT DO NOTHING`,
			SystemAccountID(KindHouse, p.Currency), SystemAccountID(KindHolds, p.Currency),
			SystemAccountID(KindRevenue, p.Currency), p.Currency, us); err != nil {
			return Account{}, nil, fmt.Errorf("system accounts: %w", err)
		}
		id := newID()
		res, err := tx.ExecContext(ctx,
			`INSERT INTO accounts (id, kind, owner_id, currency_code, created_us, updated_us)
			 VALUES ($1, 'customer', $2, $3, $4, $4) ON CONFLICT (owner_id, currency_code) DO NOTHING`,
			id, p.OwnerID, p.Currency, us)
		if err != nil {
			return Account{}, nil, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return Account{}, nil, err
		} else if n == 0 {
			var existing string
			if err := tx.QueryRowContext(ctx,
				`SELECT id FROM accounts WHERE owner_id = $1 AND currency_code = $2`,
				p.OwnerID, p.Currency).Scan(&existing); err != nil {
				return Account{}, nil, err
			}
			return Account{}, nil, &AccountExistsError{AccountID: existing, OwnerID: p.OwnerID, Currency: p.Currency}
		}
		a := Account{
			ID: id, Kind: KindCustomer, OwnerID: p.OwnerID, Currency: p.Currency,
			Available: max(p.OpeningCredit, 0), CreateTime: now,
		}
		m := &movement{
			subject: p.OwnerID,
			event: &eventsv1.AccountOpened{
				AccountId: id, OwnerId: p.OwnerID,
				OpeningCredit: money(max(p.OpeningCredit, 0), p.Currency),
			},
		}
		if p.OpeningCredit > 0 {
			m.txn = txn{method: methodOpenAccount, currency: p.Currency}
			m.legs = []leg{
				{account: id, amount: p.OpeningCredit, kind: EntryOpeningCredit},
				{account: SystemAccountID(KindHouse, p.Currency), amount: -p.OpeningCredit, kind: EntryOpeningCredit},
			}
		}
		return a, m, nil
	}
}

// Authorize implements Store.
func (s *sqlStore) Authorize(ctx context.Context, idem Idempotency, p AuthorizeParams) (Authorization, error) {
	return idempotent(ctx, s, methodAuthorize, idem, func(tx *sql.Tx, now time.Time) (Authorization, *movement, error) {
		// Kind and currency never change, so reading them first is no
		// race; the money is checked by the conditional UPDATE in post.
		var kind, currency string
		err := tx.QueryRowContext(ctx, `SELECT kind, currency_code FROM accounts WHERE id = $1`, p.AccountID).
			Scan(&kind, &currency)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return Authorization{}, nil, &NotFoundError{Resource: ResourceAccount, ID: p.AccountID}
		case err != nil:
			return Authorization{}, nil, err
		case AccountKind(kind) != KindCustomer:
			return Authorization{}, nil, &SystemAccountError{AccountID: p.AccountID}
		case currency != p.Currency:
			return Authorization{}, nil, &CurrencyMismatchError{Field: "amount.currency_code", Want: currency, Got: p.Currency}
		}
		a := Authorization{
			ID: newID(), AccountID: p.AccountID, OrderID: p.OrderID, Currency: currency,
			Amount: p.Amount, Status: StatusAuthorized, CreateTime: now, UpdateTime: now,
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO authorizations (id, account_id, order_id, currency_code, amount, status, created_us, updated_us)
			 VALUES ($1, $2, $3, $4, $5, 'AUTHORIZED', $6, $6)`,
			a.ID, a.AccountID, a.OrderID, a.Currency, a.Amount, sqldb.Micros(now)); err != nil {
			return Authorization{}, nil, err
		}
		return a, &movement{
			txn: txn{method: methodAuthorize, currency: currency, authorization: a.ID},
			legs: []leg{
				{account: p.AccountID, amount: -p.Amount, held: p.Amount, kind: EntryHold},
				{account: SystemAccountID(KindHolds, currency), amount: p.Amount, kind: EntryHold},
			},
			subject: a.subject(),
			event: &eventsv1.PaymentAuthorized{
				AuthorizationId: a.ID, AccountId: a.AccountID, OrderId: a.OrderID, Amount: money(a.Amount, a.Currency),
			},
			// The customer's conditional UPDATE refused: say how much was
			// available, as read now, after the refusal.
			refused: func() error {
				var available int64
				if err := tx.QueryRowContext(ctx, `SELECT available FROM accounts WHERE id = $1`, p.AccountID).
					Scan(&available); err != nil {
					return err
				}
				return &InsufficientFundsError{AccountID: p.AccountID, Requested: p.Amount, Available: available}
			},
		}, nil
	})
}

const authorizationColumns = `id, account_id, order_id, currency_code, amount, captured, refunded, status, created_us, updated_us`

func scanAuthorization(row *sql.Row, extra ...any) (Authorization, error) {
	var a Authorization
	var st string
	var created, updated int64
	dest := append([]any{&a.ID, &a.AccountID, &a.OrderID, &a.Currency, &a.Amount, &a.Captured, &a.Refunded,
		&st, &created, &updated}, extra...)
	if err := row.Scan(dest...); err != nil {
		return Authorization{}, err
	}
	a.Status = AuthorizationStatus(st)
	a.CreateTime, a.UpdateTime = sqldb.Time(created), sqldb.Time(updated)
	return a, nil
}

// refused explains why the conditional UPDATE of an authorization matched
// no row, from the row as it is now: it does not exist, the currency is
// wrong, its status does not allow op, or the amount is too large.
// statuses are those op accepts; limit returns the most op allows.
func refused(ctx context.Context, tx *sql.Tx, id, op, currency string, statuses []AuthorizationStatus, amount int64, limit func(Authorization) int64) error {
	a, err := scanAuthorization(tx.QueryRowContext(ctx, `SELECT `+authorizationColumns+` FROM authorizations WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return &NotFoundError{Resource: ResourceAuthorization, ID: id}
	}
	if err != nil {
		return err
	}
	if amount > 0 && currency != a.Currency {
		return &CurrencyMismatchError{Field: "amount.currency_code", Want: a.Currency, Got: currency}
	}
	ok := false
	for _, st := range statuses {
		ok = ok || a.Status == st
	}
	if !ok {
		return &StatusError{AuthorizationID: id, Operation: op, Status: a.Status}
	}
	if amount > 0 && amount > limit(a) {
		return &AmountError{AuthorizationID: id, Operation: op, Requested: amount, Limit: limit(a)}
	}
	// The row changed between the UPDATE and this read.
	return errConcurrentUpdate
}

// Capture implements Store.
func (s *sqlStore) Capture(ctx context.Context, idem Idempotency, p CaptureParams) (Authorization, error) {
	return idempotent(ctx, s, methodCapture, idem, func(tx *sql.Tx, now time.Time) (Authorization, *movement, error) {
		var row *sql.Row
		if p.Amount == 0 {
			row = tx.QueryRowContext(ctx,
				`UPDATE authorizations SET status = 'CAPTURED', captured = amount, updated_us = $1
				 WHERE id = $2 AND status = 'AUTHORIZED'
				 RETURNING `+authorizationColumns,
				sqldb.Micros(now), p.AuthorizationID)
		} else {
			row = tx.QueryRowContext(ctx,
				`UPDATE authorizations SET status = 'CAPTURED', captured = $1, updated_us = $2
				 WHERE id = $3 AND status = 'AUTHORIZED' AND amount >= $1 AND currency_code = $4
				 RETURNING `+authorizationColumns,
				p.Amount, sqldb.Micros(now), p.AuthorizationID, p.Currency)
		}
		a, err := scanAuthorization(row)
		if errors.Is(err, sql.ErrNoRows) {
			return Authorization{}, nil, refused(ctx, tx, p.AuthorizationID, "capture", p.Currency,
				[]AuthorizationStatus{StatusAuthorized}, p.Amount, func(a Authorization) int64 { return a.Amount })
		}
		if err != nil {
			return Authorization{}, nil, err
		}
		rest := a.Amount - a.Captured
		holds, revenue := SystemAccountID(KindHolds, a.Currency), SystemAccountID(KindRevenue, a.Currency)
		legs := []leg{
			{account: a.AccountID, amount: rest, held: -a.Amount, kind: EntryRelease},
			{account: holds, amount: -a.Captured, kind: EntryCapture},
		}
		if rest > 0 {
			legs = append(legs, leg{account: holds, amount: -rest, kind: EntryRelease})
		}
		legs = append(legs, leg{account: revenue, amount: a.Captured, kind: EntryCapture})
		return a, &movement{
			txn: txn{method: methodCapture, currency: a.Currency, authorization: a.ID}, legs: legs,
			subject: a.subject(),
			event: &eventsv1.PaymentCaptured{
				AuthorizationId: a.ID, AccountId: a.AccountID, OrderId: a.OrderID, Amount: money(a.Captured, a.Currency),
			},
		}, nil
	})
}

// Void implements Store.
func (s *sqlStore) Void(ctx context.Context, idem Idempotency, p VoidParams) (Authorization, error) {
	return idempotent(ctx, s, methodVoid, idem, func(tx *sql.Tx, now time.Time) (Authorization, *movement, error) {
		a, err := scanAuthorization(tx.QueryRowContext(ctx,
			`UPDATE authorizations SET status = 'VOIDED', updated_us = $1
			 WHERE id = $2 AND status = 'AUTHORIZED'
			 RETURNING `+authorizationColumns,
			sqldb.Micros(now), p.AuthorizationID))
		if errors.Is(err, sql.ErrNoRows) {
			return Authorization{}, nil, refused(ctx, tx, p.AuthorizationID, "void", "",
				[]AuthorizationStatus{StatusAuthorized}, 0, nil)
		}
		if err != nil {
			return Authorization{}, nil, err
		}
		return a, &movement{
			txn: txn{method: methodVoid, currency: a.Currency, authorization: a.ID, reason: p.Reason},
			legs: []leg{
				{account: a.AccountID, amount: a.Amount, held: -a.Amount, kind: EntryRelease},
				{account: SystemAccountID(KindHolds, a.Currency), amount: -a.Amount, kind: EntryRelease},
			},
			subject: a.subject(),
			event: &eventsv1.PaymentVoided{
				AuthorizationId: a.ID, AccountId: a.AccountID, OrderId: a.OrderID, Reason: p.Reason,
			},
		}, nil
	})
}

// Refund implements Store.
func (s *sqlStore) Refund(ctx context.Context, idem Idempotency, p RefundParams) (Refund, error) {
	return idempotent(ctx, s, methodRefund, idem, func(tx *sql.Tx, now time.Time) (Refund, *movement, error) {
		// In SET every expression sees the row as it was, so last_refund
		// is the amount this statement adds.
		var row *sql.Row
		if p.Amount == 0 {
			row = tx.QueryRowContext(ctx,
				`UPDATE authorizations
				 SET last_refund = captured - refunded, refunded = captured, status = 'REFUNDED', updated_us = $1
				 WHERE id = $2 AND status IN ('CAPTURED', 'PARTIALLY_REFUNDED')
				 RETURNING `+authorizationColumns+`, last_refund`,
				sqldb.Micros(now), p.AuthorizationID)
		} else {
			row = tx.QueryRowContext(ctx,
				`UPDATE authorizations
				 SET last_refund = $1, refunded = refunded + $1, updated_us = $2,
				     status = CASE WHEN refunded + $1 = captured THEN 'REFUNDED' ELSE 'PARTIALLY_REFUNDED' END
				 WHERE id = $3 AND status IN ('CAPTURED', 'PARTIALLY_REFUNDED')
				   AND refunded + $1 <= captured AND currency_code = $4
				 RETURNING `+authorizationColumns+`, last_refund`,
				p.Amount, sqldb.Micros(now), p.AuthorizationID, p.Currency)
		}
		var amount int64
		a, err := scanAuthorization(row, &amount)
		if errors.Is(err, sql.ErrNoRows) {
			return Refund{}, nil, refused(ctx, tx, p.AuthorizationID, "refund", p.Currency,
				[]AuthorizationStatus{StatusCaptured, StatusPartiallyRefunded}, p.Amount,
				func(a Authorization) int64 { return a.Captured - a.Refunded })
		}
		if err != nil {
			return Refund{}, nil, err
		}
		t := txn{id: newID(), method: methodRefund, currency: a.Currency, authorization: a.ID, reason: p.Reason}
		return Refund{Authorization: a, RefundID: t.id, Amount: amount}, &movement{
			txn: t,
			legs: []leg{
				{account: a.AccountID, amount: amount, kind: EntryRefund},
				{account: SystemAccountID(KindRevenue, a.Currency), amount: -amount, kind: EntryRefund},
			},
			subject: a.subject(),
			event: &eventsv1.PaymentRefunded{
				AuthorizationId: a.ID, RefundId: t.id, AccountId: a.AccountID, OrderId: a.OrderID,
				Amount: money(amount, a.Currency), Reason: p.Reason,
			},
		}, nil
	})
}

// LedgerEntries implements Store. It reads one page by the account's
// (account_id, sequence) key: a range scan of the unique index, whatever
// the page's position in the ledger.
func (s *sqlStore) LedgerEntries(ctx context.Context, accountID string, after int64, limit int) ([]Entry, error) {
	rows, err := s.db.Reader().QueryContext(ctx,
		`SELECT id, transaction_id, account_id, sequence, amount, currency_code, kind, authorization_id, created_us
		 FROM ledger_entries WHERE account_id = $1 AND sequence > $2
		 ORDER BY sequence LIMIT $3`,
		accountID, after, limit)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	entries := make([]Entry, 0, limit)
	for rows.Next() {
		var e Entry
		var kind string
		var created int64
		if err := rows.Scan(&e.ID, &e.TransactionID, &e.AccountID, &e.Sequence, &e.Amount, &e.Currency,
			&kind, &e.AuthorizationID, &created); err != nil {
			return nil, err
		}
		e.Kind = EntryKind(kind)
		e.CreateTime = sqldb.Time(created)
		entries = append(entries, e)
	}
	return entries, rows.Err()
}

// PruneIdempotency implements Store.
func (s *sqlStore) PruneIdempotency(ctx context.Context, before time.Time, limit int) (int64, error) {
	res, err := s.db.ExecContext(ctx,
		`DELETE FROM idempotency WHERE (method, idem_key) IN (
		   SELECT method, idem_key FROM idempotency WHERE created_us < $1 ORDER BY created_us LIMIT $2)`,
		sqldb.Micros(before), limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
