package payment

import (
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
)

// checkLedger fails t unless every invariant of the package documentation
// holds in db. Each query counts the rows that break one invariant.
func checkLedger(t *testing.T, db *sqldb.DB) {
	t.Helper()
	invariants := []struct{ name, query string }{
		{"the ledger of each currency sums to zero",
			`SELECT COUNT(*) FROM (SELECT currency_code FROM ledger_entries GROUP BY currency_code HAVING SUM(amount) <> 0) v`},
		{"each transaction sums to zero",
			`SELECT COUNT(*) FROM (SELECT transaction_id FROM ledger_entries GROUP BY transaction_id HAVING SUM(amount) <> 0) v`},
		{"each transaction has entries",
			`SELECT COUNT(*) FROM ledger_transactions t WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transaction_id = t.id)`},
		{"available is the sum of the account's entries",
			`SELECT COUNT(*) FROM accounts a WHERE a.available <> (SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e WHERE e.account_id = a.id)`},
		{"sequences run 1..last_seq without gaps",
			`SELECT COUNT(*) FROM accounts a WHERE a.last_seq <> (SELECT COUNT(*) FROM ledger_entries e WHERE e.account_id = a.id)
			    OR a.last_seq <> (SELECT COALESCE(MAX(e.sequence), 0) FROM ledger_entries e WHERE e.account_id = a.id)`},
		{"no customer balance is negative",
			`SELECT COUNT(*) FROM accounts WHERE kind = 'customer' AND (available < 0 OR held < 0)`},
		{"held is the sum of the account's open authorizations",
			`SELECT COUNT(*) FROM accounts a WHERE a.held <> (SELECT COALESCE(SUM(z.amount), 0) FROM authorizations z WHERE z.account_id = a.id AND z.status = 'AUTHORIZED')`},
		{"the holds account holds every customer's held money",
			`SELECT COUNT(*) FROM accounts h WHERE h.kind = 'holds' AND h.available <> (SELECT COALESCE(SUM(c.held), 0) FROM accounts c WHERE c.kind = 'customer' AND c.currency_code = h.currency_code)`},
		{"revenue is captured minus refunded",
			`SELECT COUNT(*) FROM accounts r WHERE r.kind = 'revenue' AND r.available <> (SELECT COALESCE(SUM(z.captured - z.refunded), 0) FROM authorizations z WHERE z.currency_code = r.currency_code)`},
		{"house gave every opening credit",
			`SELECT COUNT(*) FROM accounts h WHERE h.kind = 'house' AND h.available <> -(SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e JOIN accounts c ON c.id = e.account_id WHERE c.kind = 'customer' AND e.kind = 'OPENING_CREDIT' AND c.currency_code = h.currency_code)`},
		{"status agrees with the amounts",
			`SELECT COUNT(*) FROM authorizations WHERE NOT (
			    (status = 'AUTHORIZED' AND captured = 0 AND refunded = 0) OR
			    (status = 'VOIDED' AND captured = 0 AND refunded = 0) OR
			    (status = 'CAPTURED' AND captured > 0 AND refunded = 0) OR
			    (status = 'PARTIALLY_REFUNDED' AND refunded > 0 AND refunded < captured) OR
			    (status = 'REFUNDED' AND captured > 0 AND refunded = captured))`},
	}
	for _, inv := range invariants {
		var broken int64
		if err := db.QueryRowContext(t.Context(), inv.query).Scan(&broken); err != nil {
			t.Fatalf("%s: %v", inv.name, err)
		}
		if broken != 0 {
			t.Errorf("invariant %q broken by %d rows", inv.name, broken)
		}
	}
}

// fastCommits turns synchronous commit off on a PostgreSQL test database:
// a test needs no durability across a server crash, and the fsync of each
// commit costs milliseconds on this machine's disk, which hot-row tests
// pay once per serialized transaction. Isolation and locking are
// unchanged. SQLite databases are left as they are.
func fastCommits(t *testing.T, db *sqldb.DB) {
	t.Helper()
	if db.Dialect != sqldb.Postgres {
		return
	}
	var name string
	if err := db.QueryRowContext(t.Context(), `SELECT current_database()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(t.Context(), `ALTER DATABASE "`+name+`" SET synchronous_commit = off`); err != nil {
		t.Fatal(err)
	}
	// Close the idle connections, opened with the old setting.
	db.SetMaxIdleConns(0)
	db.SetMaxIdleConns(10)
}

// storeKeys hands out unique idempotency keys with a hash per key, so that
// each call of a case is a new request unless the case reuses one.
type storeKeys struct{ n int }

func (k *storeKeys) next() Idempotency {
	k.n++
	return Idempotency{Key: fmt.Sprintf("key-%d", k.n), RequestHash: fmt.Sprintf("hash-%d", k.n)}
}

// TestStoreContract runs the Store's contract on SQLite and PostgreSQL:
// the same cases, the same answers.
func TestStoreContract(t *testing.T) {
	sqltest.Each(t, Migrations, MigrationsDir, func(t *testing.T, db *sqldb.DB) {
		fastCommits(t, db)
		s := newSQLStore(db, nil)
		keys := &storeKeys{}
		for _, c := range storeCases {
			t.Run(c.name, func(t *testing.T) { c.run(t, s, keys) })
		}
		t.Run("no constraint can be bypassed", func(t *testing.T) { testConstraints(t, db, s, keys) })
		checkLedger(t, db)
	})
}

var storeCases = []struct {
	name string
	run  func(t *testing.T, s *sqlStore, keys *storeKeys)
}{
	{"open account", testStoreOpenAccount},
	{"authorize", testStoreAuthorize},
	{"capture", testStoreCapture},
	{"void", testStoreVoid},
	{"refund", testStoreRefund},
	{"failed call leaves the key free", testStoreFailedCallKeepsKeyFree},
	{"ledger entries by sequence", testStoreLedgerEntries},
	{"prune idempotency keys", testStorePrune},
	{"unbalanced postings are refused", testStoreUnbalanced},
}

func mustOpen(t *testing.T, s *sqlStore, keys *storeKeys, owner string, credit int64) Account {
	t.Helper()
	a, err := s.OpenAccount(t.Context(), keys.next(), OpenAccountParams{OwnerID: owner, Currency: "USD", OpeningCredit: credit})
	if err != nil {
		t.Fatalf("OpenAccount(%q) = %v", owner, err)
	}
	return a
}

func mustAuthorize(t *testing.T, s *sqlStore, keys *storeKeys, account string, amount int64) Authorization {
	t.Helper()
	a, err := s.Authorize(t.Context(), keys.next(), AuthorizeParams{AccountID: account, Amount: amount, Currency: "USD"})
	if err != nil {
		t.Fatalf("Authorize(%d) = %v", amount, err)
	}
	return a
}

func mustCapture(t *testing.T, s *sqlStore, keys *storeKeys, auth string, amount int64) Authorization {
	t.Helper()
	a, err := s.Capture(t.Context(), keys.next(), CaptureParams{AuthorizationID: auth, Amount: amount, Currency: "USD"})
	if err != nil {
		t.Fatalf("Capture(%d) = %v", amount, err)
	}
	return a
}

// balances returns an account's available and held money.
func balances(t *testing.T, s *sqlStore, id string) (available, held int64) {
	t.Helper()
	a, err := s.Account(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Available, a.Held
}

func testStoreOpenAccount(t *testing.T, s *sqlStore, keys *storeKeys) {
	ctx := t.Context()
	idem := keys.next()
	params := OpenAccountParams{OwnerID: "open-1", Currency: "USD", OpeningCredit: 500}
	got, err := s.OpenAccount(ctx, idem, params)
	if err != nil {
		t.Fatal(err)
	}
	want := Account{ID: got.ID, Kind: KindCustomer, OwnerID: "open-1", Currency: "USD", Available: 500, CreateTime: got.CreateTime}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OpenAccount mismatch (-want +got):\n%s", diff)
	}
	if got.Balance() != 500 {
		t.Errorf("Balance() = %d, want 500", got.Balance())
	}

	replay, err := s.OpenAccount(ctx, idem, params)
	if err != nil || !cmp.Equal(replay, got) {
		t.Errorf("replayed OpenAccount = %+v, %v, want %+v, nil", replay, err, got)
	}
	if _, err := s.OpenAccount(ctx, Idempotency{Key: idem.Key, RequestHash: "other"}, params); !errors.Is(err, ErrIdempotencyKeyReused) {
		t.Errorf("OpenAccount with a reused key = %v, want ErrIdempotencyKeyReused", err)
	}
	_, err = s.OpenAccount(ctx, keys.next(), params)
	if exists, ok := as[*AccountExistsError](err); !ok || exists.AccountID != got.ID {
		t.Errorf("second OpenAccount = %v, want *AccountExistsError naming %s", err, got.ID)
	}
	eur, err := s.OpenAccount(ctx, keys.next(), OpenAccountParams{OwnerID: "open-1", Currency: "EUR"})
	if err != nil || eur.Available != 0 || eur.ID == got.ID {
		t.Errorf("OpenAccount in EUR = %+v, %v, want a new empty account", eur, err)
	}

	byID, err := s.Account(ctx, got.ID)
	if err != nil || !cmp.Equal(byID, got) {
		t.Errorf("Account(%s) = %+v, %v, want %+v", got.ID, byID, err, got)
	}
	byOwner, err := s.AccountByOwner(ctx, "open-1", "USD")
	if err != nil || !cmp.Equal(byOwner, got) {
		t.Errorf("AccountByOwner = %+v, %v, want %+v", byOwner, err, got)
	}
	if _, err := s.Account(ctx, "missing"); !matches[*NotFoundError](err) {
		t.Errorf("Account(missing) = %v, want *NotFoundError", err)
	}
	if _, err := s.AccountByOwner(ctx, "open-1", "JPY"); !matches[*NotFoundError](err) {
		t.Errorf("AccountByOwner(JPY) = %v, want *NotFoundError", err)
	}
	house, err := s.Account(ctx, SystemAccountID(KindHouse, "USD"))
	if err != nil || house.Kind != KindHouse || house.OwnerID != "system:house" || house.Available >= 0 {
		t.Errorf("house account = %+v, %v, want a system account that gave credits", house, err)
	}
}

func testStoreAuthorize(t *testing.T, s *sqlStore, keys *storeKeys) {
	ctx := t.Context()
	acct := mustOpen(t, s, keys, "auth-1", 100)
	a := mustAuthorize(t, s, keys, acct.ID, 60)
	if a.Status != StatusAuthorized || a.Amount != 60 || a.AccountID != acct.ID || a.Currency != "USD" {
		t.Errorf("Authorize = %+v, want AUTHORIZED 60 USD on %s", a, acct.ID)
	}
	if av, held := balances(t, s, acct.ID); av != 40 || held != 60 {
		t.Errorf("after Authorize(60): available, held = %d, %d, want 40, 60", av, held)
	}

	tests := []struct {
		name  string
		p     AuthorizeParams
		check func(error) bool
	}{
		{"more than available", AuthorizeParams{AccountID: acct.ID, Amount: 41, Currency: "USD"}, func(err error) bool {
			e, ok := as[*InsufficientFundsError](err)
			return ok && e.Requested == 41 && e.Available == 40 && e.AccountID == acct.ID
		}},
		{"another currency", AuthorizeParams{AccountID: acct.ID, Amount: 1, Currency: "EUR"}, func(err error) bool {
			e, ok := as[*CurrencyMismatchError](err)
			return ok && e.Want == "USD" && e.Got == "EUR"
		}},
		{"unknown account", AuthorizeParams{AccountID: "missing", Amount: 1, Currency: "USD"}, matches[*NotFoundError]},
		{"system account", AuthorizeParams{AccountID: SystemAccountID(KindHouse, "USD"), Amount: 1, Currency: "USD"}, matches[*SystemAccountError]},
	}
	for _, tt := range tests {
		if _, err := s.Authorize(ctx, keys.next(), tt.p); !tt.check(err) {
			t.Errorf("Authorize %s = %v, want the matching domain error", tt.name, err)
		}
	}
	if av, held := balances(t, s, acct.ID); av != 40 || held != 60 {
		t.Errorf("after refused calls: available, held = %d, %d, want 40, 60", av, held)
	}
}

func testStoreCapture(t *testing.T, s *sqlStore, keys *storeKeys) {
	ctx := t.Context()
	acct := mustOpen(t, s, keys, "capture-1", 1000)
	full := mustAuthorize(t, s, keys, acct.ID, 100)
	got := mustCapture(t, s, keys, full.ID, 0)
	if got.Status != StatusCaptured || got.Captured != 100 {
		t.Errorf("full Capture = %+v, want CAPTURED 100", got)
	}

	part := mustAuthorize(t, s, keys, acct.ID, 300)
	if _, err := s.Capture(ctx, keys.next(), CaptureParams{AuthorizationID: part.ID, Amount: 301, Currency: "USD"}); !matches[*AmountError](err) {
		t.Errorf("Capture(301 of 300) = %v, want *AmountError", err)
	}
	if _, err := s.Capture(ctx, keys.next(), CaptureParams{AuthorizationID: part.ID, Amount: 10, Currency: "EUR"}); !matches[*CurrencyMismatchError](err) {
		t.Errorf("Capture in EUR = %v, want *CurrencyMismatchError", err)
	}
	if _, err := s.Capture(ctx, keys.next(), CaptureParams{AuthorizationID: "missing"}); !matches[*NotFoundError](err) {
		t.Errorf("Capture(missing) = %v, want *NotFoundError", err)
	}
	got = mustCapture(t, s, keys, part.ID, 120)
	if got.Status != StatusCaptured || got.Captured != 120 || got.Amount != 300 {
		t.Errorf("partial Capture = %+v, want CAPTURED 120 of 300", got)
	}
	// 1000 - 100 captured - 120 captured; the other 180 came back.
	if av, held := balances(t, s, acct.ID); av != 780 || held != 0 {
		t.Errorf("after captures: available, held = %d, %d, want 780, 0", av, held)
	}
	if _, err := s.Capture(ctx, keys.next(), CaptureParams{AuthorizationID: part.ID}); !matches[*StatusError](err) {
		t.Errorf("second Capture = %v, want *StatusError", err)
	}
}

func testStoreVoid(t *testing.T, s *sqlStore, keys *storeKeys) {
	ctx := t.Context()
	acct := mustOpen(t, s, keys, "void-1", 100)
	a := mustAuthorize(t, s, keys, acct.ID, 70)
	got, err := s.Void(ctx, keys.next(), VoidParams{AuthorizationID: a.ID, Reason: "out of stock"})
	if err != nil || got.Status != StatusVoided || got.Captured != 0 {
		t.Fatalf("Void = %+v, %v, want VOIDED", got, err)
	}
	if av, held := balances(t, s, acct.ID); av != 100 || held != 0 {
		t.Errorf("after Void: available, held = %d, %d, want 100, 0", av, held)
	}
	var reason string
	if err := s.db.QueryRowContext(ctx, `SELECT reason FROM ledger_transactions WHERE authorization_id = $1 AND kind = 'Void'`, a.ID).Scan(&reason); err != nil || reason != "out of stock" {
		t.Errorf("void transaction reason = %q, %v, want %q", reason, err, "out of stock")
	}
	if _, err := s.Void(ctx, keys.next(), VoidParams{AuthorizationID: a.ID}); !matches[*StatusError](err) {
		t.Errorf("second Void = %v, want *StatusError", err)
	}
	captured := mustAuthorize(t, s, keys, acct.ID, 10)
	mustCapture(t, s, keys, captured.ID, 0)
	if _, err := s.Void(ctx, keys.next(), VoidParams{AuthorizationID: captured.ID}); !matches[*StatusError](err) {
		t.Errorf("Void of a captured authorization = %v, want *StatusError", err)
	}
}

func testStoreRefund(t *testing.T, s *sqlStore, keys *storeKeys) {
	ctx := t.Context()
	acct := mustOpen(t, s, keys, "refund-1", 500)
	a := mustAuthorize(t, s, keys, acct.ID, 200)
	if _, err := s.Refund(ctx, keys.next(), RefundParams{AuthorizationID: a.ID}); !matches[*StatusError](err) {
		t.Errorf("Refund before Capture = %v, want *StatusError", err)
	}
	mustCapture(t, s, keys, a.ID, 150)

	steps := []struct {
		amount     int64
		wantErr    func(error) bool
		wantStatus AuthorizationStatus
		wantTotal  int64
	}{
		{amount: 40, wantStatus: StatusPartiallyRefunded, wantTotal: 40},
		{amount: 111, wantErr: matches[*AmountError]},
		{amount: 10, wantStatus: StatusPartiallyRefunded, wantTotal: 50},
		{amount: 0, wantStatus: StatusRefunded, wantTotal: 150}, // the remaining 100
		{amount: 1, wantErr: matches[*StatusError]},
		{amount: 0, wantErr: matches[*StatusError]},
	}
	for i, st := range steps {
		r, err := s.Refund(ctx, keys.next(), RefundParams{AuthorizationID: a.ID, Amount: st.amount, Currency: "USD", Reason: "r"})
		if st.wantErr != nil {
			if !st.wantErr(err) {
				t.Errorf("step %d: Refund(%d) = %v, want the matching domain error", i, st.amount, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d: Refund(%d) = %v", i, st.amount, err)
		}
		if r.Authorization.Status != st.wantStatus || r.Authorization.Refunded != st.wantTotal || r.RefundID == "" {
			t.Errorf("step %d: Refund(%d) = %+v, want %s with %d refunded", i, st.amount, r, st.wantStatus, st.wantTotal)
		}
	}
	// 500 - 150 captured + 150 refunded.
	if av, held := balances(t, s, acct.ID); av != 500 || held != 0 {
		t.Errorf("after refunds: available, held = %d, %d, want 500, 0", av, held)
	}
}

func testStoreFailedCallKeepsKeyFree(t *testing.T, s *sqlStore, keys *storeKeys) {
	ctx := t.Context()
	acct := mustOpen(t, s, keys, "retry-1", 100)
	first := mustAuthorize(t, s, keys, acct.ID, 100)
	idem := keys.next()
	p := AuthorizeParams{AccountID: acct.ID, Amount: 50, Currency: "USD"}
	if _, err := s.Authorize(ctx, idem, p); !matches[*InsufficientFundsError](err) {
		t.Fatalf("Authorize without funds = %v, want *InsufficientFundsError", err)
	}
	if _, err := s.Void(ctx, keys.next(), VoidParams{AuthorizationID: first.ID}); err != nil {
		t.Fatal(err)
	}
	if a, err := s.Authorize(ctx, idem, p); err != nil || a.Amount != 50 {
		t.Errorf("retried Authorize with the same key = %+v, %v, want a hold of 50", a, err)
	}
}

func testStoreLedgerEntries(t *testing.T, s *sqlStore, keys *storeKeys) {
	ctx := t.Context()
	acct := mustOpen(t, s, keys, "ledger-1", 1000)
	for i := range 5 {
		a := mustAuthorize(t, s, keys, acct.ID, int64(10+i))
		mustCapture(t, s, keys, a.ID, 5)
	}
	// Opening credit, then per authorization a HOLD and a RELEASE of the
	// uncaptured rest.
	all, err := s.LedgerEntries(ctx, acct.ID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	wantKinds := []EntryKind{EntryOpeningCredit}
	for range 5 {
		wantKinds = append(wantKinds, EntryHold, EntryRelease)
	}
	var gotKinds []EntryKind
	var sum int64
	for i, e := range all {
		gotKinds = append(gotKinds, e.Kind)
		sum += e.Amount
		if e.Sequence != int64(i+1) || e.AccountID != acct.ID || e.Currency != "USD" {
			t.Errorf("entry %d = %+v, want sequence %d on %s in USD", i, e, i+1, acct.ID)
		}
	}
	if diff := cmp.Diff(wantKinds, gotKinds); diff != "" {
		t.Errorf("entry kinds (-want +got):\n%s", diff)
	}
	if av, _ := balances(t, s, acct.ID); sum != av {
		t.Errorf("sum of entries = %d, want available %d", sum, av)
	}
	page, err := s.LedgerEntries(ctx, acct.ID, 3, 4)
	if err != nil || len(page) != 4 || page[0].Sequence != 4 || page[3].Sequence != 7 {
		t.Errorf("LedgerEntries(after 3, limit 4) = %d entries from %v, %v, want sequences 4..7", len(page), page, err)
	}
	if rest, err := s.LedgerEntries(ctx, acct.ID, 11, 4); err != nil || len(rest) != 0 {
		t.Errorf("LedgerEntries past the end = %v, %v, want none", rest, err)
	}
}

func testStorePrune(t *testing.T, s *sqlStore, keys *storeKeys) {
	ctx := t.Context()
	acct := mustOpen(t, s, keys, "prune-1", 100)
	idem := keys.next()
	p := AuthorizeParams{AccountID: acct.ID, Amount: 10, Currency: "USD"}
	first, err := s.Authorize(ctx, idem, p)
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := s.PruneIdempotency(ctx, time.Now().Add(time.Hour), 7)
		if err != nil {
			t.Fatal(err)
		}
		if n > 7 {
			t.Fatalf("PruneIdempotency(limit 7) deleted %d", n)
		}
		if n < 7 {
			break
		}
	}
	var left int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM idempotency`).Scan(&left); err != nil || left != 0 {
		t.Errorf("idempotency rows left = %d, %v, want 0", left, err)
	}
	// Past the retention a key is forgotten: the call runs again.
	again, err := s.Authorize(ctx, idem, p)
	if err != nil || again.ID == first.ID {
		t.Errorf("Authorize after pruning = %+v, %v, want a new authorization", again, err)
	}
}

func testStoreUnbalanced(t *testing.T, s *sqlStore, keys *storeKeys) {
	ctx := t.Context()
	acct := mustOpen(t, s, keys, "unbalanced-1", 0)
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		return post(ctx, tx, s.now(), txn{method: "test", currency: "USD"}, []leg{
			{account: acct.ID, amount: 10, kind: EntryOpeningCredit},
		})
	})
	if !errors.Is(err, errUnbalanced) {
		t.Errorf("post of an unbalanced transaction = %v, want errUnbalanced", err)
	}
	// A leg that would overdraw the customer is refused by the UPDATE.
	err = s.db.Tx(ctx, func(tx *sql.Tx) error {
		return post(ctx, tx, s.now(), txn{method: "test", currency: "USD"}, []leg{
			{account: acct.ID, amount: -10, kind: EntryHold},
			{account: SystemAccountID(KindHolds, "USD"), amount: 10, kind: EntryHold},
		})
	})
	if !matches[*legRefusedError](err) {
		t.Errorf("post of an overdraft = %v, want *legRefusedError", err)
	}
}

// testConstraints shows the database's CHECK constraints back the
// conditional UPDATEs up: even SQL that skips the store's conditions
// cannot break the invariants.
func testConstraints(t *testing.T, db *sqldb.DB, s *sqlStore, keys *storeKeys) {
	ctx := t.Context()
	acct := mustOpen(t, s, keys, "constraints-1", 10)
	a := mustAuthorize(t, s, keys, acct.ID, 5)
	mustCapture(t, s, keys, a.ID, 0)
	statements := []struct {
		name string
		sql  string
		args []any
	}{
		{"negative available", `UPDATE accounts SET available = -1 WHERE id = $1`, []any{acct.ID}},
		{"negative held", `UPDATE accounts SET held = -1 WHERE id = $1`, []any{acct.ID}},
		{"second account per owner and currency", `INSERT INTO accounts (id, kind, owner_id, currency_code, created_us, updated_us) VALUES ('x', 'customer', 'constraints-1', 'USD', 0, 0)`, nil},
		{"captured above amount", `UPDATE authorizations SET captured = amount + 1 WHERE id = $1`, []any{a.ID}},
		{"refunded above captured", `UPDATE authorizations SET refunded = captured + 1 WHERE id = $1`, []any{a.ID}},
		{"unknown status", `UPDATE authorizations SET status = 'LOST' WHERE id = $1`, []any{a.ID}},
		{"duplicate sequence", `INSERT INTO ledger_entries (id, transaction_id, account_id, sequence, amount, currency_code, kind, authorization_id, created_us)
			SELECT 'dup', transaction_id, account_id, sequence, amount, currency_code, kind, authorization_id, created_us FROM ledger_entries WHERE account_id = $1 AND sequence = 1`, []any{acct.ID}},
	}
	for _, st := range statements {
		if _, err := db.ExecContext(ctx, st.sql, st.args...); err == nil {
			t.Errorf("%s: statement succeeded, want a constraint violation", st.name)
		}
	}
}
