package order

import (
	"database/sql"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	"github.com/switchboard-rpc/switchboard/internal/outboxtest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

func TestEventsOfAnOrder(t *testing.T) {
	sqltest.Each(t, Migrations, "migrations", func(t *testing.T, db *sqldb.DB) {
		ctx := storeCtx(t)
		if err := events.Migrate(ctx, db.DB, events.Dialect(db.Dialect)); err != nil {
			t.Fatal(err)
		}
		st := NewStore(db, events.NewOutbox("order", events.Dialect(db.Dialect)))
		svc := &Service{store: st, bc: newBroadcaster()}
		shipment := func(status shippingv1.ShipmentStatus) func() error {
			return func() error {
				payload, err := anypb.New(&eventsv1.ShipmentStatusChanged{OrderId: "o1", ShipmentId: "s1", Status: status})
				if err != nil {
					return err
				}
				env := &eventsv1.Envelope{Id: "e", Type: "switchboard.events.v1.ShipmentStatusChanged", Payload: payload}
				return db.Tx(ctx, func(tx *sql.Tx) error { return svc.HandleEvent(ctx, tx, env) })
			}
		}
		steps := []struct {
			name string
			do   func() error
			want []string
		}{
			{"place", func() error {
				_, _, err := st.CreateOrder(ctx, newStoreOrder("o1", "u1", "k1", 0))
				return err
			}, []string{"OrderPlaced o1"}},
			{"a change without a status emits nothing", func() error {
				return st.Update(ctx, "o1", Cond{}, Change{Phase: PhaseForward, SetStep: true, Step: StepReserve}, t0)
			}, nil},
			{"confirm", func() error {
				return st.Update(ctx, "o1", Cond{}, Change{Status: orderv1.OrderStatus_ORDER_STATUS_CONFIRMED, ShipmentID: "s1"}, t0)
			}, []string{"OrderStatusChanged o1", "OrderConfirmed o1"}},
			{"picked up", shipment(shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP), []string{"OrderStatusChanged o1"}},
			{"in transit: already shipped", shipment(shippingv1.ShipmentStatus_SHIPMENT_STATUS_IN_TRANSIT), nil},
			{"delivered", shipment(shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED), []string{"OrderStatusChanged o1"}},
			{"picked up after delivery: a no-op", shipment(shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP), nil},
		}
		var seq int64
		for _, step := range steps {
			if err := step.do(); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			var got []string
			got, seq = outboxtest.Rows(t, db, seq)
			if diff := cmp.Diff(step.want, got); diff != "" {
				t.Errorf("%s: outbox rows (-want +got):\n%s", step.name, diff)
			}
		}
		o, err := st.Order(ctx, "o1")
		if err != nil {
			t.Fatal(err)
		}
		if o.Status != orderv1.OrderStatus_ORDER_STATUS_DELIVERED {
			t.Errorf("order status = %v, want DELIVERED", o.Status)
		}
		bad := &eventsv1.Envelope{Id: "bad", Payload: &anypb.Any{TypeUrl: "type.googleapis.com/switchboard.events.v1.ShipmentStatusChanged", Value: []byte{0xff}}}
		if err := db.Tx(ctx, func(tx *sql.Tx) error { return svc.HandleEvent(ctx, tx, bad) }); !errors.Is(err, events.ErrPermanent) {
			t.Errorf("HandleEvent(undecodable) = %v, want events.ErrPermanent", err)
		}
	})
}
