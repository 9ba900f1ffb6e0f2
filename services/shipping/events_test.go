package shipping_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	"github.com/switchboard-rpc/switchboard/internal/outboxtest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/services/shipping"
)

// shortRows drops the subjects (shipment ids are random) from outbox rows.
func shortRows(t *testing.T, db *sqldb.DB, after int64) ([]string, int64) {
	t.Helper()
	rows, last := outboxtest.Rows(t, db, after)
	for i, r := range rows {
		rows[i], _, _ = strings.Cut(r, " ")
	}
	return rows, last
}

func TestEventsOfAShipment(t *testing.T) {
	each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := t.Context()
		outbox := events.NewOutbox("shipping", events.Dialect(db.Dialect))
		svc, err := shipping.Open(ctx, db, shipping.Config{Outbox: outbox, StepInterval: time.Hour, PickupDelay: time.Hour}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svc.Close() })
		store := shipping.NewStore(db, outbox)
		t0 := time.Now().Truncate(time.Microsecond).UTC()
		order := newOrderID()
		var sh shipping.Shipment
		confirmed := func(orderID string) error {
			payload, err := anypb.New(&eventsv1.OrderConfirmed{OrderId: orderID})
			if err != nil {
				return err
			}
			env := &eventsv1.Envelope{Id: "e-" + orderID, Type: "switchboard.events.v1.OrderConfirmed", Payload: payload}
			return db.Tx(ctx, func(tx *sql.Tx) error { return svc.HandleEvent(ctx, tx, env) })
		}
		steps := []struct {
			name string
			do   func() error
			want []string
		}{
			{"create", func() error {
				var err error
				sh, _, err = store.Create(ctx, newShipment(order), t0)
				return err
			}, []string{"ShipmentCreated"}},
			{"create again: the same shipment, no event", func() error {
				n := newShipment(order)
				_, created, err := store.Create(ctx, n, t0)
				if created {
					t.Error("second Create created a shipment")
				}
				return err
			}, nil},
			{"order confirmed releases it, twice is a no-op", func() error {
				if err := confirmed(order); err != nil {
					return err
				}
				return confirmed(order)
			}, nil},
			{"picked up", func() error {
				tr, err := store.Advance(ctx, sh.ID, shippingv1.ShipmentStatus_SHIPMENT_STATUS_CREATED, time.Now().Add(2*time.Hour), time.Now().Add(3*time.Hour))
				if err == nil && tr == nil {
					err = errors.New("not advanced")
				}
				return err
			}, []string{"ShipmentStatusChanged"}},
			{"cancel another", func() error {
				other, _, err := store.Create(ctx, newShipment(newOrderID()), t0)
				if err != nil {
					return err
				}
				_, _, err = store.Cancel(ctx, other.ID, "order cancelled", t0)
				return err
			}, []string{"ShipmentCreated", "ShipmentStatusChanged", "ShipmentCancelled"}},
		}
		var seq int64
		for _, step := range steps {
			if err := step.do(); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			var got []string
			got, seq = shortRows(t, db, seq)
			if diff := cmp.Diff(step.want, got); diff != "" {
				t.Errorf("%s: outbox rows (-want +got):\n%s", step.name, diff)
			}
		}

		cancelled, _, err := store.Create(ctx, newShipment(newOrderID()), t0)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.Cancel(ctx, cancelled.ID, "gone", t0); err != nil {
			t.Fatal(err)
		}
		if err := confirmed(cancelled.OrderID); !errors.Is(err, events.ErrPermanent) {
			t.Errorf("OrderConfirmed for a cancelled shipment = %v, want events.ErrPermanent", err)
		}
		bad := &eventsv1.Envelope{Id: "bad", Payload: &anypb.Any{TypeUrl: "type.googleapis.com/switchboard.events.v1.OrderConfirmed", Value: []byte{0xff}}}
		err = db.Tx(context.WithoutCancel(ctx), func(tx *sql.Tx) error { return svc.HandleEvent(ctx, tx, bad) })
		if !errors.Is(err, events.ErrPermanent) {
			t.Errorf("HandleEvent(undecodable) = %v, want events.ErrPermanent", err)
		}
	})
}
