package order

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
)

// Phase is the direction a saga is going in.
type Phase string

// The phases of a saga.
const (
	// PhaseForward runs the steps in order, from StepPrice to StepRelease.
	PhaseForward Phase = "forward"
	// PhaseCompensate undoes, in reverse, the steps that may have happened.
	PhaseCompensate Phase = "compensate"
	// PhaseDone: the saga has finished; the order is CONFIRMED (or later)
	// or CANCELLED.
	PhaseDone Phase = "done"
)

// Step is a step of the saga that places an order, in the order the steps
// run. While going forward, an order's step is the step to run next (it may
// have started already: every step is idempotent). While compensating, it is
// the highest step whose effect may still exist; compensations run from it
// down to StepPrice.
type Step int

// The steps of the saga.
const (
	// StepNone: nothing is left to compensate.
	StepNone Step = 0
	// StepPrice prices the lines with inventory.GetItem.
	StepPrice Step = 1
	// StepReserve holds the stock with inventory.Reserve.
	StepReserve Step = 2
	// StepAuthorize finds the user's account (payment.GetAccount) and holds
	// the total on it (payment.Authorize).
	StepAuthorize Step = 3
	// StepShip creates the shipment (shipping.CreateShipment).
	StepShip Step = 4
	// StepCapture takes the held money (payment.Capture). It runs before
	// StepCommit so that stock is sold only once it is paid for: until the
	// commit, every step can be undone.
	StepCapture Step = 5
	// StepCommit sells the held stock (inventory.CommitReservation); the
	// order is then CONFIRMED.
	StepCommit Step = 6
	// StepRelease hands the confirmed order to Config.OnConfirmed, which
	// releases the shipment for pickup.
	StepRelease Step = 7
	// StepDone: every step has run.
	StepDone Step = 8
)

var stepNames = [...]string{"none", "price", "reserve", "authorize", "ship", "capture", "commit", "release", "done"}

// String returns the step's name, such as "reserve".
func (s Step) String() string {
	if s >= 0 && int(s) < len(stepNames) {
		return stepNames[s]
	}
	return "step(" + strconv.Itoa(int(s)) + ")"
}

// Line is a quantity of one item. UnitPrice is in minor units of the
// order's currency, 0 until the saga has priced the order.
type Line struct {
	ItemID    string
	Quantity  int64
	UnitPrice int64
}

// Address is where an order ships to.
type Address struct {
	Recipient   string
	Line1       string
	Line2       string
	City        string
	PostalCode  string
	CountryCode string
}

// Order is an order with the state of its saga.
type Order struct {
	ID             string
	UserID         string
	IdempotencyKey string
	// RequestHash identifies the request that placed the order, so that a
	// key reused for a different order is refused.
	RequestHash string
	Lines       []Line
	// Currency and Total are set when the saga has priced the order.
	Currency string
	Total    int64
	Address  Address
	Status   orderv1.OrderStatus
	// StatusSeq counts the order's status changes; each has an Event.
	StatusSeq       int64
	CancelReason    string
	AccountID       string
	AuthorizationID string
	ShipmentID      string
	Phase           Phase
	Step            Step
	// LeaseOwner is the replica driving the saga until LeaseUntil.
	LeaseOwner string
	LeaseUntil time.Time
	// NextRun is the earliest time recovery picks the saga up again.
	NextRun    time.Time
	CreateTime time.Time
	UpdateTime time.Time
}

// apply makes o what a conditional update that applied c at now left in
// the order's row.
func (o *Order) apply(c Change, now time.Time) {
	if c.visible() {
		o.UpdateTime = now
	}
	if c.Phase != "" {
		o.Phase = c.Phase
	}
	if c.SetStep {
		o.Step = c.Step
	}
	if c.Status != 0 {
		o.Status = c.Status
		o.StatusSeq++
	}
	for _, f := range []struct {
		dst *string
		v   string
	}{
		{&o.CancelReason, c.CancelReason},
		{&o.AccountID, c.AccountID},
		{&o.AuthorizationID, c.AuthorizationID},
		{&o.ShipmentID, c.ShipmentID},
	} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
	if p := c.Prices; p != nil {
		o.Currency, o.Total = p.Currency, p.Total
		lines := slices.Clone(o.Lines)
		for i := range lines {
			if i < len(p.Unit) {
				lines[i].UnitPrice = p.Unit[i]
			}
		}
		o.Lines = lines
	}
	switch {
	case c.ReleaseLease:
		o.LeaseOwner, o.LeaseUntil = "", time.UnixMicro(0).UTC() // as the store keeps "no lease"
	case !c.LeaseUntil.IsZero():
		o.LeaseUntil = c.LeaseUntil
	}
}

// Event is one status change of an order and the ids it had then.
type Event struct {
	Seq             int64
	Status          orderv1.OrderStatus
	CancelReason    string
	AuthorizationID string
	ShipmentID      string
	Time            time.Time
}

// terminal reports whether status ends an order's life: WatchOrder stops
// after it.
func terminal(status orderv1.OrderStatus) bool {
	return status == orderv1.OrderStatus_ORDER_STATUS_DELIVERED || status == orderv1.OrderStatus_ORDER_STATUS_CANCELLED
}

// settled reports whether the saga placing the order has reached a terminal
// state: PlaceOrder returns then.
func settled(status orderv1.OrderStatus) bool {
	switch status {
	case orderv1.OrderStatus_ORDER_STATUS_CONFIRMED, orderv1.OrderStatus_ORDER_STATUS_SHIPPED,
		orderv1.OrderStatus_ORDER_STATUS_DELIVERED, orderv1.OrderStatus_ORDER_STATUS_CANCELLED:
		return true
	}
	return false
}

// money returns amount in the order's currency, or nil before pricing.
func (o *Order) money(amount int64) *typev1.Money {
	if o.Currency == "" {
		return nil
	}
	return &typev1.Money{AmountMinor: amount, CurrencyCode: o.Currency}
}

// proto returns the API view of the order.
func (o *Order) proto() *orderv1.Order {
	lines := make([]*orderv1.OrderLine, len(o.Lines))
	for i, l := range o.Lines {
		lines[i] = &orderv1.OrderLine{ItemId: l.ItemID, Quantity: l.Quantity, UnitPrice: o.money(l.UnitPrice)}
	}
	a := o.Address
	return &orderv1.Order{
		OrderId: o.ID,
		UserId:  o.UserID,
		Lines:   lines,
		Total:   o.money(o.Total),
		ShippingAddress: &typev1.PostalAddress{
			Recipient: a.Recipient, Line1: a.Line1, Line2: a.Line2,
			City: a.City, PostalCode: a.PostalCode, CountryCode: a.CountryCode,
		},
		Status:          o.Status,
		CancelReason:    o.CancelReason,
		AuthorizationId: o.AuthorizationID,
		ShipmentId:      o.ShipmentID,
		CreateTime:      timestamppb.New(o.CreateTime),
		UpdateTime:      timestamppb.New(o.UpdateTime),
	}
}

// at returns the order as it was right after event e: its status and ids
// come from e, everything else from o.
func (o *Order) at(e Event) *orderv1.Order {
	p := o.proto()
	p.Status = e.Status
	p.CancelReason = e.CancelReason
	p.AuthorizationId = e.AuthorizationID
	p.ShipmentId = e.ShipmentID
	p.UpdateTime = timestamppb.New(e.Time)
	return p
}

// requestHash identifies what a PlaceOrder request asks for (lines and
// address; client prices are ignored as the server prices the order).
func requestHash(lines []Line, a Address) string {
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l.ItemID))
		h.Write([]byte{0})
		h.Write(strconv.AppendInt(nil, l.Quantity, 10))
		h.Write([]byte{0})
	}
	for _, f := range []string{a.Recipient, a.Line1, a.Line2, a.City, a.PostalCode, a.CountryCode} {
		h.Write([]byte{1})
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}
