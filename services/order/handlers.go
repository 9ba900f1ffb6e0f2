package order

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/identity"
)

// maxCancelAttempts bounds how often CancelOrder re-reads an order that
// changed under it.
const maxCancelAttempts = 3

// scope is whose orders a call may see: one user's, or with all set (the
// operator without a user) everyone's.
type scope struct {
	userID string
	all    bool
}

// callerScope returns the scope of the caller: the verified user, or, when
// operator is true, the operator service without a user.
func callerScope(ctx context.Context, operator bool) (scope, error) {
	if u := identity.UserFrom(ctx); u != nil && u.ID != "" {
		return scope{userID: u.ID}, nil
	}
	if svc := identity.ServiceFrom(ctx); operator && svc != nil && svc.Name == authz.Operator {
		return scope{all: true}, nil
	}
	return scope{}, ErrUserRequired
}

// order returns the order if the scope may see it; another user's order is
// not found, so that its existence does not leak.
func (s *Service) order(ctx context.Context, sc scope, orderID string) (*Order, error) {
	o, err := s.store.Order(ctx, orderID)
	if err != nil {
		return nil, err
	}
	if !sc.all && o.UserID != sc.userID {
		return nil, &NotFoundError{OrderID: orderID}
	}
	return o, nil
}

// PlaceOrder places an order for the caller and runs its saga. The same
// idempotency key returns the same order (the same key with a different
// request is ALREADY_EXISTS), and the saga runs once however many
// duplicates arrive. It returns when the saga is settled (CONFIRMED, or
// CANCELLED with its reason) or shortly before the call's deadline, with
// the order as it is then; the saga goes on in the background either way.
//
// A business failure such as not enough stock or funds is not an error of
// the call: the order is returned CANCELLED with cancel_reason (such as
// "insufficient stock: items/x"), because the order exists and its key is
// spent, and a retry with the same key must give the same answer.
func (s *Service) PlaceOrder(ctx context.Context, req *orderv1.PlaceOrderRequest) (*orderv1.PlaceOrderResponse, error) {
	sc, err := callerScope(ctx, false)
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	if s.isClosed() {
		return nil, s.table.Map(ctx, ErrClosing)
	}
	lines := make([]Line, len(req.GetLines()))
	for i, l := range req.GetLines() {
		lines[i] = Line{ItemID: l.GetItemId(), Quantity: l.GetQuantity()}
	}
	a := req.GetShippingAddress()
	addr := Address{
		Recipient: a.GetRecipient(), Line1: a.GetLine1(), Line2: a.GetLine2(),
		City: a.GetCity(), PostalCode: a.GetPostalCode(), CountryCode: a.GetCountryCode(),
	}
	now := time.Now()
	o, created, err := s.store.CreateOrder(ctx, &Order{
		ID:             uuid.NewString(),
		UserID:         sc.userID,
		IdempotencyKey: req.GetIdempotencyKey(),
		RequestHash:    requestHash(lines, addr),
		Lines:          lines,
		Address:        addr,
		Status:         orderv1.OrderStatus_ORDER_STATUS_PENDING,
		Phase:          PhaseForward,
		Step:           StepPrice,
		LeaseOwner:     s.cfg.Owner,
		LeaseUntil:     now.Add(s.cfg.LeaseTTL),
		CreateTime:     now,
	})
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	if !created && o.RequestHash != requestHash(lines, addr) {
		return nil, s.table.Map(ctx, &KeyReusedError{OrderID: o.ID})
	}
	if created {
		s.start(o.ID, o.LeaseUntil)
	}
	if !settled(o.Status) {
		if o, err = s.await(ctx, o.ID, func(o *Order) bool { return settled(o.Status) }); err != nil {
			return nil, s.table.Map(ctx, err)
		}
	}
	return &orderv1.PlaceOrderResponse{Order: o.proto()}, nil
}

// await re-reads the order each time it changes until done(order) holds,
// the call's deadline is ReturnMargin away (Wait without a deadline), or
// the service closes; it then returns the order as it is.
func (s *Service) await(ctx context.Context, orderID string, done func(*Order) bool) (*Order, error) {
	limit := time.Now().Add(s.cfg.Wait)
	if dl, ok := ctx.Deadline(); ok {
		limit = dl.Add(-s.cfg.ReturnMargin)
	}
	sub := s.bc.subscribe(orderID)
	defer sub.close()
	timer := time.NewTimer(time.Until(limit))
	defer timer.Stop()
	poll := time.NewTicker(s.cfg.WatchPollInterval)
	defer poll.Stop()
	last := false
	for {
		changed := sub.changed()
		o, err := s.store.Order(ctx, orderID)
		if err != nil {
			return nil, err
		}
		if last || done(o) || !time.Now().Before(limit) {
			return o, nil
		}
		select {
		case <-changed:
		case <-poll.C:
		case <-timer.C:
			last = true
		case <-s.ctx.Done():
			last = true
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Service) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// GetOrder returns one of the caller's orders; the operator may read any.
func (s *Service) GetOrder(ctx context.Context, req *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	sc, err := callerScope(ctx, true)
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	o, err := s.order(ctx, sc, req.GetOrderId())
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	return &orderv1.GetOrderResponse{Order: o.proto()}, nil
}

// ListOrders lists the caller's orders newest first, a page at a time; the
// operator lists everyone's.
func (s *Service) ListOrders(ctx context.Context, req *orderv1.ListOrdersRequest) (*orderv1.ListOrdersResponse, error) {
	sc, err := callerScope(ctx, true)
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	var after *Cursor
	if t := req.GetPageToken(); t != "" {
		if after, err = decodePageToken(t); err != nil {
			return nil, s.table.Map(ctx, err)
		}
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	orders, err := s.store.ListOrders(ctx, sc.userID, after, size+1)
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	resp := &orderv1.ListOrdersResponse{}
	if len(orders) > size {
		orders = orders[:size]
		last := orders[size-1]
		resp.NextPageToken = encodePageToken(Cursor{CreateTime: last.CreateTime, OrderID: last.ID})
	}
	resp.Orders = make([]*orderv1.Order, len(orders))
	for i, o := range orders {
		resp.Orders[i] = o.proto()
	}
	return resp, nil
}

// encodePageToken makes the opaque token of a listing position.
func encodePageToken(c Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(sqldb.Micros(c.CreateTime), 10) + "." + c.OrderID))
}

// decodePageToken reads a token made by encodePageToken.
func decodePageToken(t string) (*Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil {
		return nil, ErrInvalidPageToken
	}
	us, id, ok := strings.Cut(string(raw), ".")
	if !ok || id == "" || len(id) > MaxOrderIDLen {
		return nil, ErrInvalidPageToken
	}
	n, err := strconv.ParseInt(us, 10, 64)
	if err != nil || n < 0 {
		return nil, ErrInvalidPageToken
	}
	return &Cursor{CreateTime: sqldb.Time(n), OrderID: id}, nil
}

// CancelOrder cancels one of the caller's orders before the carrier picks
// it up, and returns it CANCELLING or, once compensated, CANCELLED:
//
//   - while its saga runs, the saga switches to compensation at its next
//     step boundary and undoes what it did (a stock commit already under
//     way is not undone: its stock stays sold, as below);
//   - once CONFIRMED, the shipment is cancelled first (a shipment already
//     picked up makes the call fail with FAILED_PRECONDITION and the order
//     stays CONFIRMED), then the captured payment is refunded. Committed
//     stock stays sold in this version: inventory has no call to put sold
//     stock back, so it needs a stocktake (RecordItems);
//   - a CANCELLED order is returned unchanged, a SHIPPED or DELIVERED one
//     fails with FAILED_PRECONDITION.
func (s *Service) CancelOrder(ctx context.Context, req *orderv1.CancelOrderRequest) (*orderv1.CancelOrderResponse, error) {
	sc, err := callerScope(ctx, false)
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	reason := req.GetReason()
	if reason == "" {
		reason = "cancelled by user"
	}
	o, err := s.cancelOrder(ctx, sc, req.GetOrderId(), reason)
	if err != nil {
		return nil, s.table.Map(ctx, err)
	}
	return &orderv1.CancelOrderResponse{Order: o.proto()}, nil
}

func (s *Service) cancelOrder(ctx context.Context, sc scope, orderID, reason string) (*Order, error) {
	o, err := s.order(ctx, sc, orderID)
	if err != nil {
		return nil, err
	}
	cancelled := func(o *Order) bool { return terminal(o.Status) }
	for range maxCancelAttempts {
		switch o.Status {
		case orderv1.OrderStatus_ORDER_STATUS_CANCELLED:
			return o, nil
		case orderv1.OrderStatus_ORDER_STATUS_CANCELLING:
			return s.await(ctx, o.ID, cancelled)
		case orderv1.OrderStatus_ORDER_STATUS_SHIPPED, orderv1.OrderStatus_ORDER_STATUS_DELIVERED:
			return nil, &ShippedError{OrderID: o.ID}
		case orderv1.OrderStatus_ORDER_STATUS_CONFIRMED:
			if err := s.cancelConfirmedShipment(ctx, o); err != nil {
				return nil, err
			}
			err = s.store.Update(ctx, o.ID,
				Cond{Statuses: []orderv1.OrderStatus{orderv1.OrderStatus_ORDER_STATUS_CONFIRMED}},
				Change{
					Phase: PhaseCompensate, Step: StepRelease, SetStep: true,
					Status: orderv1.OrderStatus_ORDER_STATUS_CANCELLING, CancelReason: reason,
				}, time.Now())
		default: // the saga is going forward: turn it round
			err = s.store.Update(ctx, o.ID,
				Cond{Phase: PhaseForward, Statuses: []orderv1.OrderStatus{
					orderv1.OrderStatus_ORDER_STATUS_PENDING,
					orderv1.OrderStatus_ORDER_STATUS_STOCK_RESERVED,
					orderv1.OrderStatus_ORDER_STATUS_PAYMENT_AUTHORIZED,
					orderv1.OrderStatus_ORDER_STATUS_SHIPMENT_CREATED,
				}},
				Change{Phase: PhaseCompensate, Status: orderv1.OrderStatus_ORDER_STATUS_CANCELLING, CancelReason: reason},
				time.Now())
		}
		switch {
		case err == nil:
			s.bc.notify(o.ID)
			s.start(o.ID, time.Time{}) // unless this or another replica drives it already
			return s.await(ctx, o.ID, cancelled)
		case !errors.Is(err, ErrStale):
			return nil, err
		}
		if o, err = s.store.Order(ctx, o.ID); err != nil {
			return nil, err
		}
	}
	return nil, ErrStale
}

// cancelConfirmedShipment cancels the shipment of a confirmed order before
// the order is cancelled, so that a parcel the carrier already has stops
// the cancel. The call runs on the saga's background context.
func (s *Service) cancelConfirmedShipment(ctx context.Context, o *Order) error {
	if o.ShipmentID == "" {
		return nil
	}
	sctx, cancel := context.WithTimeout(s.ctx, s.cfg.StepTimeout)
	defer cancel()
	_, err := s.cfg.Shipping.CancelShipment(sctx, &shippingv1.CancelShipmentRequest{
		ShipmentId: o.ShipmentID, Reason: "order " + o.ID + " cancelled by its user",
	})
	switch grpcstatus.Code(err) {
	case codes.OK, codes.NotFound:
		return nil
	case codes.FailedPrecondition:
		return &ShippedError{OrderID: o.ID}
	}
	s.logger.LogAttrs(ctx, slog.LevelWarn, "order: cancel shipment failed",
		slog.String("order_id", o.ID), slog.String("error", err.Error()))
	return ErrUnavailable
}

// WatchOrder streams one of the caller's orders: its current state, then
// the order after each status change in order, until a terminal state
// (DELIVERED or CANCELLED) has been sent. Changes are read from the
// order's status history, so none is skipped; the stream wakes on changes
// made by this replica and polls every WatchPollInterval for others'.
func (s *Service) WatchOrder(req *orderv1.WatchOrderRequest, stream orderv1.OrderService_WatchOrderServer) error {
	ctx := stream.Context()
	sc, err := callerScope(ctx, false)
	if err != nil {
		return s.table.Map(ctx, err)
	}
	sub := s.bc.subscribe(req.GetOrderId())
	defer sub.close()
	changed := sub.changed()
	o, err := s.order(ctx, sc, req.GetOrderId())
	if err != nil {
		return s.table.Map(ctx, err)
	}
	if err := stream.Send(&orderv1.WatchOrderResponse{Order: o.proto()}); err != nil {
		return err
	}
	seq := o.StatusSeq
	if terminal(o.Status) {
		return nil
	}
	poll := time.NewTicker(s.cfg.WatchPollInterval)
	defer poll.Stop()
	for {
		select {
		case <-changed:
		case <-poll.C:
		case <-ctx.Done():
			return s.table.Map(ctx, ctx.Err())
		case <-s.ctx.Done():
			return s.table.Map(ctx, ErrClosing)
		}
		changed = sub.changed()
		events, err := s.store.Events(ctx, o.ID, seq, MaxEventsLimit)
		if err != nil {
			return s.table.Map(ctx, err)
		}
		if len(events) == 0 {
			continue
		}
		if o, err = s.store.Order(ctx, o.ID); err != nil {
			return s.table.Map(ctx, err)
		}
		for _, e := range events {
			if err := stream.Send(&orderv1.WatchOrderResponse{Order: o.at(e)}); err != nil {
				return err
			}
			seq = e.Seq
			if terminal(e.Status) {
				return nil
			}
		}
		if len(events) == MaxEventsLimit {
			changed = closedChan // more to read at once
		}
	}
}

// closedChan is always ready.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// ShipmentStatusChanged moves an order along with its shipment: picked up,
// in transit or out for delivery make a CONFIRMED order SHIPPED; delivered
// makes a CONFIRMED or SHIPPED order DELIVERED. It is meant for the
// consumer of shipping's events, which delivers them at least once and
// possibly out of order: a repeated or late change is a no-op, and
// CREATED and CANCELLED change nothing. A change the order's status does
// not allow (a parcel moving for an order not confirmed or cancelled) is
// ErrInvalidTransition; an unknown order is a *NotFoundError. Safe for
// concurrent use.
func (s *Service) ShipmentStatusChanged(ctx context.Context, orderID string, st shippingv1.ShipmentStatus) error {
	to, from, ok := shipmentTransition(st)
	if !ok {
		if st == shippingv1.ShipmentStatus_SHIPMENT_STATUS_CREATED || st == shippingv1.ShipmentStatus_SHIPMENT_STATUS_CANCELLED {
			return nil
		}
		return ErrInvalidTransition
	}
	err := s.store.Update(ctx, orderID, Cond{Statuses: from}, Change{Status: to}, time.Now())
	if err == nil {
		s.bc.notify(orderID)
		return nil
	}
	if !errors.Is(err, ErrStale) {
		return err
	}
	o, err := s.store.Order(ctx, orderID)
	if err != nil {
		return err
	}
	switch o.Status {
	case to, orderv1.OrderStatus_ORDER_STATUS_DELIVERED:
		return nil // already there or past it
	}
	return ErrInvalidTransition
}
