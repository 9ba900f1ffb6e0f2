package shipping

import (
	"slices"
	"strings"
	"time"

	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
)

// Address is where a shipment goes.
type Address struct {
	Recipient   string
	Line1       string
	Line2       string
	City        string
	PostalCode  string
	CountryCode string
}

// Item is a quantity of one item in a shipment.
type Item struct {
	ItemID   string
	Quantity int64
}

// Event is one step of a shipment's history.
type Event struct {
	// Sequence numbers a shipment's events 1, 2, 3... without gaps.
	Sequence    int32
	Status      shippingv1.ShipmentStatus
	Description string
	Location    string
	Time        time.Time
}

// Shipment is the delivery of one order.
type Shipment struct {
	ID             string
	OrderID        string
	Address        Address
	Items          []Item
	Status         shippingv1.ShipmentStatus
	Carrier        string
	TrackingNumber string
	// Ready is true once the shipment is released to the carrier.
	Ready bool
	// Events are the tracking events, oldest first.
	Events  []Event
	Created time.Time
	Updated time.Time
}

// NewShipment is what Store.Create inserts: ID, Carrier and TrackingNumber
// are chosen by the service.
type NewShipment struct {
	ID             string
	OrderID        string
	Address        Address
	Items          []Item
	Carrier        string
	TrackingNumber string
}

// Transition is one committed status change and the event it recorded.
type Transition struct {
	ShipmentID string
	OrderID    string
	From       shippingv1.ShipmentStatus
	To         shippingv1.ShipmentStatus
	Event      Event
}

// DueShipment is a shipment whose next carrier step is due.
type DueShipment struct {
	ShipmentID string
	Status     shippingv1.ShipmentStatus
}

// MaxEvents bounds the events of one shipment: CREATED, then either
// CANCELLED or the four carrier steps.
const MaxEvents = 5

// next returns the status the carrier moves a shipment in status s to, and
// false when the carrier does not move it (terminal, or unknown).
func next(s shippingv1.ShipmentStatus) (shippingv1.ShipmentStatus, bool) {
	switch s {
	case shippingv1.ShipmentStatus_SHIPMENT_STATUS_CREATED:
		return shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP, true
	case shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP:
		return shippingv1.ShipmentStatus_SHIPMENT_STATUS_IN_TRANSIT, true
	case shippingv1.ShipmentStatus_SHIPMENT_STATUS_IN_TRANSIT:
		return shippingv1.ShipmentStatus_SHIPMENT_STATUS_OUT_FOR_DELIVERY, true
	case shippingv1.ShipmentStatus_SHIPMENT_STATUS_OUT_FOR_DELIVERY:
		return shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED, true
	}
	return shippingv1.ShipmentStatus_SHIPMENT_STATUS_UNSPECIFIED, false
}

// Terminal reports whether s is a final status: DELIVERED or CANCELLED.
func Terminal(s shippingv1.ShipmentStatus) bool {
	return s == shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED ||
		s == shippingv1.ShipmentStatus_SHIPMENT_STATUS_CANCELLED
}

// statusName is the status as stored in the database: "PICKED_UP".
func statusName(s shippingv1.ShipmentStatus) string {
	return strings.TrimPrefix(s.String(), "SHIPMENT_STATUS_")
}

// parseStatus reads a status stored by statusName.
func parseStatus(name string) shippingv1.ShipmentStatus {
	return shippingv1.ShipmentStatus(shippingv1.ShipmentStatus_value["SHIPMENT_STATUS_"+name])
}

// createdEvent describes the first event of a shipment.
func createdEvent(carrier string) (description, location string) {
	return "Shipment created; awaiting pickup by " + carrier, ""
}

// cancelledEvent describes the event of a cancellation.
func cancelledEvent(reason string) (description, location string) {
	if reason == "" {
		return "Shipment cancelled", ""
	}
	return "Shipment cancelled: " + reason, ""
}

// carrierEvent describes the event of a carrier step to status to.
func carrierEvent(to shippingv1.ShipmentStatus, carrier, city string) (description, location string) {
	switch to {
	case shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP:
		return "Picked up by " + carrier, "Switchboard fulfilment centre"
	case shippingv1.ShipmentStatus_SHIPMENT_STATUS_IN_TRANSIT:
		return "In transit to the destination depot", carrier + " sorting hub"
	case shippingv1.ShipmentStatus_SHIPMENT_STATUS_OUT_FOR_DELIVERY:
		return "Out for delivery", city
	case shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED:
		return "Delivered", city
	}
	return statusName(to), ""
}

// sameContent reports whether a shipment with address a and items ai is
// the one asked for with address b and items bi; items are compared as a
// set (item ids are unique within a shipment).
func sameContent(a Address, ai []Item, b Address, bi []Item) bool {
	if a != b || len(ai) != len(bi) {
		return false
	}
	byID := func(x, y Item) int { return strings.Compare(x.ItemID, y.ItemID) }
	as, bs := slices.SortedFunc(slices.Values(ai), byID), slices.SortedFunc(slices.Values(bi), byID)
	return slices.Equal(as, bs)
}
