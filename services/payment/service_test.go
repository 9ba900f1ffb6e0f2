package payment

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/internal/servicetest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is the payment service served by the kit on a loopback port, with
// validation and the real authorization policy, and a generated client.
type env struct {
	db     *sqldb.DB
	svc    *Service
	client paymentv1.PaymentServiceClient
	keys   atomic.Int64
}

func newEnv(t *testing.T, db *sqldb.DB, cfg Config) *env {
	t.Helper()
	svc, err := Open(t.Context(), db, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	conn := servicetest.Serve(t, svc.Register, Policy())
	return &env{db: db, svc: svc, client: paymentv1.NewPaymentServiceClient(conn)}
}

// eachEngine runs fn on a fresh service per engine. The database is not
// migrated beforehand: Open does it.
func eachEngine(t *testing.T, cfg Config, fn func(t *testing.T, e *env)) {
	sqltest.Each(t, nil, "", func(t *testing.T, db *sqldb.DB) {
		fastCommits(t, db)
		fn(t, newEnv(t, db, cfg))
	})
}

// asService returns a context of a call made by the named service.
func asService(t *testing.T, service string) context.Context {
	return servicetest.AsService(t.Context(), service)
}

// asUser returns a context of a call made by a user through a service.
func asUser(t *testing.T, service, user string, roles ...string) context.Context {
	return servicetest.As(t.Context(), service, user, roles...)
}

func (e *env) key() string { return fmt.Sprintf("key-%d", e.keys.Add(1)) }

func usd(amount int64) *typev1.Money { return &typev1.Money{AmountMinor: amount, CurrencyCode: "USD"} }

func (e *env) open(t *testing.T, owner string, credit int64) *paymentv1.Account {
	t.Helper()
	req := &paymentv1.OpenAccountRequest{IdempotencyKey: e.key(), OwnerId: owner, CurrencyCode: "USD"}
	if credit > 0 {
		req.OpeningCredit = usd(credit)
	}
	resp, err := e.client.OpenAccount(asService(t, "identity"), req)
	if err != nil {
		t.Fatalf("OpenAccount(%q) = %v", owner, err)
	}
	return resp.GetAccount()
}

func (e *env) authorize(t *testing.T, account string, amount int64) *paymentv1.Authorization {
	t.Helper()
	resp, err := e.client.Authorize(asService(t, "order"),
		&paymentv1.AuthorizeRequest{IdempotencyKey: e.key(), AccountId: account, Amount: usd(amount)})
	if err != nil {
		t.Fatalf("Authorize(%d) = %v", amount, err)
	}
	return resp.GetAuthorization()
}

// capture captures amount, or all when amount is 0.
func (e *env) capture(t *testing.T, auth string, amount int64) *paymentv1.Authorization {
	t.Helper()
	req := &paymentv1.CaptureRequest{IdempotencyKey: e.key(), AuthorizationId: auth}
	if amount > 0 {
		req.Amount = usd(amount)
	}
	resp, err := e.client.Capture(asService(t, "order"), req)
	if err != nil {
		t.Fatalf("Capture(%d) = %v", amount, err)
	}
	return resp.GetAuthorization()
}

func (e *env) refund(t *testing.T, auth string, amount int64) error {
	t.Helper()
	req := &paymentv1.RefundRequest{IdempotencyKey: e.key(), AuthorizationId: auth}
	if amount > 0 {
		req.Amount = usd(amount)
	}
	_, err := e.client.Refund(asService(t, "order"), req)
	return err
}

func (e *env) account(t *testing.T, id string) *paymentv1.Account {
	t.Helper()
	resp, err := e.client.GetAccount(asService(t, authz.Operator), &paymentv1.GetAccountRequest{AccountId: id})
	if err != nil {
		t.Fatalf("GetAccount(%s) = %v", id, err)
	}
	return resp.GetAccount()
}

// authorizationStatus reads an authorization's status from the database:
// the API has no read of authorizations.
func (e *env) authorizationStatus(t *testing.T, id string) AuthorizationStatus {
	t.Helper()
	var st string
	if err := e.db.QueryRowContext(t.Context(), `SELECT status FROM authorizations WHERE id = $1`, id).Scan(&st); err != nil {
		t.Fatal(err)
	}
	return AuthorizationStatus(st)
}

// checkBalances fails t unless the account has the balances given.
func checkBalances(t *testing.T, got *paymentv1.Account, available, held int64) {
	t.Helper()
	want := &paymentv1.Account{
		AccountId:  got.GetAccountId(),
		OwnerId:    got.GetOwnerId(),
		Balance:    usd(available + held),
		Held:       usd(held),
		Available:  usd(available),
		CreateTime: got.GetCreateTime(),
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("account %s (-want +got):\n%s", got.GetAccountId(), diff)
	}
}

// checkError fails t unless err has the code, and an ErrorInfo with the
// reason and domain.
func checkError(t *testing.T, err error, code codes.Code, reason, domain string) {
	t.Helper()
	if got := grpcstatus.Code(err); got != code {
		t.Errorf("code = %v, want %v (err %v)", got, code, err)
		return
	}
	if info := status.Info(err); info.GetReason() != reason || info.GetDomain() != domain {
		t.Errorf("ErrorInfo = %s/%s, want %s/%s", info.GetDomain(), info.GetReason(), domain, reason)
	}
}

// checkViolation fails t unless err carries exactly one PreconditionFailure
// violation with the type and subject.
func checkViolation(t *testing.T, err error, typ, subject string) {
	t.Helper()
	vs := status.PreconditionFailure(err).GetViolations()
	if len(vs) != 1 || vs[0].GetType() != typ || vs[0].GetSubject() != subject || vs[0].GetDescription() == "" {
		t.Errorf("PreconditionFailure violations = %v, want one of type %s on %s", vs, typ, subject)
	}
}

// badFields returns the fields of err's BadRequest violations, sorted.
func badFields(err error) []string {
	var fields []string
	for _, v := range status.BadRequest(err).GetFieldViolations() {
		fields = append(fields, v.GetField())
	}
	slices.Sort(fields)
	return fields
}

// TestService runs every RPC through a generated client against the
// service served by the kit, validation and authorization included, on
// SQLite and on PostgreSQL. The cases share one service and database per
// engine (a database costs a second to make on PostgreSQL); each case uses
// owners and keys of its own, checks balances as differences where it
// shares an account, and every ledger invariant is checked after each.
func TestService(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"100 concurrent authorizations never overdraw", testConcurrentAuthorizeNeverOverdraws},
		{"mixed concurrent workload keeps the ledger balanced", testLedgerBalancesUnderMixedConcurrentWorkload},
		{"concurrent replays move money once", testIdempotentReplayMovesMoneyOnce},
		{"partial capture releases the rest", testCapturePartialReleasesTheRest},
		{"refunds are bounded", testRefundBounds},
		{"invalid transitions are refused", testInvalidTransitions},
		{"ledger paging and resume", testListLedgerEntriesPaging},
		{"users see only their own accounts", testUserSeesOnlyOwnAccounts},
		{"domain errors carry their details", testDomainErrors},
		{"open and get an account", testOpenAndGetAccount},
	}
	eachEngine(t, Config{}, func(t *testing.T, e *env) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				c.run(t, e)
				checkLedger(t, e.db)
			})
		}
	})
}

// balance returns an account's balance, read through the API.
func (e *env) balance(t *testing.T, id string) int64 {
	t.Helper()
	return e.account(t, id).GetBalance().GetAmountMinor()
}

func testConcurrentAuthorizeNeverOverdraws(t *testing.T, e *env) {
	acct := e.open(t, "buyer", 500)
	holds := SystemAccountID(KindHolds, "USD")
	heldBefore := e.balance(t, holds)
	const calls = 100
	errs := make([]error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			_, errs[i] = e.client.Authorize(asService(t, "order"), &paymentv1.AuthorizeRequest{
				IdempotencyKey: fmt.Sprintf("hold-%d", i), AccountId: acct.GetAccountId(), Amount: usd(10),
			})
		})
	}
	wg.Wait()
	succeeded := 0
	for _, err := range errs {
		if err == nil {
			succeeded++
			continue
		}
		checkError(t, err, codes.FailedPrecondition, ReasonInsufficientFunds, Domain)
		checkViolation(t, err, ViolationFunds, "accounts/"+acct.GetAccountId())
	}
	if succeeded != 50 {
		t.Errorf("%d of %d Authorize(10) on 500 succeeded, want 50", succeeded, calls)
	}
	checkBalances(t, e.account(t, acct.GetAccountId()), 0, 500)
	if got, want := e.balance(t, holds), heldBefore+500; got != want {
		t.Errorf("holds account = %d, want %d", got, want)
	}
}

// TestLedgerBalancesUnderMixedConcurrentWorkload runs authorizations,
// captures, voids and refunds from many goroutines, some of them racing on
// the same authorization, then checks every ledger invariant.
func testLedgerBalancesUnderMixedConcurrentWorkload(t *testing.T, e *env) {
	const (
		accounts = 4
		credit   = 5000
		workers  = 8
		rounds   = 8
	)
	ids := make([]string, accounts)
	for i := range ids {
		ids[i] = e.open(t, fmt.Sprintf("mixed-%d", i), credit).GetAccountId()
	}
	order := asService(t, "order")
	// unexpected fails the test for any error but the wanted kinds of
	// refusal.
	unexpected := func(op string, err error, allowed ...string) {
		if err == nil {
			return
		}
		if slices.Contains(allowed, status.Reason(err)) {
			return
		}
		t.Errorf("%s = %v", op, err)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for r := range rounds {
				acct := ids[rng.IntN(accounts)]
				amount := 1 + rng.Int64N(400)
				resp, err := e.client.Authorize(order, &paymentv1.AuthorizeRequest{
					IdempotencyKey: fmt.Sprintf("w%d-r%d-auth", w, r), AccountId: acct, Amount: usd(amount),
				})
				if err != nil {
					unexpected("Authorize", err, ReasonInsufficientFunds)
					continue
				}
				auth := resp.GetAuthorization().GetAuthorizationId()
				key := func(op string) string { return fmt.Sprintf("w%d-r%d-%s", w, r, op) }
				switch rng.IntN(3) {
				case 0:
					_, err := e.client.Void(order, &paymentv1.VoidRequest{IdempotencyKey: key("void"), AuthorizationId: auth})
					unexpected("Void", err)
				case 1:
					captured := 1 + rng.Int64N(amount)
					_, err := e.client.Capture(order, &paymentv1.CaptureRequest{
						IdempotencyKey: key("capture"), AuthorizationId: auth, Amount: usd(captured),
					})
					unexpected("Capture", err)
					_, err = e.client.Refund(order, &paymentv1.RefundRequest{
						IdempotencyKey: key("refund"), AuthorizationId: auth, Amount: usd(1 + rng.Int64N(captured)),
					})
					unexpected("Refund", err)
				default:
					// Capture races Void, then refunds race each other
					// and a full refund.
					var won atomic.Int32
					var race sync.WaitGroup
					race.Go(func() {
						_, err := e.client.Capture(order, &paymentv1.CaptureRequest{IdempotencyKey: key("capture"), AuthorizationId: auth})
						if err == nil {
							won.Add(1)
						}
						unexpected("racing Capture", err, ReasonInvalidStatus)
					})
					race.Go(func() {
						_, err := e.client.Void(order, &paymentv1.VoidRequest{IdempotencyKey: key("void"), AuthorizationId: auth})
						if err == nil {
							won.Add(1)
						}
						unexpected("racing Void", err, ReasonInvalidStatus)
					})
					race.Wait()
					if n := won.Load(); n != 1 {
						t.Errorf("Capture and Void of one authorization: %d succeeded, want 1", n)
					}
					for i := range 3 {
						race.Go(func() {
							req := &paymentv1.RefundRequest{IdempotencyKey: key(fmt.Sprint("refund-", i)), AuthorizationId: auth}
							if i > 0 {
								req.Amount = usd(1 + amount/3)
							}
							_, err := e.client.Refund(order, req)
							unexpected("racing Refund", err, ReasonInvalidStatus, ReasonAmountExceeded)
						})
					}
					race.Wait()
				}
			}
		})
	}
	wg.Wait()
	// Each customer has its credit less what was captured and not
	// refunded; nothing is held any more.
	for _, id := range ids {
		var kept int64
		if err := e.db.QueryRowContext(t.Context(),
			`SELECT CAST(COALESCE(SUM(captured - refunded), 0) AS BIGINT) FROM authorizations WHERE account_id = $1`, id).Scan(&kept); err != nil {
			t.Fatal(err)
		}
		checkBalances(t, e.account(t, id), credit-kept, 0)
	}
}

// replay makes the same call concurrently 20 times and checks that every
// call succeeds with the same response, which it returns.
func replay[Req, Resp proto.Message](ctx context.Context, t *testing.T, call func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) Resp {
	t.Helper()
	const n = 20
	resps := make([]Resp, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { resps[i], errs[i] = call(ctx, req) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d of %d = %v", i, n, errs[i])
		}
		if diff := cmp.Diff(resps[0], resps[i], protocmp.Transform()); diff != "" {
			t.Errorf("response %d differs from response 0 (-0 +%d):\n%s", i, i, diff)
		}
	}
	return resps[0]
}

// ledgerLen returns how many entries an account has.
func ledgerLen(t *testing.T, e *env, id string) int {
	t.Helper()
	entries, err := e.svc.store.LedgerEntries(t.Context(), id, 0, MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func testIdempotentReplayMovesMoneyOnce(t *testing.T, e *env) {
	order := asService(t, "order")
	reused := func(t *testing.T, err error) {
		t.Helper()
		checkError(t, err, codes.InvalidArgument, ReasonIdempotencyKeyReused, Domain)
		if got, want := badFields(err), []string{"idempotency_key"}; !cmp.Equal(got, want) {
			t.Errorf("BadRequest fields = %v, want %v", got, want)
		}
	}

	t.Run("OpenAccount", func(t *testing.T) {
		req := &paymentv1.OpenAccountRequest{IdempotencyKey: "open", OwnerId: "replay-open", CurrencyCode: "USD", OpeningCredit: usd(300)}
		got := replay(asService(t, "identity"), t, e.client.OpenAccount, req)
		checkBalances(t, e.account(t, got.GetAccount().GetAccountId()), 300, 0)
		if n := ledgerLen(t, e, got.GetAccount().GetAccountId()); n != 1 {
			t.Errorf("ledger has %d entries, want 1 opening credit", n)
		}
		req.OpeningCredit = usd(301)
		_, err := e.client.OpenAccount(asService(t, "identity"), req)
		reused(t, err)
	})
	t.Run("Authorize", func(t *testing.T) {
		acct := e.open(t, "replay-authorize", 1000)
		req := &paymentv1.AuthorizeRequest{IdempotencyKey: "authorize", AccountId: acct.GetAccountId(), Amount: usd(100), OrderId: "o-1"}
		got := replay(order, t, e.client.Authorize, req)
		if got.GetAuthorization().GetStatus() != paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED {
			t.Errorf("Authorize = %v, want AUTHORIZED", got)
		}
		checkBalances(t, e.account(t, acct.GetAccountId()), 900, 100)
		req.Amount = usd(99)
		_, err := e.client.Authorize(order, req)
		reused(t, err)
	})
	t.Run("Capture", func(t *testing.T) {
		acct := e.open(t, "replay-capture", 1000)
		auth := e.authorize(t, acct.GetAccountId(), 100)
		req := &paymentv1.CaptureRequest{IdempotencyKey: "capture", AuthorizationId: auth.GetAuthorizationId(), Amount: usd(60)}
		replay(order, t, e.client.Capture, req)
		checkBalances(t, e.account(t, acct.GetAccountId()), 940, 0)
		if n := ledgerLen(t, e, acct.GetAccountId()); n != 3 {
			t.Errorf("ledger has %d entries, want 3 (credit, hold, release)", n)
		}
		req.Amount = nil
		_, err := e.client.Capture(order, req)
		reused(t, err)
	})
	t.Run("Void", func(t *testing.T) {
		acct := e.open(t, "replay-void", 1000)
		auth := e.authorize(t, acct.GetAccountId(), 100)
		req := &paymentv1.VoidRequest{IdempotencyKey: "void", AuthorizationId: auth.GetAuthorizationId(), Reason: "cancelled"}
		replay(order, t, e.client.Void, req)
		checkBalances(t, e.account(t, acct.GetAccountId()), 1000, 0)
		if n := ledgerLen(t, e, acct.GetAccountId()); n != 3 {
			t.Errorf("ledger has %d entries, want 3 (credit, hold, release)", n)
		}
		req.Reason = "other"
		_, err := e.client.Void(order, req)
		reused(t, err)
	})
	t.Run("Refund", func(t *testing.T) {
		acct := e.open(t, "replay-refund", 1000)
		auth := e.authorize(t, acct.GetAccountId(), 100)
		e.capture(t, auth.GetAuthorizationId(), 0)
		req := &paymentv1.RefundRequest{IdempotencyKey: "refund", AuthorizationId: auth.GetAuthorizationId(), Amount: usd(30)}
		got := replay(order, t, e.client.Refund, req)
		if got.GetRefundId() == "" || got.GetAuthorization().GetRefunded().GetAmountMinor() != 30 {
			t.Errorf("Refund = %v, want a refund id and 30 refunded", got)
		}
		checkBalances(t, e.account(t, acct.GetAccountId()), 930, 0)
		req.Amount = usd(31)
		_, err := e.client.Refund(order, req)
		reused(t, err)
	})
}

var ignoreGenerated = protocmp.IgnoreFields(&paymentv1.Authorization{}, "authorization_id", "create_time", "update_time")

func testCapturePartialReleasesTheRest(t *testing.T, e *env) {
	acct := e.open(t, "partial", 1000)
	holds, revenue := SystemAccountID(KindHolds, "USD"), SystemAccountID(KindRevenue, "USD")
	heldBefore, revenueBefore := e.balance(t, holds), e.balance(t, revenue)
	auth := e.authorize(t, acct.GetAccountId(), 300)
	got := e.capture(t, auth.GetAuthorizationId(), 120)
	want := &paymentv1.Authorization{
		AccountId: acct.GetAccountId(),
		Amount:    usd(300),
		Captured:  usd(120),
		Refunded:  usd(0),
		Status:    paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED,
	}
	if diff := cmp.Diff(want, got, protocmp.Transform(), ignoreGenerated); diff != "" {
		t.Errorf("Capture(120 of 300) (-want +got):\n%s", diff)
	}
	checkBalances(t, e.account(t, acct.GetAccountId()), 880, 0)
	if got := e.balance(t, holds); got != heldBefore {
		t.Errorf("holds account = %d, want %d as before", got, heldBefore)
	}
	if got, want := e.balance(t, revenue), revenueBefore+120; got != want {
		t.Errorf("revenue account = %d, want %d", got, want)
	}

	type line struct {
		Amount int64
		Kind   paymentv1.EntryKind
	}
	var lines []line
	for _, en := range listAll(asService(t, "order"), t, e, acct.GetAccountId(), 0) {
		lines = append(lines, line{en.GetAmount().GetAmountMinor(), en.GetKind()})
	}
	wantLines := []line{
		{1000, paymentv1.EntryKind_ENTRY_KIND_OPENING_CREDIT},
		{-300, paymentv1.EntryKind_ENTRY_KIND_HOLD},
		{180, paymentv1.EntryKind_ENTRY_KIND_RELEASE},
	}
	if diff := cmp.Diff(wantLines, lines); diff != "" {
		t.Errorf("customer ledger (-want +got):\n%s", diff)
	}
}

func testRefundBounds(t *testing.T, e *env) {
	acct := e.open(t, "refunds", 1000)
	auth := e.authorize(t, acct.GetAccountId(), 200)
	id := auth.GetAuthorizationId()
	if err := e.refund(t, id, 10); err == nil {
		t.Error("Refund before Capture succeeded")
	} else {
		checkError(t, err, codes.FailedPrecondition, ReasonInvalidStatus, Domain)
		checkViolation(t, err, ViolationStatus, "authorizations/"+id)
	}
	e.capture(t, id, 150)
	steps := []struct {
		amount     int64 // 0 refunds the rest
		wantReason string
		wantType   string
		wantTotal  int64
	}{
		{amount: 100, wantTotal: 100},
		{amount: 51, wantReason: ReasonAmountExceeded, wantType: ViolationAmount, wantTotal: 100},
		{amount: 50, wantTotal: 150},
		{amount: 1, wantReason: ReasonInvalidStatus, wantType: ViolationStatus, wantTotal: 150},
		{amount: 0, wantReason: ReasonInvalidStatus, wantType: ViolationStatus, wantTotal: 150},
	}
	for i, st := range steps {
		err := e.refund(t, id, st.amount)
		if st.wantReason == "" && err != nil {
			t.Errorf("step %d: Refund(%d) = %v, want success", i, st.amount, err)
		}
		if st.wantReason != "" {
			checkError(t, err, codes.FailedPrecondition, st.wantReason, Domain)
			checkViolation(t, err, st.wantType, "authorizations/"+id)
		}
		var refunded int64
		if err := e.db.QueryRowContext(t.Context(), `SELECT refunded FROM authorizations WHERE id = $1`, id).Scan(&refunded); err != nil {
			t.Fatal(err)
		}
		if refunded != st.wantTotal {
			t.Errorf("step %d: refunded = %d, want %d", i, refunded, st.wantTotal)
		}
	}
	if got := e.authorizationStatus(t, id); got != StatusRefunded {
		t.Errorf("status = %s, want REFUNDED", got)
	}
	checkBalances(t, e.account(t, acct.GetAccountId()), 1000, 0)

	// Concurrent refunds never return more than was captured.
	auth = e.authorize(t, acct.GetAccountId(), 200)
	id = auth.GetAuthorizationId()
	e.capture(t, id, 0)
	const calls = 10
	errs := make([]error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() { errs[i] = e.refund(t, id, 30) })
	}
	wg.Wait()
	succeeded := 0
	for _, err := range errs {
		if err == nil {
			succeeded++
			continue
		}
		checkError(t, err, codes.FailedPrecondition, ReasonAmountExceeded, Domain)
		checkViolation(t, err, ViolationAmount, "authorizations/"+id)
	}
	if succeeded != 6 {
		t.Errorf("%d of %d concurrent Refund(30) of 200 succeeded, want 6", succeeded, calls)
	}
	if got := e.authorizationStatus(t, id); got != StatusPartiallyRefunded {
		t.Errorf("status = %s, want PARTIALLY_REFUNDED", got)
	}
	checkBalances(t, e.account(t, acct.GetAccountId()), 1000-20, 0)
}

func testInvalidTransitions(t *testing.T, e *env) {
	acct := e.open(t, "transitions", 100_000)
	// setup brings a new authorization of 100 into a state.
	setup := map[AuthorizationStatus]func(t *testing.T) string{
		StatusAuthorized: func(t *testing.T) string { return e.authorize(t, acct.GetAccountId(), 100).GetAuthorizationId() },
		StatusCaptured: func(t *testing.T) string {
			id := e.authorize(t, acct.GetAccountId(), 100).GetAuthorizationId()
			e.capture(t, id, 0)
			return id
		},
		StatusVoided: func(t *testing.T) string {
			id := e.authorize(t, acct.GetAccountId(), 100).GetAuthorizationId()
			if _, err := e.client.Void(asService(t, "order"), &paymentv1.VoidRequest{IdempotencyKey: e.key(), AuthorizationId: id}); err != nil {
				t.Fatal(err)
			}
			return id
		},
		StatusPartiallyRefunded: func(t *testing.T) string {
			id := e.authorize(t, acct.GetAccountId(), 100).GetAuthorizationId()
			e.capture(t, id, 0)
			if err := e.refund(t, id, 40); err != nil {
				t.Fatal(err)
			}
			return id
		},
		StatusRefunded: func(t *testing.T) string {
			id := e.authorize(t, acct.GetAccountId(), 100).GetAuthorizationId()
			e.capture(t, id, 0)
			if err := e.refund(t, id, 0); err != nil {
				t.Fatal(err)
			}
			return id
		},
	}
	ops := map[string]func(t *testing.T, id string) error{
		"capture": func(t *testing.T, id string) error {
			_, err := e.client.Capture(asService(t, "order"), &paymentv1.CaptureRequest{IdempotencyKey: e.key(), AuthorizationId: id})
			return err
		},
		"void": func(t *testing.T, id string) error {
			_, err := e.client.Void(asService(t, "order"), &paymentv1.VoidRequest{IdempotencyKey: e.key(), AuthorizationId: id})
			return err
		},
		"refund": func(t *testing.T, id string) error { return e.refund(t, id, 10) },
	}
	tests := []struct {
		from AuthorizationStatus
		op   string
		to   AuthorizationStatus // "" means refused
	}{
		{StatusAuthorized, "capture", StatusCaptured},
		{StatusAuthorized, "void", StatusVoided},
		{StatusAuthorized, "refund", ""},
		{StatusCaptured, "capture", ""},
		{StatusCaptured, "void", ""},
		{StatusCaptured, "refund", StatusPartiallyRefunded},
		{StatusVoided, "capture", ""},
		{StatusVoided, "void", ""},
		{StatusVoided, "refund", ""},
		{StatusPartiallyRefunded, "capture", ""},
		{StatusPartiallyRefunded, "void", ""},
		{StatusPartiallyRefunded, "refund", StatusPartiallyRefunded},
		{StatusRefunded, "capture", ""},
		{StatusRefunded, "void", ""},
		{StatusRefunded, "refund", ""},
	}
	for _, tt := range tests {
		id := setup[tt.from](t)
		err := ops[tt.op](t, id)
		if tt.to != "" {
			if err != nil {
				t.Errorf("%s of %s = %v, want success", tt.op, tt.from, err)
			}
			if got := e.authorizationStatus(t, id); got != tt.to {
				t.Errorf("%s of %s: status = %s, want %s", tt.op, tt.from, got, tt.to)
			}
			continue
		}
		checkError(t, err, codes.FailedPrecondition, ReasonInvalidStatus, Domain)
		checkViolation(t, err, ViolationStatus, "authorizations/"+id)
		if got := e.authorizationStatus(t, id); got != tt.from {
			t.Errorf("refused %s of %s changed the status to %s", tt.op, tt.from, got)
		}
	}
}

// readStream reads a ListLedgerEntries stream to its end, or until pages
// messages arrived when pages > 0.
func readStream(ctx context.Context, t *testing.T, e *env, req *paymentv1.ListLedgerEntriesRequest, pages int) ([]*paymentv1.ListLedgerEntriesResponse, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := e.client.ListLedgerEntries(ctx, req)
	if err != nil {
		return nil, err
	}
	var got []*paymentv1.ListLedgerEntriesResponse
	for pages == 0 || len(got) < pages {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, resp)
	}
	return got, nil
}

// listAll returns every entry of an account, following page tokens.
func listAll(ctx context.Context, t *testing.T, e *env, account string, pageSize int32) []*paymentv1.LedgerEntry {
	t.Helper()
	var entries []*paymentv1.LedgerEntry
	req := &paymentv1.ListLedgerEntriesRequest{AccountId: account, PageSize: pageSize}
	for range 100 {
		pages, err := readStream(ctx, t, e, req, 0)
		if err != nil {
			t.Fatalf("ListLedgerEntries(%v) = %v", req, err)
		}
		for _, p := range pages {
			entries = append(entries, p.GetEntries()...)
		}
		req.PageToken = pages[len(pages)-1].GetNextPageToken()
		if req.PageToken == "" {
			return entries
		}
	}
	t.Fatal("listing did not end")
	return nil
}

func testListLedgerEntriesPaging(t *testing.T, e *env) {
	ctx := asService(t, "order")
	acct := e.open(t, "pages", 10_000)
	id := acct.GetAccountId()
	for range 12 {
		auth := e.authorize(t, id, 10)
		if _, err := e.client.Void(ctx, &paymentv1.VoidRequest{IdempotencyKey: e.key(), AuthorizationId: auth.GetAuthorizationId()}); err != nil {
			t.Fatal(err)
		}
	}
	const total = 25 // the credit, and a hold and a release per round

	stored, err := e.svc.store.LedgerEntries(t.Context(), id, 0, MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	var want []*paymentv1.LedgerEntry
	for _, en := range stored {
		want = append(want, entryProto(en))
	}

	pages, err := readStream(ctx, t, e, &paymentv1.ListLedgerEntriesRequest{AccountId: id, PageSize: 4}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	var got []*paymentv1.LedgerEntry
	for i, p := range pages {
		sizes = append(sizes, len(p.GetEntries()))
		got = append(got, p.GetEntries()...)
		if last := i == len(pages)-1; last != (p.GetNextPageToken() == "") {
			t.Errorf("page %d: next_page_token = %q; want one on every page but the last", i, p.GetNextPageToken())
		}
	}
	if diff := cmp.Diff([]int{4, 4, 4, 4, 4, 4, 1}, sizes); diff != "" {
		t.Errorf("page sizes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("streamed entries (-want +got):\n%s", diff)
	}
	for i, en := range got {
		if en.GetSequence() != int64(i+1) {
			t.Errorf("entry %d has sequence %d, want %d", i, en.GetSequence(), i+1)
		}
	}

	// Resume: stop after two pages, then continue from the token.
	first, err := readStream(ctx, t, e, &paymentv1.ListLedgerEntriesRequest{AccountId: id, PageSize: 4}, 2)
	if err != nil {
		t.Fatal(err)
	}
	rest, err := readStream(ctx, t, e, &paymentv1.ListLedgerEntriesRequest{AccountId: id, PageSize: 4, PageToken: first[1].GetNextPageToken()}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var resumed []*paymentv1.LedgerEntry
	for _, p := range append(first, rest...) {
		resumed = append(resumed, p.GetEntries()...)
	}
	if diff := cmp.Diff(want, resumed, protocmp.Transform()); diff != "" {
		t.Errorf("entries read in two streams (-want +got):\n%s", diff)
	}

	// The default page size takes the whole ledger in one message.
	def, err := readStream(ctx, t, e, &paymentv1.ListLedgerEntriesRequest{AccountId: id}, 0)
	if err != nil || len(def) != 1 || len(def[0].GetEntries()) != total || def[0].GetNextPageToken() != "" {
		t.Errorf("default page size: %d messages, %v, want 1 message of %d entries", len(def), err, total)
	}
	// An account without entries gets one empty page.
	empty := e.open(t, "pages-empty", 0)
	if pages, err := readStream(ctx, t, e, &paymentv1.ListLedgerEntriesRequest{AccountId: empty.GetAccountId()}, 0); err != nil ||
		len(pages) != 1 || len(pages[0].GetEntries()) != 0 || pages[0].GetNextPageToken() != "" {
		t.Errorf("empty ledger = %v, %v, want one empty page", pages, err)
	}

	// A stream stops after MaxPagesPerStream pages with a token.
	short := newEnv(t, e.db, Config{MaxPagesPerStream: 2})
	if got := listAll(ctx, t, short, id, 4); !cmp.Equal(want, got, protocmp.Transform()) {
		t.Errorf("entries read 2 pages per stream differ from the ledger")
	}
	pages, err = readStream(ctx, t, short, &paymentv1.ListLedgerEntriesRequest{AccountId: id, PageSize: 4}, 0)
	if err != nil || len(pages) != 2 || pages[1].GetNextPageToken() == "" {
		t.Errorf("stream with MaxPagesPerStream 2 sent %d pages, %v, want 2 ending with a token", len(pages), err)
	}

	errs := []struct {
		name   string
		req    *paymentv1.ListLedgerEntriesRequest
		code   codes.Code
		reason string
		field  string
	}{
		{"garbage token", &paymentv1.ListLedgerEntriesRequest{AccountId: id, PageToken: "!!"}, codes.InvalidArgument, validate.Reason, "page_token"},
		{"another account's token", &paymentv1.ListLedgerEntriesRequest{AccountId: empty.GetAccountId(), PageToken: pageToken(id, 3)}, codes.InvalidArgument, validate.Reason, "page_token"},
		{"page too large", &paymentv1.ListLedgerEntriesRequest{AccountId: id, PageSize: MaxPageSize + 1}, codes.InvalidArgument, validate.Reason, "page_size"},
		{"unknown account", &paymentv1.ListLedgerEntriesRequest{AccountId: "missing"}, codes.NotFound, ReasonAccountNotFound, ""},
	}
	for _, tt := range errs {
		_, err := readStream(ctx, t, e, tt.req, 0)
		domain := Domain
		if tt.code == codes.InvalidArgument {
			domain = status.KitDomain
		}
		checkError(t, err, tt.code, tt.reason, domain)
		if tt.field != "" {
			if got := badFields(err); !cmp.Equal(got, []string{tt.field}) {
				t.Errorf("%s: BadRequest fields = %v, want [%s]", tt.name, got, tt.field)
			}
		}
	}
}

func testUserSeesOnlyOwnAccounts(t *testing.T, e *env) {
	ann := e.open(t, "ann", 100)
	bob := e.open(t, "bob", 100)
	byID := func(id string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.client.GetAccount(ctx, &paymentv1.GetAccountRequest{AccountId: id})
			return err
		}
	}
	byOwner := func(owner string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.client.GetAccount(ctx, &paymentv1.GetAccountRequest{OwnerId: owner, CurrencyCode: "USD"})
			return err
		}
	}
	ledger := func(id string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := readStream(ctx, t, e, &paymentv1.ListLedgerEntriesRequest{AccountId: id}, 0)
			return err
		}
	}
	tests := []struct {
		name    string
		ctx     context.Context
		call    func(ctx context.Context) error
		allowed bool
	}{
		{"ann reads her account", asUser(t, "gateway", "ann"), byID(ann.GetAccountId()), true},
		{"ann reads her account by owner", asUser(t, "gateway", "ann", "customer"), byOwner("ann"), true},
		{"ann reads her ledger", asUser(t, "gateway", "ann"), ledger(ann.GetAccountId()), true},
		{"ann reads bob's account", asUser(t, "gateway", "ann"), byID(bob.GetAccountId()), false},
		{"ann reads bob's account by owner", asUser(t, "gateway", "ann"), byOwner("bob"), false},
		{"ann reads bob's ledger", asUser(t, "gateway", "ann"), ledger(bob.GetAccountId()), false},
		{"ann reads bob's account through order", asUser(t, "order", "ann"), byID(bob.GetAccountId()), false},
		{"ann reads the house account", asUser(t, "gateway", "ann"), byID(SystemAccountID(KindHouse, "USD")), false},
		{"support reads bob's account", asUser(t, "gateway", "sue", RoleSupport), byID(bob.GetAccountId()), false},
		{"order reads bob's account", asService(t, "order"), byID(bob.GetAccountId()), true},
	}
	for _, tt := range tests {
		err := tt.call(tt.ctx)
		if tt.allowed {
			if err != nil {
				t.Errorf("%s = %v, want success", tt.name, err)
			}
			continue
		}
		checkError(t, err, codes.PermissionDenied, ReasonNotAccountOwner, Domain)
	}
}

// TestPolicy calls every method as every kind of caller: the kit's
// authorizer with Policy() admits exactly the callers the policy lists.
func TestPolicy(t *testing.T) {
	db := sqltest.New(t, sqldb.SQLite, nil, "")
	e := newEnv(t, db, Config{})
	var n atomic.Int64
	owner := func() string { return fmt.Sprintf("policy-%d", n.Add(1)) }
	calls := map[string]func(ctx context.Context) error{
		"OpenAccount": func(ctx context.Context) error {
			_, err := e.client.OpenAccount(ctx, &paymentv1.OpenAccountRequest{IdempotencyKey: e.key(), OwnerId: owner(), CurrencyCode: "USD"})
			return err
		},
		"GetAccount": func(ctx context.Context) error {
			_, err := e.client.GetAccount(ctx, &paymentv1.GetAccountRequest{AccountId: "missing"})
			return err
		},
		"ListLedgerEntries": func(ctx context.Context) error {
			_, err := readStream(ctx, t, e, &paymentv1.ListLedgerEntriesRequest{AccountId: "missing"}, 0)
			return err
		},
		"Authorize": func(ctx context.Context) error {
			_, err := e.client.Authorize(ctx, &paymentv1.AuthorizeRequest{IdempotencyKey: e.key(), AccountId: "missing", Amount: usd(1)})
			return err
		},
		"Capture": func(ctx context.Context) error {
			_, err := e.client.Capture(ctx, &paymentv1.CaptureRequest{IdempotencyKey: e.key(), AuthorizationId: "missing"})
			return err
		},
		"Void": func(ctx context.Context) error {
			_, err := e.client.Void(ctx, &paymentv1.VoidRequest{IdempotencyKey: e.key(), AuthorizationId: "missing"})
			return err
		},
		"Refund": func(ctx context.Context) error {
			_, err := e.client.Refund(ctx, &paymentv1.RefundRequest{IdempotencyKey: e.key(), AuthorizationId: "missing"})
			return err
		},
	}
	callers := []struct {
		name    string
		ctx     context.Context
		allowed []string
	}{
		{"identity", asService(t, "identity"), []string{"OpenAccount"}},
		{"operator", asService(t, authz.Operator), []string{"OpenAccount", "GetAccount", "ListLedgerEntries"}},
		{"order", asService(t, "order"), []string{"GetAccount", "ListLedgerEntries", "Authorize", "Capture", "Void", "Refund"}},
		{"gateway without a user", asService(t, "gateway"), nil},
		{"customer via gateway", asUser(t, "gateway", "ann", "customer"), []string{"GetAccount", "ListLedgerEntries"}},
		{"shipping", asService(t, "shipping"), nil},
		{"customer via shipping", asUser(t, "shipping", "ann", "customer"), []string{"GetAccount", "ListLedgerEntries"}},
		{"support via shipping", asUser(t, "shipping", "sue", RoleSupport), []string{"GetAccount", "ListLedgerEntries", "Refund"}},
		{"no calling service", servicetest.As(t.Context(), "", "ann"), nil},
	}
	for _, c := range callers {
		for method, call := range calls {
			err := call(c.ctx)
			denied := grpcstatus.Code(err) == codes.PermissionDenied && status.Info(err).GetDomain() == status.KitDomain
			if want := !slices.Contains(c.allowed, method); denied != want {
				t.Errorf("%s calling %s: denied = %v (err %v), want %v", c.name, method, denied, err, want)
			}
		}
	}
}

func TestValidation(t *testing.T) {
	db := sqltest.New(t, sqldb.SQLite, nil, "")
	e := newEnv(t, db, Config{})
	op, order := asService(t, authz.Operator), asService(t, "order")
	long := strings.Repeat("x", 129)
	tests := []struct {
		name   string
		call   func() error
		fields []string
	}{
		{"OpenAccount empty", func() error {
			_, err := e.client.OpenAccount(op, &paymentv1.OpenAccountRequest{})
			return err
		}, []string{"currency_code", "idempotency_key", "owner_id"}},
		{"OpenAccount long key, system owner, lower-case currency", func() error {
			_, err := e.client.OpenAccount(op, &paymentv1.OpenAccountRequest{IdempotencyKey: long, OwnerId: "system:house", CurrencyCode: "usd"})
			return err
		}, []string{"currency_code", "idempotency_key", "owner_id"}},
		{"OpenAccount unknown currency", func() error {
			_, err := e.client.OpenAccount(op, &paymentv1.OpenAccountRequest{IdempotencyKey: "k", OwnerId: "o", CurrencyCode: "XYZ"})
			return err
		}, []string{"currency_code"}},
		{"OpenAccount credit negative and in another currency", func() error {
			_, err := e.client.OpenAccount(op, &paymentv1.OpenAccountRequest{IdempotencyKey: "k", OwnerId: "o", CurrencyCode: "USD",
				OpeningCredit: &typev1.Money{AmountMinor: -5, CurrencyCode: "EUR"}})
			return err
		}, []string{"opening_credit.amount_minor", "opening_credit.currency_code"}},
		{"GetAccount empty", func() error {
			_, err := e.client.GetAccount(op, &paymentv1.GetAccountRequest{})
			return err
		}, []string{"account_id"}},
		{"GetAccount by id and owner", func() error {
			_, err := e.client.GetAccount(op, &paymentv1.GetAccountRequest{AccountId: "a", OwnerId: "o", CurrencyCode: "USD"})
			return err
		}, []string{"currency_code", "owner_id"}},
		{"GetAccount owner without currency", func() error {
			_, err := e.client.GetAccount(op, &paymentv1.GetAccountRequest{OwnerId: "o"})
			return err
		}, []string{"currency_code"}},
		{"Authorize empty", func() error {
			_, err := e.client.Authorize(order, &paymentv1.AuthorizeRequest{})
			return err
		}, []string{"account_id", "amount", "idempotency_key"}},
		{"Authorize zero, too long order id", func() error {
			_, err := e.client.Authorize(order, &paymentv1.AuthorizeRequest{IdempotencyKey: "k", AccountId: "a", Amount: usd(0), OrderId: long})
			return err
		}, []string{"amount.amount_minor", "order_id"}},
		{"Authorize above the maximum, no currency", func() error {
			_, err := e.client.Authorize(order, &paymentv1.AuthorizeRequest{IdempotencyKey: "k", AccountId: "a",
				Amount: &typev1.Money{AmountMinor: MaxAmount + 1}})
			return err
		}, []string{"amount.amount_minor", "amount.currency_code"}},
		{"Capture empty", func() error {
			_, err := e.client.Capture(order, &paymentv1.CaptureRequest{})
			return err
		}, []string{"authorization_id", "idempotency_key"}},
		{"Capture negative", func() error {
			_, err := e.client.Capture(order, &paymentv1.CaptureRequest{IdempotencyKey: "k", AuthorizationId: "a", Amount: usd(-1)})
			return err
		}, []string{"amount.amount_minor"}},
		{"Void long reason", func() error {
			_, err := e.client.Void(order, &paymentv1.VoidRequest{IdempotencyKey: "k", AuthorizationId: "a", Reason: strings.Repeat("r", 501)})
			return err
		}, []string{"reason"}},
		{"Refund zero, long reason", func() error {
			_, err := e.client.Refund(order, &paymentv1.RefundRequest{IdempotencyKey: "k", AuthorizationId: "a", Amount: usd(0),
				Reason: strings.Repeat("r", 501)})
			return err
		}, []string{"amount.amount_minor", "reason"}},
		{"ListLedgerEntries negative page size", func() error {
			_, err := readStream(op, t, e, &paymentv1.ListLedgerEntriesRequest{AccountId: "a", PageSize: -1}, 0)
			return err
		}, []string{"page_size"}},
		{"ListLedgerEntries no account, long token", func() error {
			_, err := readStream(op, t, e, &paymentv1.ListLedgerEntriesRequest{PageToken: strings.Repeat("A", 300)}, 0)
			return err
		}, []string{"account_id", "page_token"}},
	}
	for _, tt := range tests {
		err := tt.call()
		checkError(t, err, codes.InvalidArgument, validate.Reason, status.KitDomain)
		if got := badFields(err); !cmp.Equal(got, tt.fields) {
			t.Errorf("%s: BadRequest fields = %v, want %v", tt.name, got, tt.fields)
		}
	}
}

func testDomainErrors(t *testing.T, e *env) {
	acct := e.open(t, "errors", 100)
	auth := e.authorize(t, acct.GetAccountId(), 50)
	id, op, order := "accounts/"+acct.GetAccountId(), asService(t, authz.Operator), asService(t, "order")

	_, err := e.client.GetAccount(op, &paymentv1.GetAccountRequest{AccountId: "missing"})
	checkError(t, err, codes.NotFound, ReasonAccountNotFound, Domain)
	if diff := cmp.Diff(&errdetails.ResourceInfo{ResourceType: ResourceAccount, ResourceName: "accounts/missing"},
		status.ResourceInfo(err), protocmp.Transform()); diff != "" {
		t.Errorf("ResourceInfo (-want +got):\n%s", diff)
	}

	_, err = e.client.GetAccount(op, &paymentv1.GetAccountRequest{OwnerId: "errors", CurrencyCode: "EUR"})
	checkError(t, err, codes.NotFound, ReasonAccountNotFound, Domain)
	if diff := cmp.Diff(&errdetails.ResourceInfo{ResourceType: ResourceAccount, Owner: "errors", Description: "no EUR account"},
		status.ResourceInfo(err), protocmp.Transform()); diff != "" {
		t.Errorf("ResourceInfo (-want +got):\n%s", diff)
	}

	_, err = e.client.Void(order, &paymentv1.VoidRequest{IdempotencyKey: e.key(), AuthorizationId: "missing"})
	checkError(t, err, codes.NotFound, ReasonAuthorizationNotFound, Domain)
	if got := status.ResourceInfo(err).GetResourceName(); got != "authorizations/missing" {
		t.Errorf("ResourceInfo name = %q, want authorizations/missing", got)
	}

	_, err = e.client.OpenAccount(asService(t, "identity"), &paymentv1.OpenAccountRequest{IdempotencyKey: e.key(), OwnerId: "errors", CurrencyCode: "USD"})
	checkError(t, err, codes.AlreadyExists, ReasonAccountExists, Domain)
	if diff := cmp.Diff(&errdetails.ResourceInfo{ResourceType: ResourceAccount, ResourceName: id, Owner: "errors", Description: "the owner's USD account"},
		status.ResourceInfo(err), protocmp.Transform()); diff != "" {
		t.Errorf("ResourceInfo (-want +got):\n%s", diff)
	}

	_, err = e.client.Authorize(order, &paymentv1.AuthorizeRequest{IdempotencyKey: e.key(), AccountId: acct.GetAccountId(),
		Amount: &typev1.Money{AmountMinor: 1, CurrencyCode: "EUR"}})
	checkError(t, err, codes.InvalidArgument, ReasonCurrencyMismatch, Domain)
	if got := badFields(err); !cmp.Equal(got, []string{"amount.currency_code"}) {
		t.Errorf("BadRequest fields = %v, want [amount.currency_code]", got)
	}

	_, err = e.client.Capture(order, &paymentv1.CaptureRequest{IdempotencyKey: e.key(), AuthorizationId: auth.GetAuthorizationId(),
		Amount: &typev1.Money{AmountMinor: 1, CurrencyCode: "EUR"}})
	checkError(t, err, codes.InvalidArgument, ReasonCurrencyMismatch, Domain)

	_, err = e.client.Capture(order, &paymentv1.CaptureRequest{IdempotencyKey: e.key(), AuthorizationId: auth.GetAuthorizationId(), Amount: usd(51)})
	checkError(t, err, codes.FailedPrecondition, ReasonAmountExceeded, Domain)
	checkViolation(t, err, ViolationAmount, "authorizations/"+auth.GetAuthorizationId())

	house := SystemAccountID(KindHouse, "USD")
	_, err = e.client.Authorize(order, &paymentv1.AuthorizeRequest{IdempotencyKey: e.key(), AccountId: house, Amount: usd(1)})
	checkError(t, err, codes.FailedPrecondition, ReasonSystemAccount, Domain)
	checkViolation(t, err, ViolationAccountKind, "accounts/"+house)

	_, err = e.client.Authorize(order, &paymentv1.AuthorizeRequest{IdempotencyKey: e.key(), AccountId: acct.GetAccountId(), Amount: usd(51)})
	checkError(t, err, codes.FailedPrecondition, ReasonInsufficientFunds, Domain)
	checkViolation(t, err, ViolationFunds, id)
	if got := grpcstatus.Convert(err).Message(); got != "requested 51, available 50" {
		t.Errorf("message = %q, want %q", got, "requested 51, available 50")
	}
}

func testOpenAndGetAccount(t *testing.T, e *env) {
	resp, err := e.client.OpenAccount(asService(t, "identity"),
		&paymentv1.OpenAccountRequest{IdempotencyKey: "k", OwnerId: "carol", CurrencyCode: "CHF", OpeningCredit: &typev1.Money{AmountMinor: 2500, CurrencyCode: "CHF"}})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetAccount()
	chf := func(n int64) *typev1.Money { return &typev1.Money{AmountMinor: n, CurrencyCode: "CHF"} }
	want := &paymentv1.Account{AccountId: got.GetAccountId(), OwnerId: "carol", Balance: chf(2500), Held: chf(0), Available: chf(2500), CreateTime: got.GetCreateTime()}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("OpenAccount (-want +got):\n%s", diff)
	}
	if got.GetAccountId() == "" || got.GetCreateTime().AsTime().IsZero() {
		t.Errorf("OpenAccount = %v, want an id and a create time", got)
	}
	for _, req := range []*paymentv1.GetAccountRequest{
		{AccountId: got.GetAccountId()},
		{OwnerId: "carol", CurrencyCode: "CHF"},
	} {
		resp, err := e.client.GetAccount(asUser(t, "gateway", "carol"), req)
		if err != nil {
			t.Fatalf("GetAccount(%v) = %v", req, err)
		}
		if diff := cmp.Diff(want, resp.GetAccount(), protocmp.Transform()); diff != "" {
			t.Errorf("GetAccount(%v) (-want +got):\n%s", req, diff)
		}
	}
	house, err := e.client.GetAccount(asService(t, authz.Operator), &paymentv1.GetAccountRequest{OwnerId: "system:house", CurrencyCode: "CHF"})
	// carol's is the suite's only CHF account.
	if err != nil || house.GetAccount().GetBalance().GetAmountMinor() != -2500 {
		t.Errorf("house account = %v, %v, want a balance of -2500", house, err)
	}
}

func TestOpenForUser(t *testing.T) {
	db := sqltest.New(t, sqldb.SQLite, nil, "")
	e := newEnv(t, db, Config{SignupCurrency: "EUR", SignupCredit: 700})
	ctx := t.Context()

	first, err := e.svc.OpenForUser(ctx, "dave", "USD", 2500)
	if err != nil {
		t.Fatal(err)
	}
	checkBalances(t, first, 2500, 0)
	for _, credit := range []int64{2500, 9999} {
		again, err := e.svc.OpenForUser(ctx, "dave", "USD", credit)
		if err != nil || !cmp.Equal(first, again, protocmp.Transform()) {
			t.Errorf("OpenForUser again with credit %d = %v, %v, want %v", credit, again, err, first)
		}
	}
	if n := ledgerLen(t, e, first.GetAccountId()); n != 1 {
		t.Errorf("ledger has %d entries, want the opening credit once", n)
	}

	// An account opened over the API first is returned as it is.
	opened := e.open(t, "erin", 10)
	got, err := e.svc.OpenForUser(ctx, "erin", "USD", 500)
	if err != nil || got.GetAccountId() != opened.GetAccountId() || got.GetBalance().GetAmountMinor() != 10 {
		t.Errorf("OpenForUser of an existing account = %v, %v, want %v", got, err, opened)
	}

	signup, err := e.svc.OpenSignupAccount(ctx, "fay")
	if err != nil || signup.GetBalance().GetCurrencyCode() != "EUR" || signup.GetBalance().GetAmountMinor() != 700 {
		t.Errorf("OpenSignupAccount = %v, %v, want 700 EUR", signup, err)
	}

	long := strings.Repeat("u", MaxIDLen)
	if a, err := e.svc.OpenForUser(ctx, long, "USD", 0); err != nil || a.GetOwnerId() != long {
		t.Errorf("OpenForUser(a %d-character id) = %v, %v, want an account", MaxIDLen, a, err)
	}
	for _, bad := range []struct{ user, currency string }{{"", "USD"}, {"gus", "usd"}, {"system:house", "USD"}, {long + "u", "USD"}} {
		_, err := e.svc.OpenForUser(ctx, bad.user, bad.currency, 1)
		checkError(t, err, codes.InvalidArgument, validate.Reason, status.KitDomain)
	}
	checkLedger(t, db)
}

// idempotencyKeys returns the stored idempotency keys, sorted.
func idempotencyKeys(t *testing.T, db *sqldb.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT idem_key FROM idempotency ORDER BY idem_key`)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestPruneIdempotencyKeys(t *testing.T) {
	db := sqltest.New(t, sqldb.SQLite, nil, "")
	e := newEnv(t, db, Config{IdempotencyRetention: time.Hour, PruneInterval: time.Second})
	e.open(t, "henry", 10)
	e.open(t, "iris", 10)
	old := sqldb.Micros(time.Now().Add(-2 * time.Hour))
	if _, err := db.ExecContext(t.Context(), `UPDATE idempotency SET created_us = $1 WHERE idem_key = 'key-1'`, old); err != nil {
		t.Fatal(err)
	}
	// The loop deletes the old key and keeps the recent one.
	deadline := time.Now().Add(5 * time.Second)
	for {
		keys := idempotencyKeys(t, db)
		if cmp.Equal(keys, []string{"key-2"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idempotency keys = %v, want [key-2] once pruned", keys)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.svc.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := e.svc.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestConfig(t *testing.T) {
	got, err := Config{}.withDefaults()
	want := Config{
		SignupCurrency: DefaultSignupCurrency, SignupCredit: DefaultSignupCredit,
		IdempotencyRetention: DefaultIdempotencyRetention, PruneInterval: DefaultPruneInterval,
		MaxPagesPerStream: DefaultMaxPagesPerStream,
	}
	if err != nil || got != want {
		t.Errorf("Config{}.withDefaults() = %+v, %v, want %+v", got, err, want)
	}
	bad := []Config{
		{SignupCurrency: "usd"},
		{SignupCredit: MaxAmount + 1},
		{IdempotencyRetention: time.Second},
		{PruneInterval: time.Millisecond},
		{MaxPagesPerStream: -1},
		{MaxPagesPerStream: 100_001},
	}
	for _, c := range bad {
		if _, err := Open(t.Context(), nil, c, nil); err == nil {
			t.Errorf("Open(%+v) succeeded, want an error", c)
		}
	}
}
