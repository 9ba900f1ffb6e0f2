package payment

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
)

// txn is a ledger transaction being written: one per mutating call.
type txn struct {
	// id is the transaction id; post makes one when it is empty.
	id string
	// method is the call that writes it (methodAuthorize...).
	method string
	// currency is the currency of every account it posts to.
	currency string
	// authorization is the authorization it belongs to, or "".
	authorization string
	// reason is the caller's reason (Void, Refund), or "".
	reason string
}

// leg is one account's part in a transaction: a ledger entry of amount
// (none when amount is 0) and a change of the account's held money.
type leg struct {
	account string
	amount  int64
	held    int64
	kind    EntryKind
}

// legRefusedError: the conditional UPDATE of a leg matched no row, because
// it would have taken a customer's available or held money below zero (or
// the account is missing or in another currency).
type legRefusedError struct{ account string }

func (e *legRefusedError) Error() string {
	return fmt.Sprintf("posting to account %q refused", e.account)
}

// errUnbalanced: the legs of a transaction do not sum to zero. It is a
// bug, never a caller's fault, and maps to INTERNAL.
var errUnbalanced = errors.New("ledger transaction does not balance")

// movement is the money a call moves: one ledger transaction and its
// legs, in lock order. refused, when set, explains a leg the database
// refused (an Authorize without the funds); without it the
// *legRefusedError is returned as it is.
type movement struct {
	txn     txn
	legs    []leg
	refused func() error
	// event, about subject, is written to the outbox in the same
	// transaction, just before the legs are posted; nil for none.
	subject string
	event   proto.Message
}

// post writes transaction t with its legs. The legs must be in the lock
// order (customer account, then house, holds, revenue) and sum to zero,
// which post checks before writing anything. Each leg is one conditional
// UPDATE of its account, which bumps the account's last_seq and returns it
// as the entry's sequence; then one INSERT writes every entry. A
// customer's balances are checked by the UPDATE's WHERE (and the table's
// CHECKs), never read first: a refused leg is a *legRefusedError, and the
// caller's transaction rolls back.
func post(ctx context.Context, tx *sql.Tx, now time.Time, t txn, legs []leg) error {
	var sum int64
	for _, l := range legs {
		sum += l.amount
	}
	if sum != 0 {
		return fmt.Errorf("%s: %w", t.method, errUnbalanced)
	}
	if t.id == "" {
		t.id = newID()
	}
	us := sqldb.Micros(now)
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO ledger_transactions (id, kind, authorization_id, reason, created_us) VALUES ($1, $2, $3, $4, $5)`,
		t.id, t.method, t.authorization, t.reason, us); err != nil {
		return fmt.Errorf("ledger transaction: %w", err)
	}
	var values strings.Builder
	args := make([]any, 0, 9*len(legs))
	for _, l := range legs {
		if l.amount == 0 {
			if l.held == 0 {
				continue
			}
			res, err := tx.ExecContext(ctx,
				`UPDATE accounts SET held = held + $1, updated_us = $2
				 WHERE id = $3 AND currency_code = $4 AND held + $1 >= 0`,
				l.held, us, l.account, t.currency)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n != 1 {
				return &legRefusedError{account: l.account}
			}
			continue
		}
		var seq int64
		err := tx.QueryRowContext(ctx,
			`UPDATE accounts
			 SET available = available + $1, held = held + $2, last_seq = last_seq + 1, updated_us = $3
			 WHERE id = $4 AND currency_code = $5
			   AND (kind <> 'customer' OR available + $1 >= 0) AND held + $2 >= 0
			 RETURNING last_seq`,
			l.amount, l.held, us, l.account, t.currency).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return &legRefusedError{account: l.account}
		}
		if err != nil {
			return err
		}
		if len(args) > 0 {
			values.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&values, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9)
		args = append(args, newID(), t.id, l.account, seq, l.amount, t.currency, string(l.kind), t.authorization, us)
	}
	if len(args) == 0 {
		return nil
	}
	const insert = `INSERT INTO ledger_entries
		 (id, transaction_id, account_id, sequence, amount, currency_code, kind, authorization_id, created_us)
		 VALUES `
	query := insert + values.String() //nolint:gosec // values holds only numbered placeholders
	if _, err := tx.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("ledger entries: %w", err)
	}
	return nil
}
