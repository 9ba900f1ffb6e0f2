package inventory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/internal/servicetest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// caller is who a test call comes from.
type caller struct {
	service string
	user    string
	roles   []string
}

var (
	orderSvc = caller{service: "order"}
	operator = caller{service: authz.Operator}
	gateway  = caller{service: "gateway"}
	customer = caller{service: "gateway", user: "u1", roles: []string{"customer"}}
)

// ctx returns ctx with the test headers of a call by c.
func (c caller) ctx(ctx context.Context) context.Context {
	return servicetest.As(ctx, c.service, c.user, c.roles...)
}

func (c caller) String() string {
	if c.user != "" {
		return c.user + " via " + c.service
	}
	if c.service == "" {
		return "nobody"
	}
	return c.service
}

// env is the inventory served by kit/server on loopback, over SQLite.
type env struct {
	svc    *Service
	inv    inventoryv1.InventoryServiceClient
	target string
}

// start opens the service on a fresh database and serves it with the kit's
// chain: validation and authorization run for real.
func start(t *testing.T, cfg Config) *env {
	t.Helper()
	db := sqltest.New(t, sqldb.SQLite, nil, "")
	svc, err := Open(t.Context(), db, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	// The server's own connection is not used: the tests' clients are
	// the kit's, dialled by e.dial.
	conn := servicetest.Serve(t, svc.Register, Policy())
	e := &env{svc: svc, target: conn.Target()}
	e.inv = e.dial(t)
	return e
}

// dial returns a client on a connection of its own.
func (e *env) dial(t *testing.T, opts ...client.Option) inventoryv1.InventoryServiceClient {
	t.Helper()
	conn, err := client.Dial(e.target, append([]client.Option{client.WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return inventoryv1.NewInventoryServiceClient(conn)
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func item(id string, qty int64) *inventoryv1.RecordItemsRequest {
	return &inventoryv1.RecordItemsRequest{
		ItemId: id, Name: "Item " + id, Description: "about " + id,
		Price:    &typev1.Money{AmountMinor: 1999, CurrencyCode: "EUR"},
		Quantity: qty,
	}
}

// seed creates items through Seed.
func (e *env) seed(t *testing.T, items ...*inventoryv1.RecordItemsRequest) {
	t.Helper()
	if err := e.svc.Seed(testCtx(t), items); err != nil {
		t.Fatalf("Seed: %v", err)
	}
}

func (e *env) get(t *testing.T, id string) *inventoryv1.Item {
	t.Helper()
	resp, err := e.inv.GetItem(operator.ctx(testCtx(t)), &inventoryv1.GetItemRequest{ItemId: id})
	if err != nil {
		t.Fatalf("GetItem(%q): %v", id, err)
	}
	return resp.GetItem()
}

func (e *env) reserve(ctx context.Context, order string, lines ...*inventoryv1.ReservationLine) (*inventoryv1.Reservation, error) {
	resp, err := e.inv.Reserve(orderSvc.ctx(ctx), &inventoryv1.ReserveRequest{OrderId: order, Lines: lines})
	return resp.GetReservation(), err
}

func line(id string, q int64) *inventoryv1.ReservationLine {
	return &inventoryv1.ReservationLine{ItemId: id, Quantity: q}
}

// wantStatus checks err's code and ErrorInfo reason and domain.
func wantStatus(t *testing.T, what string, err error, code codes.Code, domain, reason string) bool {
	t.Helper()
	if got := grpcstatus.Code(err); got != code {
		t.Errorf("%s: code %v (%v), want %v", what, got, err, code)
		return false
	}
	info := status.Info(err)
	if info.GetReason() != reason || info.GetDomain() != domain {
		t.Errorf("%s: reason %s/%s, want %s/%s", what, info.GetDomain(), info.GetReason(), domain, reason)
		return false
	}
	return true
}

// callAll makes one minimal call to method as c and returns its error.
func callAll(ctx context.Context, inv inventoryv1.InventoryServiceClient, method string, c caller) error {
	ctx = c.ctx(ctx)
	switch method {
	case "GetItem":
		_, err := inv.GetItem(ctx, &inventoryv1.GetItemRequest{ItemId: "nothing"})
		return err
	case "ListItems":
		s, err := inv.ListItems(ctx, &inventoryv1.ListItemsRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	case "RecordItems":
		s, err := inv.RecordItems(ctx)
		if err != nil {
			return err
		}
		_, err = s.CloseAndRecv()
		return err
	case "Subscribe":
		s, err := inv.Subscribe(ctx)
		if err != nil {
			return err
		}
		if err := s.CloseSend(); err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	case "Reserve":
		_, err := inv.Reserve(ctx, &inventoryv1.ReserveRequest{OrderId: "o", Lines: []*inventoryv1.ReservationLine{line("nothing", 1)}})
		return err
	case "Release":
		_, err := inv.Release(ctx, &inventoryv1.ReleaseRequest{OrderId: "o"})
		return err
	case "CommitReservation":
		_, err := inv.CommitReservation(ctx, &inventoryv1.CommitReservationRequest{OrderId: "o"})
		return err
	}
	panic("unknown method " + method)
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	e := start(t, Config{})
	payment := caller{service: "payment"}
	paymentUser := caller{service: "payment", user: "u2"}
	nobody := caller{}
	reads := []caller{orderSvc, operator, gateway, customer, paymentUser}
	allowed := map[string][]caller{
		"GetItem":           reads,
		"ListItems":         reads,
		"Subscribe":         reads,
		"Reserve":           {orderSvc},
		"Release":           {orderSvc},
		"CommitReservation": {orderSvc},
		"RecordItems":       {operator},
	}
	everyone := []caller{orderSvc, operator, gateway, customer, payment, paymentUser, nobody}
	ctx := testCtx(t)
	for method, ok := range allowed {
		for _, c := range everyone {
			err := callAll(ctx, e.inv, method, c)
			isAllowed := false
			for _, a := range ok {
				if a.String() == c.String() {
					isAllowed = true
				}
			}
			denied := grpcstatus.Code(err) == codes.PermissionDenied
			if isAllowed == denied {
				t.Errorf("%s by %s = %v, want allowed %v", method, c, err, isAllowed)
			}
		}
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	e := start(t, Config{})
	ctx := testCtx(t)
	long := strings.Repeat("x", 65)
	many := make([]*inventoryv1.ReservationLine, MaxLines+1)
	for i := range many {
		many[i] = line(fmt.Sprint("i", i), 1)
	}
	reserve := func(r *inventoryv1.ReserveRequest) error {
		_, err := e.inv.Reserve(orderSvc.ctx(ctx), r)
		return err
	}
	ok := []*inventoryv1.ReservationLine{line("a", 1)}
	tests := []struct {
		name   string
		call   func() error
		fields []string
	}{
		{"GetItem empty id", func() error {
			_, err := e.inv.GetItem(operator.ctx(ctx), &inventoryv1.GetItemRequest{})
			return err
		}, []string{"item_id"}},
		{"GetItem bad characters", func() error {
			_, err := e.inv.GetItem(operator.ctx(ctx), &inventoryv1.GetItemRequest{ItemId: "a/b"})
			return err
		}, []string{"item_id"}},
		{"GetItem too long", func() error {
			_, err := e.inv.GetItem(operator.ctx(ctx), &inventoryv1.GetItemRequest{ItemId: long})
			return err
		}, []string{"item_id"}},
		{"Reserve without lines", func() error { return reserve(&inventoryv1.ReserveRequest{OrderId: "o"}) }, []string{"lines"}},
		{"Reserve too many lines", func() error { return reserve(&inventoryv1.ReserveRequest{OrderId: "o", Lines: many}) }, []string{"lines"}},
		{"Reserve duplicate item", func() error {
			return reserve(&inventoryv1.ReserveRequest{OrderId: "o", Lines: []*inventoryv1.ReservationLine{line("a", 1), line("b", 1), line("a", 2)}})
		}, []string{"lines[2].item_id"}},
		{"Reserve bad quantities", func() error {
			return reserve(&inventoryv1.ReserveRequest{OrderId: "o", Lines: []*inventoryv1.ReservationLine{line("a", 0), line("b", MaxLineQuantity+1)}})
		}, []string{"lines[0].quantity", "lines[1].quantity"}},
		{"Reserve bad item id", func() error {
			return reserve(&inventoryv1.ReserveRequest{OrderId: "o", Lines: []*inventoryv1.ReservationLine{line("", 1)}})
		}, []string{"lines[0].item_id"}},
		{"Reserve bad ttl", func() error {
			return reserve(&inventoryv1.ReserveRequest{OrderId: "o", Lines: ok, TtlSeconds: MaxTTLSeconds + 1})
		}, []string{"ttl_seconds"}},
		{"Reserve negative ttl", func() error { return reserve(&inventoryv1.ReserveRequest{OrderId: "o", Lines: ok, TtlSeconds: -1}) }, []string{"ttl_seconds"}},
		{"Reserve no order", func() error { return reserve(&inventoryv1.ReserveRequest{Lines: ok}) }, []string{"order_id"}},
		{"Reserve long order", func() error { return reserve(&inventoryv1.ReserveRequest{OrderId: long, Lines: ok}) }, []string{"order_id"}},
		{"Reserve order with space", func() error { return reserve(&inventoryv1.ReserveRequest{OrderId: "a b", Lines: ok}) }, []string{"order_id"}},
		{"Release long reason", func() error {
			_, err := e.inv.Release(orderSvc.ctx(ctx), &inventoryv1.ReleaseRequest{OrderId: "o", Reason: strings.Repeat("r", MaxReasonLen+1)})
			return err
		}, []string{"reason"}},
		{"Commit no order", func() error {
			_, err := e.inv.CommitReservation(orderSvc.ctx(ctx), &inventoryv1.CommitReservationRequest{})
			return err
		}, []string{"order_id"}},
		{"ListItems page size", func() error {
			return callList(ctx, e.inv, &inventoryv1.ListItemsRequest{PageSize: MaxPageSize + 1})
		}, []string{"page_size"}},
		{"ListItems negative page size", func() error {
			return callList(ctx, e.inv, &inventoryv1.ListItemsRequest{PageSize: -1})
		}, []string{"page_size"}},
		{"ListItems bad token", func() error {
			return callList(ctx, e.inv, &inventoryv1.ListItemsRequest{PageToken: "not a token"})
		}, []string{"page_token"}},
		{"ListItems forged token", func() error {
			return callList(ctx, e.inv, &inventoryv1.ListItemsRequest{PageToken: "djE6YS9i"}) // "v1:a/b"
		}, []string{"page_token"}},
		{"Subscribe bad id", func() error {
			s, err := e.inv.Subscribe(operator.ctx(ctx))
			if err != nil {
				return err
			}
			if err := s.Send(&inventoryv1.SubscribeRequest{SubscribeItemIds: []string{"ok", "not ok"}}); err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, []string{"subscribe_item_ids[1]"}},
	}
	for _, tt := range tests {
		err := tt.call()
		if !wantStatus(t, tt.name, err, codes.InvalidArgument, status.KitDomain, validate.Reason) {
			continue
		}
		var got []string
		for _, v := range status.BadRequest(err).GetFieldViolations() {
			got = append(got, v.GetField())
		}
		if diff := cmp.Diff(tt.fields, got); diff != "" {
			t.Errorf("%s: violated fields (-want +got):\n%s", tt.name, diff)
		}
	}
}

func callList(ctx context.Context, inv inventoryv1.InventoryServiceClient, req *inventoryv1.ListItemsRequest) error {
	s, err := inv.ListItems(operator.ctx(ctx), req)
	if err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func TestGetItem(t *testing.T) {
	t.Parallel()
	e := start(t, Config{})
	now := time.Date(2030, 5, 6, 7, 8, 9, 123456000, time.UTC)
	e.svc.now = func() time.Time { return now }
	e.seed(t, item("sku-1", 12))
	if _, err := e.reserve(testCtx(t), "o1", line("sku-1", 5)); err != nil {
		t.Fatal(err)
	}
	want := &inventoryv1.Item{
		ItemId: "sku-1", Name: "Item sku-1", Description: "about sku-1",
		Price:  &typev1.Money{AmountMinor: 1999, CurrencyCode: "EUR"},
		OnHand: 12, Reserved: 5, Available: 7, Version: 2,
		UpdateTime: timestamppb.New(now),
	}
	for _, c := range []caller{customer, gateway, orderSvc} {
		resp, err := e.inv.GetItem(c.ctx(testCtx(t)), &inventoryv1.GetItemRequest{ItemId: "sku-1"})
		if err != nil {
			t.Fatalf("GetItem by %s: %v", c, err)
		}
		if diff := cmp.Diff(want, resp.GetItem(), protocmp.Transform()); diff != "" {
			t.Errorf("GetItem by %s (-want +got):\n%s", c, diff)
		}
	}

	_, err := e.inv.GetItem(customer.ctx(testCtx(t)), &inventoryv1.GetItemRequest{ItemId: "sku-2"})
	if got, want := grpcstatus.Convert(err).Message(), `item "sku-2" not found`; got != want {
		t.Errorf("GetItem(sku-2) message %q, want %q", got, want)
	}
	if wantStatus(t, "GetItem(sku-2)", err, codes.NotFound, Domain, ReasonItemNotFound) {
		if got := status.ResourceInfo(err); got.GetResourceName() != "items/sku-2" || got.GetResourceType() != "item" {
			t.Errorf("GetItem(sku-2) ResourceInfo = %v, want item items/sku-2", got)
		}
	}
}

// TestReserveConcurrent races 200 reservations of one unit for 50 units
// through gRPC: exactly 50 win, the others get FAILED_PRECONDITION with a
// STOCK violation, and the item ends with nothing available.
func TestReserveConcurrent(t *testing.T) {
	t.Parallel()
	e := start(t, Config{})
	e.seed(t, item("hot", 50))
	ctx := testCtx(t)
	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.reserve(ctx, fmt.Sprintf("order-%03d", i), line("hot", 1))
		})
	}
	wg.Wait()
	ok := 0
	wantViolations := []*errdetails.PreconditionFailure_Violation{
		{Type: ViolationStock, Subject: "items/hot", Description: "1 requested, 0 available"},
	}
	for i, err := range errs {
		if err == nil {
			ok++
			continue
		}
		if !wantStatus(t, fmt.Sprintf("Reserve(order-%03d)", i), err, codes.FailedPrecondition, Domain, ReasonOutOfStock) {
			continue
		}
		got := status.PreconditionFailure(err).GetViolations()
		if diff := cmp.Diff(wantViolations, got, protocmp.Transform()); diff != "" {
			t.Errorf("Reserve(order-%03d) violations (-want +got):\n%s", i, diff)
		}
	}
	if ok != 50 {
		t.Errorf("%d reservations succeeded, want 50", ok)
	}
	got := e.get(t, "hot")
	if got.GetAvailable() != 0 || got.GetReserved() != 50 || got.GetOnHand() != 50 {
		t.Errorf("after the race: on hand %d, reserved %d, available %d; want 50, 50, 0",
			got.GetOnHand(), got.GetReserved(), got.GetAvailable())
	}
}

func TestReserve(t *testing.T) {
	t.Parallel()
	e := start(t, Config{})
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	e.svc.now = func() time.Time { return now }
	e.seed(t, item("a", 10), item("b", 1))
	ctx := testCtx(t)

	first, err := e.inv.Reserve(orderSvc.ctx(ctx), &inventoryv1.ReserveRequest{
		OrderId: "o1", Lines: []*inventoryv1.ReservationLine{line("a", 3), line("b", 1)}, TtlSeconds: 60,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &inventoryv1.Reservation{
		OrderId:    "o1",
		Lines:      []*inventoryv1.ReservationLine{line("a", 3), line("b", 1)},
		Status:     inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD,
		ExpireTime: timestamppb.New(now.Add(time.Minute)),
		CreateTime: timestamppb.New(now),
	}
	if diff := cmp.Diff(want, first.GetReservation(), protocmp.Transform()); diff != "" {
		t.Errorf("Reserve (-want +got):\n%s", diff)
	}
	// The same order again, a little later: the same reservation, and the
	// stock is taken once.
	now = now.Add(time.Second)
	again, err := e.inv.Reserve(orderSvc.ctx(ctx), &inventoryv1.ReserveRequest{
		OrderId: "o1", Lines: []*inventoryv1.ReservationLine{line("a", 3), line("b", 1)}, TtlSeconds: 60,
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, again, protocmp.Transform()); diff != "" {
		t.Errorf("repeated Reserve (-first +again):\n%s", diff)
	}
	if got := e.get(t, "a"); got.GetReserved() != 3 {
		t.Errorf("reserved %d after a repeated Reserve, want 3", got.GetReserved())
	}
	// Default TTL.
	o2, err := e.reserve(ctx, "o2", line("a", 1))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := o2.GetExpireTime().AsTime().Sub(o2.GetCreateTime().AsTime()), 15*time.Minute; got != want {
		t.Errorf("default TTL = %s, want %s", got, want)
	}

	tests := []struct {
		name   string
		order  string
		lines  []*inventoryv1.ReservationLine
		code   codes.Code
		reason string
		check  func(err error)
	}{
		{
			name: "other lines under the same order", order: "o1", lines: []*inventoryv1.ReservationLine{line("a", 4)},
			code: codes.AlreadyExists, reason: ReasonReservationMismatch,
			check: func(err error) {
				if got := status.ResourceInfo(err).GetResourceName(); got != "reservations/o1" {
					t.Errorf("mismatch ResourceInfo name %q, want reservations/o1", got)
				}
			},
		},
		{
			name: "unknown item", order: "o3", lines: []*inventoryv1.ReservationLine{line("a", 1), line("zzz", 1)},
			code: codes.NotFound, reason: ReasonItemNotFound,
			check: func(err error) {
				if got := status.ResourceInfo(err).GetResourceName(); got != "items/zzz" {
					t.Errorf("unknown item ResourceInfo name %q, want items/zzz", got)
				}
			},
		},
		{
			name: "every short item listed", order: "o4", lines: []*inventoryv1.ReservationLine{line("b", 1), line("a", 7)},
			code: codes.FailedPrecondition, reason: ReasonOutOfStock,
			check: func(err error) {
				want := []*errdetails.PreconditionFailure_Violation{
					{Type: ViolationStock, Subject: "items/a", Description: "7 requested, 6 available"},
					{Type: ViolationStock, Subject: "items/b", Description: "1 requested, 0 available"},
				}
				if diff := cmp.Diff(want, status.PreconditionFailure(err).GetViolations(), protocmp.Transform()); diff != "" {
					t.Errorf("violations (-want +got):\n%s", diff)
				}
			},
		},
	}
	for _, tt := range tests {
		_, err := e.reserve(ctx, tt.order, tt.lines...)
		if wantStatus(t, tt.name, err, tt.code, Domain, tt.reason) {
			tt.check(err)
		}
	}
	if got := e.get(t, "a"); got.GetReserved() != 4 {
		t.Errorf("reserved %d after failed reservations, want 4", got.GetReserved())
	}
}

// TestReservationLifecycle drives Release and CommitReservation through
// every status.
func TestReservationLifecycle(t *testing.T) {
	t.Parallel()
	e := start(t, Config{})
	ctx := testCtx(t)
	const (
		held      = inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD
		committed = inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED
		released  = inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED
		expired   = inventoryv1.ReservationStatus_RESERVATION_STATUS_EXPIRED
	)
	release := func(order string) (*inventoryv1.Reservation, error) {
		r, err := e.inv.Release(orderSvc.ctx(ctx), &inventoryv1.ReleaseRequest{OrderId: order, Reason: "payment declined"})
		return r.GetReservation(), err
	}
	commit := func(order string) (*inventoryv1.Reservation, error) {
		r, err := e.inv.CommitReservation(orderSvc.ctx(ctx), &inventoryv1.CommitReservationRequest{OrderId: order})
		return r.GetReservation(), err
	}
	// expire makes the reservation expire: the clock jumps past its expiry
	// and the loop's work is done by hand.
	expire := func(string) (*inventoryv1.Reservation, error) {
		n, levels, err := e.svc.store.ExpireDue(ctx, time.Now().Add(time.Hour), 100)
		e.svc.hub.publish(levels)
		if err != nil || n != 1 {
			return nil, fmt.Errorf("expired %d: %w", n, err)
		}
		return nil, nil
	}
	type step struct {
		op     func(string) (*inventoryv1.Reservation, error)
		status inventoryv1.ReservationStatus // want on success
		reason string                        // want on failure
	}
	tests := []struct {
		name    string
		steps   []step
		onHand  int64
		reserve int64
	}{
		{"commit, commit again, release", []step{
			{commit, committed, ""}, {commit, committed, ""}, {release, 0, "RESERVATION_COMMITTED"},
		}, 7, 0},
		{"release, release again, commit", []step{
			{release, released, ""}, {release, released, ""}, {commit, 0, "RESERVATION_RELEASED"},
		}, 10, 0},
		{"expire, release, commit", []step{
			{expire, 0, ""}, {release, expired, ""}, {commit, 0, "RESERVATION_EXPIRED"},
		}, 10, 0},
	}
	for i, tt := range tests {
		id, order := fmt.Sprint("life-", i), fmt.Sprint("order-", i)
		e.seed(t, item(id, 10))
		r, err := e.reserve(ctx, order, line(id, 3))
		if err != nil || r.GetStatus() != held {
			t.Fatalf("%s: Reserve = %v, %v", tt.name, r.GetStatus(), err)
		}
		for j, s := range tt.steps {
			got, err := s.op(order)
			what := fmt.Sprintf("%s: step %d", tt.name, j)
			switch {
			case s.reason != "":
				if wantStatus(t, what, err, codes.FailedPrecondition, Domain, s.reason) {
					v := status.PreconditionFailure(err).GetViolations()
					if len(v) != 1 || v[0].GetType() != ViolationStatus || v[0].GetSubject() != "reservations/"+order {
						t.Errorf("%s: violations %v, want one STATUS on reservations/%s", what, v, order)
					}
				}
			case err != nil:
				t.Errorf("%s: %v", what, err)
			case s.status != 0 && got.GetStatus() != s.status:
				t.Errorf("%s: status %v, want %v", what, got.GetStatus(), s.status)
			}
		}
		if got := e.get(t, id); got.GetOnHand() != tt.onHand || got.GetReserved() != tt.reserve {
			t.Errorf("%s: on hand %d, reserved %d; want %d, %d", tt.name, got.GetOnHand(), got.GetReserved(), tt.onHand, tt.reserve)
		}
	}
	for name, op := range map[string]func(string) (*inventoryv1.Reservation, error){"Release": release, "Commit": commit} {
		_, err := op("ghost")
		if wantStatus(t, name+"(ghost)", err, codes.NotFound, Domain, ReasonReservationNotFound) {
			if got := status.ResourceInfo(err).GetResourceName(); got != "reservations/ghost" {
				t.Errorf("%s(ghost) ResourceInfo %q", name, got)
			}
		}
	}
}

// TestExpiry lets the expiry loop give abandoned stock back.
func TestExpiry(t *testing.T) {
	t.Parallel()
	e := start(t, Config{DefaultTTL: 100 * time.Millisecond, ExpiryInterval: 10 * time.Millisecond})
	e.seed(t, item("a", 5))
	ctx := testCtx(t)
	r, err := e.reserve(ctx, "o1", line("a", 5))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.GetExpireTime().AsTime().Sub(r.GetCreateTime().AsTime()); got != 100*time.Millisecond {
		t.Errorf("expiry after %s, want 100ms", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.get(t, "a").GetReserved() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the reservation did not expire within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rel, err := e.inv.Release(orderSvc.ctx(ctx), &inventoryv1.ReleaseRequest{OrderId: "o1"})
	if err != nil || rel.GetReservation().GetStatus() != inventoryv1.ReservationStatus_RESERVATION_STATUS_EXPIRED {
		t.Errorf("Release of an expired reservation = %v, %v; want it EXPIRED", rel.GetReservation().GetStatus(), err)
	}
	_, err = e.inv.CommitReservation(orderSvc.ctx(ctx), &inventoryv1.CommitReservationRequest{OrderId: "o1"})
	wantStatus(t, "Commit of an expired reservation", err, codes.FailedPrecondition, Domain, "RESERVATION_EXPIRED")
	// The stock can be reserved again.
	if _, err := e.reserve(ctx, "o2", line("a", 5)); err != nil {
		t.Errorf("Reserve after expiry: %v", err)
	}
}

// listAll reads a ListItems stream to its end.
func listAll(t *testing.T, inv inventoryv1.InventoryServiceClient, req *inventoryv1.ListItemsRequest) []*inventoryv1.ListItemsResponse {
	t.Helper()
	s, err := inv.ListItems(customer.ctx(testCtx(t)), req)
	if err != nil {
		t.Fatal(err)
	}
	var pages []*inventoryv1.ListItemsResponse
	for {
		p, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return pages
		}
		if err != nil {
			t.Fatalf("ListItems: %v", err)
		}
		pages = append(pages, p)
	}
}

func TestListItems(t *testing.T) {
	t.Parallel()
	e := start(t, Config{})
	if got := listAll(t, e.inv, &inventoryv1.ListItemsRequest{}); len(got) != 0 {
		t.Errorf("empty catalogue: %d pages, want 0", len(got))
	}
	var items []*inventoryv1.RecordItemsRequest
	var ids []string
	for i := range 350 {
		id := fmt.Sprintf("sku-%04d", i)
		items = append(items, item(id, int64(i)))
		ids = append(ids, id)
	}
	e.seed(t, items...)

	pageIDs := func(pages []*inventoryv1.ListItemsResponse) (sizes []int, got []string) {
		for _, p := range pages {
			sizes = append(sizes, len(p.GetItems()))
			for _, it := range p.GetItems() {
				got = append(got, it.GetItemId())
			}
		}
		return sizes, got
	}
	tests := []struct {
		name      string
		pageSize  int32
		wantSizes []int
	}{
		{"pages of 100", 100, []int{100, 100, 100, 50}},
		{"default size", 0, []int{100, 100, 100, 50}},
		{"pages of 70", 70, []int{70, 70, 70, 70, 70}},
		{"one page", MaxPageSize, []int{350}},
	}
	for _, tt := range tests {
		pages := listAll(t, e.inv, &inventoryv1.ListItemsRequest{PageSize: tt.pageSize})
		sizes, got := pageIDs(pages)
		if diff := cmp.Diff(tt.wantSizes, sizes); diff != "" {
			t.Errorf("%s: page sizes (-want +got):\n%s", tt.name, diff)
		}
		if diff := cmp.Diff(ids, got); diff != "" {
			t.Errorf("%s: ids (-want +got):\n%s", tt.name, diff)
		}
		for i, p := range pages {
			if last := i == len(pages)-1; last != (p.GetNextPageToken() == "") {
				t.Errorf("%s: page %d token %q; want empty only on the last page", tt.name, i, p.GetNextPageToken())
			}
		}
	}

	// Resume from the token of the second page.
	pages := listAll(t, e.inv, &inventoryv1.ListItemsRequest{PageSize: 100})
	resumed := listAll(t, e.inv, &inventoryv1.ListItemsRequest{PageSize: 100, PageToken: pages[1].GetNextPageToken()})
	sizes, got := pageIDs(resumed)
	if diff := cmp.Diff([]int{100, 50}, sizes); diff != "" {
		t.Errorf("resumed page sizes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ids[200:], got); diff != "" {
		t.Errorf("resumed ids (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(pages[2:], resumed, protocmp.Transform()); diff != "" {
		t.Errorf("resumed pages differ from the original ones (-want +got):\n%s", diff)
	}
}

// record sends msgs on one RecordItems stream as the operator.
func record(ctx context.Context, inv inventoryv1.InventoryServiceClient, msgs []*inventoryv1.RecordItemsRequest) (*inventoryv1.RecordItemsResponse, error) {
	s, err := inv.RecordItems(operator.ctx(ctx))
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			break // the status comes with CloseAndRecv
		}
	}
	return s.CloseAndRecv()
}

func TestRecordItems(t *testing.T) {
	t.Parallel()
	e := start(t, Config{RecordBatch: 3})
	e.seed(t, item("held", 10))
	ctx := testCtx(t)
	if _, err := e.reserve(ctx, "o", line("held", 5)); err != nil {
		t.Fatal(err)
	}
	badCurrency := item("pear2", 1)
	badCurrency.Price.CurrencyCode = "eur"
	badAmount := item("pear3", 1)
	badAmount.Price.AmountMinor = -1
	noName := item("ghost", 1)
	noName.Name = ""
	longName := item("long", 1)
	longName.Name = strings.Repeat("n", MaxNameLen+1)
	msgs := []*inventoryv1.RecordItemsRequest{
		item("apple", 10),                  // 0 created
		item("bad id", 1),                  // 1 invalid id
		item("pear", 4),                    // 2 created
		badCurrency,                        // 3 invalid currency
		badAmount,                          // 4 negative price
		item("neg", -1),                    // 5 negative quantity
		noName,                             // 6 new without a name
		{ItemId: "apple", Quantity: 20},    // 7 updated, name and price kept
		longName,                           // 8 name too long
		{ItemId: "held", Quantity: 4},      // 9 below the 5 reserved
		{ItemId: "held", Quantity: 5},      // 10 updated
		item("plum", MaxQuantity),          // 11 created
		item("huge", MaxQuantity+1),        // 12 too many units
		{ItemId: "apple", Description: ""}, // 13 updated to 0 units
	}
	got, err := record(ctx, e.inv, msgs)
	if err != nil {
		t.Fatal(err)
	}
	want := &inventoryv1.RecordItemsResponse{
		Created: 3, Updated: 3, Rejected: 8,
		Errors: []*inventoryv1.RecordItemError{
			{Index: 1, ItemId: "bad id", Field: "item_id", Reason: validate.Reason, Description: itemIDRule},
			{Index: 3, ItemId: "pear2", Field: "price.currency_code", Reason: validate.Reason, Description: "must be an ISO 4217 code of 3 upper-case letters"},
			{Index: 4, ItemId: "pear3", Field: "price.amount_minor", Reason: validate.Reason, Description: "must not be negative"},
			{Index: 5, ItemId: "neg", Field: "quantity", Reason: validate.Reason, Description: "must be between 0 and 1000000000"},
			{Index: 6, ItemId: "ghost", Field: "name", Reason: ReasonNameRequired, Description: "a new item needs a name"},
			{Index: 8, ItemId: "long", Field: "name", Reason: validate.Reason, Description: "must be at most 200 characters"},
			{Index: 9, ItemId: "held", Field: "quantity", Reason: ReasonBelowReserved, Description: "quantity 4 is below the 5 units reserved"},
			{Index: 12, ItemId: "huge", Field: "quantity", Reason: validate.Reason, Description: "must be between 0 and 1000000000"},
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("RecordItems (-want +got):\n%s", diff)
	}
	apple := e.get(t, "apple")
	if apple.GetName() != "Item apple" || apple.GetOnHand() != 0 || apple.GetVersion() != 3 || apple.GetPrice().GetAmountMinor() != 1999 {
		t.Errorf("apple = %v, want its name and price kept, 0 on hand, version 3", apple)
	}
	if held := e.get(t, "held"); held.GetOnHand() != 5 || held.GetReserved() != 5 {
		t.Errorf("held: on hand %d, reserved %d; want 5, 5", held.GetOnHand(), held.GetReserved())
	}
	for _, id := range []string{"pear", "plum"} {
		e.get(t, id)
	}
	_, err = e.inv.GetItem(operator.ctx(ctx), &inventoryv1.GetItemRequest{ItemId: "ghost"})
	wantStatus(t, "GetItem(ghost)", err, codes.NotFound, Domain, ReasonItemNotFound)
}

func TestRecordItemsBounds(t *testing.T) {
	t.Parallel()
	e := start(t, Config{})
	ctx := testCtx(t)
	// Errors are listed up to MaxRecordErrors, and all counted.
	msgs := make([]*inventoryv1.RecordItemsRequest, 0, MaxRecordErrors+500)
	for i := range MaxRecordErrors + 500 {
		if i%2 == 0 {
			msgs = append(msgs, item(fmt.Sprint("ok-", i), 1))
		} else {
			msgs = append(msgs, item(fmt.Sprint("bad ", i), 1))
		}
	}
	msgs = append(msgs, make([]*inventoryv1.RecordItemsRequest, 600)...) // empty: invalid ids
	for i := range msgs[MaxRecordErrors+500:] {
		msgs[MaxRecordErrors+500+i] = &inventoryv1.RecordItemsRequest{}
	}
	resp, err := record(ctx, e.inv, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCreated() != 750 || resp.GetRejected() != 750+600 {
		t.Errorf("created %d, rejected %d; want 750, 1350", resp.GetCreated(), resp.GetRejected())
	}
	if n := len(resp.GetErrors()); n != MaxRecordErrors {
		t.Fatalf("%d errors listed, want %d", n, MaxRecordErrors)
	}
	for i, e := range resp.GetErrors() {
		want := int32(2*i + 1) // the odd ones, then the empty messages
		if i >= 750 {
			want = int32(1500 + i - 750)
		}
		if e.GetIndex() != want {
			t.Fatalf("errors[%d].index = %d, want %d", i, e.GetIndex(), want)
		}
	}

	// The stream is bounded: message MaxRecordMessages+1 ends it, after
	// the ones before it were imported. (Sending 100,000 messages takes too
	// long under -race: the test lowers the bound.)
	if e.svc.recordLimit != MaxRecordMessages {
		t.Errorf("RecordItems bound = %d, want %d", e.svc.recordLimit, MaxRecordMessages)
	}
	const limit = 250
	e.svc.recordLimit = limit
	msgs = msgs[:0]
	for i := range limit + 50 {
		msgs = append(msgs, item(fmt.Sprint("bulk-", i), 1))
	}
	_, err = record(ctx, e.inv, msgs)
	if wantStatus(t, "RecordItems past the limit", err, codes.InvalidArgument, Domain, ReasonTooManyItems) {
		if status.BadRequest(err) == nil {
			t.Error("RecordItems past the limit has no BadRequest")
		}
	}
	pages := listAll(t, e.inv, &inventoryv1.ListItemsRequest{PageSize: MaxPageSize, PageToken: encodePageToken("bulk-")})
	var imported int
	for _, p := range pages {
		for _, it := range p.GetItems() {
			if strings.HasPrefix(it.GetItemId(), "bulk-") {
				imported++
			}
		}
	}
	if imported != limit {
		t.Errorf("%d items imported by the stream past the limit, want the first %d", imported, limit)
	}
}

func TestSeed(t *testing.T) {
	t.Parallel()
	e := start(t, Config{RecordBatch: 2})
	catalogue := []*inventoryv1.RecordItemsRequest{item("a", 1), item("b", 2), item("c", 3)}
	e.seed(t, catalogue...)
	if _, err := e.reserve(testCtx(t), "o", line("a", 1)); err != nil {
		t.Fatal(err)
	}
	changed := item("a", 100)
	changed.Name = "Renamed"
	e.seed(t, changed, item("d", 4))
	if a := e.get(t, "a"); a.GetName() != "Item a" || a.GetOnHand() != 1 || a.GetReserved() != 1 {
		t.Errorf("Seed changed an existing item: %v", a)
	}
	e.get(t, "d")
	for _, bad := range []*inventoryv1.RecordItemsRequest{{ItemId: "x", Quantity: 1}, item("bad id", 1)} {
		if err := e.svc.Seed(testCtx(t), []*inventoryv1.RecordItemsRequest{bad}); err == nil {
			t.Errorf("Seed(%v) succeeded", bad)
		}
	}
}

func TestOpenConfig(t *testing.T) {
	t.Parallel()
	db := sqltest.New(t, sqldb.SQLite, nil, "")
	for _, cfg := range []Config{
		{DefaultTTL: 25 * time.Hour},
		{ExpiryBatch: -1},
		{RecordBatch: MaxRecordBatch + 1},
		{SubscriberBuffer: -5},
		{ResyncWindow: 2 * time.Minute},
		{ExpiryInterval: -time.Second},
	} {
		if s, err := Open(t.Context(), db, cfg, nil); err == nil {
			_ = s.Close()
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
	s, err := Open(t.Context(), db, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		DefaultTTL: 15 * time.Minute, ExpiryInterval: 5 * time.Second, ExpiryBatch: 100,
		RecordBatch: 100, SubscriberBuffer: 256, ResyncWindow: 5 * time.Second,
	}
	if diff := cmp.Diff(want, s.cfg); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	// Close is idempotent; Open again reuses the migrated database.
	_ = s.Close()
	_ = s.Close()
	s, err = Open(t.Context(), db, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
}

// subscribeStream is a Subscribe stream as some caller.
type subscribeStream = grpc.BidiStreamingClient[inventoryv1.SubscribeRequest, inventoryv1.SubscribeResponse]

func subscribe(ctx context.Context, t *testing.T, inv inventoryv1.InventoryServiceClient, ids ...string) subscribeStream {
	t.Helper()
	s, err := inv.Subscribe(customer.ctx(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) > 0 {
		if err := s.Send(&inventoryv1.SubscribeRequest{SubscribeItemIds: ids}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func recv(t *testing.T, s subscribeStream) *inventoryv1.SubscribeResponse {
	t.Helper()
	m, err := s.Recv()
	if err != nil {
		t.Fatalf("Subscribe Recv: %v", err)
	}
	m.UpdateTime = nil // compared separately where it matters
	return m
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	e := start(t, Config{})
	e.seed(t, item("a", 10), item("b", 5))
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	s := subscribe(ctx, t, e.inv, "a", "b", "later", "a")

	check := func(what string, want *inventoryv1.SubscribeResponse) {
		t.Helper()
		if diff := cmp.Diff(want, recv(t, s), protocmp.Transform()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", what, diff)
		}
	}
	check("snapshot a", &inventoryv1.SubscribeResponse{ItemId: "a", OnHand: 10, Available: 10, Version: 1, Snapshot: true})
	check("snapshot b", &inventoryv1.SubscribeResponse{ItemId: "b", OnHand: 5, Available: 5, Version: 1, Snapshot: true})
	check("snapshot of an unknown item", &inventoryv1.SubscribeResponse{ItemId: "later", Snapshot: true})

	if _, err := e.reserve(ctx, "o1", line("a", 3), line("b", 1)); err != nil {
		t.Fatal(err)
	}
	check("reserve a", &inventoryv1.SubscribeResponse{ItemId: "a", OnHand: 10, Reserved: 3, Available: 7, Version: 2})
	check("reserve b", &inventoryv1.SubscribeResponse{ItemId: "b", OnHand: 5, Reserved: 1, Available: 4, Version: 2})

	if err := s.Send(&inventoryv1.SubscribeRequest{UnsubscribeItemIds: []string{"b"}}); err != nil {
		t.Fatal(err)
	}
	// Unsubscribing is asynchronous: wait until the hub has dropped b.
	waitFor(t, "b unfollowed", func() bool { return e.svc.hub.followers("b") == 0 })
	if _, err := e.inv.CommitReservation(orderSvc.ctx(ctx), &inventoryv1.CommitReservationRequest{OrderId: "o1"}); err != nil {
		t.Fatal(err)
	}
	check("commit a", &inventoryv1.SubscribeResponse{ItemId: "a", OnHand: 7, Available: 7, Version: 3})
	if _, err := record(ctx, e.inv, []*inventoryv1.RecordItemsRequest{item("later", 8)}); err != nil {
		t.Fatal(err)
	}
	check("created later", &inventoryv1.SubscribeResponse{ItemId: "later", OnHand: 8, Available: 8, Version: 1})

	// Subscribing again to a followed item gives a fresh snapshot.
	if err := s.Send(&inventoryv1.SubscribeRequest{SubscribeItemIds: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.GetItemId() != "a" || !m.GetSnapshot() || m.GetVersion() != 3 || m.GetUpdateTime() == nil {
		t.Errorf("second snapshot of a = %v", m)
	}

	// Closing the sending side keeps the stream going while ids are
	// followed.
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reserve(ctx, "o2", line("a", 1)); err != nil {
		t.Fatal(err)
	}
	check("after CloseSend", &inventoryv1.SubscribeResponse{ItemId: "a", OnHand: 7, Reserved: 1, Available: 6, Version: 4})
	cancel()
	if _, err := s.Recv(); grpcstatus.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel = %v, want Canceled", err)
	}
	waitFor(t, "subscriber gone", func() bool { return e.svc.hub.followers("a") == 0 })
}

func TestSubscribeTooManyIDs(t *testing.T) {
	t.Parallel()
	e := start(t, Config{})
	ctx := testCtx(t)
	ids := make([]string, MaxSubscriptions)
	for i := range ids {
		ids[i] = fmt.Sprint("id-", i)
	}
	s := subscribe(ctx, t, e.inv, ids...)
	for range ids {
		recv(t, s)
	}
	if err := s.Send(&inventoryv1.SubscribeRequest{SubscribeItemIds: []string{"id-0", "one-more"}}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Recv()
	if wantStatus(t, "one id too many", err, codes.InvalidArgument, Domain, ReasonTooManySubscriptions) {
		if got := status.BadRequest(err).GetFieldViolations(); len(got) != 1 || got[0].GetField() != "subscribe_item_ids" {
			t.Errorf("violations %v, want subscribe_item_ids", got)
		}
	}
}

// TestSubscribeSlowAndFast: one subscriber reads every change while
// another stops reading. The publisher (a bulk import) is never held up by
// the slow one, the fast one sees every version of every item, and the
// slow one is ended with RESOURCE_EXHAUSTED and a RetryInfo.
func TestSubscribeSlowAndFast(t *testing.T) {
	const window = 200 * time.Millisecond
	e := start(t, Config{ResyncWindow: window})
	// Long ids make big messages, so that fewer changes fill what the slow
	// subscriber leaves unread: two 64 KiB flow control windows (the
	// client's, and the server's write quota) and its queue of 256 hold
	// about 1,500 of them.
	const nItems, rounds = 300, 8
	var ids []string
	var catalogue []*inventoryv1.RecordItemsRequest
	for i := range nItems {
		id := fmt.Sprintf("%s%04d", strings.Repeat("s", MaxIDLen-4), i)
		ids = append(ids, id)
		catalogue = append(catalogue, item(id, 0))
	}
	e.seed(t, catalogue...)
	ctx := testCtx(t)

	// The slow subscriber has a connection of its own with fixed flow
	// control windows: it reads its snapshots, then nothing.
	slowInv := e.dial(t, client.WithFlowControl(64<<10, 64<<10))
	slow := subscribe(ctx, t, slowInv, ids...)
	for range nItems {
		recv(t, slow)
	}

	fast := subscribe(ctx, t, e.inv, ids...)
	type seen struct {
		versions  map[string][]int64
		snapshots int
		err       error
	}
	fastDone := make(chan seen, 1)
	fastReady := make(chan struct{})
	final := int64(1 + rounds)
	go func() {
		s := seen{versions: make(map[string][]int64)}
		complete := 0
		for complete < nItems {
			m, err := fast.Recv()
			if err != nil {
				s.err = err
				break
			}
			if m.GetSnapshot() {
				if s.snapshots++; s.snapshots == nItems {
					close(fastReady)
				}
			}
			s.versions[m.GetItemId()] = append(s.versions[m.GetItemId()], m.GetVersion())
			if m.GetVersion() == final {
				complete++
			}
		}
		fastDone <- s
	}()
	select {
	case <-fastReady:
	case s := <-fastDone:
		t.Fatalf("fast subscriber ended before its snapshots: %v", s.err)
	}

	var msgs []*inventoryv1.RecordItemsRequest
	for r := range rounds {
		for _, id := range ids {
			msgs = append(msgs, &inventoryv1.RecordItemsRequest{ItemId: id, Quantity: int64(r + 1)})
		}
	}
	began := time.Now()
	resp, err := record(ctx, e.inv, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetUpdated() != nItems*rounds {
		t.Fatalf("updated %d, want %d", resp.GetUpdated(), nItems*rounds)
	}
	t.Logf("%d changes published in %s while the slow subscriber read nothing", nItems*rounds, time.Since(began))

	select {
	case s := <-fastDone:
		if s.err != nil {
			t.Fatalf("fast subscriber: %v", s.err)
		}
		if s.snapshots != nItems {
			t.Errorf("fast subscriber got %d snapshots, want only the first %d", s.snapshots, nItems)
		}
		want := make([]int64, 0, final)
		for v := int64(1); v <= final; v++ {
			want = append(want, v)
		}
		for _, id := range ids {
			if diff := cmp.Diff(want, s.versions[id]); diff != "" {
				t.Fatalf("fast subscriber versions of %s (-want +got):\n%s", id, diff)
			}
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the fast subscriber did not see every change within 20s")
	}

	// The slow subscriber stayed behind for longer than the window: it was
	// ended. What it still reads is what was in flight, then the status.
	time.Sleep(2 * window)
	var n, snapshots int
	for {
		m, err := slow.Recv()
		if err != nil {
			if wantStatus(t, "slow subscriber", err, codes.ResourceExhausted, Domain, ReasonSubscriberTooSlow) {
				if d, ok := status.RetryDelay(err); !ok || d != window {
					t.Errorf("slow subscriber RetryInfo = %s, %v; want %s", d, ok, window)
				}
			}
			break
		}
		n++
		if m.GetSnapshot() {
			snapshots++
		}
	}
	t.Logf("slow subscriber read %d messages (%d resync snapshots) before it was ended", n, snapshots)
	if n >= nItems*rounds {
		t.Errorf("slow subscriber read %d messages, want fewer than the %d changes", n, nItems*rounds)
	}
	waitFor(t, "slow subscriber gone", func() bool { return e.svc.hub.followers(ids[0]) == 1 })
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
