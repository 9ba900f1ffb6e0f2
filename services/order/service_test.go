package order

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/internal/servicetest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// fixture is the order service on a fresh SQLite database, served by the
// kit's server over loopback, with fakes of the services it calls.
type fixture struct {
	t      *testing.T
	db     *sqldb.DB
	fakes  *fakes
	svc    *Service
	client orderv1.OrderServiceClient

	mu        sync.Mutex
	confirmed []string // OnConfirmed calls: "<order id> <shipment id>"
}

// testConfig is the configuration tests start from: fast backoff, short
// leases and a quick recovery loop.
func (f *fixture) testConfig() Config {
	return Config{
		Inventory:         inventoryv1.NewInventoryServiceClient(f.fakes.conn),
		Payment:           paymentv1.NewPaymentServiceClient(f.fakes.conn),
		Shipping:          shippingv1.NewShippingServiceClient(f.fakes.conn),
		StepTimeout:       2 * time.Second,
		MaxAttempts:       4,
		BackoffBase:       time.Millisecond,
		BackoffMax:        5 * time.Millisecond,
		LeaseTTL:          2 * time.Second,
		RecoveryInterval:  20 * time.Millisecond,
		RetryLater:        50 * time.Millisecond,
		WatchPollInterval: 100 * time.Millisecond,
		OnConfirmed: func(_ context.Context, orderID, shipmentID string) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.confirmed = append(f.confirmed, orderID+" "+shipmentID)
		},
	}
}

func newFixture(t *testing.T, configure ...func(*Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, db: sqltest.New(t, sqldb.SQLite, nil, ""), fakes: startFakes(t)}
	cfg := f.testConfig()
	for _, c := range configure {
		c(&cfg)
	}
	f.svc, f.client = f.serve(cfg)
	return f
}

// serve opens a Service on the fixture's database and serves it; both are
// stopped at the end of the test.
func (f *fixture) serve(cfg Config) (*Service, orderv1.OrderServiceClient) {
	t := f.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	svc, err := Open(ctx, f.db, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	conn := servicetest.Serve(t, svc.Register, Policy())
	return svc, orderv1.NewOrderServiceClient(conn)
}

// as returns a context for calls by user through the gateway, bounded by
// 10s.
func as(t *testing.T, user string) context.Context {
	return callCtx(t, "gateway", user)
}

// callCtx returns a context, bounded by 10s, of a call made by service (none
// when "") for user (none when ""). Every user is a customer.
func callCtx(t *testing.T, service, user string) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return servicetest.As(ctx, service, user, "customer")
}

var testAddress = &typev1.PostalAddress{
	Recipient: "Ada Lovelace", Line1: "12 St James's Square", City: "London", PostalCode: "SW1Y 4JH", CountryCode: "GB",
}

// placeReq asks for lines given as "item", qty, "item", qty...; the client
// prices (1 each) must be ignored.
func placeReq(key string, lines ...any) *orderv1.PlaceOrderRequest {
	req := &orderv1.PlaceOrderRequest{IdempotencyKey: key, ShippingAddress: testAddress}
	for i := 0; i < len(lines); i += 2 {
		req.Lines = append(req.Lines, &orderv1.OrderLine{
			ItemId: lines[i].(string), Quantity: int64(lines[i+1].(int)),
			UnitPrice: &typev1.Money{AmountMinor: 1, CurrencyCode: "USD"},
		})
	}
	return req
}

func (f *fixture) place(user string, req *orderv1.PlaceOrderRequest) *orderv1.Order {
	f.t.Helper()
	resp, err := f.client.PlaceOrder(as(f.t, user), req)
	if err != nil {
		f.t.Fatalf("PlaceOrder(%s) = %v", req.GetIdempotencyKey(), err)
	}
	return resp.GetOrder()
}

// waitFor polls the order in the database until cond holds, for at most
// 10s, and returns it.
func (f *fixture) waitFor(orderID string, what string, cond func(*Order) bool) *Order {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		o, err := f.svc.store.Order(f.t.Context(), orderID)
		if err == nil && cond(o) {
			return o
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("order %s never became %s; last %+v, %v", orderID, what, o, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// onlyOrder waits, for at most 10s, until user's only order has status
// st, and returns its id.
func (f *fixture) onlyOrder(user string, st orderv1.OrderStatus) string {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		list, err := f.client.ListOrders(as(f.t, user), &orderv1.ListOrdersRequest{})
		if err != nil {
			f.t.Fatal(err)
		}
		if len(list.GetOrders()) == 1 && list.GetOrders()[0].GetStatus() == st {
			return list.GetOrders()[0].GetOrderId()
		}
		time.Sleep(2 * time.Millisecond)
	}
	f.t.Fatalf("%s never had one order in status %v", user, st)
	return ""
}

// eventually waits, for at most 10s, until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// waitDone waits until the order's saga is finished.
func (f *fixture) waitDone(orderID string) *Order {
	f.t.Helper()
	return f.waitFor(orderID, "done", func(o *Order) bool { return o.Phase == PhaseDone })
}

// sagaCalls are the calls of a saga that places an order of two items.
var sagaCalls = []string{
	"inventory.GetItem", "inventory.GetItem", "inventory.Reserve",
	"payment.GetAccount", "payment.Authorize", "shipping.CreateShipment",
	"payment.Capture", "inventory.CommitReservation",
}

// ignoreServerSet ignores the order fields the server makes up.
var ignoreServerSet = protocmp.IgnoreFields(&orderv1.Order{},
	"order_id", "authorization_id", "shipment_id", "create_time", "update_time")

func wantOrder(user string, st orderv1.OrderStatus, reason string) *orderv1.Order {
	usd := func(n int64) *typev1.Money { return &typev1.Money{AmountMinor: n, CurrencyCode: "USD"} }
	return &orderv1.Order{
		UserId: user,
		Lines: []*orderv1.OrderLine{
			{ItemId: "apple", Quantity: 2, UnitPrice: usd(100)},
			{ItemId: "pear", Quantity: 1, UnitPrice: usd(250)},
		},
		Total:           usd(450),
		ShippingAddress: testAddress,
		Status:          st,
		CancelReason:    reason,
	}
}

func TestPlaceOrderConfirms(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	got := f.place("alice", placeReq("k1", "apple", 2, "pear", 1))
	if diff := cmp.Diff(wantOrder("alice", orderv1.OrderStatus_ORDER_STATUS_CONFIRMED, ""), got, protocmp.Transform(), ignoreServerSet); diff != "" {
		t.Errorf("PlaceOrder (-want +got):\n%s", diff)
	}
	if got.GetOrderId() == "" || got.GetAuthorizationId() == "" || got.GetShipmentId() == "" {
		t.Errorf("PlaceOrder ids = %q, %q, %q; want all set", got.GetOrderId(), got.GetAuthorizationId(), got.GetShipmentId())
	}
	f.waitDone(got.GetOrderId())
	if diff := cmp.Diff(sagaCalls, f.fakes.h.log()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	f.mu.Lock()
	if want := []string{got.GetOrderId() + " " + got.GetShipmentId()}; !slices.Equal(f.confirmed, want) {
		t.Errorf("OnConfirmed calls = %v, want %v", f.confirmed, want)
	}
	f.mu.Unlock()
	if balance, held := f.fakes.pay.balances("alice", "USD"); balance != startBalance-450 || held != 0 {
		t.Errorf("alice's balance, held = %d, %d; want %d, 0", balance, held, startBalance-450)
	}
	if onHand, reserved := f.fakes.inv.stock("apple"); onHand != appleStock-2 || reserved != 0 {
		t.Errorf("apple stock = %d on hand, %d reserved; want %d, 0", onHand, reserved, appleStock-2)
	}
	gotGet, err := f.client.GetOrder(as(t, "alice"), &orderv1.GetOrderRequest{OrderId: got.GetOrderId()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, gotGet.GetOrder(), protocmp.Transform(), protocmp.IgnoreFields(&orderv1.Order{}, "update_time")); diff != "" {
		t.Errorf("GetOrder (-PlaceOrder +GetOrder):\n%s", diff)
	}
}

func TestPlaceOrderStepFailuresCompensateInReverse(t *testing.T) {
	t.Parallel()
	prefix := []string{"inventory.GetItem", "inventory.GetItem"}
	tests := []struct {
		name   string
		user   string
		req    *orderv1.PlaceOrderRequest
		faults func(h *harness)
		reason string
		calls  []string // after the pricing calls
		// effects are the distinct payment effects, by operation.
		effects map[string]int
	}{
		{
			name: "unknown item", user: "alice", req: placeReq("k", "apple", 2, "ghost", 1),
			reason: "unknown item: items/ghost",
		},
		{
			name: "mixed currencies", user: "alice", req: placeReq("k", "apple", 2, "cheese", 1),
			reason: "mixed currencies: EUR, USD",
		},
		{
			name: "insufficient stock", user: "alice", req: placeReq("k", "apple", 2, "rare", 2),
			reason: "insufficient stock: items/rare",
			calls:  []string{"inventory.Reserve"},
		},
		{
			name: "no payment account", user: "nobody", req: placeReq("k", "apple", 2, "pear", 1),
			reason: "no payment account in USD",
			calls:  []string{"inventory.Reserve", "payment.GetAccount", "inventory.Release"},
		},
		{
			name: "insufficient funds", user: "poor", req: placeReq("k", "apple", 2, "pear", 1),
			reason: "insufficient funds",
			calls:  []string{"inventory.Reserve", "payment.GetAccount", "payment.Authorize", "inventory.Release"},
		},
		{
			name: "shipment refused", user: "alice", req: placeReq("k", "apple", 2, "pear", 1),
			faults: func(h *harness) { h.fail("shipping.CreateShipment", codes.FailedPrecondition, false, 1) },
			reason: "shipment refused",
			calls: []string{"inventory.Reserve", "payment.GetAccount", "payment.Authorize", "shipping.CreateShipment",
				"payment.Void", "inventory.Release"},
			effects: map[string]int{"authorize": 1, "void": 1},
		},
		{
			// Nothing was sold yet: the hold is voided and the stock comes back.
			name: "capture refused: voided, stock released", user: "alice", req: placeReq("k", "apple", 2, "pear", 1),
			faults: func(h *harness) { h.fail("payment.Capture", codes.FailedPrecondition, false, 1) },
			reason: "payment capture refused",
			calls: []string{"inventory.Reserve", "payment.GetAccount", "payment.Authorize", "shipping.CreateShipment",
				"payment.Capture", "shipping.CancelShipment", "payment.Void", "inventory.Release"},
			effects: map[string]int{"authorize": 1, "void": 1},
		},
		{
			// The money was taken but the stock not sold: the captured
			// payment cannot be voided, so it is refunded, and the stock,
			// still held, comes back.
			name: "commit refused after the capture: refunded, stock released", user: "alice",
			req:    placeReq("k", "apple", 2, "pear", 1),
			faults: func(h *harness) { h.fail("inventory.CommitReservation", codes.FailedPrecondition, false, 1) },
			reason: "stock reservation expired",
			calls: []string{"inventory.Reserve", "payment.GetAccount", "payment.Authorize", "shipping.CreateShipment",
				"payment.Capture", "inventory.CommitReservation", "shipping.CancelShipment", "payment.Void", "payment.Refund",
				"inventory.Release"},
			effects: map[string]int{"authorize": 1, "capture": 1, "refund": 1},
		},
		{
			// Not a business refusal: the reservation may exist, so it is released.
			name: "reserve fails for good", user: "alice", req: placeReq("k", "apple", 2, "pear", 1),
			faults: func(h *harness) { h.fail("inventory.Reserve", codes.Internal, false, 1) },
			reason: "inventory error",
			calls:  []string{"inventory.Reserve", "inventory.Release"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			if tc.faults != nil {
				tc.faults(f.fakes.h)
			}
			got := f.place(tc.user, tc.req)
			if got.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED || got.GetCancelReason() != tc.reason {
				t.Errorf("PlaceOrder = %v %q, want CANCELLED %q", got.GetStatus(), got.GetCancelReason(), tc.reason)
			}
			f.waitDone(got.GetOrderId())
			if diff := cmp.Diff(append(prefix, tc.calls...), f.fakes.h.log()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.effects, f.fakes.pay.effectsOf(got.GetOrderId()), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("payment effects (-want +got):\n%s", diff)
			}
			f.checkNothingLeaked(got.GetOrderId(), tc.user)
		})
	}
}

// checkNothingLeaked checks that a cancelled order holds no stock, sold
// none, holds and took no money, and has no live shipment: stock and money
// are conserved.
func (f *fixture) checkNothingLeaked(orderID, user string) {
	f.t.Helper()
	if st := f.fakes.inv.reservation(orderID); st != inventoryv1.ReservationStatus_RESERVATION_STATUS_UNSPECIFIED &&
		st != inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED {
		f.t.Errorf("reservation of %s is %v, want none or released", orderID, st)
	}
	for item, start := range startStock {
		if onHand, reserved := f.fakes.inv.stock(item); onHand != start || reserved != 0 {
			f.t.Errorf("%s: %d on hand, %d reserved; want %d, 0", item, onHand, reserved, start)
		}
	}
	for _, st := range f.fakes.pay.authsOf(orderID) {
		if st == paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED ||
			st == paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED {
			f.t.Errorf("authorization of %s is %v, want voided or refunded", orderID, st)
		}
	}
	if _, ok := f.fakes.pay.accounts[user+"/USD"]; ok {
		want := int64(startBalance)
		if user == "poor" {
			want = 10
		}
		if balance, held := f.fakes.pay.balances(user, "USD"); balance != want || held != 0 {
			f.t.Errorf("%s's balance, held = %d, %d; want %d, 0", user, balance, held, want)
		}
	}
	if st := f.fakes.ship.shipment(orderID); st != shippingv1.ShipmentStatus_SHIPMENT_STATUS_UNSPECIFIED &&
		st != shippingv1.ShipmentStatus_SHIPMENT_STATUS_CANCELLED {
		f.t.Errorf("shipment of %s is %v, want none or cancelled", orderID, st)
	}
}

func TestPlaceOrderTransientFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		faults func(h *harness)
		status orderv1.OrderStatus
		reason string
		calls  []string
		// effects are the distinct payment effects, by operation.
		effects map[string]int
	}{
		{
			name:    "reserve unavailable twice, then reserved",
			faults:  func(h *harness) { h.fail("inventory.Reserve", codes.Unavailable, false, 2) },
			status:  orderv1.OrderStatus_ORDER_STATUS_CONFIRMED,
			calls:   slices.Insert(slices.Clone(sagaCalls), 2, "inventory.Reserve", "inventory.Reserve"),
			effects: map[string]int{"authorize": 1, "capture": 1},
		},
		{
			name:    "authorize answer lost once: retried with the same key, charged once",
			faults:  func(h *harness) { h.fail("payment.Authorize", codes.Unavailable, true, 1) },
			status:  orderv1.OrderStatus_ORDER_STATUS_CONFIRMED,
			calls:   slices.Insert(slices.Clone(sagaCalls), 4, "payment.Authorize"),
			effects: map[string]int{"authorize": 1, "capture": 1},
		},
		{
			name:    "capture deadline exceeded, then captured",
			faults:  func(h *harness) { h.fail("payment.Capture", codes.DeadlineExceeded, false, 3) },
			status:  orderv1.OrderStatus_ORDER_STATUS_CONFIRMED,
			calls:   slices.Insert(slices.Clone(sagaCalls), 6, "payment.Capture", "payment.Capture", "payment.Capture"),
			effects: map[string]int{"authorize": 1, "capture": 1},
		},
		{
			name:    "commit unavailable, then committed",
			faults:  func(h *harness) { h.fail("inventory.CommitReservation", codes.Unavailable, false, 3) },
			status:  orderv1.OrderStatus_ORDER_STATUS_CONFIRMED,
			calls:   append(slices.Clone(sagaCalls), "inventory.CommitReservation", "inventory.CommitReservation", "inventory.CommitReservation"),
			effects: map[string]int{"authorize": 1, "capture": 1},
		},
		{
			// Payment shutting down: nothing is sold yet, so the hold is
			// voided and the stock released.
			name:   "capture unavailable until attempts run out: voided, stock released",
			faults: func(h *harness) { h.fail("payment.Capture", codes.Unavailable, false, 4) },
			status: orderv1.OrderStatus_ORDER_STATUS_CANCELLED, reason: "payment unavailable",
			calls: append(slices.Clone(sagaCalls[:6]),
				"payment.Capture", "payment.Capture", "payment.Capture", "payment.Capture",
				"shipping.CancelShipment", "payment.Void", "inventory.Release"),
			effects: map[string]int{"authorize": 1, "void": 1},
		},
		{
			// Every capture went through but its answer was lost: the
			// void is refused, so the money is refunded.
			name:   "capture answers lost until attempts run out: refunded, stock released",
			faults: func(h *harness) { h.fail("payment.Capture", codes.Unavailable, true, 4) },
			status: orderv1.OrderStatus_ORDER_STATUS_CANCELLED, reason: "payment unavailable",
			calls: append(slices.Clone(sagaCalls[:6]),
				"payment.Capture", "payment.Capture", "payment.Capture", "payment.Capture",
				"shipping.CancelShipment", "payment.Void", "payment.Refund", "inventory.Release"),
			effects: map[string]int{"authorize": 1, "capture": 1, "refund": 1},
		},
		{
			// Inventory failing after the capture: Release settles that the
			// stock was not sold (and gives it back), then the shipment is
			// cancelled and the captured money refunded. The second Release
			// is the reservation's own compensation, a no-op by then.
			name:   "commit unavailable until attempts run out: refunded, stock released",
			faults: func(h *harness) { h.fail("inventory.CommitReservation", codes.Unavailable, false, 4) },
			status: orderv1.OrderStatus_ORDER_STATUS_CANCELLED, reason: "inventory unavailable",
			calls: append(slices.Clone(sagaCalls[:7]),
				"inventory.CommitReservation", "inventory.CommitReservation", "inventory.CommitReservation",
				"inventory.CommitReservation", "inventory.Release",
				"shipping.CancelShipment", "payment.Void", "payment.Refund", "inventory.Release"),
			effects: map[string]int{"authorize": 1, "capture": 1, "refund": 1},
		},
		{
			// The stock was sold though every answer was lost: Release is
			// refused, which settles that the commit happened, and the
			// order is confirmed rather than cancelled with its stock sold.
			name:   "commit answers lost until attempts run out: confirmed",
			faults: func(h *harness) { h.fail("inventory.CommitReservation", codes.Unavailable, true, 4) },
			status: orderv1.OrderStatus_ORDER_STATUS_CONFIRMED,
			calls: append(slices.Clone(sagaCalls[:7]),
				"inventory.CommitReservation", "inventory.CommitReservation", "inventory.CommitReservation",
				"inventory.CommitReservation", "inventory.Release"),
			effects: map[string]int{"authorize": 1, "capture": 1},
		},
		{
			// Inventory down: neither the commit nor the Release that would
			// settle it answers, so the saga waits at the commit, and
			// recovery repeats it once inventory is back.
			name: "commit and release unavailable: waits, then committed",
			faults: func(h *harness) {
				h.fail("inventory.CommitReservation", codes.Unavailable, false, 4)
				h.fail("inventory.Release", codes.Unavailable, false, 4)
			},
			status: orderv1.OrderStatus_ORDER_STATUS_CONFIRMED,
			calls: append(slices.Clone(sagaCalls[:7]),
				"inventory.CommitReservation", "inventory.CommitReservation", "inventory.CommitReservation",
				"inventory.CommitReservation", "inventory.Release", "inventory.Release", "inventory.Release",
				"inventory.Release", "inventory.CommitReservation"),
			effects: map[string]int{"authorize": 1, "capture": 1},
		},
		{
			// Every answer is lost, so the authorization id is unknown:
			// compensation repeats Authorize with its key to learn it, and
			// voids it.
			name:   "authorize answers lost until attempts run out: compensated",
			faults: func(h *harness) { h.fail("payment.Authorize", codes.Unavailable, true, 4) },
			status: orderv1.OrderStatus_ORDER_STATUS_CANCELLED, reason: "payment unavailable",
			calls: []string{"inventory.GetItem", "inventory.GetItem", "inventory.Reserve", "payment.GetAccount",
				"payment.Authorize", "payment.Authorize", "payment.Authorize", "payment.Authorize",
				"payment.Authorize", "payment.Void", "inventory.Release"},
			effects: map[string]int{"authorize": 1, "void": 1},
		},
		{
			name:   "shipping unavailable until attempts run out: compensated",
			faults: func(h *harness) { h.fail("shipping.CreateShipment", codes.Unavailable, false, 4) },
			status: orderv1.OrderStatus_ORDER_STATUS_CANCELLED, reason: "shipping unavailable",
			calls: []string{"inventory.GetItem", "inventory.GetItem", "inventory.Reserve", "payment.GetAccount",
				"payment.Authorize", "shipping.CreateShipment", "shipping.CreateShipment", "shipping.CreateShipment",
				"shipping.CreateShipment", "shipping.CreateShipment", "shipping.CancelShipment",
				"payment.Void", "inventory.Release"},
			effects: map[string]int{"authorize": 1, "void": 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			tc.faults(f.fakes.h)
			got := f.place("alice", placeReq("k", "apple", 2, "pear", 1))
			if got.GetStatus() != tc.status || got.GetCancelReason() != tc.reason {
				t.Errorf("PlaceOrder = %v %q, want %v %q", got.GetStatus(), got.GetCancelReason(), tc.status, tc.reason)
			}
			f.waitDone(got.GetOrderId())
			if diff := cmp.Diff(tc.calls, f.fakes.h.log()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.effects, f.fakes.pay.effectsOf(got.GetOrderId())); diff != "" {
				t.Errorf("payment effects (-want +got):\n%s", diff)
			}
			if tc.status == orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
				f.checkNothingLeaked(got.GetOrderId(), "alice")
			} else {
				f.checkSold(got.GetOrderId())
			}
		})
	}
}

// checkSold checks that a confirmed order of two apples and a pear sold
// exactly that stock and took exactly its total from alice.
func (f *fixture) checkSold(orderID string) {
	f.t.Helper()
	if balance, held := f.fakes.pay.balances("alice", "USD"); balance != startBalance-450 || held != 0 {
		f.t.Errorf("alice's balance, held = %d, %d; want %d, 0: charged once", balance, held, startBalance-450)
	}
	if st := f.fakes.pay.authsOf(orderID); !slices.Equal(st, []paymentv1.AuthorizationStatus{paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED}) {
		f.t.Errorf("authorizations of %s = %v, want one CAPTURED", orderID, st)
	}
	if st := f.fakes.inv.reservation(orderID); st != inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED {
		f.t.Errorf("reservation of %s is %v, want COMMITTED", orderID, st)
	}
	for item, sold := range map[string]int64{"apple": 2, "pear": 1} {
		if onHand, reserved := f.fakes.inv.stock(item); onHand != startStock[item]-sold || reserved != 0 {
			f.t.Errorf("%s: %d on hand, %d reserved; want %d, 0", item, onHand, reserved, startStock[item]-sold)
		}
	}
}

func TestSagaResumesAfterCrash(t *testing.T) {
	t.Parallel()
	points := []Point{
		{Phase: PhaseForward, Step: StepPrice},
		{Phase: PhaseForward, Step: StepPrice, Done: true},
		{Phase: PhaseForward, Step: StepReserve},
		{Phase: PhaseForward, Step: StepReserve, Done: true},
		{Phase: PhaseForward, Step: StepAuthorize},
		{Phase: PhaseForward, Step: StepAuthorize, Done: true},
		{Phase: PhaseForward, Step: StepShip},
		{Phase: PhaseForward, Step: StepShip, Done: true},
		{Phase: PhaseForward, Step: StepCapture},
		{Phase: PhaseForward, Step: StepCapture, Done: true},
		{Phase: PhaseForward, Step: StepCommit},
		{Phase: PhaseForward, Step: StepCommit, Done: true},
		{Phase: PhaseForward, Step: StepRelease},
	}
	for _, p := range points {
		t.Run(fmt.Sprintf("%s done=%v", p.Step, p.Done), func(t *testing.T) {
			t.Parallel()
			f, orderID := crashAt(t, p, nil)
			o := f.waitDone(orderID)
			if o.Status != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
				t.Fatalf("after restart the order is %v %q, want CONFIRMED", o.Status, o.CancelReason)
			}
			if diff := cmp.Diff(map[string]int{"authorize": 1, "capture": 1}, f.fakes.pay.effectsOf(orderID)); diff != "" {
				t.Errorf("payment effects (-want +got):\n%s", diff)
			}
			f.checkSold(orderID)
			if st := f.fakes.ship.shipment(orderID); st != shippingv1.ShipmentStatus_SHIPMENT_STATUS_CREATED {
				t.Errorf("shipment is %v, want CREATED", st)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.confirmed) == 0 {
				t.Errorf("OnConfirmed was never called")
			}
		})
	}
}

func TestSagaCompensationResumesAfterCrash(t *testing.T) {
	t.Parallel()
	// The commit is refused after the capture: compensation starts at the
	// capture (whose compensation, the refund, runs with the payment's).
	points := []Point{
		{Phase: PhaseCompensate, Step: StepCapture},
		{Phase: PhaseCompensate, Step: StepShip, Done: true},
		{Phase: PhaseCompensate, Step: StepAuthorize},
		{Phase: PhaseCompensate, Step: StepAuthorize, Done: true},
		{Phase: PhaseCompensate, Step: StepReserve, Done: true},
	}
	for _, p := range points {
		t.Run(fmt.Sprintf("%s done=%v", p.Step, p.Done), func(t *testing.T) {
			t.Parallel()
			f, orderID := crashAt(t, p, func(h *harness) {
				h.fail("inventory.CommitReservation", codes.FailedPrecondition, false, 1)
			})
			o := f.waitDone(orderID)
			if o.Status != orderv1.OrderStatus_ORDER_STATUS_CANCELLED || o.CancelReason != "stock reservation expired" {
				t.Fatalf("after restart the order is %v %q, want CANCELLED", o.Status, o.CancelReason)
			}
			if diff := cmp.Diff(map[string]int{"authorize": 1, "capture": 1, "refund": 1}, f.fakes.pay.effectsOf(orderID)); diff != "" {
				t.Errorf("payment effects (-want +got):\n%s", diff)
			}
			f.checkNothingLeaked(orderID, "alice")
			if st := f.fakes.inv.reservation(orderID); st != inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED {
				t.Errorf("reservation is %v, want RELEASED", st)
			}
		})
	}
}

// crashAt places an order on a service that "crashes" at p, closes that
// service, and opens a new one on the same database, which resumes the
// saga once the crashed one's lease expires. It returns the fixture (now
// on the new service) and the order id.
func crashAt(t *testing.T, p Point, faults func(*harness)) (*fixture, string) {
	t.Helper()
	crashed := make(chan struct{})
	var once sync.Once
	f := newFixture(t, func(c *Config) {
		c.LeaseTTL = 100 * time.Millisecond
		c.CrashPoint = func(got Point) bool {
			if got.Phase != p.Phase || got.Step != p.Step || got.Done != p.Done {
				return false
			}
			hit := false
			once.Do(func() { hit = true; close(crashed) })
			return hit
		}
	})
	if faults != nil {
		faults(f.fakes.h)
	}
	placed := make(chan *orderv1.Order, 1)
	go func() {
		resp, err := f.client.PlaceOrder(as(t, "alice"), placeReq("k", "apple", 2, "pear", 1))
		if err != nil {
			t.Errorf("PlaceOrder = %v", err)
		}
		placed <- resp.GetOrder()
	}()
	select {
	case <-crashed:
	case <-time.After(10 * time.Second):
		t.Fatalf("the saga never reached %+v", p)
	}
	if err := f.svc.Close(); err != nil {
		t.Fatal(err)
	}
	o := <-placed
	if o == nil {
		t.FailNow()
	}
	// The crashed replica keeps its lease; the new one resumes the saga
	// after it expires.
	cfg := f.testConfig()
	f.svc, f.client = f.serve(cfg)
	return f, o.GetOrderId()
}

func TestCloseHandsTheSagaOverAtOnce(t *testing.T) {
	t.Parallel()
	// The first replica's lease would last a minute: only Close releasing
	// it lets the second replica resume the saga in time.
	f := newFixture(t, func(c *Config) { c.LeaseTTL = time.Minute })
	open := f.fakes.h.gate("inventory.Reserve")
	placed := make(chan *orderv1.Order, 1)
	go func() {
		resp, err := f.client.PlaceOrder(as(t, "alice"), placeReq("k", "apple", 2, "pear", 1))
		if err != nil {
			t.Errorf("PlaceOrder = %v", err)
		}
		placed <- resp.GetOrder()
	}()
	orderID := f.onlyOrder("alice", orderv1.OrderStatus_ORDER_STATUS_PENDING)
	eventually(t, "Reserve is called", func() bool { return f.fakes.h.count("inventory.Reserve") > 0 })
	if err := f.svc.Close(); err != nil { // cancels the Reserve in flight
		t.Fatal(err)
	}
	if o := <-placed; o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Errorf("PlaceOrder on a closing service = %v, want PENDING", o.GetStatus())
	}
	open()
	f.svc, f.client = f.serve(f.testConfig())
	if o := f.waitDone(orderID); o.Status != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
		t.Errorf("order resumed by the next replica = %v %q, want CONFIRMED", o.Status, o.CancelReason)
	}
}

func TestTwoReplicasResumeACrashedSagaOnce(t *testing.T) {
	t.Parallel()
	f, orderID := crashAt(t, Point{Phase: PhaseForward, Step: StepAuthorize}, nil)
	// A third replica on the same database competes for the saga.
	f.serve(f.testConfig())
	f.waitDone(orderID)
	for _, m := range []string{"inventory.Reserve", "payment.GetAccount", "payment.Authorize",
		"shipping.CreateShipment", "payment.Capture", "inventory.CommitReservation"} {
		if n := f.fakes.h.count(m); n != 1 {
			t.Errorf("%s was called %d times, want 1: one replica drives the saga", m, n)
		}
	}
}

func TestPlaceOrderIsIdempotent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	first := f.place("alice", placeReq("k1", "apple", 2, "pear", 1))
	again := f.place("alice", placeReq("k1", "apple", 2, "pear", 1))
	if diff := cmp.Diff(first, again, protocmp.Transform()); diff != "" {
		t.Errorf("PlaceOrder with the same key (-first +again):\n%s", diff)
	}
	if n := f.fakes.h.count("inventory.Reserve"); n != 1 {
		t.Errorf("inventory.Reserve called %d times, want 1", n)
	}
	bobs := f.place("bob", placeReq("k1", "apple", 2, "pear", 1))
	if bobs.GetOrderId() == first.GetOrderId() {
		t.Errorf("bob's order with alice's key = alice's order %s, want a new one", first.GetOrderId())
	}

	_, err := f.client.PlaceOrder(as(t, "alice"), placeReq("k1", "apple", 3))
	if got := grpcstatus.Code(err); got != codes.AlreadyExists {
		t.Fatalf("PlaceOrder(same key, other lines) code = %v, want AlreadyExists", got)
	}
	if got, want := status.Reason(err), ReasonKeyReused; got != want {
		t.Errorf("reason = %q, want %q", got, want)
	}
	if got := status.ResourceInfo(err).GetResourceName(); got != first.GetOrderId() {
		t.Errorf("ResourceInfo name = %q, want %q", got, first.GetOrderId())
	}
}

func TestPlaceOrderConcurrentDuplicatesRunOneSaga(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const n = 20
	var wg sync.WaitGroup
	orders := make([]*orderv1.Order, n)
	for i := range n {
		wg.Go(func() {
			resp, err := f.client.PlaceOrder(as(t, "alice"), placeReq("dup", "apple", 2, "pear", 1))
			if err != nil {
				t.Errorf("PlaceOrder #%d = %v", i, err)
				return
			}
			orders[i] = resp.GetOrder()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, o := range orders {
		if o.GetOrderId() != orders[0].GetOrderId() || o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
			t.Errorf("PlaceOrder #%d = %s %v, want %s CONFIRMED", i, o.GetOrderId(), o.GetStatus(), orders[0].GetOrderId())
		}
	}
	f.waitDone(orders[0].GetOrderId())
	if diff := cmp.Diff(sagaCalls, f.fakes.h.log()); diff != "" {
		t.Errorf("calls of %d duplicates (-want one saga +got):\n%s", n, diff)
	}
	list, err := f.client.ListOrders(as(t, "alice"), &orderv1.ListOrdersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetOrders()) != 1 {
		t.Errorf("alice has %d orders, want 1", len(list.GetOrders()))
	}
}

func TestConcurrentOrdersNeverOversell(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.fakes.inv.mu.Lock()
	f.fakes.inv.items["limited"] = &fakeItem{price: &typev1.Money{AmountMinor: 10, CurrencyCode: "USD"}, onHand: 3}
	f.fakes.inv.mu.Unlock()
	const n = 10
	var wg sync.WaitGroup
	orders := make([]*orderv1.Order, n)
	for i := range n {
		user := fmt.Sprint("user-", i)
		f.fakes.openAccount(user, 100)
		wg.Go(func() {
			resp, err := f.client.PlaceOrder(as(t, user), placeReq("k", "limited", 1))
			if err != nil {
				t.Errorf("PlaceOrder(%s) = %v", user, err)
				return
			}
			orders[i] = resp.GetOrder()
		})
	}
	wg.Wait()
	confirmed := 0
	for i, o := range orders {
		switch {
		case o.GetStatus() == orderv1.OrderStatus_ORDER_STATUS_CONFIRMED:
			confirmed++
		case o.GetStatus() == orderv1.OrderStatus_ORDER_STATUS_CANCELLED && o.GetCancelReason() == "insufficient stock: items/limited":
			f.waitDone(o.GetOrderId())
			if balance, held := f.fakes.pay.balances(fmt.Sprint("user-", i), "USD"); balance != 100 || held != 0 {
				t.Errorf("user-%d (cancelled): balance, held = %d, %d; want 100, 0", i, balance, held)
			}
		default:
			t.Errorf("order %d = %v %q, want CONFIRMED or CANCELLED for stock", i, o.GetStatus(), o.GetCancelReason())
		}
	}
	if confirmed != 3 {
		t.Errorf("%d orders confirmed for 3 units, want 3", confirmed)
	}
	if onHand, reserved := f.fakes.inv.stock("limited"); onHand != 0 || reserved != 0 {
		t.Errorf("limited stock = %d on hand, %d reserved; want 0, 0", onHand, reserved)
	}
}

func TestPlaceOrderReturnsBeforeDeadlineAndSagaGoesOn(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	open := f.fakes.h.gate("inventory.Reserve")
	ctx, cancel := context.WithTimeout(as(t, "alice"), time.Second)
	defer cancel()
	start := time.Now()
	resp, err := f.client.PlaceOrder(ctx, placeReq("k", "apple", 2, "pear", 1))
	if err != nil {
		t.Fatalf("PlaceOrder = %v, want the pending order", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("PlaceOrder took %v, want under its 1s deadline", took)
	}
	if got := resp.GetOrder().GetStatus(); got != orderv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Errorf("PlaceOrder status = %v, want PENDING", got)
	}
	open()
	o := f.waitDone(resp.GetOrder().GetOrderId())
	if o.Status != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
		t.Errorf("order after the call ended = %v, want CONFIRMED: the saga is not the caller's", o.Status)
	}
}

// recvAll reads a WatchOrder stream to its end.
func recvAll(t *testing.T, stream orderv1.OrderService_WatchOrderClient, n int) ([]orderv1.OrderStatus, *orderv1.Order) {
	t.Helper()
	var got []orderv1.OrderStatus
	var last *orderv1.Order
	for range n {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got, last
		}
		if err != nil {
			t.Fatalf("Recv after %v: %v", got, err)
		}
		got = append(got, resp.GetOrder().GetStatus())
		last = resp.GetOrder()
	}
	return got, last
}

func TestWatchOrderStreamsEveryStatusInOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	open := f.fakes.h.gate("inventory.GetItem")
	placed := make(chan *orderv1.Order, 1)
	go func() {
		resp, err := f.client.PlaceOrder(as(t, "alice"), placeReq("k", "apple", 2, "pear", 1))
		if err != nil {
			t.Errorf("PlaceOrder = %v", err)
		}
		placed <- resp.GetOrder()
	}()
	orderID := f.onlyOrder("alice", orderv1.OrderStatus_ORDER_STATUS_PENDING)
	stream, err := f.client.WatchOrder(as(t, "alice"), &orderv1.WatchOrderRequest{OrderId: orderID})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := first.GetOrder().GetStatus(); got != orderv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Fatalf("first WatchOrder message = %v, want PENDING", got)
	}
	open()
	got, last := recvAll(t, stream, 4)
	want := []orderv1.OrderStatus{
		orderv1.OrderStatus_ORDER_STATUS_STOCK_RESERVED, orderv1.OrderStatus_ORDER_STATUS_PAYMENT_AUTHORIZED,
		orderv1.OrderStatus_ORDER_STATUS_SHIPMENT_CREATED, orderv1.OrderStatus_ORDER_STATUS_CONFIRMED,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("WatchOrder statuses (-want +got):\n%s", diff)
	}
	placedOrder := <-placed
	if diff := cmp.Diff(placedOrder, last, protocmp.Transform(), protocmp.IgnoreFields(&orderv1.Order{}, "update_time")); diff != "" {
		t.Errorf("WatchOrder CONFIRMED message (-PlaceOrder +WatchOrder):\n%s", diff)
	}
	f.waitDone(orderID)
	ctx := t.Context()
	for _, st := range []shippingv1.ShipmentStatus{
		shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP,
		shippingv1.ShipmentStatus_SHIPMENT_STATUS_IN_TRANSIT,
		shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED,
	} {
		if err := f.svc.ShipmentStatusChanged(ctx, orderID, st); err != nil {
			t.Fatalf("ShipmentStatusChanged(%v) = %v", st, err)
		}
	}
	got, _ = recvAll(t, stream, 10)
	want = []orderv1.OrderStatus{orderv1.OrderStatus_ORDER_STATUS_SHIPPED, orderv1.OrderStatus_ORDER_STATUS_DELIVERED}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WatchOrder statuses until its end (-want +got):\n%s", diff)
	}
}

func TestWatchOrderOfFinishedOrderSendsItAndEnds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.place("poor", placeReq("k", "apple", 2, "pear", 1))
	stream, err := f.client.WatchOrder(as(t, "poor"), &orderv1.WatchOrderRequest{OrderId: o.GetOrderId()})
	if err != nil {
		t.Fatal(err)
	}
	got, last := recvAll(t, stream, 5)
	if diff := cmp.Diff([]orderv1.OrderStatus{orderv1.OrderStatus_ORDER_STATUS_CANCELLED}, got); diff != "" {
		t.Errorf("WatchOrder statuses (-want +got):\n%s", diff)
	}
	if last.GetCancelReason() != "insufficient funds" {
		t.Errorf("cancel_reason = %q, want %q", last.GetCancelReason(), "insufficient funds")
	}
}

func TestOrdersOfOthersAreNotFound(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alices := f.place("alice", placeReq("k", "apple", 2, "pear", 1))
	id := alices.GetOrderId()
	calls := []struct {
		name string
		call func(ctx context.Context, id string) error
	}{
		{"GetOrder", func(ctx context.Context, id string) error {
			_, err := f.client.GetOrder(ctx, &orderv1.GetOrderRequest{OrderId: id})
			return err
		}},
		{"CancelOrder", func(ctx context.Context, id string) error {
			_, err := f.client.CancelOrder(ctx, &orderv1.CancelOrderRequest{OrderId: id})
			return err
		}},
		{"WatchOrder", func(ctx context.Context, id string) error {
			stream, err := f.client.WatchOrder(ctx, &orderv1.WatchOrderRequest{OrderId: id})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}},
	}
	for _, c := range calls {
		for _, target := range []string{id, "no-such-order"} {
			err := c.call(as(t, "bob"), target)
			if got := grpcstatus.Code(err); got != codes.NotFound {
				t.Errorf("bob %s(%s) code = %v, want NotFound", c.name, target, got)
				continue
			}
			want := &errdetails.ResourceInfo{ResourceType: "order", ResourceName: target}
			if diff := cmp.Diff(want, status.ResourceInfo(err), protocmp.Transform()); diff != "" {
				t.Errorf("bob %s(%s) ResourceInfo (-want +got):\n%s", c.name, target, diff)
			}
			if got := status.Info(err).GetDomain(); got != Domain {
				t.Errorf("bob %s(%s) domain = %q, want %q", c.name, target, got, Domain)
			}
		}
	}
	if got, _ := f.client.GetOrder(as(t, "alice"), &orderv1.GetOrderRequest{OrderId: id}); got.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
		t.Errorf("bob's CancelOrder changed alice's order to %v", got.GetOrder().GetStatus())
	}
	list, err := f.client.ListOrders(as(t, "bob"), &orderv1.ListOrdersRequest{})
	if err != nil || len(list.GetOrders()) != 0 {
		t.Errorf("bob ListOrders = %d orders, %v; want none", len(list.GetOrders()), err)
	}

	operator := callCtx(t, authz.Operator, "")
	got, err := f.client.GetOrder(operator, &orderv1.GetOrderRequest{OrderId: id})
	if err != nil || got.GetOrder().GetOrderId() != id {
		t.Errorf("operator GetOrder = %v, %v; want alice's order", got, err)
	}
	list, err = f.client.ListOrders(operator, &orderv1.ListOrdersRequest{})
	if err != nil || len(list.GetOrders()) != 1 {
		t.Errorf("operator ListOrders = %d orders, %v; want 1", len(list.GetOrders()), err)
	}
}

func TestCallsWithoutUserAreRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	callers := []struct {
		name string
		ctx  context.Context
		code map[string]codes.Code // by method; PermissionDenied otherwise
	}{
		{"gateway without a user", callCtx(t, "gateway", ""), nil},
		{"no calling service", callCtx(t, "", "alice"), nil},
		{"operator without a user", callCtx(t, authz.Operator, ""), map[string]codes.Code{
			"GetOrder": codes.NotFound, "ListOrders": codes.OK,
		}},
	}
	for _, c := range callers {
		calls := map[string]func() error{
			"PlaceOrder": func() error {
				_, err := f.client.PlaceOrder(c.ctx, placeReq("k", "apple", 1))
				return err
			},
			"GetOrder": func() error {
				_, err := f.client.GetOrder(c.ctx, &orderv1.GetOrderRequest{OrderId: "x"})
				return err
			},
			"ListOrders": func() error {
				_, err := f.client.ListOrders(c.ctx, &orderv1.ListOrdersRequest{})
				return err
			},
			"CancelOrder": func() error {
				_, err := f.client.CancelOrder(c.ctx, &orderv1.CancelOrderRequest{OrderId: "x"})
				return err
			},
			"WatchOrder": func() error {
				stream, err := f.client.WatchOrder(c.ctx, &orderv1.WatchOrderRequest{OrderId: "x"})
				if err != nil {
					return err
				}
				_, err = stream.Recv()
				return err
			},
		}
		for method, call := range calls {
			want, ok := c.code[method]
			if !ok {
				want = codes.PermissionDenied
			}
			if got := grpcstatus.Code(call()); got != want {
				t.Errorf("%s: %s code = %v, want %v", c.name, method, got, want)
			}
		}
	}
	if n := len(f.fakes.h.log()); n != 0 {
		t.Errorf("refused calls made %d calls to other services, want 0", n)
	}
}

func TestRequestsAreValidated(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	long := func(n int) string { return strings.Repeat("x", n) }
	tooMany := placeReq("k")
	for i := range MaxLines + 1 {
		tooMany.Lines = append(tooMany.Lines, &orderv1.OrderLine{ItemId: fmt.Sprint("i", i), Quantity: 1})
	}
	badAddress := placeReq("k", "apple", 1)
	badAddress.ShippingAddress = &typev1.PostalAddress{Recipient: long(101), Line1: "", City: "c", PostalCode: long(21), CountryCode: "gb"}
	noAddress := placeReq("k", "apple", 1)
	noAddress.ShippingAddress = nil
	tests := []struct {
		name   string
		call   func(ctx context.Context) error
		fields []string
	}{
		{"empty key", place(f, placeReq("", "apple", 1)), []string{"idempotency_key"}},
		{"key too long", place(f, placeReq(long(129), "apple", 1)), []string{"idempotency_key"}},
		{"no lines", place(f, placeReq("k")), []string{"lines"}},
		{"too many lines", place(f, tooMany), []string{"lines"}},
		{"quantity 0 and 1001", place(f, placeReq("k", "apple", 0, "pear", 1001)), []string{"lines[0].quantity", "lines[1].quantity"}},
		{"bad item ids", place(f, placeReq("k", "", 1, long(65), 1, "a b", 1)),
			[]string{"lines[0].item_id", "lines[1].item_id", "lines[2].item_id"}},
		{"duplicate item", place(f, placeReq("k", "apple", 1, "pear", 1, "apple", 2)), []string{"lines[2].item_id"}},
		{"no address", place(f, noAddress), []string{"shipping_address"}},
		{"bad address", place(f, badAddress), []string{
			"shipping_address.recipient", "shipping_address.line1",
			"shipping_address.postal_code", "shipping_address.country_code",
		}},
		{"GetOrder without id", func(ctx context.Context) error {
			_, err := f.client.GetOrder(ctx, &orderv1.GetOrderRequest{})
			return err
		}, []string{"order_id"}},
		{"ListOrders page size 101", func(ctx context.Context) error {
			_, err := f.client.ListOrders(ctx, &orderv1.ListOrdersRequest{PageSize: 101})
			return err
		}, []string{"page_size"}},
		{"ListOrders negative page size, long token", func(ctx context.Context) error {
			_, err := f.client.ListOrders(ctx, &orderv1.ListOrdersRequest{PageSize: -1, PageToken: long(201)})
			return err
		}, []string{"page_size", "page_token"}},
		{"ListOrders foreign token", func(ctx context.Context) error {
			_, err := f.client.ListOrders(ctx, &orderv1.ListOrdersRequest{PageToken: "not-a-token"})
			return err
		}, []string{"page_token"}},
		{"CancelOrder reason too long", func(ctx context.Context) error {
			_, err := f.client.CancelOrder(ctx, &orderv1.CancelOrderRequest{OrderId: "x", Reason: long(501)})
			return err
		}, []string{"reason"}},
		{"WatchOrder id too long", func(ctx context.Context) error {
			stream, err := f.client.WatchOrder(ctx, &orderv1.WatchOrderRequest{OrderId: long(65)})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}, []string{"order_id"}},
	}
	for _, tc := range tests {
		err := tc.call(as(t, "alice"))
		if got := grpcstatus.Code(err); got != codes.InvalidArgument {
			t.Errorf("%s: code = %v, want InvalidArgument", tc.name, got)
			continue
		}
		var got []string
		for _, v := range status.BadRequest(err).GetFieldViolations() {
			got = append(got, v.GetField())
		}
		if diff := cmp.Diff(tc.fields, got); diff != "" {
			t.Errorf("%s: violated fields (-want +got):\n%s", tc.name, diff)
		}
	}
	if n := len(f.fakes.h.log()); n != 0 {
		t.Errorf("invalid requests made %d calls to other services, want 0", n)
	}
}

func place(f *fixture, req *orderv1.PlaceOrderRequest) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := f.client.PlaceOrder(ctx, req)
		return err
	}
}

func TestListOrdersPagesNewestFirst(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var want []string
	for i := range 5 {
		o := f.place("alice", placeReq(fmt.Sprint("k", i), "apple", 1))
		want = slices.Insert(want, 0, o.GetOrderId())
	}
	f.place("bob", placeReq("k", "apple", 1))
	var got []string
	var pages int
	req := &orderv1.ListOrdersRequest{PageSize: 2}
	for {
		resp, err := f.client.ListOrders(as(t, "alice"), req)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range resp.GetOrders() {
			got = append(got, o.GetOrderId())
			if o.GetUserId() != "alice" {
				t.Errorf("alice's listing has an order of %s", o.GetUserId())
			}
		}
		if resp.GetNextPageToken() == "" || pages > 5 {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListOrders pages (-want newest first +got):\n%s", diff)
	}
	if pages != 3 {
		t.Errorf("ListOrders took %d pages of 2 for 5 orders, want 3", pages)
	}
	_, err := f.client.ListOrders(as(t, "alice"), &orderv1.ListOrdersRequest{PageToken: "bm90LWEtdG9rZW4"})
	if got, want := status.Reason(err), ReasonInvalidPageToken; got != want {
		t.Errorf("ListOrders(bad token) reason = %q (%v), want %q", got, err, want)
	}
}

func TestCancelOrder(t *testing.T) {
	t.Parallel()
	t.Run("confirmed: shipment cancelled, payment refunded, stock stays sold", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		o := f.place("alice", placeReq("k", "apple", 2, "pear", 1))
		f.waitDone(o.GetOrderId())
		before := len(f.fakes.h.log())
		resp, err := f.client.CancelOrder(as(t, "alice"), &orderv1.CancelOrderRequest{OrderId: o.GetOrderId(), Reason: "changed my mind"})
		if err != nil {
			t.Fatal(err)
		}
		got := resp.GetOrder()
		if got.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED || got.GetCancelReason() != "changed my mind" {
			t.Errorf("CancelOrder = %v %q, want CANCELLED %q", got.GetStatus(), got.GetCancelReason(), "changed my mind")
		}
		wantCalls := []string{"shipping.CancelShipment", "shipping.CancelShipment", "payment.Void", "payment.Refund", "inventory.Release"}
		if diff := cmp.Diff(wantCalls, f.fakes.h.log()[before:]); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		if balance, held := f.fakes.pay.balances("alice", "USD"); balance != startBalance || held != 0 {
			t.Errorf("alice's balance, held = %d, %d; want %d, 0", balance, held, startBalance)
		}
		if onHand, _ := f.fakes.inv.stock("apple"); onHand != appleStock-2 {
			t.Errorf("apple on hand = %d, want %d: committed stock stays sold", onHand, appleStock-2)
		}
		again, err := f.client.CancelOrder(as(t, "alice"), &orderv1.CancelOrderRequest{OrderId: o.GetOrderId(), Reason: "again"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, again.GetOrder(), protocmp.Transform()); diff != "" {
			t.Errorf("CancelOrder of a cancelled order (-first +again):\n%s", diff)
		}
	})

	t.Run("while the saga runs: turned round", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		open := f.fakes.h.gate("shipping.CreateShipment")
		placed := make(chan *orderv1.Order, 1)
		go func() {
			resp, err := f.client.PlaceOrder(as(t, "alice"), placeReq("k", "apple", 2, "pear", 1))
			if err != nil {
				t.Errorf("PlaceOrder = %v", err)
			}
			placed <- resp.GetOrder()
		}()
		id := f.onlyOrder("alice", orderv1.OrderStatus_ORDER_STATUS_PAYMENT_AUTHORIZED)
		cancelled := make(chan *orderv1.Order, 1)
		go func() {
			resp, err := f.client.CancelOrder(as(t, "alice"), &orderv1.CancelOrderRequest{OrderId: id})
			if err != nil {
				t.Errorf("CancelOrder = %v", err)
			}
			cancelled <- resp.GetOrder()
		}()
		f.waitFor(id, "CANCELLING", func(o *Order) bool { return o.Status == orderv1.OrderStatus_ORDER_STATUS_CANCELLING })
		open()
		for _, o := range []*orderv1.Order{<-cancelled, <-placed} {
			if o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED || o.GetCancelReason() != "cancelled by user" {
				t.Errorf("order = %v %q, want CANCELLED %q", o.GetStatus(), o.GetCancelReason(), "cancelled by user")
			}
		}
		wantCalls := []string{"inventory.GetItem", "inventory.GetItem", "inventory.Reserve", "payment.GetAccount",
			"payment.Authorize", "shipping.CreateShipment", "shipping.CancelShipment", "payment.Void", "inventory.Release"}
		if diff := cmp.Diff(wantCalls, f.fakes.h.log()); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		f.checkNothingLeaked(id, "alice")
	})

	t.Run("while the payment is captured: refunded, stock released", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		open := f.fakes.h.gate("payment.Capture")
		placed := make(chan *orderv1.Order, 1)
		go func() {
			resp, err := f.client.PlaceOrder(as(t, "alice"), placeReq("k", "apple", 2, "pear", 1))
			if err != nil {
				t.Errorf("PlaceOrder = %v", err)
			}
			placed <- resp.GetOrder()
		}()
		id := f.onlyOrder("alice", orderv1.OrderStatus_ORDER_STATUS_SHIPMENT_CREATED)
		eventually(t, "Capture is called", func() bool { return f.fakes.h.count("payment.Capture") > 0 })
		cancelled := make(chan *orderv1.Order, 1)
		go func() {
			resp, err := f.client.CancelOrder(as(t, "alice"), &orderv1.CancelOrderRequest{OrderId: id})
			if err != nil {
				t.Errorf("CancelOrder = %v", err)
			}
			cancelled <- resp.GetOrder()
		}()
		f.waitFor(id, "CANCELLING", func(o *Order) bool { return o.Status == orderv1.OrderStatus_ORDER_STATUS_CANCELLING })
		open() // the capture goes through after the cancel
		for _, o := range []*orderv1.Order{<-cancelled, <-placed} {
			if o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED || o.GetCancelReason() != "cancelled by user" {
				t.Errorf("order = %v %q, want CANCELLED %q", o.GetStatus(), o.GetCancelReason(), "cancelled by user")
			}
		}
		wantCalls := append(slices.Clone(sagaCalls[:7]),
			"shipping.CancelShipment", "payment.Void", "payment.Refund", "inventory.Release")
		if diff := cmp.Diff(wantCalls, f.fakes.h.log()); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(map[string]int{"authorize": 1, "capture": 1, "refund": 1}, f.fakes.pay.effectsOf(id)); diff != "" {
			t.Errorf("payment effects (-want +got):\n%s", diff)
		}
		f.checkNothingLeaked(id, "alice")
	})

	t.Run("shipped: FAILED_PRECONDITION", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		o := f.place("alice", placeReq("k", "apple", 2, "pear", 1))
		f.waitDone(o.GetOrderId())
		if err := f.svc.ShipmentStatusChanged(t.Context(), o.GetOrderId(), shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP); err != nil {
			t.Fatal(err)
		}
		_, err := f.client.CancelOrder(as(t, "alice"), &orderv1.CancelOrderRequest{OrderId: o.GetOrderId()})
		checkShipped(t, err, o.GetOrderId())
	})

	t.Run("picked up before the order knows: FAILED_PRECONDITION, stays confirmed", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		o := f.place("alice", placeReq("k", "apple", 2, "pear", 1))
		f.waitDone(o.GetOrderId())
		f.fakes.ship.pickUp(o.GetOrderId())
		_, err := f.client.CancelOrder(as(t, "alice"), &orderv1.CancelOrderRequest{OrderId: o.GetOrderId()})
		checkShipped(t, err, o.GetOrderId())
		got, err := f.client.GetOrder(as(t, "alice"), &orderv1.GetOrderRequest{OrderId: o.GetOrderId()})
		if err != nil || got.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
			t.Errorf("order after refused cancel = %v, %v; want CONFIRMED", got.GetOrder().GetStatus(), err)
		}
		if n := f.fakes.h.count("payment.Refund"); n != 0 {
			t.Errorf("payment.Refund called %d times, want 0", n)
		}
	})
}

func checkShipped(t *testing.T, err error, orderID string) {
	t.Helper()
	if got := grpcstatus.Code(err); got != codes.FailedPrecondition {
		t.Fatalf("CancelOrder of a shipped order code = %v, want FailedPrecondition", got)
	}
	if got := status.Reason(err); got != ReasonOrderShipped {
		t.Errorf("reason = %q, want %q", got, ReasonOrderShipped)
	}
	want := &errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
		Type: ViolationStatus, Subject: "orders/" + orderID, Description: "the carrier has picked the parcel up",
	}}}
	if diff := cmp.Diff(want, status.PreconditionFailure(err), protocmp.Transform()); diff != "" {
		t.Errorf("PreconditionFailure (-want +got):\n%s", diff)
	}
}

func TestShipmentStatusChanged(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	confirmed := f.place("alice", placeReq("k1", "apple", 2, "pear", 1)).GetOrderId()
	f.waitDone(confirmed)
	cancelled := f.place("poor", placeReq("k2", "apple", 2, "pear", 1)).GetOrderId()
	ctx := t.Context()
	steps := []struct {
		order   string
		shipped shippingv1.ShipmentStatus
		want    orderv1.OrderStatus
		err     error
	}{
		{confirmed, shippingv1.ShipmentStatus_SHIPMENT_STATUS_CREATED, orderv1.OrderStatus_ORDER_STATUS_CONFIRMED, nil},
		{confirmed, shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP, orderv1.OrderStatus_ORDER_STATUS_SHIPPED, nil},
		{confirmed, shippingv1.ShipmentStatus_SHIPMENT_STATUS_IN_TRANSIT, orderv1.OrderStatus_ORDER_STATUS_SHIPPED, nil},
		{confirmed, shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP, orderv1.OrderStatus_ORDER_STATUS_SHIPPED, nil},
		{confirmed, shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED, orderv1.OrderStatus_ORDER_STATUS_DELIVERED, nil},
		{confirmed, shippingv1.ShipmentStatus_SHIPMENT_STATUS_OUT_FOR_DELIVERY, orderv1.OrderStatus_ORDER_STATUS_DELIVERED, nil},
		{confirmed, shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED, orderv1.OrderStatus_ORDER_STATUS_DELIVERED, nil},
		{cancelled, shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP, orderv1.OrderStatus_ORDER_STATUS_CANCELLED, ErrInvalidTransition},
		{cancelled, shippingv1.ShipmentStatus_SHIPMENT_STATUS_UNSPECIFIED, orderv1.OrderStatus_ORDER_STATUS_CANCELLED, ErrInvalidTransition},
	}
	for _, s := range steps {
		err := f.svc.ShipmentStatusChanged(ctx, s.order, s.shipped)
		if !errors.Is(err, s.err) || (err != nil) != (s.err != nil) {
			t.Errorf("ShipmentStatusChanged(%v) = %v, want %v", s.shipped, err, s.err)
		}
		o, _ := f.svc.store.Order(ctx, s.order)
		if o.Status != s.want {
			t.Errorf("after ShipmentStatusChanged(%v) the order is %v, want %v", s.shipped, o.Status, s.want)
		}
	}
	if err := f.svc.ShipmentStatusChanged(ctx, "missing", shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED); !errorAs[*NotFoundError](err) {
		t.Errorf("ShipmentStatusChanged(missing) = %v, want NotFoundError", err)
	}
}

func TestOpenRequiresClients(t *testing.T) {
	t.Parallel()
	db := sqltest.New(t, sqldb.SQLite, nil, "")
	if _, err := Open(t.Context(), db, Config{}, nil); err == nil {
		t.Error("Open without clients succeeded, want an error")
	}
}
