package order

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

// statusOf is what the events of a status change need from the order row.
type statusOf struct {
	userID, currency string
	total            int64
}

// emit adds ev about subject to the outbox in tx, when there is one.
func (s *sqlStore) emit(ctx context.Context, tx *sql.Tx, subject string, ev proto.Message) error {
	if s.outbox == nil {
		return nil
	}
	_, err := s.outbox.Add(ctx, tx, subject, ev)
	return err
}

// wake tells the relay that a transaction with events committed.
func (s *sqlStore) wake() {
	if s.outbox != nil {
		s.outbox.Wake()
	}
}

// emitStatus writes the events of the status change e: OrderStatusChanged
// always, and OrderConfirmed or OrderCancelled when the order reached
// those. The previous status is the order's previous event, whose row the
// UPDATE of the order has serialized.
func (s *sqlStore) emitStatus(ctx context.Context, tx *sql.Tx, orderID string, o statusOf, e Event) error {
	if s.outbox == nil {
		return nil
	}
	var prev int64
	err := tx.QueryRowContext(ctx, `SELECT status FROM order_events WHERE order_id = $1 AND seq = $2`, orderID, e.Seq-1).Scan(&prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("previous status: %w", err)
	}
	if err := s.emit(ctx, tx, orderID, &eventsv1.OrderStatusChanged{
		OrderId: orderID, UserId: o.userID,
		PreviousStatus: orderv1.OrderStatus(prev), //nolint:gosec // written from an OrderStatus
		Status:         e.Status,
	}); err != nil {
		return err
	}
	switch e.Status {
	case orderv1.OrderStatus_ORDER_STATUS_CONFIRMED:
		return s.emit(ctx, tx, orderID, &eventsv1.OrderConfirmed{
			OrderId: orderID, UserId: o.userID, ShipmentId: e.ShipmentID,
			Total: &typev1.Money{AmountMinor: o.total, CurrencyCode: o.currency},
		})
	case orderv1.OrderStatus_ORDER_STATUS_CANCELLED:
		return s.emit(ctx, tx, orderID, &eventsv1.OrderCancelled{OrderId: orderID, UserId: o.userID, Reason: e.CancelReason})
	}
	return nil
}

// EventTypes are the events HandleEvent consumes.
func EventTypes() []string {
	return []string{string((&eventsv1.ShipmentStatusChanged{}).ProtoReflect().Descriptor().FullName())}
}

// HandleEvent consumes ShipmentStatusChanged inside tx (the consumer's
// transaction, which records the event as handled): a parcel picked up
// or on its way makes its order SHIPPED, a delivered one DELIVERED. A
// change the order is already past is a no-op. An event that cannot be
// decoded fails with events.ErrPermanent.
func (s *Service) HandleEvent(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
	var ev eventsv1.ShipmentStatusChanged
	if err := env.GetPayload().UnmarshalTo(&ev); err != nil {
		return fmt.Errorf("order: event %s of type %s: %w: %w", env.GetId(), env.GetType(), events.ErrPermanent, err)
	}
	to, from, ok := shipmentTransition(ev.GetStatus())
	if !ok {
		return nil
	}
	err := s.store.UpdateIn(ctx, tx, ev.GetOrderId(), Cond{Statuses: from}, Change{Status: to}, time.Now())
	if errors.Is(err, ErrStale) {
		st, err := s.store.StatusIn(ctx, tx, ev.GetOrderId())
		if err != nil {
			return err
		}
		if st == to || st == orderv1.OrderStatus_ORDER_STATUS_DELIVERED {
			return nil // already there or past it
		}
		return fmt.Errorf("order %s is %v: %w", ev.GetOrderId(), st, ErrInvalidTransition)
	}
	if err != nil {
		return err
	}
	s.bc.notify(ev.GetOrderId())
	return nil
}

// shipmentTransition maps a shipment status to the order status it moves
// the order to, and the statuses it moves it from; ok is false for
// shipment statuses that do not move the order.
func shipmentTransition(st shippingv1.ShipmentStatus) (to orderv1.OrderStatus, from []orderv1.OrderStatus, ok bool) {
	switch st {
	case shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP, shippingv1.ShipmentStatus_SHIPMENT_STATUS_IN_TRANSIT,
		shippingv1.ShipmentStatus_SHIPMENT_STATUS_OUT_FOR_DELIVERY:
		return orderv1.OrderStatus_ORDER_STATUS_SHIPPED, []orderv1.OrderStatus{orderv1.OrderStatus_ORDER_STATUS_CONFIRMED}, true
	case shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED:
		return orderv1.OrderStatus_ORDER_STATUS_DELIVERED, []orderv1.OrderStatus{
			orderv1.OrderStatus_ORDER_STATUS_CONFIRMED, orderv1.OrderStatus_ORDER_STATUS_SHIPPED,
		}, true
	}
	return 0, nil, false
}
