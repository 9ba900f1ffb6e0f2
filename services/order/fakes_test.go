package order

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// This file holds in-process fakes of the inventory, payment and shipping
// servers that the saga calls over real loopback gRPC. They implement the
// contracts of the protos (idempotency by order id or key, conditional
// state changes) in memory, record every call in order, and fail on
// demand.

// fault is an error a fake returns instead of answering, before or after
// applying the call's effect (after: the effect happened but the answer is
// lost), for the next times calls.
type fault struct {
	code  codes.Code
	after bool
	times int
}

// harness is what the three fakes share: the call log, the faults and the
// gates.
type harness struct {
	mu     sync.Mutex
	calls  []string // "inventory.Reserve", in call order
	faults map[string][]fault
	gates  map[string]chan struct{}
}

func newHarness() *harness {
	return &harness{faults: make(map[string][]fault), gates: make(map[string]chan struct{})}
}

// fail makes the next times calls of method ("inventory.Reserve") fail with
// code.
func (h *harness) fail(method string, code codes.Code, after bool, times int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults[method] = append(h.faults[method], fault{code: code, after: after, times: times})
}

// gate makes calls of method wait until the returned function is called.
func (h *harness) gate(method string) (open func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := make(chan struct{})
	h.gates[method] = ch
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// enter records a call of method, waits at its gate, and returns the fault
// to apply before the effect, if any.
func (h *harness) enter(ctx context.Context, method string) error {
	h.mu.Lock()
	h.calls = append(h.calls, method)
	gate := h.gates[method]
	h.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return grpcstatus.FromContextError(ctx.Err()).Err()
		}
	}
	return h.take(method, false)
}

// leave returns the fault to apply after the effect, if any.
func (h *harness) leave(method string) error { return h.take(method, true) }

func (h *harness) take(method string, after bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	fs := h.faults[method]
	if len(fs) == 0 || fs[0].after != after {
		return nil
	}
	f := &fs[0]
	if f.times--; f.times <= 0 {
		h.faults[method] = fs[1:]
	}
	return grpcstatus.Errorf(f.code, "injected %s fault", method)
}

// log returns the calls so far.
func (h *harness) log() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

// count returns how many calls of method were made.
func (h *harness) count(method string) int {
	n := 0
	for _, c := range h.log() {
		if c == method {
			n++
		}
	}
	return n
}

// fakeInventory implements the InventoryService's items and reservations.
type fakeInventory struct {
	inventoryv1.UnimplementedInventoryServiceServer
	h            *harness
	mu           sync.Mutex
	items        map[string]*fakeItem
	reservations map[string]*fakeReservation
}

type fakeItem struct {
	price            *typev1.Money
	onHand, reserved int64
}

type fakeReservation struct {
	lines  []*inventoryv1.ReservationLine
	status inventoryv1.ReservationStatus
}

func (f *fakeInventory) GetItem(ctx context.Context, req *inventoryv1.GetItemRequest) (*inventoryv1.GetItemResponse, error) {
	if err := f.h.enter(ctx, "inventory.GetItem"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.items[req.GetItemId()]
	if !ok {
		return nil, status.NotFound("inventory.switchboard.dev", "ITEM_NOT_FOUND", "item", req.GetItemId())
	}
	return &inventoryv1.GetItemResponse{Item: &inventoryv1.Item{
		ItemId: req.GetItemId(), Price: it.price, OnHand: it.onHand, Reserved: it.reserved, Available: it.onHand - it.reserved,
	}}, f.h.leave("inventory.GetItem")
}

func (f *fakeInventory) Reserve(ctx context.Context, req *inventoryv1.ReserveRequest) (*inventoryv1.ReserveResponse, error) {
	if err := f.h.enter(ctx, "inventory.Reserve"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.reservations[req.GetOrderId()]; ok {
		return &inventoryv1.ReserveResponse{Reservation: f.view(req.GetOrderId(), r)}, f.h.leave("inventory.Reserve")
	}
	var short []*errdetails.PreconditionFailure_Violation
	for _, l := range req.GetLines() {
		it := f.items[l.GetItemId()]
		if it == nil || it.onHand-it.reserved < l.GetQuantity() {
			short = append(short, status.PreconditionViolation("STOCK", "items/"+l.GetItemId(), "not enough stock"))
		}
	}
	if len(short) > 0 {
		return nil, status.FailedPrecondition("inventory.switchboard.dev", "OUT_OF_STOCK", "not enough stock", short...)
	}
	for _, l := range req.GetLines() {
		f.items[l.GetItemId()].reserved += l.GetQuantity()
	}
	r := &fakeReservation{lines: req.GetLines(), status: inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD}
	f.reservations[req.GetOrderId()] = r
	return &inventoryv1.ReserveResponse{Reservation: f.view(req.GetOrderId(), r)}, f.h.leave("inventory.Reserve")
}

func (f *fakeInventory) Release(ctx context.Context, req *inventoryv1.ReleaseRequest) (*inventoryv1.ReleaseResponse, error) {
	if err := f.h.enter(ctx, "inventory.Release"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.reservations[req.GetOrderId()]
	switch {
	case !ok:
		return nil, status.NotFound("inventory.switchboard.dev", "RESERVATION_NOT_FOUND", "reservation", req.GetOrderId())
	case r.status == inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED:
		return nil, status.FailedPrecondition("inventory.switchboard.dev", "RESERVATION_COMMITTED", "committed")
	case r.status == inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD:
		for _, l := range r.lines {
			f.items[l.GetItemId()].reserved -= l.GetQuantity()
		}
		r.status = inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED
	}
	return &inventoryv1.ReleaseResponse{Reservation: f.view(req.GetOrderId(), r)}, f.h.leave("inventory.Release")
}

func (f *fakeInventory) CommitReservation(ctx context.Context, req *inventoryv1.CommitReservationRequest) (*inventoryv1.CommitReservationResponse, error) {
	if err := f.h.enter(ctx, "inventory.CommitReservation"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.reservations[req.GetOrderId()]
	switch {
	case !ok:
		return nil, status.NotFound("inventory.switchboard.dev", "RESERVATION_NOT_FOUND", "reservation", req.GetOrderId())
	case r.status == inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD:
		for _, l := range r.lines {
			it := f.items[l.GetItemId()]
			it.reserved -= l.GetQuantity()
			it.onHand -= l.GetQuantity()
		}
		r.status = inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED
	case r.status != inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED:
		return nil, status.FailedPrecondition("inventory.switchboard.dev", "RESERVATION_NOT_HELD", "not held")
	}
	return &inventoryv1.CommitReservationResponse{Reservation: f.view(req.GetOrderId(), r)}, f.h.leave("inventory.CommitReservation")
}

func (f *fakeInventory) view(orderID string, r *fakeReservation) *inventoryv1.Reservation {
	return &inventoryv1.Reservation{OrderId: orderID, Lines: r.lines, Status: r.status}
}

// reservation returns the status of an order's reservation (UNSPECIFIED
// when there is none).
func (f *fakeInventory) reservation(orderID string) inventoryv1.ReservationStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.reservations[orderID]; r != nil {
		return r.status
	}
	return inventoryv1.ReservationStatus_RESERVATION_STATUS_UNSPECIFIED
}

// stock returns an item's on-hand and reserved units.
func (f *fakeInventory) stock(itemID string) (onHand, reserved int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it := f.items[itemID]
	return it.onHand, it.reserved
}

// fakePayment implements the PaymentService's accounts and authorizations,
// idempotent by key.
type fakePayment struct {
	paymentv1.UnimplementedPaymentServiceServer
	h        *harness
	mu       sync.Mutex
	accounts map[string]*fakeAccount // by owner + "/" + currency
	auths    map[string]*fakeAuth    // by id
	effects  map[string]string       // idempotency key -> authorization id
}

type fakeAccount struct {
	id, currency  string
	balance, held int64
}

type fakeAuth struct {
	id       string
	account  *fakeAccount
	orderID  string
	amount   int64
	captured int64
	status   paymentv1.AuthorizationStatus
}

func (f *fakePayment) GetAccount(ctx context.Context, req *paymentv1.GetAccountRequest) (*paymentv1.GetAccountResponse, error) {
	if err := f.h.enter(ctx, "payment.GetAccount"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[req.GetOwnerId()+"/"+req.GetCurrencyCode()]
	if !ok {
		return nil, status.NotFound("payment.switchboard.dev", "ACCOUNT_NOT_FOUND", "account", req.GetOwnerId())
	}
	return &paymentv1.GetAccountResponse{Account: &paymentv1.Account{AccountId: a.id, OwnerId: req.GetOwnerId()}},
		f.h.leave("payment.GetAccount")
}

func (f *fakePayment) account(id string) *fakeAccount {
	for _, a := range f.accounts {
		if a.id == id {
			return a
		}
	}
	return nil
}

func (f *fakePayment) Authorize(ctx context.Context, req *paymentv1.AuthorizeRequest) (*paymentv1.AuthorizeResponse, error) {
	if err := f.h.enter(ctx, "payment.Authorize"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.effects[req.GetIdempotencyKey()]; ok {
		return &paymentv1.AuthorizeResponse{Authorization: f.view(f.auths[id])}, f.h.leave("payment.Authorize")
	}
	a := f.account(req.GetAccountId())
	if a == nil {
		return nil, status.NotFound("payment.switchboard.dev", "ACCOUNT_NOT_FOUND", "account", req.GetAccountId())
	}
	amount := req.GetAmount().GetAmountMinor()
	if a.balance-a.held < amount {
		return nil, status.FailedPrecondition("payment.switchboard.dev", "INSUFFICIENT_FUNDS", "insufficient funds",
			status.PreconditionViolation("FUNDS", "accounts/"+a.id, "not enough"))
	}
	a.held += amount
	auth := &fakeAuth{id: uuid.NewString(), account: a, orderID: req.GetOrderId(), amount: amount,
		status: paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED}
	f.auths[auth.id] = auth
	f.effects[req.GetIdempotencyKey()] = auth.id
	return &paymentv1.AuthorizeResponse{Authorization: f.view(auth)}, f.h.leave("payment.Authorize")
}

func (f *fakePayment) Capture(ctx context.Context, req *paymentv1.CaptureRequest) (*paymentv1.CaptureResponse, error) {
	if err := f.h.enter(ctx, "payment.Capture"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.effects[req.GetIdempotencyKey()]; ok {
		return &paymentv1.CaptureResponse{Authorization: f.view(f.auths[id])}, f.h.leave("payment.Capture")
	}
	auth, err := f.authorization(req.GetAuthorizationId(), paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED)
	if err != nil {
		return nil, err
	}
	auth.account.held -= auth.amount
	auth.account.balance -= auth.amount
	auth.captured = auth.amount
	auth.status = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED
	f.effects[req.GetIdempotencyKey()] = auth.id
	return &paymentv1.CaptureResponse{Authorization: f.view(auth)}, f.h.leave("payment.Capture")
}

func (f *fakePayment) Void(ctx context.Context, req *paymentv1.VoidRequest) (*paymentv1.VoidResponse, error) {
	if err := f.h.enter(ctx, "payment.Void"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.effects[req.GetIdempotencyKey()]; ok {
		return &paymentv1.VoidResponse{Authorization: f.view(f.auths[id])}, f.h.leave("payment.Void")
	}
	auth, err := f.authorization(req.GetAuthorizationId(), paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED)
	if err != nil {
		return nil, err
	}
	auth.account.held -= auth.amount
	auth.status = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_VOIDED
	f.effects[req.GetIdempotencyKey()] = auth.id
	return &paymentv1.VoidResponse{Authorization: f.view(auth)}, f.h.leave("payment.Void")
}

func (f *fakePayment) Refund(ctx context.Context, req *paymentv1.RefundRequest) (*paymentv1.RefundResponse, error) {
	if err := f.h.enter(ctx, "payment.Refund"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.effects[req.GetIdempotencyKey()]; ok {
		return &paymentv1.RefundResponse{Authorization: f.view(f.auths[id])}, f.h.leave("payment.Refund")
	}
	auth, err := f.authorization(req.GetAuthorizationId(), paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED)
	if err != nil {
		return nil, err
	}
	auth.account.balance += auth.captured
	auth.status = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_REFUNDED
	f.effects[req.GetIdempotencyKey()] = auth.id
	return &paymentv1.RefundResponse{Authorization: f.view(auth)}, f.h.leave("payment.Refund")
}

// authorization returns the authorization id if it has status want.
func (f *fakePayment) authorization(id string, want paymentv1.AuthorizationStatus) (*fakeAuth, error) {
	auth, ok := f.auths[id]
	if !ok {
		return nil, status.NotFound("payment.switchboard.dev", "AUTHORIZATION_NOT_FOUND", "authorization", id)
	}
	if auth.status != want {
		return nil, status.FailedPrecondition("payment.switchboard.dev", "WRONG_STATUS",
			fmt.Sprintf("authorization is %v", auth.status))
	}
	return auth, nil
}

func (f *fakePayment) view(a *fakeAuth) *paymentv1.Authorization {
	return &paymentv1.Authorization{AuthorizationId: a.id, AccountId: a.account.id, OrderId: a.orderID, Status: a.status}
}

// balances returns an account's balance and held money.
func (f *fakePayment) balances(owner, currency string) (balance, held int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.accounts[owner+"/"+currency]
	return a.balance, a.held
}

// effectsOf returns how many distinct effects (idempotency keys) moved
// money for an order, by operation ("authorize", "capture", ...).
func (f *fakePayment) effectsOf(orderID string) map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int)
	for key, id := range f.effects {
		if f.auths[id].orderID != orderID {
			continue
		}
		for _, op := range []string{"authorize", "capture", "void", "refund"} {
			if key == orderID+":"+op {
				out[op]++
			}
		}
	}
	return out
}

// authsOf returns the statuses of an order's authorizations.
func (f *fakePayment) authsOf(orderID string) []paymentv1.AuthorizationStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []paymentv1.AuthorizationStatus
	for _, a := range f.auths {
		if a.orderID == orderID {
			out = append(out, a.status)
		}
	}
	return out
}

// fakeShipping implements the ShippingService's shipments, idempotent by
// order id.
type fakeShipping struct {
	shippingv1.UnimplementedShippingServiceServer
	h         *harness
	mu        sync.Mutex
	byOrder   map[string]*fakeShipment
	shipments map[string]*fakeShipment
}

type fakeShipment struct {
	id, orderID string
	status      shippingv1.ShipmentStatus
}

func (f *fakeShipping) CreateShipment(ctx context.Context, req *shippingv1.CreateShipmentRequest) (*shippingv1.CreateShipmentResponse, error) {
	if err := f.h.enter(ctx, "shipping.CreateShipment"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.byOrder[req.GetOrderId()]
	if !ok {
		s = &fakeShipment{id: uuid.NewString(), orderID: req.GetOrderId(), status: shippingv1.ShipmentStatus_SHIPMENT_STATUS_CREATED}
		f.byOrder[s.orderID], f.shipments[s.id] = s, s
	}
	return &shippingv1.CreateShipmentResponse{Shipment: &shippingv1.Shipment{ShipmentId: s.id, OrderId: s.orderID, Status: s.status}},
		f.h.leave("shipping.CreateShipment")
}

func (f *fakeShipping) CancelShipment(ctx context.Context, req *shippingv1.CancelShipmentRequest) (*shippingv1.CancelShipmentResponse, error) {
	if err := f.h.enter(ctx, "shipping.CancelShipment"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.shipments[req.GetShipmentId()]
	switch {
	case !ok:
		return nil, status.NotFound("shipping.switchboard.dev", "SHIPMENT_NOT_FOUND", "shipment", req.GetShipmentId())
	case s.status == shippingv1.ShipmentStatus_SHIPMENT_STATUS_CREATED:
		s.status = shippingv1.ShipmentStatus_SHIPMENT_STATUS_CANCELLED
	case s.status != shippingv1.ShipmentStatus_SHIPMENT_STATUS_CANCELLED:
		return nil, status.FailedPrecondition("shipping.switchboard.dev", "SHIPMENT_IN_TRANSIT", "in transit")
	}
	return &shippingv1.CancelShipmentResponse{Shipment: &shippingv1.Shipment{ShipmentId: s.id, OrderId: s.orderID, Status: s.status}},
		f.h.leave("shipping.CancelShipment")
}

// shipment returns the status of an order's shipment (UNSPECIFIED when
// there is none).
func (f *fakeShipping) shipment(orderID string) shippingv1.ShipmentStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.byOrder[orderID]; s != nil {
		return s.status
	}
	return shippingv1.ShipmentStatus_SHIPMENT_STATUS_UNSPECIFIED
}

// pickUp marks an order's shipment picked up by the carrier.
func (f *fakeShipping) pickUp(orderID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byOrder[orderID].status = shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP
}

// fakes are the three fake services, served on one loopback listener.
type fakes struct {
	h    *harness
	inv  *fakeInventory
	pay  *fakePayment
	ship *fakeShipping
	conn *grpc.ClientConn
}

// Catalogue and accounts of the fakes.
const (
	startBalance = 1_000_000
	appleStock   = 1000
)

// startStock is every item's stock on hand when the fakes start.
var startStock = map[string]int64{"apple": appleStock, "pear": appleStock, "cheese": appleStock, "rare": 1}

func startFakes(t *testing.T) *fakes {
	t.Helper()
	h := newHarness()
	usd := func(n int64) *typev1.Money { return &typev1.Money{AmountMinor: n, CurrencyCode: "USD"} }
	f := &fakes{
		h: h,
		inv: &fakeInventory{h: h, reservations: make(map[string]*fakeReservation), items: map[string]*fakeItem{
			"apple":  {price: usd(100), onHand: startStock["apple"]},
			"pear":   {price: usd(250), onHand: startStock["pear"]},
			"cheese": {price: &typev1.Money{AmountMinor: 500, CurrencyCode: "EUR"}, onHand: startStock["cheese"]},
			"rare":   {price: usd(1000), onHand: startStock["rare"]},
		}},
		pay: &fakePayment{h: h, auths: make(map[string]*fakeAuth), effects: make(map[string]string),
			accounts: make(map[string]*fakeAccount)},
		ship: &fakeShipping{h: h, byOrder: make(map[string]*fakeShipment), shipments: make(map[string]*fakeShipment)},
	}
	for _, owner := range []string{"alice", "bob"} {
		f.openAccount(owner, startBalance)
	}
	f.openAccount("poor", 10)

	srv := grpc.NewServer()
	inventoryv1.RegisterInventoryServiceServer(srv, f.inv)
	paymentv1.RegisterPaymentServiceServer(srv, f.pay)
	shippingv1.RegisterShippingServiceServer(srv, f.ship)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	f.conn = conn
	return f
}

// openAccount gives owner a USD account holding balance.
func (f *fakes) openAccount(owner string, balance int64) {
	f.pay.mu.Lock()
	defer f.pay.mu.Unlock()
	f.pay.accounts[owner+"/USD"] = &fakeAccount{id: "acc-" + owner, currency: "USD", balance: balance}
}
