package shipping_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/services/shipping"
)

const (
	created        = shippingv1.ShipmentStatus_SHIPMENT_STATUS_CREATED
	pickedUp       = shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP
	inTransit      = shippingv1.ShipmentStatus_SHIPMENT_STATUS_IN_TRANSIT
	outForDelivery = shippingv1.ShipmentStatus_SHIPMENT_STATUS_OUT_FOR_DELIVERY
	delivered      = shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED
	cancelled      = shippingv1.ShipmentStatus_SHIPMENT_STATUS_CANCELLED
)

// lifecycle is the statuses of a delivered shipment's events, in order.
var lifecycle = []shippingv1.ShipmentStatus{created, pickedUp, inTransit, outForDelivery, delivered}

var testAddress = shipping.Address{
	Recipient: "Ada Lovelace", Line1: "12 St James's Square", City: "London", PostalCode: "SW1Y 4JH", CountryCode: "GB",
}

var orderSeq atomic.Int64

// newOrderID returns an order id no other test uses.
func newOrderID() string { return fmt.Sprintf("order-%d-%d", time.Now().UnixNano(), orderSeq.Add(1)) }

// newShipment returns a shipment for order to insert with Store.Create.
func newShipment(order string) shipping.NewShipment {
	return shipping.NewShipment{
		ID:             uuid.NewString(),
		OrderID:        order,
		Address:        testAddress,
		Items:          []shipping.Item{{ItemID: "sku-1", Quantity: 2}, {ItemID: "sku-2", Quantity: 1}},
		Carrier:        "Test Carrier",
		TrackingNumber: "SB" + uuid.NewString(),
	}
}

// statuses returns the statuses of events, and fails unless their
// sequences are exactly 1..len(events).
func statuses(t *testing.T, events []shipping.Event) []shippingv1.ShipmentStatus {
	t.Helper()
	var out []shippingv1.ShipmentStatus
	for i, ev := range events {
		if ev.Sequence != int32(i+1) { //nolint:gosec // small
			t.Errorf("event %d has sequence %d, want %d", i, ev.Sequence, i+1)
		}
		out = append(out, ev.Status)
	}
	return out
}

func TestStore(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		store := shipping.NewStore(db, nil)
		t0 := time.Now().Truncate(time.Microsecond).UTC()

		t.Run("CreateThenGet", func(t *testing.T) {
			ctx := t.Context()
			n := newShipment(newOrderID())
			n.Address.Line2 = "Flat 3"
			got, isNew, err := store.Create(ctx, n, t0)
			if err != nil || !isNew {
				t.Fatalf("Create = %v, %v, want a new shipment", isNew, err)
			}
			want := shipping.Shipment{
				ID: n.ID, OrderID: n.OrderID, Address: n.Address, Items: n.Items, Status: created,
				Carrier: n.Carrier, TrackingNumber: n.TrackingNumber, Created: t0, Updated: t0,
				Events: []shipping.Event{{Sequence: 1, Status: created, Description: "Shipment created; awaiting pickup by Test Carrier", Time: t0}},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Create mismatch (-want +got):\n%s", diff)
			}
			fetched, err := store.Get(ctx, n.ID)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, fetched); diff != "" {
				t.Errorf("Get mismatch (-want +got):\n%s", diff)
			}
		})

		t.Run("CreateIsIdempotentByOrder", func(t *testing.T) {
			ctx := t.Context()
			n := newShipment(newOrderID())
			first, _, err := store.Create(ctx, n, t0)
			if err != nil {
				t.Fatal(err)
			}
			again := newShipment(n.OrderID) // another id and tracking number
			again.Items = []shipping.Item{n.Items[1], n.Items[0]}
			got, isNew, err := store.Create(ctx, again, t0.Add(time.Second))
			if err != nil || isNew {
				t.Fatalf("repeated Create = %v, %v, want the existing shipment", isNew, err)
			}
			if diff := cmp.Diff(first, got); diff != "" {
				t.Errorf("repeated Create mismatch (-first +got):\n%s", diff)
			}
		})

		t.Run("CreateWithOtherContentFails", func(t *testing.T) {
			ctx := t.Context()
			n := newShipment(newOrderID())
			first, _, err := store.Create(ctx, n, t0)
			if err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name   string
				change func(*shipping.NewShipment)
			}{
				{"city", func(m *shipping.NewShipment) { m.Address.City = "Paris" }},
				{"line2", func(m *shipping.NewShipment) { m.Address.Line2 = "Flat 3" }},
				{"quantity", func(m *shipping.NewShipment) {
					m.Items = []shipping.Item{{ItemID: "sku-1", Quantity: 3}, {ItemID: "sku-2", Quantity: 1}}
				}},
				{"fewer items", func(m *shipping.NewShipment) { m.Items = m.Items[:1] }},
				{"other item", func(m *shipping.NewShipment) {
					m.Items = []shipping.Item{{ItemID: "sku-1", Quantity: 2}, {ItemID: "sku-3", Quantity: 1}}
				}},
			}
			for _, tc := range tests {
				m := newShipment(n.OrderID)
				tc.change(&m)
				_, _, err := store.Create(ctx, m, t0)
				var mismatch *shipping.MismatchError
				if !errors.As(err, &mismatch) || mismatch.ShipmentID != first.ID || mismatch.OrderID != n.OrderID {
					t.Errorf("Create with other %s = %v, want a MismatchError for %s", tc.name, err, first.ID)
				}
			}
		})

		t.Run("ConcurrentCreateMakesOneShipment", func(t *testing.T) {
			ctx := t.Context()
			order := newOrderID()
			const callers = 20
			var (
				wg       sync.WaitGroup
				news     atomic.Int32
				mu       sync.Mutex
				ids      = map[string]int{}
				errsSeen []error
			)
			for range callers {
				wg.Go(func() {
					sh, isNew, err := store.Create(ctx, newShipment(order), t0)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errsSeen = append(errsSeen, err)
						return
					}
					if isNew {
						news.Add(1)
					}
					ids[sh.ID]++
				})
			}
			wg.Wait()
			if len(errsSeen) > 0 {
				t.Fatalf("Create errors: %v", errsSeen)
			}
			if len(ids) != 1 || news.Load() != 1 {
				t.Errorf("%d concurrent Creates made shipments %v, %d new; want one shipment, made once", callers, ids, news.Load())
			}
			var rows int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM shipments WHERE order_id = $1`, order).Scan(&rows); err != nil || rows != 1 {
				t.Errorf("shipments of the order = %d, %v, want 1", rows, err)
			}
			for id := range ids {
				sh, err := store.Get(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := statuses(t, sh.Events), []shippingv1.ShipmentStatus{created}; !slices.Equal(got, want) {
					t.Errorf("events = %v, want %v", got, want)
				}
			}
		})

		t.Run("CancelBeforePickup", func(t *testing.T) {
			ctx := t.Context()
			n := newShipment(newOrderID())
			if _, _, err := store.Create(ctx, n, t0); err != nil {
				t.Fatal(err)
			}
			t1 := t0.Add(time.Minute)
			sh, tr, err := store.Cancel(ctx, n.ID, "payment declined", t1)
			if err != nil {
				t.Fatal(err)
			}
			wantEvent := shipping.Event{Sequence: 2, Status: cancelled, Description: "Shipment cancelled: payment declined", Time: t1}
			wantTr := &shipping.Transition{ShipmentID: n.ID, OrderID: n.OrderID, From: created, To: cancelled, Event: wantEvent}
			if diff := cmp.Diff(wantTr, tr); diff != "" {
				t.Errorf("Cancel transition mismatch (-want +got):\n%s", diff)
			}
			if sh.Status != cancelled || !sh.Updated.Equal(t1) || !slices.Equal(statuses(t, sh.Events), []shippingv1.ShipmentStatus{created, cancelled}) {
				t.Errorf("cancelled shipment = %v updated %v, events %v", sh.Status, sh.Updated, sh.Events)
			}
			again, tr, err := store.Cancel(ctx, n.ID, "again", t1.Add(time.Minute))
			if err != nil || tr != nil {
				t.Fatalf("second Cancel = %v, %v, want no change", tr, err)
			}
			if diff := cmp.Diff(sh, again); diff != "" {
				t.Errorf("second Cancel changed the shipment (-first +second):\n%s", diff)
			}
			if _, err := store.Release(ctx, n.OrderID, t1); !errors.Is(err, shipping.ErrCancelled) {
				t.Errorf("Release of a cancelled shipment = %v, want ErrCancelled", err)
			}
		})

		t.Run("NotFound", func(t *testing.T) {
			ctx := t.Context()
			id := uuid.NewString()
			if _, err := store.Get(ctx, id); !errors.Is(err, shipping.ErrNotFound) {
				t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
			}
			if _, _, err := store.Cancel(ctx, id, "", t0); !errors.Is(err, shipping.ErrNotFound) {
				t.Errorf("Cancel(%q) = %v, want ErrNotFound", id, err)
			}
			if _, err := store.Release(ctx, "no-such-order", t0); !errors.Is(err, shipping.ErrNotFound) {
				t.Errorf("Release(no-such-order) = %v, want ErrNotFound", err)
			}
			if evs, err := store.Events(ctx, id, 0, shipping.MaxEvents); err != nil || len(evs) != 0 {
				t.Errorf("Events(%q) = %v, %v, want none", id, evs, err)
			}
		})

		t.Run("Lifecycle", func(t *testing.T) {
			ctx := t.Context()
			n := newShipment(newOrderID())
			if _, _, err := store.Create(ctx, n, t0); err != nil {
				t.Fatal(err)
			}
			isDue := func(at time.Time) bool {
				due, err := store.Due(ctx, at, shipping.MaxBatchSize)
				if err != nil {
					t.Fatal(err)
				}
				return slices.ContainsFunc(due, func(d shipping.DueShipment) bool { return d.ShipmentID == n.ID })
			}
			far := t0.Add(24 * time.Hour)
			if isDue(far) {
				t.Fatal("an unreleased shipment is due")
			}
			if tr, err := store.Advance(ctx, n.ID, created, far, far); tr != nil || err != nil {
				t.Fatalf("Advance of an unreleased shipment = %v, %v, want nothing", tr, err)
			}
			pickup := t0.Add(10 * time.Second)
			if ok, err := store.Release(ctx, n.OrderID, pickup); !ok || err != nil {
				t.Fatalf("Release = %v, %v, want released", ok, err)
			}
			if ok, err := store.Release(ctx, n.OrderID, far); ok || err != nil {
				t.Fatalf("second Release = %v, %v, want no change", ok, err)
			}
			if isDue(pickup.Add(-time.Microsecond)) || !isDue(pickup) {
				t.Fatal("pickup not due exactly at the release's due time")
			}
			if tr, err := store.Advance(ctx, n.ID, created, pickup.Add(-time.Microsecond), far); tr != nil || err != nil {
				t.Errorf("Advance before due = %v, %v, want nothing", tr, err)
			}
			if tr, err := store.Advance(ctx, n.ID, pickedUp, pickup, far); tr != nil || err != nil {
				t.Errorf("Advance from the wrong status = %v, %v, want nothing", tr, err)
			}
			at := pickup
			for i, to := range lifecycle[1:] {
				nextDue := at.Add(time.Second)
				tr, err := store.Advance(ctx, n.ID, lifecycle[i], at, nextDue)
				if err != nil || tr == nil {
					t.Fatalf("Advance from %v = %v, %v", lifecycle[i], tr, err)
				}
				if tr.From != lifecycle[i] || tr.To != to || tr.Event.Sequence != int32(i+2) || !tr.Event.Time.Equal(at) || tr.OrderID != n.OrderID { //nolint:gosec // small
					t.Errorf("Advance from %v = %+v", lifecycle[i], tr)
				}
				if to == pickedUp {
					_, _, err := store.Cancel(ctx, n.ID, "", at)
					var nc *shipping.NotCancellableError
					if !errors.As(err, &nc) || nc.Status != pickedUp || nc.ShipmentID != n.ID {
						t.Errorf("Cancel after pickup = %v, want NotCancellableError{PICKED_UP}", err)
					}
				}
				at = nextDue
			}
			if isDue(far) {
				t.Error("a delivered shipment is due")
			}
			sh, err := store.Get(ctx, n.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got := statuses(t, sh.Events); !slices.Equal(got, lifecycle) || sh.Status != delivered {
				t.Errorf("delivered shipment is %v with events %v, want %v", sh.Status, got, lifecycle)
			}
			evs, err := store.Events(ctx, n.ID, 3, shipping.MaxEvents)
			if err != nil || len(evs) != 2 || evs[0].Sequence != 4 || evs[1].Status != delivered {
				t.Errorf("Events after 3 = %+v, %v, want OUT_FOR_DELIVERY and DELIVERED", evs, err)
			}
		})

		t.Run("ConcurrentAdvanceNeverDoubleSteps", func(t *testing.T) {
			ctx := t.Context()
			const shipments, workers = 10, 6
			var ids []string
			for range shipments {
				n := newShipment(newOrderID())
				if _, _, err := store.Create(ctx, n, t0); err != nil {
					t.Fatal(err)
				}
				if _, err := store.Release(ctx, n.OrderID, t0); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, n.ID)
			}
			// Every worker runs the carrier's loop with each next step due
			// at once, until nothing of ours is due.
			steps := make(map[string]int)
			var mu sync.Mutex
			errs := make(chan error, workers)
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for {
						now := t0.Add(time.Hour)
						due, err := store.Due(ctx, now, shipping.MaxBatchSize)
						if err != nil {
							errs <- err
							return
						}
						mine := 0
						for _, d := range due {
							if !slices.Contains(ids, d.ShipmentID) {
								continue
							}
							mine++
							tr, err := store.Advance(ctx, d.ShipmentID, d.Status, now, now)
							if err != nil {
								errs <- err
								return
							}
							if tr != nil {
								mu.Lock()
								steps[tr.ShipmentID]++
								mu.Unlock()
							}
						}
						if mine == 0 {
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for _, id := range ids {
				if steps[id] != len(lifecycle)-1 {
					t.Errorf("shipment %s advanced %d times, want %d", id, steps[id], len(lifecycle)-1)
				}
				sh, err := store.Get(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if got := statuses(t, sh.Events); !slices.Equal(got, lifecycle) {
					t.Errorf("shipment %s events %v, want %v", id, got, lifecycle)
				}
			}
		})

		t.Run("CancelledContext", func(t *testing.T) {
			// Reported as context.Canceled (wrapped), which the status
			// table maps to CANCELLED rather than INTERNAL.
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if _, _, err := store.Create(ctx, newShipment(newOrderID()), t0); !errors.Is(err, context.Canceled) {
				t.Errorf("Create with a cancelled context = %v, want context.Canceled", err)
			}
		})

		t.Run("CancelRacesPickup", func(t *testing.T) {
			ctx := t.Context()
			const shipments = 10
			var wg sync.WaitGroup
			for range shipments {
				n := newShipment(newOrderID())
				if _, _, err := store.Create(ctx, n, t0); err != nil {
					t.Fatal(err)
				}
				if _, err := store.Release(ctx, n.OrderID, t0); err != nil {
					t.Fatal(err)
				}
				var (
					cancelErr error
					tr        *shipping.Transition
					advErr    error
				)
				wg.Add(2)
				go func() { defer wg.Done(); _, _, cancelErr = store.Cancel(ctx, n.ID, "", t0) }()
				go func() { defer wg.Done(); tr, advErr = store.Advance(ctx, n.ID, created, t0, t0) }()
				wg.Wait()
				if advErr != nil {
					t.Fatal(advErr)
				}
				sh, err := store.Get(ctx, n.ID)
				if err != nil {
					t.Fatal(err)
				}
				got := statuses(t, sh.Events)
				switch {
				case tr == nil && cancelErr == nil:
					if !slices.Equal(got, []shippingv1.ShipmentStatus{created, cancelled}) {
						t.Errorf("cancel won, events %v", got)
					}
				case tr != nil && errors.As(cancelErr, new(*shipping.NotCancellableError)):
					if !slices.Equal(got, []shippingv1.ShipmentStatus{created, pickedUp}) {
						t.Errorf("pickup won, events %v", got)
					}
				default:
					t.Errorf("Cancel = %v and Advance = %v: want exactly one to win", cancelErr, tr)
				}
			}
		})
	})
}
