package shipping

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

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

// emitTransition writes ShipmentStatusChanged for tr, about the shipment.
func (s *sqlStore) emitTransition(ctx context.Context, tx *sql.Tx, tr *Transition) error {
	return s.emit(ctx, tx, tr.ShipmentID, &eventsv1.ShipmentStatusChanged{
		ShipmentId: tr.ShipmentID, OrderId: tr.OrderID, PreviousStatus: tr.From, Status: tr.To,
		Description: tr.Event.Description,
	})
}

// EventTypes are the events HandleEvent consumes.
func EventTypes() []string {
	return []string{string((&eventsv1.OrderConfirmed{}).ProtoReflect().Descriptor().FullName())}
}

// HandleEvent consumes OrderConfirmed inside tx (the consumer's
// transaction, which records the event as handled): the order's parcel is
// released to the carrier, whose pickup falls due PickupDelay later. A
// parcel released already is left as it is. An event that cannot be
// decoded, or an order whose shipment was cancelled (no retry can fix
// either), fails with events.ErrPermanent; other errors are retried.
func (s *Service) HandleEvent(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
	var ev eventsv1.OrderConfirmed
	if err := env.GetPayload().UnmarshalTo(&ev); err != nil {
		return fmt.Errorf("shipping: event %s of type %s: %w: %w", env.GetId(), env.GetType(), events.ErrPermanent, err)
	}
	released, err := s.store.ReleaseIn(ctx, tx, ev.GetOrderId(), time.Now().Add(s.cfg.PickupDelay))
	if errors.Is(err, ErrCancelled) {
		return fmt.Errorf("shipping: order %s confirmed: %w: %w", ev.GetOrderId(), events.ErrPermanent, err)
	}
	if err != nil {
		return err
	}
	if released {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return nil
}
