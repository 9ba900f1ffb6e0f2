package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver for the admin connection
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/internal/system"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	hotItem       = "sku-hot"
	hotPrice      = 100 // USD cents
	openingCredit = 1_000_000
	password      = "correct horse battery"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testConfig is a run on free ports, with no rate limit worth the name and
// a carrier that does not move during a test.
func testConfig(dir string) system.Config {
	return system.Config{
		DataDir:         dir,
		Host:            "127.0.0.1",
		BasePort:        0, // every service on a free port
		Drain:           10 * time.Millisecond,
		ShutdownTimeout: 10 * time.Second,
		CarrierStep:     time.Hour,
		SignupCredit:    openingCredit,
		Limits:          ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1e6, Burst: 1e6}},
		Logger:          slog.New(slog.DiscardHandler),
		Out:             &syncBuffer{},
	}
}

// shop is a running system and the operator's clients of it.
type shop struct {
	id     identityv1.IdentityServiceClient
	inv    inventoryv1.InventoryServiceClient
	pay    paymentv1.PaymentServiceClient
	orders orderv1.OrderServiceClient
	// auditConn reaches the audit service as the operator.
	auditConn *grpc.ClientConn
	// gatewayURL is the gateway's, when the run has one.
	gatewayURL string
}

// start runs every service until the test ends, and dials them as the
// operator.
func start(t *testing.T, cfg system.Config) *shop {
	t.Helper()
	s, stop := launch(t, cfg)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return s
}

// stock records the hot item with quantity units, as the operator.
func (s *shop) stock(ctx context.Context, t *testing.T, quantity int64) {
	t.Helper()
	stream, err := s.inv.RecordItems(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&inventoryv1.RecordItemsRequest{
		ItemId: hotItem, Name: "Hot item", Description: "Everyone wants one",
		Price:    &typev1.Money{AmountMinor: hotPrice, CurrencyCode: "USD"},
		Quantity: quantity,
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRejected() != 0 || resp.GetCreated()+resp.GetUpdated() != 1 {
		t.Fatalf("RecordItems = %v, want the item recorded", resp)
	}
}

// user is a registered, signed-in user with a payment account.
type user struct {
	id  string
	ctx context.Context // carries the user's access token
}

// users registers n users, signs each in and opens each an account with
// the opening credit, as the operator.
func (s *shop) users(ctx context.Context, t *testing.T, n int) []user {
	t.Helper()
	us := make([]user, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4) // argon2id takes 64 MiB a hash
	for i := range us {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			us[i], errs[i] = s.user(ctx, i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return us
}

func (s *shop) user(ctx context.Context, i int) (user, error) {
	email := fmt.Sprintf("user%d@example.com", i)
	reg, err := s.id.Register(ctx, &identityv1.RegisterRequest{Email: email, Password: password, DisplayName: fmt.Sprintf("User %d", i)})
	if err != nil {
		return user{}, fmt.Errorf("register %s: %w", email, err)
	}
	login, err := s.id.Login(ctx, &identityv1.LoginRequest{Email: email, Password: password})
	if err != nil {
		return user{}, fmt.Errorf("login %s: %w", email, err)
	}
	uid := reg.GetUser().GetUserId()
	// Payment opens the account when UserRegistered reaches it.
	for {
		_, err := s.pay.GetAccount(ctx, &paymentv1.GetAccountRequest{OwnerId: uid, CurrencyCode: "USD"})
		if err == nil {
			break
		}
		if grpcstatus.Code(err) != codes.NotFound {
			return user{}, fmt.Errorf("account of %s: %w", email, err)
		}
		select {
		case <-ctx.Done():
			return user{}, fmt.Errorf("account of %s never opened: %w", email, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return user{
		id: uid,
		// Without the test's cancellation: the context outlives this call.
		ctx: metadata.AppendToOutgoingContext(context.WithoutCancel(ctx), "authorization", "Bearer "+login.GetAccessToken()),
	}, nil
}

func (s *shop) balance(ctx context.Context, t *testing.T, u user) *paymentv1.Account {
	t.Helper()
	resp, err := s.pay.GetAccount(ctx, &paymentv1.GetAccountRequest{OwnerId: u.id, CurrencyCode: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetAccount()
}

func (s *shop) hotItem(ctx context.Context, t *testing.T) *inventoryv1.Item {
	t.Helper()
	resp, err := s.inv.GetItem(ctx, &inventoryv1.GetItemRequest{ItemId: hotItem})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetItem()
}

func placeRequest(key string) *orderv1.PlaceOrderRequest {
	return &orderv1.PlaceOrderRequest{
		IdempotencyKey: key,
		Lines:          []*orderv1.OrderLine{{ItemId: hotItem, Quantity: 1}},
		ShippingAddress: &typev1.PostalAddress{
			Recipient: "Bo", Line1: "1 Main St", City: "Springfield", PostalCode: "12345", CountryCode: "US",
		},
	}
}

// postgres gives every service a fresh PostgreSQL database of its own,
// dropped when the test ends; it skips the test when PostgreSQL cannot be
// reached (fails it under CI=true).
func postgres(t *testing.T) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := sql.Open("pgx", sqltest.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close() }()
	if err := admin.PingContext(ctx); err != nil {
		sqltest.Unavailable(t, "PostgreSQL", err)
	}
	base, err := url.Parse(sqltest.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	dbs := map[string]string{}
	for _, svc := range []string{"identity", "inventory", "payment", "order", "shipping"} {
		name := "sbe2e_" + svc + "_" + suffix
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			t.Fatal(err)
		}
		// Registered before the run's cleanup, so it runs after the run
		// has stopped.
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, err := sql.Open("pgx", sqltest.AdminDSN())
			if err != nil {
				return
			}
			defer func() { _ = a.Close() }()
			if _, err := a.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				t.Logf("drop %s: %v", name, err)
			}
		})
		u := *base
		u.Path = "/" + name
		dbs[svc] = u.String()
	}
	return dbs
}

// Orders for the oversold item: calls fired, users placing them, calls in
// flight at once, and stock. Ten calls for every unit. Calls in flight are
// bounded: under -race on two cores, 64 sagas at once queue behind each
// other's step timeouts and retries past the calls' 60 s deadlines, while
// 16 settle every call in time.
const (
	orderCalls = 1000
	buyers     = 8
	inFlight   = 16
	hotStock   = 100
)

// outcome is what one PlaceOrder call returned.
type outcome struct {
	user  int
	order *orderv1.Order
	err   error
}

// Many more buyers than units: the saga must confirm exactly as many
// orders as there are units, charge exactly those, and leave nothing
// reserved or held.
func TestConcurrentOrdersNeverOversell(t *testing.T) {
	engines := []struct {
		name string
		cfg  func(t *testing.T) system.Config
	}{
		{"sqlite", func(t *testing.T) system.Config { return testConfig(t.TempDir()) }},
		{"postgres", func(t *testing.T) system.Config {
			cfg := testConfig(t.TempDir())
			cfg.Databases = postgres(t)
			return cfg
		}},
	}
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			neverOversell(t, e.cfg(t))
		})
	}
}

func neverOversell(t *testing.T, cfg system.Config) {
	s := start(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	s.stock(ctx, t, hotStock)
	us := s.users(ctx, t, buyers)

	began := time.Now()
	outcomes := make([]outcome, orderCalls)
	var wg sync.WaitGroup
	sem := make(chan struct{}, inFlight)
	for i := range outcomes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			u := i % len(us)
			callCtx, cancel := context.WithTimeout(us[u].ctx, 60*time.Second)
			defer cancel()
			resp, err := s.orders.PlaceOrder(callCtx, placeRequest(fmt.Sprintf("order-%d", i)))
			outcomes[i] = outcome{user: u, order: resp.GetOrder(), err: err}
		})
	}
	wg.Wait()
	t.Logf("%d PlaceOrder calls, %d in flight, took %s", orderCalls, inFlight, time.Since(began))

	confirmed := make([]int64, len(us))
	var nConfirmed, nCancelled, nRefused int
	ids := map[string]bool{}
	reasons := map[string]int{}
	for i, o := range outcomes {
		if o.err != nil {
			if grpcstatus.Code(o.err) != codes.FailedPrecondition || status.PreconditionFailure(o.err) == nil {
				t.Errorf("call %d: PlaceOrder = %v, want an order or FAILED_PRECONDITION with a PreconditionFailure", i, o.err)
				continue
			}
			nRefused++
			continue
		}
		if ids[o.order.GetOrderId()] {
			t.Errorf("call %d: order id %s returned twice for different keys", i, o.order.GetOrderId())
		}
		ids[o.order.GetOrderId()] = true
		switch o.order.GetStatus() {
		case orderv1.OrderStatus_ORDER_STATUS_CONFIRMED, orderv1.OrderStatus_ORDER_STATUS_SHIPPED:
			// Confirmed; the carrier may already have picked the parcel up
			// (pickup follows confirmation at once), but it moves no
			// further within the test (CarrierStep is an hour).
			nConfirmed++
			confirmed[o.user]++
		case orderv1.OrderStatus_ORDER_STATUS_CANCELLED:
			nCancelled++
			reasons[o.order.GetCancelReason()]++
			if o.order.GetCancelReason() == "" {
				t.Errorf("call %d: order %s cancelled without a reason", i, o.order.GetOrderId())
			}
		default:
			t.Errorf("call %d: order %s is %v, want CONFIRMED or CANCELLED", i, o.order.GetOrderId(), o.order.GetStatus())
		}
	}
	t.Logf("confirmed %d, cancelled %d %v, refused %d", nConfirmed, nCancelled, reasons, nRefused)
	if nConfirmed != hotStock {
		t.Errorf("confirmed %d orders, want exactly %d (the stock)", nConfirmed, hotStock)
	}

	item := s.hotItem(ctx, t)
	if item.GetAvailable() != 0 || item.GetOnHand() != 0 || item.GetReserved() != 0 {
		t.Errorf("%s after the rush: on hand %d, reserved %d, available %d; want all 0 (every unit committed)",
			hotItem, item.GetOnHand(), item.GetReserved(), item.GetAvailable())
	}

	var moved int64
	for i, u := range us {
		acct := s.balance(ctx, t, u)
		got := acct.GetBalance().GetAmountMinor()
		if want := openingCredit - hotPrice*confirmed[i]; got != want {
			t.Errorf("user %d: balance %d, want %d (%d confirmed orders)", i, got, want, confirmed[i])
		}
		if got < 0 {
			t.Errorf("user %d: negative balance %d", i, got)
		}
		if held := acct.GetHeld().GetAmountMinor(); held != 0 {
			t.Errorf("user %d: %d still held after every order settled", i, held)
		}
		moved += openingCredit - got
	}
	if want := int64(hotPrice * hotStock); moved != want {
		t.Errorf("money moved out of users' accounts = %d, want %d", moved, want)
	}
}

// A client that retries PlaceOrder with the same key, even all at once,
// gets the one order, placed once.
func TestPlaceOrderRetriedWithSameKeyReturnsSameOrder(t *testing.T) {
	s := start(t, testConfig(t.TempDir()))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s.stock(ctx, t, 10)
	u := s.users(ctx, t, 1)[0]

	const retries = 10
	ids := make([]string, retries+1)
	errs := make([]error, retries+1)
	place := func(i int) {
		callCtx, cancel := context.WithTimeout(u.ctx, 60*time.Second)
		defer cancel()
		resp, err := s.orders.PlaceOrder(callCtx, placeRequest("the-one-order"))
		if st := resp.GetOrder().GetStatus(); err == nil &&
			st != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED && st != orderv1.OrderStatus_ORDER_STATUS_SHIPPED {
			err = fmt.Errorf("order %s is %v (%s), want CONFIRMED (or SHIPPED: picked up since)", resp.GetOrder().GetOrderId(),
				resp.GetOrder().GetStatus(), resp.GetOrder().GetCancelReason())
		}
		ids[i], errs[i] = resp.GetOrder().GetOrderId(), err
	}
	var wg sync.WaitGroup
	for i := range retries {
		wg.Go(func() { place(i) })
	}
	wg.Wait()
	place(retries) // once more, after the order settled
	for i := range ids {
		if errs[i] != nil {
			t.Errorf("call %d: %v", i, errs[i])
		}
		if ids[i] == "" || ids[i] != ids[0] {
			t.Errorf("call %d returned order %q, want %q like the first", i, ids[i], ids[0])
		}
	}

	if item := s.hotItem(ctx, t); item.GetOnHand() != 9 || item.GetReserved() != 0 || item.GetAvailable() != 9 {
		t.Errorf("%s: on hand %d, reserved %d, available %d; want 9, 0, 9 (one unit sold)",
			hotItem, item.GetOnHand(), item.GetReserved(), item.GetAvailable())
	}
	acct := s.balance(ctx, t, u)
	if got, want := acct.GetBalance().GetAmountMinor(), int64(openingCredit-hotPrice); got != want {
		t.Errorf("balance %d, want %d (charged once)", got, want)
	}
	if held := acct.GetHeld().GetAmountMinor(); held != 0 {
		t.Errorf("%d still held", held)
	}
}
