package inventory

import (
	"context"
	"errors"
	"io"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// GetItem returns one item with its stock.
func (s *Service) GetItem(ctx context.Context, req *inventoryv1.GetItemRequest) (*inventoryv1.GetItemResponse, error) {
	it, err := s.store.Item(ctx, req.GetItemId())
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	return &inventoryv1.GetItemResponse{Item: itemProto(it)}, nil
}

// ListItems streams the catalogue in item id order, one page per message,
// each page read from the database with its own query (keyset pagination on
// the item id), so that neither the table nor a transaction is held while a
// slow client reads. Every page but the last carries a next_page_token that
// resumes after it; an empty catalogue sends no message.
func (s *Service) ListItems(req *inventoryv1.ListItemsRequest, stream inventoryv1.InventoryService_ListItemsServer) error {
	ctx := stream.Context()
	after, ok := decodePageToken(req.GetPageToken())
	if !ok {
		return status.InvalidArgument(Domain, validate.Reason, "invalid page token",
			status.FieldViolation("page_token", "is not a token from an earlier ListItems"))
	}
	size := int(req.GetPageSize())
	if size <= 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	for {
		// One more than a page tells whether another page follows.
		items, err := s.store.Items(ctx, after, size+1)
		if err != nil {
			return s.table.Map(ctx, err)
		}
		more := len(items) > size
		if more {
			items = items[:size]
		}
		if len(items) == 0 {
			return nil
		}
		resp := &inventoryv1.ListItemsResponse{Items: make([]*inventoryv1.Item, len(items))}
		for i, it := range items {
			resp.Items[i] = itemProto(it)
		}
		after = items[len(items)-1].ID
		if more {
			resp.NextPageToken = encodePageToken(after)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

// RecordItems imports items in batches of Config.RecordBatch, one
// transaction each, and publishes each batch's levels once it commits. A
// message with an invalid field, a new item without a name or price, and a
// quantity below the units reserved are rejected one by one and listed in
// the reply (the first MaxRecordErrors of them, in stream order); they do
// not stop the import.
//
// The stream is bounded: message MaxRecordMessages+1 ends the call with
// INVALID_ARGUMENT (TOO_MANY_ITEMS) once the first MaxRecordMessages have
// been imported. Quantities are absolute, so an import that failed half way
// (the batches before the failure stay committed) can simply be sent again.
func (s *Service) RecordItems(stream inventoryv1.InventoryService_RecordItemsServer) error {
	ctx := stream.Context()
	r := recorder{svc: s, resp: &inventoryv1.RecordItemsResponse{}}
	for index := 0; ; index++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if index == s.recordLimit {
			if err := r.flush(ctx); err != nil {
				return s.table.Map(ctx, err)
			}
			return errTooManyItems(s.recordLimit)
		}
		if e := recordItemError(index, req); e != nil {
			r.reject(e)
			continue
		}
		r.batch = append(r.batch, itemInput(req))
		r.indexes = append(r.indexes, index)
		r.ids = append(r.ids, req.GetItemId())
		if len(r.batch) == s.cfg.RecordBatch {
			if err := r.flush(ctx); err != nil {
				return s.table.Map(ctx, err)
			}
		}
	}
	if err := r.flush(ctx); err != nil {
		return s.table.Map(ctx, err)
	}
	return stream.SendAndClose(r.resp)
}

// recorder accumulates one RecordItems call.
type recorder struct {
	svc  *Service
	resp *inventoryv1.RecordItemsResponse
	// The batch not written yet, with each item's stream index and id.
	batch   []ItemInput
	indexes []int
	ids     []string
	// pending are the items rejected by validation since the last flush,
	// merged with the batch's rejections in stream order at the flush.
	pending []*inventoryv1.RecordItemError
}

// reject counts a rejected item and keeps its error while there is room.
func (r *recorder) reject(e *inventoryv1.RecordItemError) {
	r.resp.Rejected++
	if len(r.resp.Errors)+len(r.pending) < MaxRecordErrors {
		r.pending = append(r.pending, e)
	}
}

// flush writes the batch in one transaction and publishes its levels.
func (r *recorder) flush(ctx context.Context) error {
	var errs []*inventoryv1.RecordItemError
	if len(r.batch) > 0 {
		results, levels, err := r.svc.store.RecordItems(ctx, r.batch, r.svc.now())
		if err != nil {
			return err
		}
		r.svc.hub.publish(levels)
		for i, res := range results {
			switch res.Outcome {
			case Created:
				r.resp.Created++
			case Updated:
				r.resp.Updated++
			case Rejected:
				r.resp.Rejected++
				errs = append(errs, &inventoryv1.RecordItemError{
					Index:       int32(r.indexes[i]), //nolint:gosec // bounded by MaxRecordMessages
					ItemId:      r.ids[i],
					Field:       res.Field,
					Reason:      res.Reason,
					Description: res.Description,
				})
			}
		}
	}
	if len(errs) > 0 || len(r.pending) > 0 {
		errs = append(errs, r.pending...)
		slices.SortFunc(errs, func(a, b *inventoryv1.RecordItemError) int { return int(a.GetIndex() - b.GetIndex()) })
		room := MaxRecordErrors - len(r.resp.Errors)
		r.resp.Errors = append(r.resp.Errors, errs[:min(room, len(errs))]...)
	}
	r.batch, r.indexes, r.ids, r.pending = r.batch[:0], r.indexes[:0], r.ids[:0], nil
	return nil
}

// Reserve holds stock for an order: all lines or none, idempotent by order
// id. The reservation expires after ttl_seconds, or Config.DefaultTTL.
//
// Repeating it for an order that has a reservation returns that
// reservation as it is, whatever its status, and takes nothing; with other
// lines (a different set of items or quantities) it fails with
// ALREADY_EXISTS (RESERVATION_MISMATCH). An unknown item gives NOT_FOUND
// (ITEM_NOT_FOUND); not enough stock gives FAILED_PRECONDITION
// (OUT_OF_STOCK) with a STOCK violation on "items/<id>" per short item.
func (s *Service) Reserve(ctx context.Context, req *inventoryv1.ReserveRequest) (*inventoryv1.ReserveResponse, error) {
	ttl := s.cfg.DefaultTTL
	if t := req.GetTtlSeconds(); t > 0 {
		ttl = time.Duration(t) * time.Second
	}
	lines := make([]Line, len(req.GetLines()))
	for i, l := range req.GetLines() {
		lines[i] = Line{ItemID: l.GetItemId(), Quantity: l.GetQuantity()}
	}
	now := s.now()
	res, levels, err := s.store.Reserve(ctx, req.GetOrderId(), lines, now, now.Add(ttl))
	s.hub.publish(levels)
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	return &inventoryv1.ReserveResponse{Reservation: reservationProto(res)}, nil
}

// Release gives a held reservation's stock back; idempotent. A released or
// expired reservation is returned as it is; a committed one gives
// FAILED_PRECONDITION (RESERVATION_COMMITTED); an order without a
// reservation gives NOT_FOUND (RESERVATION_NOT_FOUND).
func (s *Service) Release(ctx context.Context, req *inventoryv1.ReleaseRequest) (*inventoryv1.ReleaseResponse, error) {
	res, levels, err := s.store.Release(ctx, req.GetOrderId(), req.GetReason(), s.now())
	s.hub.publish(levels)
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	return &inventoryv1.ReleaseResponse{Reservation: reservationProto(res)}, nil
}

// CommitReservation sells a held reservation's stock; idempotent. A
// committed reservation is returned as it is; a released or expired one,
// or a held one past its expiry, gives FAILED_PRECONDITION
// (RESERVATION_RELEASED or RESERVATION_EXPIRED).
func (s *Service) CommitReservation(ctx context.Context, req *inventoryv1.CommitReservationRequest) (*inventoryv1.CommitReservationResponse, error) {
	res, levels, err := s.store.Commit(ctx, req.GetOrderId(), s.now())
	s.hub.publish(levels)
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	return &inventoryv1.CommitReservationResponse{Reservation: reservationProto(res)}, nil
}

// itemInput converts an imported item, already validated.
func itemInput(m *inventoryv1.RecordItemsRequest) ItemInput {
	in := ItemInput{ID: m.GetItemId(), Name: m.GetName(), Description: m.GetDescription(), Quantity: m.GetQuantity()}
	if p := m.GetPrice(); p != nil {
		in.HasPrice, in.PriceMinor, in.Currency = true, p.GetAmountMinor(), p.GetCurrencyCode()
	}
	return in
}

func itemProto(it Item) *inventoryv1.Item {
	return &inventoryv1.Item{
		ItemId:      it.ID,
		Name:        it.Name,
		Description: it.Description,
		Price:       &typev1.Money{AmountMinor: it.PriceMinor, CurrencyCode: it.Currency},
		OnHand:      it.OnHand,
		Reserved:    it.Reserved,
		Available:   it.OnHand - it.Reserved,
		Version:     it.Version,
		UpdateTime:  timestamppb.New(it.Updated),
	}
}

func reservationProto(r Reservation) *inventoryv1.Reservation {
	p := &inventoryv1.Reservation{
		OrderId:    r.OrderID,
		Lines:      make([]*inventoryv1.ReservationLine, len(r.Lines)),
		Status:     statusProto(r.Status),
		ExpireTime: timestamppb.New(r.Expires),
		CreateTime: timestamppb.New(r.Created),
	}
	for i, l := range r.Lines {
		p.Lines[i] = &inventoryv1.ReservationLine{ItemId: l.ItemID, Quantity: l.Quantity}
	}
	return p
}

func statusProto(s Status) inventoryv1.ReservationStatus {
	switch s {
	case StatusHeld:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD
	case StatusCommitted:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED
	case StatusReleased:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED
	case StatusExpired:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_EXPIRED
	}
	return inventoryv1.ReservationStatus_RESERVATION_STATUS_UNSPECIFIED
}
