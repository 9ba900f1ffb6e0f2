package shipping

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
)

// handlers is the gRPC edge of the service: it converts messages and maps
// every error once, with the service's status table. Requests arrive
// validated by Rules.
type handlers struct {
	shippingv1.UnimplementedShippingServiceServer
	svc *Service
}

var _ shippingv1.ShippingServiceServer = (*handlers)(nil)

// CreateShipment creates the order's shipment, or returns the existing one.
func (h *handlers) CreateShipment(ctx context.Context, req *shippingv1.CreateShipmentRequest) (*shippingv1.CreateShipmentResponse, error) {
	sh, err := h.svc.create(ctx, req.GetOrderId(), addressFromProto(req.GetAddress()), itemsFromProto(req.GetItems()))
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	return &shippingv1.CreateShipmentResponse{Shipment: shipmentToProto(&sh)}, nil
}

// CancelShipment cancels a shipment not yet picked up.
func (h *handlers) CancelShipment(ctx context.Context, req *shippingv1.CancelShipmentRequest) (*shippingv1.CancelShipmentResponse, error) {
	sh, err := h.svc.cancelShipment(ctx, req.GetShipmentId(), req.GetReason())
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	return &shippingv1.CancelShipmentResponse{Shipment: shipmentToProto(&sh)}, nil
}

// GetShipment returns a shipment with its events.
func (h *handlers) GetShipment(ctx context.Context, req *shippingv1.GetShipmentRequest) (*shippingv1.GetShipmentResponse, error) {
	sh, err := h.svc.store.Get(ctx, req.GetShipmentId())
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	return &shippingv1.GetShipmentResponse{Shipment: shipmentToProto(&sh)}, nil
}

// Track streams a shipment's events until DELIVERED or CANCELLED.
func (h *handlers) Track(req *shippingv1.TrackRequest, stream shippingv1.ShippingService_TrackServer) error {
	ctx := stream.Context()
	id := req.GetShipmentId()
	err := h.svc.track(ctx, id, func(ev Event) error {
		return stream.Send(&shippingv1.TrackResponse{ShipmentId: id, Event: eventToProto(&ev)})
	})
	if err != nil && ctx.Err() != nil {
		// The client left (a failed Send says so less clearly).
		err = ctx.Err()
	}
	return h.svc.table.Map(ctx, err)
}

func addressFromProto(a *typev1.PostalAddress) Address {
	return Address{
		Recipient:   a.GetRecipient(),
		Line1:       a.GetLine1(),
		Line2:       a.GetLine2(),
		City:        a.GetCity(),
		PostalCode:  a.GetPostalCode(),
		CountryCode: a.GetCountryCode(),
	}
}

func itemsFromProto(items []*shippingv1.ShipmentItem) []Item {
	out := make([]Item, len(items))
	for i, it := range items {
		out[i] = Item{ItemID: it.GetItemId(), Quantity: it.GetQuantity()}
	}
	return out
}

func shipmentToProto(s *Shipment) *shippingv1.Shipment {
	items := make([]*shippingv1.ShipmentItem, len(s.Items))
	for i, it := range s.Items {
		items[i] = &shippingv1.ShipmentItem{ItemId: it.ItemID, Quantity: it.Quantity}
	}
	events := make([]*shippingv1.TrackingEvent, len(s.Events))
	for i := range s.Events {
		events[i] = eventToProto(&s.Events[i])
	}
	a := &s.Address
	return &shippingv1.Shipment{
		ShipmentId: s.ID,
		OrderId:    s.OrderID,
		Address: &typev1.PostalAddress{
			Recipient:   a.Recipient,
			Line1:       a.Line1,
			Line2:       a.Line2,
			City:        a.City,
			PostalCode:  a.PostalCode,
			CountryCode: a.CountryCode,
		},
		Items:          items,
		Status:         s.Status,
		Carrier:        s.Carrier,
		TrackingNumber: s.TrackingNumber,
		Events:         events,
		CreateTime:     timestamppb.New(s.Created),
		UpdateTime:     timestamppb.New(s.Updated),
	}
}

func eventToProto(e *Event) *shippingv1.TrackingEvent {
	return &shippingv1.TrackingEvent{
		Sequence:    e.Sequence,
		Status:      e.Status,
		Description: e.Description,
		Location:    e.Location,
		EventTime:   timestamppb.New(e.Time),
	}
}
