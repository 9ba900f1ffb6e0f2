package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	_ "modernc.org/sqlite" // the "sqlite" driver for reading the services' files

	auditv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/audit/v1"
	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	"github.com/switchboard-rpc/switchboard/internal/system"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/client"
)

// The load the shop is stopped under: users placing orders, calls in
// flight at once, confirmations seen before the stop, and a bound on the
// calls in case they never come. The stock outlasts every call, so an
// order is cancelled only by the stop.
const (
	stopUsers    = 4
	stopWorkers  = 16
	stopStock    = 1000
	stopAfter    = 30
	stopMaxCalls = 100 // per worker
	// stopCallTimeout bounds each PlaceOrder call. The order server's
	// graceful stop waits for the calls in flight, which wait for their
	// sagas up to their deadline, so it bounds the stop too; a call that
	// ends before its saga settles returns the order unsettled.
	stopCallTimeout = 5 * time.Second
	// settleTimeout bounds how long the restarted shop may take to finish
	// every saga and record every event. Sagas whose compensation failed
	// at the stop wait out order's RetryLater (10s) and a recovery pass
	// (5s). An event whose handler the stop interrupted is returned to the
	// embedded broker, which forgets the return across its restart and
	// delivers the event again only once its group's AckWait (30s) has
	// run out.
	settleTimeout = 45 * time.Second
	// settlePoll is how often the restarted shop is looked at.
	settlePoll = 250 * time.Millisecond
)

// Services whose state changes write events to an outbox in their
// database, and every service with a database.
var (
	producers    = []string{"identity", "inventory", "payment", "order", "shipping"}
	withDatabase = []string{"identity", "inventory", "payment", "order", "shipping", "notify", "audit"}
)

// Event types the checks look for in the audit log.
var (
	typeUserRegistered     = eventType(&eventsv1.UserRegistered{})
	typeOrderPlaced        = eventType(&eventsv1.OrderPlaced{})
	typeOrderStatusChanged = eventType(&eventsv1.OrderStatusChanged{})
	typeOrderConfirmed     = eventType(&eventsv1.OrderConfirmed{})
	typeOrderCancelled     = eventType(&eventsv1.OrderCancelled{})
)

func eventType(m proto.Message) string {
	return string(m.ProtoReflect().Descriptor().FullName())
}

// placed is what one PlaceOrder call of the load returned.
type placed struct {
	key   string
	user  int
	order *orderv1.Order
	err   error
	// afterStop: the call returned after the stop began.
	afterStop bool
}

// TestShutdownDuringLoadLosesNothing stops the whole shop gracefully (as
// SIGTERM does) while orders are being placed, starts it again on the same
// data, and checks that nothing was lost or done twice: every order a
// client saw confirmed is still confirmed, stock and money moved exactly
// for the confirmed orders, every outbox was published, and the audit log
// holds each event once, chained and intact.
func TestShutdownDuringLoadLosesNothing(t *testing.T) {
	began := time.Now()
	dir := t.TempDir()
	// A carrier that moves, so orders go on to SHIPPED and DELIVERED.
	config := func() system.Config {
		cfg := testConfig(dir)
		cfg.CarrierStep = 50 * time.Millisecond
		return cfg
	}

	// 1. The shop, its users and its stock.
	s, stop := launch(t, config())
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s.stock(ctx, t, stopStock)
	us := s.users(ctx, t, stopUsers)
	onHand := s.hotItem(ctx, t).GetOnHand()
	t.Logf("shop up, stocked, %d users: %s", stopUsers, time.Since(began).Round(time.Millisecond))

	// 2. Orders from every worker until enough are confirmed, then the
	// graceful stop while calls are in flight.
	results, runErr := placeOrdersAndStop(t, s, us, stop)
	if runErr != nil {
		t.Errorf("first run: graceful stop = %v, want nil", runErr)
	}
	// The relays publish, at stop, everything their services committed.
	for svc, n := range outboxRows(t, dir) {
		if n != 0 {
			t.Errorf("after the graceful stop, %s's outbox holds %d events, want 0 (published by the relay's drain)", svc, n)
		}
	}

	// What the clients were told.
	seen := map[string]placed{} // by order id
	var nConfirmed, nCancelled, nPending, nFailed int
	for _, p := range results {
		if p.err != nil {
			nFailed++
			if !p.afterStop {
				t.Errorf("PlaceOrder %s failed before the stop: %v", p.key, p.err)
			}
			continue
		}
		id := p.order.GetOrderId()
		if prev, ok := seen[id]; ok {
			t.Errorf("order %s returned for keys %s and %s", id, prev.key, p.key)
		}
		seen[id] = p
		switch st := p.order.GetStatus(); {
		case confirmedOrLater(st):
			nConfirmed++
		case st == orderv1.OrderStatus_ORDER_STATUS_CANCELLED:
			nCancelled++
		default:
			nPending++ // returned unsettled as the call's wait ended
		}
	}
	t.Logf("%d PlaceOrder calls: %d confirmed, %d cancelled, %d unsettled, %d failed",
		len(results), nConfirmed, nCancelled, nPending, nFailed)

	// 3. The shop again, on the same data, until it has settled.
	s, stop = launch(t, config())
	t.Logf("restarted: %s", time.Since(began).Round(time.Millisecond))
	orders, records := settle(ctx, t, s, us)
	t.Logf("settled: %s", time.Since(began).Round(time.Millisecond))

	// 4. Nothing lost, nothing done twice.
	byID := map[string]*orderv1.Order{}
	for _, o := range orders {
		byID[o.GetOrderId()] = o
	}
	for id, p := range seen {
		o, ok := byID[id]
		switch st := p.order.GetStatus(); {
		case !ok:
			t.Errorf("order %s (key %s), returned %v to its client, is gone after the restart", id, p.key, st)
		case confirmedOrLater(st) && !confirmedOrLater(o.GetStatus()):
			t.Errorf("order %s (key %s) was CONFIRMED to its client, and is %v (%q) after the restart",
				id, p.key, o.GetStatus(), o.GetCancelReason())
		case st == orderv1.OrderStatus_ORDER_STATUS_CANCELLED && o.GetStatus() != st:
			t.Errorf("order %s (key %s) was CANCELLED to its client, and is %v after the restart", id, p.key, o.GetStatus())
		}
	}

	sold := map[string]int64{} // confirmed orders by user id
	var nSold int64
	statuses := map[orderv1.OrderStatus]int{}
	for _, o := range orders {
		statuses[o.GetStatus()]++
		if confirmedOrLater(o.GetStatus()) {
			sold[o.GetUserId()]++
			nSold++
		}
	}
	reasons := map[string]int{}
	for _, o := range orders {
		if o.GetStatus() == orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
			reasons[o.GetCancelReason()]++
		}
	}
	t.Logf("after the restart: %d orders %v; cancelled for %v", len(orders), statuses, reasons)

	item := s.hotItem(ctx, t)
	if got, want := item.GetOnHand(), onHand-nSold; got != want {
		t.Errorf("%s on hand = %d, want %d (%d at first, %d confirmed orders); %d of the cancelled orders had reached SHIPMENT_CREATED",
			hotItem, got, want, onHand, nSold, cancelledAfterShipment(records, orders))
	}
	if item.GetReserved() != 0 || item.GetAvailable() != item.GetOnHand() {
		t.Errorf("%s: reserved %d, available %d of %d on hand; want nothing reserved once every order settled",
			hotItem, item.GetReserved(), item.GetAvailable(), item.GetOnHand())
	}
	for i, u := range us {
		acct := s.balance(ctx, t, u)
		if got, want := acct.GetBalance().GetAmountMinor(), openingCredit-hotPrice*sold[u.id]; got != want {
			t.Errorf("user %d: balance %d, want %d (%d confirmed orders)", i, got, want, sold[u.id])
		}
		if held := acct.GetHeld().GetAmountMinor(); held != 0 {
			t.Errorf("user %d: %d still held once every order settled", i, held)
		}
	}

	for _, p := range auditProblems(records, orders, us) {
		t.Error(p)
	}
	v, err := auditv1.NewAuditServiceClient(s.auditConn).Verify(ctx, &auditv1.VerifyRequest{})
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if !v.GetOk() {
		t.Errorf("Verify: chain broken at %d: %s", v.GetFirstBadSequence(), v.GetReason())
	}
	if got, want := v.GetRecordsChecked(), int64(len(records)); got != want {
		t.Errorf("Verify checked %d records, want the %d Query returned", got, want)
	}

	if err := stop(); err != nil {
		t.Errorf("second run: graceful stop = %v, want nil", err)
	}
	for svc, n := range outboxRows(t, dir) {
		if n != 0 {
			t.Errorf("after the second run, %s's outbox holds %d events, want 0", svc, n)
		}
	}
	t.Logf("%d audit records; the test took %s", len(records), time.Since(began).Round(time.Millisecond))
}

// placeOrdersAndStop places orders from stopWorkers workers, each for one
// of us with keys of its own, until stopAfter are confirmed; then, with
// calls in flight, it stops the run (the graceful path) and returns what
// every call returned and what the run did.
func placeOrdersAndStop(t *testing.T, s *shop, us []user, stop func() error) ([]placed, error) {
	t.Helper()
	var (
		mu        sync.Mutex
		results   []placed
		stopping  atomic.Bool
		inFlight  atomic.Int64
		confirmed atomic.Int64
		wg        sync.WaitGroup
	)
	reached := make(chan struct{})
	for w := range stopWorkers {
		wg.Go(func() {
			u := w % len(us)
			for k := 0; k < stopMaxCalls && !stopping.Load(); k++ {
				key := fmt.Sprintf("stop-%02d-%03d", w, k)
				inFlight.Add(1)
				callCtx, cancel := context.WithTimeout(us[u].ctx, stopCallTimeout)
				resp, err := s.orders.PlaceOrder(callCtx, placeRequest(key))
				cancel()
				inFlight.Add(-1)
				p := placed{key: key, user: u, order: resp.GetOrder(), err: err, afterStop: stopping.Load()}
				mu.Lock()
				results = append(results, p)
				mu.Unlock()
				if err == nil && confirmedOrLater(p.order.GetStatus()) && confirmed.Add(1) == stopAfter {
					close(reached)
				}
			}
		})
	}
	var reachedInTime bool
	select {
	case <-reached:
		reachedInTime = true
	case <-time.After(time.Minute):
	}
	stopping.Store(true)
	callsAtStop := inFlight.Load()
	began := time.Now()
	runErr := stop()
	took := time.Since(began)
	wg.Wait()
	t.Logf("stopped after %d confirmations with %d calls in flight; the stop took %s; %d confirmed in all",
		stopAfter, callsAtStop, took.Round(time.Millisecond), confirmed.Load())
	if !reachedInTime {
		t.Fatalf("only %d orders confirmed within a minute, want %d before the stop", confirmed.Load(), stopAfter)
	}
	if callsAtStop == 0 {
		t.Errorf("no PlaceOrder call was in flight at the stop; the test proves nothing")
	}
	return results, runErr
}

// confirmedOrLater reports whether an order with status st was confirmed:
// the carrier may have moved it on since.
func confirmedOrLater(st orderv1.OrderStatus) bool {
	switch st {
	case orderv1.OrderStatus_ORDER_STATUS_CONFIRMED, orderv1.OrderStatus_ORDER_STATUS_SHIPPED,
		orderv1.OrderStatus_ORDER_STATUS_DELIVERED:
		return true
	}
	return false
}

// finished reports whether an order with status st will not change again
// by itself: delivered, or cancelled.
func finished(st orderv1.OrderStatus) bool {
	return st == orderv1.OrderStatus_ORDER_STATUS_DELIVERED || st == orderv1.OrderStatus_ORDER_STATUS_CANCELLED
}

// settle waits until every order is delivered or cancelled and the audit
// log holds every event it should (auditProblems finds none) with its
// length unchanged between two looks; it returns the orders and the log
// then. Past settleTimeout it fails the test, saying what was missing.
func settle(ctx context.Context, t *testing.T, s *shop, us []user) ([]*orderv1.Order, []*auditv1.Record) {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	lastCount := -1
	var why []string
	for {
		orders, err := listOrders(ctx, s)
		if err != nil {
			t.Fatalf("ListOrders = %v", err)
		}
		why = why[:0]
		for _, o := range orders {
			if !finished(o.GetStatus()) {
				why = append(why, fmt.Sprintf("order %s is %v", o.GetOrderId(), o.GetStatus()))
			}
		}
		if len(why) == 0 {
			records, err := queryAudit(ctx, s)
			if err != nil {
				t.Fatalf("audit Query = %v", err)
			}
			why = auditProblems(records, orders, us)
			if len(why) == 0 && len(records) == lastCount {
				return orders, records
			}
			lastCount = len(records)
		}
		if time.Now().After(deadline) {
			if len(why) > 20 {
				why = append(why[:20], fmt.Sprintf("and %d more", len(why)-20))
			}
			t.Fatalf("not settled %s after the restart:\n%s", settleTimeout, strings.Join(why, "\n"))
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for the shop to settle: %v", ctx.Err())
		case <-time.After(settlePoll):
		}
	}
}

// auditProblems says what is wrong with the audit log given the orders and
// users: an event recorded twice, an order's or a user's event missing or
// repeated, or a gap in an order's status changes.
func auditProblems(records []*auditv1.Record, orders []*orderv1.Order, us []user) []string {
	var problems []string
	ids := map[string]int64{} // event id: sequence
	type key struct{ subject, typ string }
	bySubject := map[key][]*auditv1.Record{}
	for _, r := range records {
		if seq, ok := ids[r.GetEventId()]; ok {
			problems = append(problems, fmt.Sprintf("event %s (%s) recorded twice: records %d and %d",
				r.GetEventId(), r.GetEventType(), seq, r.GetSequence()))
			continue
		}
		ids[r.GetEventId()] = r.GetSequence()
		k := key{r.GetSubject(), r.GetEventType()}
		bySubject[k] = append(bySubject[k], r)
	}
	for i, u := range us {
		if n := len(bySubject[key{u.id, typeUserRegistered}]); n != 1 {
			problems = append(problems, fmt.Sprintf("user %d (%s): %d UserRegistered records, want 1", i, u.id, n))
		}
	}
	for _, o := range orders {
		id, st := o.GetOrderId(), o.GetStatus()
		want := map[string]int{typeOrderPlaced: 1, typeOrderConfirmed: 0, typeOrderCancelled: 0}
		if confirmedOrLater(st) {
			want[typeOrderConfirmed] = 1
		}
		if st == orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
			want[typeOrderCancelled] = 1
		}
		for _, typ := range []string{typeOrderPlaced, typeOrderConfirmed, typeOrderCancelled} {
			if got := len(bySubject[key{id, typ}]); got != want[typ] {
				problems = append(problems, fmt.Sprintf("order %s (%v): %d %s records, want %d", id, st, got, typ, want[typ]))
			}
		}
		if p := statusChain(bySubject[key{id, typeOrderStatusChanged}], st); p != "" {
			problems = append(problems, fmt.Sprintf("order %s: %s", id, p))
		}
	}
	return problems
}

// statusChain checks an order's OrderStatusChanged records, in whatever
// order they were recorded: each links a status to the next, from PENDING
// to the order's status now, without a gap or a fork. It returns what is
// wrong, or "".
func statusChain(records []*auditv1.Record, now orderv1.OrderStatus) string {
	next := map[orderv1.OrderStatus]orderv1.OrderStatus{}
	for _, r := range records {
		var a anypb.Any
		if err := protojson.Unmarshal([]byte(r.GetPayloadJson()), &a); err != nil {
			return fmt.Sprintf("record %d: payload %s: %v", r.GetSequence(), r.GetPayloadJson(), err)
		}
		var ev eventsv1.OrderStatusChanged
		if err := a.UnmarshalTo(&ev); err != nil {
			return fmt.Sprintf("record %d: payload %s: %v", r.GetSequence(), r.GetPayloadJson(), err)
		}
		if to, ok := next[ev.GetPreviousStatus()]; ok {
			return fmt.Sprintf("two status changes from %v: to %v and to %v", ev.GetPreviousStatus(), to, ev.GetStatus())
		}
		next[ev.GetPreviousStatus()] = ev.GetStatus()
	}
	at := orderv1.OrderStatus_ORDER_STATUS_PENDING
	path := []string{at.String()}
	for range len(next) {
		to, ok := next[at]
		if !ok {
			break
		}
		at = to
		path = append(path, at.String())
	}
	if at != now || len(path) != len(next)+1 {
		return fmt.Sprintf("status changes recorded %v (%d of them) do not lead from PENDING to %v",
			strings.Join(path, " → "), len(next), now)
	}
	return ""
}

// cancelledAfterShipment counts the cancelled orders whose status changes
// in the audit log went through SHIPMENT_CREATED.
func cancelledAfterShipment(records []*auditv1.Record, orders []*orderv1.Order) int {
	cancelled := map[string]bool{}
	for _, o := range orders {
		if o.GetStatus() == orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
			cancelled[o.GetOrderId()] = true
		}
	}
	n := 0
	for _, r := range records {
		if r.GetEventType() != typeOrderStatusChanged || !cancelled[r.GetSubject()] {
			continue
		}
		var a anypb.Any
		var ev eventsv1.OrderStatusChanged
		if protojson.Unmarshal([]byte(r.GetPayloadJson()), &a) == nil && a.UnmarshalTo(&ev) == nil &&
			ev.GetStatus() == orderv1.OrderStatus_ORDER_STATUS_SHIPMENT_CREATED {
			n++
		}
	}
	return n
}

// listOrders lists every order, as the operator.
func listOrders(ctx context.Context, s *shop) ([]*orderv1.Order, error) {
	var all []*orderv1.Order
	token := ""
	for range 1000 { // pages of 100: up to 100,000 orders
		resp, err := s.orders.ListOrders(ctx, &orderv1.ListOrdersRequest{PageSize: 100, PageToken: token})
		if err != nil {
			return nil, err
		}
		all = append(all, resp.GetOrders()...)
		if token = resp.GetNextPageToken(); token == "" {
			return all, nil
		}
	}
	return nil, errors.New("more than 1,000 pages of orders")
}

// queryAudit reads the whole audit log, a page at a time, as the operator.
func queryAudit(ctx context.Context, s *shop) ([]*auditv1.Record, error) {
	c := auditv1.NewAuditServiceClient(s.auditConn)
	var all []*auditv1.Record
	token := ""
	for range 1000 { // pages of up to 1,000 records
		resp, err := c.Query(ctx, &auditv1.QueryRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, err
		}
		all = append(all, resp.GetRecords()...)
		if token = resp.GetNextPageToken(); token == "" {
			return all, nil
		}
	}
	return nil, errors.New("more than 1,000 pages of audit records")
}

// outboxRows counts the events left in each service's outbox, reading the
// SQLite files of a stopped run. Every service that writes events must
// have its outbox table.
func outboxRows(t *testing.T, dir string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rows := map[string]int{}
	for _, svc := range withDatabase {
		path := filepath.Join(dir, svc+".db")
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s's database: %v", svc, err)
			continue
		}
		db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
		if err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
		var tables int
		err = db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events_outbox'`).Scan(&tables)
		if err == nil && tables == 1 {
			var n int
			err = db.QueryRowContext(ctx, `SELECT count(*) FROM events_outbox`).Scan(&n)
			rows[svc] = n
		} else if err == nil && slices.Contains(producers, svc) {
			t.Errorf("%s's database has no events_outbox table", svc)
		}
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
	}
	return rows
}

// launch runs every service on cfg until the returned stop is called (or
// the test ends), and dials them as the operator. stop is the graceful
// path SIGTERM takes: it cancels the run's context, waits for Run to
// return (bounded), closes the operator's connections and returns Run's
// error; later calls return the same.
func launch(t *testing.T, cfg system.Config) (*shop, func() error) {
	t.Helper()
	run, err := system.Start(cfg, system.Services(), 60*time.Second)
	if err != nil {
		t.Fatalf("start the system: %v", err)
	}
	addrs := run.Addrs
	var conns []*grpc.ClientConn
	stop := func() error {
		err := run.Stop(45 * time.Second)
		for _, c := range conns {
			_ = c.Close()
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	src, err := certs.NewSource(certs.FilesIn(cfg.CertsDir(), certs.OperatorName))
	if err != nil {
		t.Fatal(err)
	}
	dialAs := func(service string) *grpc.ClientConn {
		t.Helper()
		if addrs[service] == "" {
			t.Fatalf("no address for %s in %v", service, addrs)
		}
		conn, err := client.Dial("passthrough:///"+addrs[service], client.WithCredentials(certs.ClientCredentials(src, service)))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		return conn
	}
	return &shop{
		id:         identityv1.NewIdentityServiceClient(dialAs("identity")),
		inv:        inventoryv1.NewInventoryServiceClient(dialAs("inventory")),
		pay:        paymentv1.NewPaymentServiceClient(dialAs("payment")),
		orders:     orderv1.NewOrderServiceClient(dialAs("order")),
		auditConn:  dialAs("audit"),
		gatewayURL: addrs[system.GatewayName],
	}, stop
}
