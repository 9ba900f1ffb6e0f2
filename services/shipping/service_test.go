package shipping_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/internal/servicetest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/services/shipping"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// asOrder is the caller of CreateShipment and CancelShipment.
func asOrder(ctx context.Context) context.Context { return servicetest.As(ctx, "order", "") }

// fast is a carrier that delivers within tens of milliseconds.
var fast = shipping.Config{StepInterval: 5 * time.Millisecond, PollInterval: 2 * time.Millisecond, TrackResync: 20 * time.Millisecond}

// open opens the service on db, closed at the end of the test.
func open(t *testing.T, db *sqldb.DB, cfg shipping.Config) *shipping.Service {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := shipping.Open(t.Context(), db, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return svc
}

// serve serves svc with the kit's chain (validation, test authentication,
// the service's policy) on a loopback port and returns a client of it.
func serve(t *testing.T, svc *shipping.Service) shippingv1.ShippingServiceClient {
	t.Helper()
	return shippingv1.NewShippingServiceClient(servicetest.Serve(t, svc.Register, shipping.Policy()))
}

// each runs fn on a fresh database of each engine, in parallel.
func each(t *testing.T, fn func(t *testing.T, db *sqldb.DB)) {
	t.Helper()
	sqltest.Each(t, shipping.Migrations, shipping.MigrationsDir, func(t *testing.T, db *sqldb.DB) {
		t.Parallel()
		fn(t, db)
	})
}

// reopen opens a second handle on db's database, as another replica would,
// closed at the end of the test.
func reopen(t *testing.T, db *sqldb.DB) *sqldb.DB {
	t.Helper()
	ctx := t.Context()
	var dsn string
	switch db.Dialect {
	case sqldb.SQLite:
		var seq int
		var name, file string
		if err := db.QueryRowContext(ctx, `PRAGMA database_list`).Scan(&seq, &name, &file); err != nil {
			t.Fatal(err)
		}
		dsn = file
	case sqldb.Postgres:
		var name string
		if err := db.QueryRowContext(ctx, `SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(sqltest.AdminDSN())
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + name
		dsn = u.String()
	}
	other, err := sqldb.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	return other
}

func createRequest(order string) *shippingv1.CreateShipmentRequest {
	return &shippingv1.CreateShipmentRequest{
		OrderId: order,
		Address: &typev1.PostalAddress{
			Recipient: "Ada Lovelace", Line1: "12 St James's Square", Line2: "Flat 3",
			City: "London", PostalCode: "SW1Y 4JH", CountryCode: "GB",
		},
		Items: []*shippingv1.ShipmentItem{{ItemId: "sku-1", Quantity: 2}, {ItemId: "sku-2", Quantity: 1}},
	}
}

func create(t *testing.T, c shippingv1.ShippingServiceClient, order string) *shippingv1.Shipment {
	t.Helper()
	resp, err := c.CreateShipment(asOrder(t.Context()), createRequest(order))
	if err != nil {
		t.Fatalf("CreateShipment(%s) = %v", order, err)
	}
	return resp.GetShipment()
}

func get(t *testing.T, c shippingv1.ShippingServiceClient, id string) *shippingv1.Shipment {
	t.Helper()
	resp, err := c.GetShipment(servicetest.As(t.Context(), "gateway", ""), &shippingv1.GetShipmentRequest{ShipmentId: id})
	if err != nil {
		t.Fatalf("GetShipment(%s) = %v", id, err)
	}
	return resp.GetShipment()
}

// waitFor polls the shipment until it reaches want, failing after 10s.
// want must be a status the shipment stays in, or polls may miss it.
func waitFor(t *testing.T, c shippingv1.ShippingServiceClient, id string, want shippingv1.ShipmentStatus) *shippingv1.Shipment {
	t.Helper()
	return waitUntil(t, c, id, want.String(), func(s shippingv1.ShipmentStatus) bool { return s == want })
}

// waitUntil polls the shipment until its status satisfies ok, failing
// after 10s.
func waitUntil(t *testing.T, c shippingv1.ShippingServiceClient, id, what string, ok func(shippingv1.ShipmentStatus) bool) *shippingv1.Shipment {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sh := get(t, c, id)
		if ok(sh.GetStatus()) {
			return sh
		}
		if time.Now().After(deadline) {
			t.Fatalf("shipment %s is %v after 10s, want %s", id, sh.GetStatus(), what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// eventStatuses returns the statuses of a shipment's events, and fails
// unless their sequences are exactly 1..N and their times do not go back.
func eventStatuses(t *testing.T, events []*shippingv1.TrackingEvent) []shippingv1.ShipmentStatus {
	t.Helper()
	var out []shippingv1.ShipmentStatus
	for i, ev := range events {
		if ev.GetSequence() != int32(i+1) { //nolint:gosec // small
			t.Errorf("event %d has sequence %d, want %d", i, ev.GetSequence(), i+1)
		}
		if i > 0 && ev.GetEventTime().AsTime().Before(events[i-1].GetEventTime().AsTime()) {
			t.Errorf("event %d is older than event %d", i+1, i)
		}
		out = append(out, ev.GetStatus())
	}
	return out
}

// hookLog records OnStatusChange calls.
type hookLog struct {
	mu    sync.Mutex
	calls map[string][]shippingv1.ShipmentStatus // shipment id → "to" statuses
	bad   []string
}

func (h *hookLog) record(_ context.Context, shipmentID, orderID string, from, to shippingv1.ShipmentStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.calls == nil {
		h.calls = map[string][]shippingv1.ShipmentStatus{}
	}
	prev := shippingv1.ShipmentStatus_SHIPMENT_STATUS_UNSPECIFIED
	if c := h.calls[shipmentID]; len(c) > 0 {
		prev = c[len(c)-1]
	}
	if from != prev || orderID == "" {
		h.bad = append(h.bad, shipmentID+": "+from.String()+" → "+to.String()+" after "+prev.String())
	}
	h.calls[shipmentID] = append(h.calls[shipmentID], to)
}

func (h *hookLog) of(id string) []shippingv1.ShipmentStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls[id])
}

// settle waits up to 5s until the hooks have reported n changes of the
// shipment in total: a hook runs just after its commit, so a reader may see
// the change before the hook has been called.
func settle(id string, n int, hooks ...*hookLog) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		total := 0
		for _, h := range hooks {
			total += len(h.of(id))
		}
		if total >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func checkNotFound(t *testing.T, err error, id string) {
	t.Helper()
	if got, want := grpcstatus.Code(err), codes.NotFound; got != want {
		t.Fatalf("error = %v, want %v", err, want)
	}
	if got, want := status.Reason(err), shipping.ReasonNotFound; got != want {
		t.Errorf("reason = %q, want %q", got, want)
	}
	want := &errdetails.ResourceInfo{ResourceType: shipping.ResourceType, ResourceName: id}
	if diff := cmp.Diff(want, status.ResourceInfo(err), protocmp.Transform()); diff != "" {
		t.Errorf("ResourceInfo mismatch (-want +got):\n%s", diff)
	}
}

// env is a service served on a database of one engine.
type env struct {
	db   *sqldb.DB
	cfg  shipping.Config
	svc  *shipping.Service
	c    shippingv1.ShippingServiceClient
	hook *hookLog
}

// newEnv opens and serves the service on db with cfg, recording its
// status changes in the env's hook.
func newEnv(t *testing.T, db *sqldb.DB, cfg shipping.Config) *env {
	t.Helper()
	e := &env{db: db, cfg: cfg, hook: &hookLog{}}
	e.cfg.OnStatusChange = e.hook.record
	e.svc = open(t, db, e.cfg)
	e.c = serve(t, e.svc)
	return e
}

type envCase struct {
	name string
	fn   func(t *testing.T, e *env)
}

// run runs the cases as subtests on one env.
func run(t *testing.T, e *env, cases []envCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, e) })
	}
}

// TestUnaryRPCs runs the unary RPC cases on one service per engine whose
// carrier picks released shipments up at once, then takes an hour per step.
func TestUnaryRPCs(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		run(t, newEnv(t, db, shipping.Config{StepInterval: time.Hour, PollInterval: 2 * time.Millisecond}), []envCase{
			{"CreateShipment", testCreateShipment},
			{"CreateShipmentIsIdempotent", testCreateShipmentIsIdempotent},
			{"CreateShipmentWithOtherContent", testCreateShipmentWithOtherContent},
			{"CancelShipment", testCancelShipment},
			{"GetShipmentNotFound", testGetShipmentNotFound},
		})
	})
}

// TestCarrier runs the carrier and Track cases on one service per engine
// with a fast carrier and no Track resync, so that live Track events can
// only come from the in-process wake-ups.
func TestCarrier(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		cfg := shipping.Config{StepInterval: 10 * time.Millisecond, PollInterval: 2 * time.Millisecond, TrackResync: time.Hour}
		run(t, newEnv(t, db, cfg), []envCase{
			{"Delivers", testCarrierDelivers},
			{"Track", testTrack},
		})
	})
}

// testCreateShipment: a new shipment is CREATED with one event, and
// GetShipment returns what CreateShipment did.
func testCreateShipment(t *testing.T, e *env) {
	c := e.c
	order := newOrderID()
	got := create(t, c, order)
	want := &shippingv1.Shipment{
		OrderId: order,
		Address: createRequest(order).GetAddress(),
		Items:   createRequest(order).GetItems(),
		Status:  created,
		Carrier: shipping.DefaultCarrier,
		Events: []*shippingv1.TrackingEvent{{
			Sequence: 1, Status: created, Description: "Shipment created; awaiting pickup by " + shipping.DefaultCarrier,
		}},
	}
	ignore := protocmp.IgnoreFields(&shippingv1.Shipment{}, "shipment_id", "tracking_number", "create_time", "update_time")
	ignoreTime := protocmp.IgnoreFields(&shippingv1.TrackingEvent{}, "event_time")
	if diff := cmp.Diff(want, got, protocmp.Transform(), ignore, ignoreTime); diff != "" {
		t.Errorf("CreateShipment mismatch (-want +got):\n%s", diff)
	}
	if _, err := uuid.Parse(got.GetShipmentId()); err != nil || !strings.HasPrefix(got.GetTrackingNumber(), "SB") {
		t.Errorf("shipment id %q, tracking number %q: want a UUID and SB...", got.GetShipmentId(), got.GetTrackingNumber())
	}
	if !got.GetCreateTime().AsTime().Equal(got.GetEvents()[0].GetEventTime().AsTime()) || got.GetCreateTime().AsTime().IsZero() {
		t.Errorf("create_time %v, event_time %v: want equal and set", got.GetCreateTime(), got.GetEvents()[0].GetEventTime())
	}
	if diff := cmp.Diff(got, get(t, c, got.GetShipmentId()), protocmp.Transform()); diff != "" {
		t.Errorf("GetShipment differs from CreateShipment (-created +got):\n%s", diff)
	}
}

// testCreateShipmentIsIdempotent: 20 concurrent identical calls make one
// shipment, one event and one hook call, and all return it.
func testCreateShipmentIsIdempotent(t *testing.T, e *env) {
	c, db, hook := e.c, e.db, e.hook
	order := newOrderID()
	const callers = 20
	got := make([]*shippingv1.Shipment, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			req := createRequest(order)
			if i%2 == 1 { // the same items in another order are the same shipment
				slices.Reverse(req.Items)
			}
			resp, err := c.CreateShipment(asOrder(t.Context()), req)
			got[i], errs[i] = resp.GetShipment(), err
		})
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("CreateShipment call %d = %v", i, errs[i])
		}
		if diff := cmp.Diff(got[0], got[i], protocmp.Transform()); diff != "" {
			t.Errorf("call %d returned another shipment (-first +got):\n%s", i, diff)
		}
	}
	sh := get(t, c, got[0].GetShipmentId())
	if st := eventStatuses(t, sh.GetEvents()); !slices.Equal(st, []shippingv1.ShipmentStatus{created}) {
		t.Errorf("events after %d creates = %v, want one CREATED", callers, st)
	}
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM shipments WHERE order_id = $1`, order).Scan(&n); err != nil || n != 1 {
		t.Errorf("shipments of order = %d, %v, want 1", n, err)
	}
	if calls := hook.of(sh.GetShipmentId()); !slices.Equal(calls, []shippingv1.ShipmentStatus{created}) {
		t.Errorf("OnStatusChange calls = %v, want one, to CREATED", calls)
	}
}

// testCreateShipmentWithOtherContent: a repeat with another address or
// other items is ALREADY_EXISTS naming the existing shipment.
func testCreateShipmentWithOtherContent(t *testing.T, e *env) {
	c := e.c
	order := newOrderID()
	first := create(t, c, order)
	tests := []struct {
		name   string
		change func(*shippingv1.CreateShipmentRequest)
	}{
		{"address", func(r *shippingv1.CreateShipmentRequest) { r.Address.PostalCode = "SW1Y 4JJ" }},
		{"quantity", func(r *shippingv1.CreateShipmentRequest) { r.Items[0].Quantity = 3 }},
		{"items", func(r *shippingv1.CreateShipmentRequest) { r.Items = r.Items[:1] }},
	}
	for _, tc := range tests {
		req := createRequest(order)
		tc.change(req)
		_, err := c.CreateShipment(asOrder(t.Context()), req)
		if got, want := grpcstatus.Code(err), codes.AlreadyExists; got != want {
			t.Errorf("CreateShipment with other %s = %v, want %v", tc.name, err, want)
			continue
		}
		if got, want := status.Reason(err), shipping.ReasonAlreadyExists; got != want {
			t.Errorf("reason = %q, want %q", got, want)
		}
		if got, want := status.Info(err).GetDomain(), shipping.Domain; got != want {
			t.Errorf("domain = %q, want %q", got, want)
		}
		ri := status.ResourceInfo(err)
		if ri.GetResourceType() != shipping.ResourceType || ri.GetResourceName() != first.GetShipmentId() {
			t.Errorf("ResourceInfo = %v, want shipment %s", ri, first.GetShipmentId())
		}
	}
}

// testCancelShipment: cancelling before pickup works and is idempotent;
// after pickup it is FAILED_PRECONDITION with a PreconditionFailure.
func testCancelShipment(t *testing.T, e *env) {
	svc, c, hook, ctx := e.svc, e.c, e.hook, t.Context()

	t.Run("BeforePickup", func(t *testing.T) {
		sh := create(t, c, newOrderID())
		req := &shippingv1.CancelShipmentRequest{ShipmentId: sh.GetShipmentId(), Reason: "payment declined"}
		resp, err := c.CancelShipment(asOrder(ctx), req)
		if err != nil {
			t.Fatal(err)
		}
		got := resp.GetShipment()
		if got.GetStatus() != cancelled || !slices.Equal(eventStatuses(t, got.GetEvents()), []shippingv1.ShipmentStatus{created, cancelled}) {
			t.Errorf("CancelShipment = %v, events %v", got.GetStatus(), got.GetEvents())
		}
		if d := got.GetEvents()[1].GetDescription(); !strings.Contains(d, "payment declined") {
			t.Errorf("cancel event %q does not give the reason", d)
		}
		again, err := c.CancelShipment(asOrder(ctx), req)
		if err != nil {
			t.Fatalf("second CancelShipment = %v", err)
		}
		if diff := cmp.Diff(got, again.GetShipment(), protocmp.Transform()); diff != "" {
			t.Errorf("second CancelShipment changed it (-first +second):\n%s", diff)
		}
		if calls := hook.of(sh.GetShipmentId()); !slices.Equal(calls, []shippingv1.ShipmentStatus{created, cancelled}) {
			t.Errorf("OnStatusChange calls = %v, want CREATED then CANCELLED", calls)
		}
		if err := svc.Release(ctx, got.GetOrderId()); !errors.Is(err, shipping.ErrCancelled) {
			t.Errorf("Release of a cancelled shipment = %v, want ErrCancelled", err)
		}
		time.Sleep(20 * time.Millisecond) // carrier ticks: nothing moves
		if diff := cmp.Diff(got, get(t, c, sh.GetShipmentId()), protocmp.Transform()); diff != "" {
			t.Errorf("cancelled shipment changed (-cancelled +now):\n%s", diff)
		}
	})

	t.Run("AfterPickup", func(t *testing.T) {
		sh := create(t, c, newOrderID())
		if err := svc.Release(ctx, sh.GetOrderId()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, c, sh.GetShipmentId(), pickedUp)
		_, err := c.CancelShipment(asOrder(ctx), &shippingv1.CancelShipmentRequest{ShipmentId: sh.GetShipmentId()})
		if got, want := grpcstatus.Code(err), codes.FailedPrecondition; got != want {
			t.Fatalf("CancelShipment after pickup = %v, want %v", err, want)
		}
		if got, want := status.Reason(err), shipping.ReasonNotCancellable; got != want {
			t.Errorf("reason = %q, want %q", got, want)
		}
		want := &errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
			Type:        shipping.PreconditionType,
			Subject:     "shipments/" + sh.GetShipmentId(),
			Description: "shipment is PICKED_UP; only a shipment not yet picked up can be cancelled",
		}}}
		if diff := cmp.Diff(want, status.PreconditionFailure(err), protocmp.Transform()); diff != "" {
			t.Errorf("PreconditionFailure mismatch (-want +got):\n%s", diff)
		}
		if got := get(t, c, sh.GetShipmentId()).GetStatus(); got != pickedUp {
			t.Errorf("status after refused cancel = %v, want PICKED_UP", got)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		id := uuid.NewString()
		_, err := c.CancelShipment(asOrder(ctx), &shippingv1.CancelShipmentRequest{ShipmentId: id})
		checkNotFound(t, err, id)
	})
}

// testGetShipmentNotFound: NOT_FOUND with a ResourceInfo.
func testGetShipmentNotFound(t *testing.T, e *env) {
	c := e.c
	id := uuid.NewString()
	_, err := c.GetShipment(servicetest.As(t.Context(), "gateway", ""), &shippingv1.GetShipmentRequest{ShipmentId: id})
	checkNotFound(t, err, id)
}

// testCarrierDelivers: a shipment waits for Release, then the carrier
// takes it to DELIVERED, one event and one hook call per step.
func testCarrierDelivers(t *testing.T, e *env) {
	svc, c, hook, cfg, ctx := e.svc, e.c, e.hook, e.cfg, t.Context()
	sh := create(t, c, newOrderID())

	time.Sleep(10 * cfg.StepInterval)
	if got := get(t, c, sh.GetShipmentId()); got.GetStatus() != created || len(got.GetEvents()) != 1 {
		t.Fatalf("unreleased shipment moved: %v with %d events", got.GetStatus(), len(got.GetEvents()))
	}
	if err := svc.Release(ctx, sh.GetOrderId()); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, c, sh.GetShipmentId(), delivered)
	if st := eventStatuses(t, got.GetEvents()); !slices.Equal(st, lifecycle) {
		t.Errorf("events = %v, want %v", st, lifecycle)
	}
	wantLoc := []string{"", "Switchboard fulfilment centre", shipping.DefaultCarrier + " sorting hub", "London", "London"}
	for i, ev := range got.GetEvents() {
		if ev.GetLocation() != wantLoc[i] || ev.GetDescription() == "" {
			t.Errorf("event %d: %q at %q, want a description at %q", i+1, ev.GetDescription(), ev.GetLocation(), wantLoc[i])
		}
	}
	if !got.GetUpdateTime().AsTime().Equal(got.GetEvents()[4].GetEventTime().AsTime()) {
		t.Errorf("update_time %v, want the DELIVERED event's time", got.GetUpdateTime().AsTime())
	}
	settle(sh.GetShipmentId(), len(lifecycle), hook)
	if calls := hook.of(sh.GetShipmentId()); !slices.Equal(calls, lifecycle) {
		t.Errorf("OnStatusChange calls = %v, want %v", calls, lifecycle)
	}
	if len(hook.bad) > 0 {
		t.Errorf("OnStatusChange out of order: %v", hook.bad)
	}
	if err := svc.Release(ctx, sh.GetOrderId()); err != nil {
		t.Errorf("Release of a delivered shipment = %v, want nil", err)
	}
	if err := svc.Release(ctx, "no-such-order"); !errors.Is(err, shipping.ErrNotFound) {
		t.Errorf("Release(no-such-order) = %v, want ErrNotFound", err)
	}
}

// testTrack: Track sends the history, then live events in order, and ends
// after DELIVERED or CANCELLED.
func testTrack(t *testing.T, e *env) {
	svc, c, ctx := e.svc, e.c, t.Context()

	t.Run("HistoryThenLive", func(t *testing.T) {
		sh := create(t, c, newOrderID())
		stream, err := c.Track(servicetest.As(ctx, "storefront", "u1", "customer"), &shippingv1.TrackRequest{ShipmentId: sh.GetShipmentId()})
		if err != nil {
			t.Fatal(err)
		}
		first, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if first.GetShipmentId() != sh.GetShipmentId() || first.GetEvent().GetStatus() != created {
			t.Fatalf("first Track message = %v, want the CREATED event", first)
		}
		if err := svc.Release(ctx, sh.GetOrderId()); err != nil {
			t.Fatal(err)
		}
		rest, err := recvAll(stream)
		if err != nil {
			t.Fatalf("Track ended with %v", err)
		}
		got := append([]*shippingv1.TrackingEvent{first.GetEvent()}, rest...)
		want := get(t, c, sh.GetShipmentId()).GetEvents()
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("Track events differ from GetShipment's (-want +got):\n%s", diff)
		}
		if st := eventStatuses(t, got); !slices.Equal(st, lifecycle) {
			t.Errorf("Track statuses = %v, want %v", st, lifecycle)
		}
	})

	t.Run("AfterDelivery", func(t *testing.T) {
		sh := create(t, c, newOrderID())
		if err := svc.Release(ctx, sh.GetOrderId()); err != nil {
			t.Fatal(err)
		}
		want := waitFor(t, c, sh.GetShipmentId(), delivered).GetEvents()
		stream, err := c.Track(servicetest.As(ctx, "gateway", ""), &shippingv1.TrackRequest{ShipmentId: sh.GetShipmentId()})
		if err != nil {
			t.Fatal(err)
		}
		got, err := recvAll(stream)
		if err != nil {
			t.Fatalf("Track ended with %v", err)
		}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("Track of a delivered shipment (-want +got):\n%s", diff)
		}
	})

	t.Run("Cancelled", func(t *testing.T) {
		sh := create(t, c, newOrderID())
		stream, err := c.Track(servicetest.As(ctx, "order", ""), &shippingv1.TrackRequest{ShipmentId: sh.GetShipmentId()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CancelShipment(asOrder(ctx), &shippingv1.CancelShipmentRequest{ShipmentId: sh.GetShipmentId()}); err != nil {
			t.Fatal(err)
		}
		rest, err := recvAll(stream)
		if err != nil || len(rest) != 1 || rest[0].GetStatus() != cancelled || rest[0].GetSequence() != 2 {
			t.Errorf("Track after cancel = %v, %v, want the CANCELLED event and the end", rest, err)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		id := uuid.NewString()
		stream, err := c.Track(servicetest.As(ctx, "gateway", ""), &shippingv1.TrackRequest{ShipmentId: id})
		if err != nil {
			t.Fatal(err)
		}
		_, err = recvAll(stream)
		checkNotFound(t, err, id)
	})
}

func TestTwoCarriersOnOneDatabase(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		var hookA, hookB hookLog
		cfgA, cfgB := fast, fast
		cfgA.StepInterval, cfgB.StepInterval = time.Millisecond, time.Millisecond
		cfgA.PollInterval, cfgB.PollInterval = 3*time.Millisecond, 3*time.Millisecond
		cfgA.OnStatusChange, cfgB.OnStatusChange = hookA.record, hookB.record
		a := open(t, db, cfgA)
		b := open(t, reopen(t, db), cfgB)
		c := serve(t, a)
		ctx := t.Context()

		const shipments = 20
		var ids []string
		for i := range shipments {
			sh := create(t, c, newOrderID())
			ids = append(ids, sh.GetShipmentId())
			r := a
			if i%2 == 1 {
				r = b
			}
			if err := r.Release(ctx, sh.GetOrderId()); err != nil {
				t.Fatal(err)
			}
		}
		for _, id := range ids {
			sh := waitFor(t, c, id, delivered)
			if st := eventStatuses(t, sh.GetEvents()); !slices.Equal(st, lifecycle) {
				t.Errorf("shipment %s events %v, want %v", id, st, lifecycle)
			}
		}
		// Each step was made, and reported, by exactly one of the two.
		byA, byB := 0, 0
		for _, id := range ids {
			settle(id, len(lifecycle), &hookA, &hookB)
			ca, cb := hookA.of(id), hookB.of(id)
			byA += len(ca)
			byB += len(cb)
			steps := append(slices.Clone(ca), cb...)
			slices.Sort(steps)
			if !slices.Equal(steps, lifecycle) {
				t.Errorf("shipment %s: A reported %v, B reported %v; want each status of %v once", id, ca, cb, lifecycle)
			}
		}
		t.Logf("steps reported by A: %d, by B: %d", byA, byB)
	})
}

// recvAll reads a Track stream to its end and returns the events and the
// error that ended it (nil for a clean end).
func recvAll(stream grpc.ServerStreamingClient[shippingv1.TrackResponse]) ([]*shippingv1.TrackingEvent, error) {
	var out []*shippingv1.TrackingEvent
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, resp.GetEvent())
	}
}

func TestTrackSeesOtherReplica(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		// A serves Track and never moves shipments itself; B's carrier
		// does, so A learns of the steps only by re-reading the database.
		cfgA := shipping.Config{StepInterval: time.Hour, PollInterval: time.Hour, TrackResync: 5 * time.Millisecond}
		a := open(t, db, cfgA)
		b := open(t, reopen(t, db), fast)
		c := serve(t, a)
		ctx := t.Context()
		sh := create(t, c, newOrderID())
		stream, err := c.Track(servicetest.As(ctx, "gateway", ""), &shippingv1.TrackRequest{ShipmentId: sh.GetShipmentId()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		if err := b.Release(ctx, sh.GetOrderId()); err != nil {
			t.Fatal(err)
		}
		rest, err := recvAll(stream)
		if err != nil {
			t.Fatalf("Track ended with %v", err)
		}
		if got, want := len(rest), len(lifecycle)-1; got != want {
			t.Errorf("Track got %d live events, want %d", got, want)
		}
		for i, ev := range rest {
			if ev.GetSequence() != int32(i+2) || ev.GetStatus() != lifecycle[i+1] { //nolint:gosec // small
				t.Errorf("live event %d = %v", i, ev)
			}
		}
	})
}

func TestTrackLimits(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		svc := open(t, db, shipping.Config{MaxTrackStreams: 1})
		c := serve(t, svc)
		sh := create(t, c, newOrderID())
		req := &shippingv1.TrackRequest{ShipmentId: sh.GetShipmentId()}

		ctx1, cancel1 := context.WithCancel(t.Context())
		defer cancel1()
		s1, err := c.Track(servicetest.As(ctx1, "gateway", ""), req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s1.Recv(); err != nil {
			t.Fatal(err)
		}
		s2, err := c.Track(servicetest.As(t.Context(), "gateway", ""), req)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s2.Recv()
		if got, want := grpcstatus.Code(err), codes.ResourceExhausted; got != want {
			t.Fatalf("second Track = %v, want %v", err, want)
		}
		if d, ok := status.RetryDelay(err); !ok || d <= 0 || status.Reason(err) != shipping.ReasonTooManyStreams {
			t.Errorf("second Track: reason %q, retry delay %v %v; want %s with a delay", status.Reason(err), d, ok, shipping.ReasonTooManyStreams)
		}

		// The slot frees when the first stream ends.
		cancel1()
		var s3 grpc.ServerStreamingClient[shippingv1.TrackResponse]
		deadline := time.Now().Add(5 * time.Second)
		for {
			s3, err = c.Track(servicetest.As(t.Context(), "gateway", ""), req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err = s3.Recv(); err == nil {
				break
			}
			if grpcstatus.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
				t.Fatalf("Track after the first ended = %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}

		// Close ends the open stream, and refuses new ones, with
		// UNAVAILABLE and a retry delay.
		if err := svc.Close(); err != nil {
			t.Fatal(err)
		}
		_, err = recvAll(s3)
		checkUnavailable(t, "open Track after Close", err)
		s4, err := c.Track(servicetest.As(t.Context(), "gateway", ""), req)
		if err != nil {
			t.Fatal(err)
		}
		_, err = recvAll(s4)
		checkUnavailable(t, "new Track after Close", err)
	})
}

func checkUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	if grpcstatus.Code(err) != codes.Unavailable || status.Reason(err) != shipping.ReasonShuttingDown {
		t.Errorf("%s = %v, want UNAVAILABLE %s", what, err, shipping.ReasonShuttingDown)
	}
	if d, ok := status.RetryDelay(err); !ok || d <= 0 {
		t.Errorf("%s: retry delay = %v, %v, want one", what, d, ok)
	}
}

func TestRestartResumes(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		cfg := shipping.Config{StepInterval: 200 * time.Millisecond, PollInterval: 2 * time.Millisecond}
		first := open(t, db, cfg)
		c := serve(t, first) // keeps serving reads from the database after Close
		ctx := t.Context()
		sh := create(t, c, newOrderID())
		if err := first.Release(ctx, sh.GetOrderId()); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, c, sh.GetShipmentId(), "picked up", func(s shippingv1.ShipmentStatus) bool { return s != created })
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}
		stopped := get(t, c, sh.GetShipmentId())
		time.Sleep(2 * cfg.StepInterval)
		if diff := cmp.Diff(stopped, get(t, c, sh.GetShipmentId()), protocmp.Transform()); diff != "" {
			t.Fatalf("shipment moved while no carrier ran (-at close +now):\n%s", diff)
		}
		if stopped.GetStatus() == delivered {
			t.Fatalf("shipment delivered before the restart; slow the carrier down")
		}

		open(t, db, cfg) // the restart
		got := waitFor(t, c, sh.GetShipmentId(), delivered)
		if st := eventStatuses(t, got.GetEvents()); !slices.Equal(st, lifecycle) {
			t.Errorf("events after restart = %v, want %v", st, lifecycle)
		}
		if !proto.Equal(stopped.GetEvents()[1], got.GetEvents()[1]) {
			t.Errorf("the restart rewrote history: %v, then %v", stopped.GetEvents()[1], got.GetEvents()[1])
		}
	})
}

func TestValidation(t *testing.T) {
	t.Parallel()
	c := serve(t, open(t, sqltest.New(t, sqldb.SQLite, nil, ""), shipping.Config{}))
	ctx := asOrder(t.Context())
	withReq := func(change func(*shippingv1.CreateShipmentRequest)) *shippingv1.CreateShipmentRequest {
		r := createRequest("order-1")
		change(r)
		return r
	}
	items := func(n int) []*shippingv1.ShipmentItem {
		out := make([]*shippingv1.ShipmentItem, n)
		for i := range out {
			out[i] = &shippingv1.ShipmentItem{ItemId: "sku-" + strings.Repeat("x", i%50) + string(rune('a'+i%26)) + uuid.NewString()[:4], Quantity: 1}
		}
		return out
	}
	id := uuid.NewString()
	tests := []struct {
		name string
		call func() error
		want []string // fields, in order
	}{
		{"empty create", func() error {
			_, err := c.CreateShipment(ctx, &shippingv1.CreateShipmentRequest{})
			return err
		}, []string{"order_id", "address", "items"}},
		{"long order id", func() error {
			_, err := c.CreateShipment(ctx, withReq(func(r *shippingv1.CreateShipmentRequest) { r.OrderId = strings.Repeat("o", 65) }))
			return err
		}, []string{"order_id"}},
		{"empty address", func() error {
			_, err := c.CreateShipment(ctx, withReq(func(r *shippingv1.CreateShipmentRequest) { r.Address = &typev1.PostalAddress{} }))
			return err
		}, []string{"address.recipient", "address.line1", "address.city", "address.postal_code", "address.country_code"}},
		{"long address", func() error {
			_, err := c.CreateShipment(ctx, withReq(func(r *shippingv1.CreateShipmentRequest) {
				r.Address = &typev1.PostalAddress{
					Recipient: strings.Repeat("r", 101), Line1: strings.Repeat("l", 201), Line2: strings.Repeat("l", 201),
					City: strings.Repeat("c", 101), PostalCode: strings.Repeat("p", 21), CountryCode: "GBR",
				}
			}))
			return err
		}, []string{"address.recipient", "address.line1", "address.line2", "address.city", "address.postal_code", "address.country_code"}},
		{"lower-case country", func() error {
			_, err := c.CreateShipment(ctx, withReq(func(r *shippingv1.CreateShipmentRequest) { r.Address.CountryCode = "gb" }))
			return err
		}, []string{"address.country_code"}},
		{"too many items", func() error {
			_, err := c.CreateShipment(ctx, withReq(func(r *shippingv1.CreateShipmentRequest) { r.Items = items(shipping.MaxItems + 1) }))
			return err
		}, []string{"items"}},
		{"bad items", func() error {
			_, err := c.CreateShipment(ctx, withReq(func(r *shippingv1.CreateShipmentRequest) {
				r.Items = []*shippingv1.ShipmentItem{
					{ItemId: "a", Quantity: 0},
					{ItemId: "b", Quantity: 1001},
					{ItemId: "a", Quantity: 1},
					{ItemId: "not valid!", Quantity: 1},
					{ItemId: "", Quantity: 1},
				}
			}))
			return err
		}, []string{"items[0].quantity", "items[1].quantity", "items[2].item_id", "items[3].item_id", "items[4].item_id"}},
		{"cancel without id", func() error {
			_, err := c.CancelShipment(ctx, &shippingv1.CancelShipmentRequest{Reason: strings.Repeat("r", 501)})
			return err
		}, []string{"shipment_id", "reason"}},
		{"cancel upper-case id", func() error {
			_, err := c.CancelShipment(ctx, &shippingv1.CancelShipmentRequest{ShipmentId: strings.ToUpper(id)})
			return err
		}, []string{"shipment_id"}},
		{"get bad id", func() error {
			_, err := c.GetShipment(ctx, &shippingv1.GetShipmentRequest{ShipmentId: "42"})
			return err
		}, []string{"shipment_id"}},
		{"track bad id", func() error {
			stream, err := c.Track(ctx, &shippingv1.TrackRequest{ShipmentId: "{" + id + "}"})
			if err != nil {
				return err
			}
			_, err = recvAll(stream)
			return err
		}, []string{"shipment_id"}},
	}
	for _, tc := range tests {
		err := tc.call()
		if got, want := grpcstatus.Code(err), codes.InvalidArgument; got != want {
			t.Errorf("%s = %v, want %v", tc.name, err, want)
			continue
		}
		var got []string
		for _, v := range status.BadRequest(err).GetFieldViolations() {
			got = append(got, v.GetField())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: violations of %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAuthorization(t *testing.T) {
	t.Parallel()
	svc := open(t, sqltest.New(t, sqldb.SQLite, nil, ""), shipping.Config{})
	c := serve(t, svc)
	sh := create(t, c, newOrderID())
	id := sh.GetShipmentId()
	calls := map[string]func(ctx context.Context) error{
		"CreateShipment": func(ctx context.Context) error {
			_, err := c.CreateShipment(ctx, createRequest(sh.GetOrderId()))
			return err
		},
		"CancelShipment": func(ctx context.Context) error {
			// Another order's shipment, so that allowed calls succeed.
			other := create(t, c, newOrderID())
			_, err := c.CancelShipment(ctx, &shippingv1.CancelShipmentRequest{ShipmentId: other.GetShipmentId()})
			return err
		},
		"GetShipment": func(ctx context.Context) error {
			_, err := c.GetShipment(ctx, &shippingv1.GetShipmentRequest{ShipmentId: id})
			return err
		},
		"Track": func(ctx context.Context) error {
			stream, err := c.Track(ctx, &shippingv1.TrackRequest{ShipmentId: id})
			if err != nil {
				return err
			}
			_, err = stream.Recv() // the first event is enough
			return err
		},
	}
	type caller struct{ service, user string }
	var (
		order    = caller{service: "order"}
		gateway  = caller{service: "gateway"}
		operator = caller{service: authz.Operator}
		user     = caller{service: "storefront", user: "u1"}
		inventor = caller{service: "inventory"}
		nobody   = caller{}
	)
	tests := []struct {
		method string
		caller caller
		reason string // "" when allowed
	}{
		{"CreateShipment", order, ""},
		{"CreateShipment", gateway, authz.ReasonMethodNotAllowed},
		{"CreateShipment", operator, authz.ReasonMethodNotAllowed},
		{"CreateShipment", caller{"gateway", "u1"}, authz.ReasonMethodNotAllowed},
		{"CreateShipment", nobody, authz.ReasonServiceRequired},
		{"CancelShipment", order, ""},
		{"CancelShipment", inventor, authz.ReasonMethodNotAllowed},
		{"CancelShipment", user, authz.ReasonMethodNotAllowed},
		{"GetShipment", gateway, ""},
		{"GetShipment", order, ""},
		{"GetShipment", operator, ""},
		{"GetShipment", user, ""},
		{"GetShipment", inventor, authz.ReasonUserRequired},
		{"GetShipment", nobody, authz.ReasonServiceRequired},
		{"Track", gateway, ""},
		{"Track", order, ""},
		{"Track", operator, ""},
		{"Track", user, ""},
		{"Track", inventor, authz.ReasonUserRequired},
	}
	for _, tc := range tests {
		err := calls[tc.method](servicetest.As(t.Context(), tc.caller.service, tc.caller.user, "customer"))
		if tc.reason == "" {
			if err != nil {
				t.Errorf("%s by %+v = %v, want allowed", tc.method, tc.caller, err)
			}
			continue
		}
		if grpcstatus.Code(err) != codes.PermissionDenied || status.Reason(err) != tc.reason {
			t.Errorf("%s by %+v = %v (reason %q), want PERMISSION_DENIED %s", tc.method, tc.caller, err, status.Reason(err), tc.reason)
		}
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	t.Parallel()
	db := sqltest.New(t, sqldb.SQLite, nil, "")
	for _, cfg := range []shipping.Config{
		{StepInterval: -time.Second},
		{PickupDelay: -time.Second},
		{BatchSize: shipping.MaxBatchSize + 1},
		{MaxTrackStreams: -1},
	} {
		if svc, err := shipping.Open(t.Context(), db, cfg, nil); err == nil {
			_ = svc.Close()
			t.Errorf("Open(%+v) succeeded, want an error", cfg)
		}
	}
}
