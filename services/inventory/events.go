package inventory

import (
	"context"
	"database/sql"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
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

// emitLevels adds a StockChanged per changed item, in item id order, after
// the UPDATEs that locked the items' rows, so per item the events commit
// in the order of the changes.
func (s *sqlStore) emitLevels(ctx context.Context, tx *sql.Tx, changed levelsByID, reason eventsv1.StockChangeReason, orderID string) error {
	for _, l := range changed.sorted() {
		if err := s.emit(ctx, tx, l.ItemID, &eventsv1.StockChanged{
			ItemId: l.ItemID, OnHand: l.OnHand, Reserved: l.Reserved, Available: l.Available(),
			Version: l.Version, Reason: reason, OrderId: orderID,
		}); err != nil {
			return err
		}
	}
	return nil
}

func reservedEvent(res Reservation) *eventsv1.StockReserved {
	ev := &eventsv1.StockReserved{OrderId: res.OrderID, ExpireTime: timestamppb.New(res.Expires)}
	for _, l := range res.Lines {
		ev.Lines = append(ev.Lines, &inventoryv1.ReservationLine{ItemId: l.ItemID, Quantity: l.Quantity})
	}
	return ev
}
