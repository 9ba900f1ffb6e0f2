package order

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Bounds of the saga's remote work.
const (
	// pricingConcurrency bounds the GetItem calls in flight for one order.
	pricingConcurrency = 8
	// maxReasonItems bounds the items a cancel reason names.
	maxReasonItems = 10
	// maxRemoteReasonLen bounds reasons sent to other services.
	maxRemoteReasonLen = 500
)

// Idempotency key suffixes of the payment calls: the key of a call is the
// order id followed by its suffix, so a repeated step is the same call.
const (
	keyAuthorize = ":authorize"
	keyCapture   = ":capture"
	keyVoid      = ":void"
	keyRefund    = ":refund"
)

// Outcomes of a step, besides success and transient failures that are
// retried.
var (
	// errLeaseLost: another replica owns the saga now.
	errLeaseLost = errors.New("saga lease lost")
	// errCrashed: Config.CrashPoint asked to stop here.
	errCrashed = errors.New("saga crashed at a crash point")
)

// businessError is a step's refusal for a business reason (not enough
// stock or funds, an unknown item): the step did not happen, and the order
// is cancelled with reason.
type businessError struct {
	reason string
}

func (e *businessError) Error() string { return e.reason }

func business(format string, args ...any) error {
	return &businessError{reason: fmt.Sprintf(format, args...)}
}

// remoteError is a failed remote call: which service failed, and how.
type remoteError struct {
	service string
	err     error
}

func (e *remoteError) Error() string { return e.service + ": " + e.err.Error() }
func (e *remoteError) Unwrap() error { return e.err }

func remote(service string, err error) error {
	if err == nil {
		return nil
	}
	return &remoteError{service: service, err: err}
}

// transient reports whether err is worth retrying: the call may succeed
// if made again.
func transient(err error) bool {
	switch grpcstatus.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// failureReason is the cancel reason of a forward step that failed for a
// reason other than business.
func failureReason(err error) string {
	var re *remoteError
	if !errors.As(err, &re) {
		return "order processing failed"
	}
	if transient(err) {
		return re.service + " unavailable"
	}
	return re.service + " error"
}

// drive runs the saga of orderID while this replica holds its lease: it
// reads the saga's state, runs the next step or compensation, persists the
// outcome, and goes on until the saga is done, the lease is lost, the
// saga must wait, or the service closes. A saga interrupted by Close has
// its lease released; one "crashed" by Config.CrashPoint keeps it.
//
// Between moves it keeps the state it wrote: a move persists its outcome
// with an update fenced by the lease, phase and step, so a successful
// update leaves the row as the saga's copy says. It reads the row again
// when a move did not go through (the state moved on, or the move failed).
// A finished saga's last update frees its lease.
func (s *Service) drive(orderID string) {
	var o *Order // the saga's state after the last move; nil: read it
	for {
		var err error
		o, err = s.advance(orderID, o)
		switch {
		case s.ctx.Err() != nil:
			if !errors.Is(err, errCrashed) {
				s.releaseLease(orderID, time.Time{})
			}
			return
		case err == nil:
			continue
		case errors.Is(err, errMovedOn):
			o = nil // read the state again and go on from there
			continue
		case errors.Is(err, errCrashed), errors.Is(err, errLeaseLost), errors.Is(err, errSagaDone):
			return
		case errors.Is(err, errRetryLater):
			s.releaseLease(orderID, time.Now().Add(s.cfg.RetryLater))
			return
		default:
			s.logger.LogAttrs(s.ctx, slog.LevelWarn, "order: saga paused; recovery will resume it",
				slog.String("order_id", orderID), slog.String("error", err.Error()))
			s.releaseLease(orderID, time.Now().Add(s.cfg.RetryLater))
			return
		}
	}
}

var (
	// errSagaDone: the saga has finished.
	errSagaDone = errors.New("saga done")
	// errRetryLater: a compensation keeps failing; recovery retries it.
	errRetryLater = errors.New("compensation failed; retry later")
	// errMovedOn: the saga's state changed under this replica (a cancel),
	// so the step's outcome was not persisted; the saga goes on from the
	// new state.
	errMovedOn = errors.New("saga state moved on")
)

// advance makes one move of the saga whose state is o (nil: read it from
// the store): one step forward, or one compensation. It returns the state
// the move left, which is o updated in place.
func (s *Service) advance(orderID string, o *Order) (*Order, error) {
	if o == nil {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StepTimeout)
		var err error
		o, err = s.store.Order(ctx, orderID)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	if o.Phase == PhaseDone {
		return o, errSagaDone
	}
	if o.LeaseOwner != s.cfg.Owner {
		return o, errLeaseLost
	}
	if s.crash(Point{OrderID: o.ID, Phase: o.Phase, Step: o.Step}) {
		return o, errCrashed
	}
	if o.Phase == PhaseForward {
		return o, s.forward(o)
	}
	return o, s.compensate(o)
}

func (s *Service) crash(p Point) bool {
	return s.cfg.CrashPoint != nil && s.cfg.CrashPoint(p)
}

// update persists a change of the saga of o, fenced by this replica's
// lease and o's phase and step, renews the lease (or frees it when the
// saga is done), applies the change to o, and wakes o's readers.
func (s *Service) update(o *Order, c Change) error {
	now := time.Now()
	if c.Phase == PhaseDone {
		c.ReleaseLease = true
	} else {
		c.LeaseUntil = now.Add(s.cfg.LeaseTTL)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StepTimeout)
	defer cancel()
	err := s.store.Update(ctx, o.ID, Cond{Owner: s.cfg.Owner, Phase: o.Phase, Step: o.Step}, c, now)
	if errors.Is(err, ErrStale) {
		return errMovedOn
	}
	if err != nil {
		return err
	}
	o.apply(c, now)
	if c.Status != 0 {
		s.bc.notify(o.ID)
	}
	return nil
}

// attempt runs fn, one StepTimeout each time, until it succeeds, fails for
// good, or has failed transiently MaxAttempts times. Before each retry it
// renews the lease, fenced by o's phase and step, so a saga cancelled or
// taken over meanwhile stops (the first try follows the claim or the
// previous step's write, which renewed it).
func (s *Service) attempt(o *Order, fn func(ctx context.Context) error) error {
	for i := 1; ; i++ {
		if i > 1 {
			if err := s.update(o, Change{}); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StepTimeout)
		err := fn(ctx)
		cancel()
		if err == nil || !transient(err) || i >= s.cfg.MaxAttempts || s.ctx.Err() != nil {
			if s.ctx.Err() != nil {
				return s.ctx.Err()
			}
			return err
		}
		t := time.NewTimer(s.backoff(i, err))
		select {
		case <-s.ctx.Done():
			t.Stop()
			return s.ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is the wait after the n-th failed attempt: exponential with full
// jitter, at least what the server asked for in RetryInfo, at most
// BackoffMax.
func (s *Service) backoff(n int, err error) time.Duration {
	d := s.cfg.BackoffBase << min(n-1, 16)
	if d <= 0 || d > s.cfg.BackoffMax {
		d = s.cfg.BackoffMax
	}
	d = d/2 + rand.N(d/2+1) //nolint:gosec // jitter
	if ra, ok := status.RetryDelay(err); ok && ra > d {
		d = ra
	}
	return min(d, s.cfg.BackoffMax)
}

// forward runs o's next step and persists its outcome: the next step, or
// the switch to compensation.
func (s *Service) forward(o *Order) error {
	var c Change
	err := s.attempt(o, func(ctx context.Context) error {
		var err error
		c, err = s.runStep(ctx, o)
		return err
	})
	switch {
	case s.ctx.Err() != nil:
		return s.ctx.Err()
	case errors.Is(err, errMovedOn):
		s.keepIDs(o, c)
		return err
	case err == nil:
		return s.succeed(o, c)
	}
	// The step failed: compensate. A business refusal means the step did
	// not happen; a failed remote call means it may have.
	var be *businessError
	var re *remoteError
	var from Step
	var reason string
	switch {
	case errors.As(err, &be):
		from, reason = o.Step-1, be.reason
	case errors.As(err, &re):
		if o.Step == StepCommit {
			// Sold stock cannot be put back, so a commit that may have
			// happened is settled before anything is undone.
			sold, err := s.settleCommit(o, err)
			if err != nil {
				return err
			}
			if sold {
				return s.succeed(o, confirmed())
			}
		}
		from, reason = o.Step, failureReason(err)
		s.logger.LogAttrs(s.ctx, slog.LevelWarn, "order: saga step failed; compensating",
			slog.String("order_id", o.ID), slog.String("step", o.Step.String()), slog.String("error", err.Error()))
	default:
		return err // a database error: pause, recovery repeats the step
	}
	fail := Change{
		Phase: PhaseCompensate, Step: from, SetStep: true,
		Status: orderv1.OrderStatus_ORDER_STATUS_CANCELLING, CancelReason: reason,
		AccountID: c.AccountID, AuthorizationID: c.AuthorizationID, ShipmentID: c.ShipmentID,
	}
	if err := s.update(o, fail); err != nil {
		if errors.Is(err, errMovedOn) {
			s.keepIDs(o, c)
		}
		return err
	}
	return nil
}

// succeed persists c, the outcome of o's step that went through.
func (s *Service) succeed(o *Order, c Change) error {
	if s.crash(Point{OrderID: o.ID, Phase: o.Phase, Step: o.Step, Done: true}) {
		return errCrashed
	}
	if err := s.update(o, c); err != nil {
		if errors.Is(err, errMovedOn) {
			s.keepIDs(o, c)
		}
		return err
	}
	if o.Step == StepCommit {
		s.logger.LogAttrs(s.ctx, slog.LevelInfo, "order confirmed", slog.String("order_id", o.ID))
	}
	return nil
}

// settleCommit finds out whether o's commit, which failed with cause (a
// remote error: the stock may have been sold though the answer was lost),
// sold the stock. It asks inventory to release the reservation, which
// inventory refuses (FAILED_PRECONDITION) once it is committed. Refused:
// sold is true, and the order is confirmed rather than cancelled with its
// stock sold. Released (now or before, expired, or never reserved): the
// stock is back and the saga compensates the earlier steps. Neither
// (Release fails too): it returns errRetryLater, the saga stays at
// StepCommit, and recovery repeats the commit, which is idempotent, after
// Config.RetryLater.
func (s *Service) settleCommit(o *Order, cause error) (sold bool, err error) {
	err = s.attempt(o, func(ctx context.Context) error {
		_, err := s.cfg.Inventory.Release(ctx, &inventoryv1.ReleaseRequest{
			OrderId: o.ID, Reason: cancelNote(o.ID, failureReason(cause)),
		})
		return err
	})
	if s.ctx.Err() != nil || errors.Is(err, errMovedOn) {
		return false, err
	}
	switch grpcstatus.Code(err) {
	case codes.OK, codes.NotFound:
		return false, nil
	case codes.FailedPrecondition:
		s.logger.LogAttrs(s.ctx, slog.LevelInfo, "order: stock commit went through though its answer was lost",
			slog.String("order_id", o.ID), slog.String("error", cause.Error()))
		return true, nil
	}
	s.logger.LogAttrs(s.ctx, slog.LevelWarn, "order: stock commit failed and its outcome is unknown; retrying later",
		slog.String("order_id", o.ID), slog.String("commit_error", cause.Error()), slog.String("release_error", err.Error()))
	return false, errRetryLater
}

// confirmed is the change that records a commit that went through: the
// order is CONFIRMED and its shipment is released next.
func confirmed() Change {
	return Change{Step: StepRelease, SetStep: true, Status: orderv1.OrderStatus_ORDER_STATUS_CONFIRMED}
}

// keepIDs records the ids a step obtained whose outcome could not be
// persisted because the saga moved on (a cancel), so compensation finds
// them. It is fenced by the lease only.
func (s *Service) keepIDs(o *Order, c Change) {
	if c.AccountID == "" && c.AuthorizationID == "" && c.ShipmentID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), s.cfg.StepTimeout)
	defer cancel()
	ids := Change{AccountID: c.AccountID, AuthorizationID: c.AuthorizationID, ShipmentID: c.ShipmentID}
	if err := s.store.Update(ctx, o.ID, Cond{Owner: s.cfg.Owner}, ids, time.Now()); err != nil && !errors.Is(err, ErrStale) {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "order: keep saga ids",
			slog.String("order_id", o.ID), slog.String("error", err.Error()))
	}
}

// runStep makes the remote calls of o's step and returns the change that
// records its success.
func (s *Service) runStep(ctx context.Context, o *Order) (Change, error) {
	switch o.Step {
	case StepPrice:
		p, err := s.price(ctx, o)
		if err != nil {
			return Change{}, err
		}
		return Change{Step: StepReserve, SetStep: true, Prices: p}, nil
	case StepReserve:
		return Change{Step: StepAuthorize, SetStep: true, Status: orderv1.OrderStatus_ORDER_STATUS_STOCK_RESERVED},
			s.reserve(ctx, o)
	case StepAuthorize:
		account, auth, err := s.authorize(ctx, o)
		return Change{
			Step: StepShip, SetStep: true, Status: orderv1.OrderStatus_ORDER_STATUS_PAYMENT_AUTHORIZED,
			AccountID: account, AuthorizationID: auth,
		}, err
	case StepShip:
		id, err := s.createShipment(ctx, o)
		return Change{
			Step: StepCapture, SetStep: true, Status: orderv1.OrderStatus_ORDER_STATUS_SHIPMENT_CREATED, ShipmentID: id,
		}, err
	case StepCapture:
		_, err := s.cfg.Payment.Capture(ctx, &paymentv1.CaptureRequest{
			IdempotencyKey: o.ID + keyCapture, AuthorizationId: o.AuthorizationID,
		})
		if grpcstatus.Code(err) == codes.FailedPrecondition {
			return Change{}, business("payment capture refused")
		}
		return Change{Step: StepCommit, SetStep: true}, remote("payment", err)
	case StepCommit:
		// A refusal (the reservation expired or was released) means no
		// stock was sold: compensation refunds the captured payment.
		_, err := s.cfg.Inventory.CommitReservation(ctx, &inventoryv1.CommitReservationRequest{OrderId: o.ID})
		if grpcstatus.Code(err) == codes.FailedPrecondition {
			return Change{}, business("stock reservation expired")
		}
		return confirmed(), remote("inventory", err)
	case StepRelease:
		if s.cfg.OnConfirmed != nil {
			s.cfg.OnConfirmed(ctx, o.ID, o.ShipmentID)
		}
		return Change{Phase: PhaseDone, Step: StepDone, SetStep: true}, nil
	}
	return Change{}, fmt.Errorf("order %s: unknown saga step %d", o.ID, o.Step)
}

// price prices o's lines with inventory.GetItem, pricingConcurrency calls
// at a time. Every line must exist and share one currency.
func (s *Service) price(ctx context.Context, o *Order) (*Prices, error) {
	items := make([]*inventoryv1.Item, len(o.Lines))
	errs := make([]error, len(o.Lines))
	sem := make(chan struct{}, pricingConcurrency)
	var wg sync.WaitGroup
	for i, l := range o.Lines {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := s.cfg.Inventory.GetItem(ctx, &inventoryv1.GetItemRequest{ItemId: l.ItemID})
			items[i], errs[i] = resp.GetItem(), err
		}()
	}
	wg.Wait()
	var unknown []string
	for i, err := range errs {
		switch grpcstatus.Code(err) {
		case codes.OK:
			if items[i].GetPrice() == nil || items[i].GetPrice().GetAmountMinor() < 0 {
				unknown = append(unknown, o.Lines[i].ItemID)
			}
		case codes.NotFound, codes.InvalidArgument:
			unknown = append(unknown, o.Lines[i].ItemID)
		default:
			return nil, remote("inventory", err)
		}
	}
	if len(unknown) > 0 {
		return nil, business("unknown item: %s", itemList(unknown))
	}
	p := &Prices{Currency: items[0].GetPrice().GetCurrencyCode(), Unit: make([]int64, len(items))}
	var currencies []string
	for i, it := range items {
		price := it.GetPrice()
		if c := price.GetCurrencyCode(); !slices.Contains(currencies, c) {
			currencies = append(currencies, c)
		}
		p.Unit[i] = price.GetAmountMinor()
		q := o.Lines[i].Quantity
		if p.Unit[i] > 0 && q > (math.MaxInt64-p.Total)/p.Unit[i] {
			return nil, business("order total too large")
		}
		p.Total += p.Unit[i] * q
	}
	if len(currencies) > 1 {
		slices.Sort(currencies)
		return nil, business("mixed currencies: %s", strings.Join(currencies, ", "))
	}
	return p, nil
}

// itemList names items as "items/a, items/b", at most maxReasonItems.
func itemList(ids []string) string {
	names := make([]string, 0, min(len(ids), maxReasonItems))
	for _, id := range ids[:min(len(ids), maxReasonItems)] {
		names = append(names, "items/"+id)
	}
	list := strings.Join(names, ", ")
	if len(ids) > maxReasonItems {
		list += fmt.Sprintf(" and %d more", len(ids)-maxReasonItems)
	}
	return list
}

func (s *Service) reserve(ctx context.Context, o *Order) error {
	lines := make([]*inventoryv1.ReservationLine, len(o.Lines))
	for i, l := range o.Lines {
		lines[i] = &inventoryv1.ReservationLine{ItemId: l.ItemID, Quantity: l.Quantity}
	}
	_, err := s.cfg.Inventory.Reserve(ctx, &inventoryv1.ReserveRequest{
		OrderId: o.ID, Lines: lines, TtlSeconds: int32(s.cfg.ReservationTTL / time.Second), //nolint:gosec // at most MaxReservationTTL
	})
	if grpcstatus.Code(err) == codes.FailedPrecondition {
		return business("insufficient stock: %s", shortItems(err, o))
	}
	return remote("inventory", err)
}

// shortItems names the items a stock refusal lists, from the subjects of
// its PreconditionFailure ("items/<id>"), or every item of o when it lists
// none that o has.
func shortItems(err error, o *Order) string {
	var ids []string
	for _, v := range status.PreconditionFailure(err).GetViolations() {
		subject := v.GetSubject()
		id := subject[strings.LastIndexByte(subject, '/')+1:]
		if slices.ContainsFunc(o.Lines, func(l Line) bool { return l.ItemID == id }) && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		for _, l := range o.Lines {
			ids = append(ids, l.ItemID)
		}
	}
	return itemList(ids)
}

// authorize finds the user's account in the order's currency and holds the
// total on it. It returns the account and authorization ids.
func (s *Service) authorize(ctx context.Context, o *Order) (account, auth string, err error) {
	account = o.AccountID
	if account == "" {
		resp, err := s.cfg.Payment.GetAccount(ctx, &paymentv1.GetAccountRequest{OwnerId: o.UserID, CurrencyCode: o.Currency})
		if grpcstatus.Code(err) == codes.NotFound {
			return "", "", business("no payment account in %s", o.Currency)
		}
		if err != nil {
			return "", "", remote("payment", err)
		}
		account = resp.GetAccount().GetAccountId()
		// Persist the account before authorizing, so that compensation can
		// repeat the Authorize to learn its id if its answer is lost.
		if err := s.store.Update(ctx, o.ID, Cond{Owner: s.cfg.Owner, Phase: o.Phase, Step: o.Step},
			Change{AccountID: account}, time.Now()); err != nil {
			if errors.Is(err, ErrStale) {
				return "", "", errMovedOn
			}
			return "", "", err
		}
		o.AccountID = account
	}
	resp, err := s.cfg.Payment.Authorize(ctx, &paymentv1.AuthorizeRequest{
		IdempotencyKey: o.ID + keyAuthorize,
		AccountId:      account,
		Amount:         &typev1.Money{AmountMinor: o.Total, CurrencyCode: o.Currency},
		OrderId:        o.ID,
	})
	switch grpcstatus.Code(err) {
	case codes.OK:
		return account, resp.GetAuthorization().GetAuthorizationId(), nil
	case codes.FailedPrecondition:
		return account, "", business("insufficient funds")
	case codes.NotFound:
		return account, "", business("no payment account in %s", o.Currency)
	}
	return account, "", remote("payment", err)
}

func (s *Service) createShipment(ctx context.Context, o *Order) (string, error) {
	items := make([]*shippingv1.ShipmentItem, len(o.Lines))
	for i, l := range o.Lines {
		items[i] = &shippingv1.ShipmentItem{ItemId: l.ItemID, Quantity: l.Quantity}
	}
	a := o.Address
	resp, err := s.cfg.Shipping.CreateShipment(ctx, &shippingv1.CreateShipmentRequest{
		OrderId: o.ID,
		Address: &typev1.PostalAddress{
			Recipient: a.Recipient, Line1: a.Line1, Line2: a.Line2,
			City: a.City, PostalCode: a.PostalCode, CountryCode: a.CountryCode,
		},
		Items: items,
	})
	switch grpcstatus.Code(err) {
	case codes.OK:
		return resp.GetShipment().GetShipmentId(), nil
	case codes.FailedPrecondition, codes.InvalidArgument:
		return "", business("shipment refused")
	}
	return "", remote("shipping", err)
}

// compensable reports whether step has a compensation. Capture's is the
// payment's (void, or refund once captured), run at StepAuthorize. Commit
// has none: committed stock stays sold. The saga itself never compensates
// a commit that happened (settleCommit confirms the order instead); only
// cancelling a confirmed order does, and its stock stays sold.
func compensable(step Step) bool {
	return step == StepShip || step == StepAuthorize || step == StepReserve
}

// compensate runs the compensation of the highest step of o that has one
// and persists the next step down, or finishes the saga CANCELLED when
// none is left. A compensation that keeps failing transiently is left for
// recovery to retry after RetryLater: compensations never give up.
func (s *Service) compensate(o *Order) error {
	step := o.Step
	for step > StepNone && !compensable(step) {
		step--
	}
	if step == StepNone {
		return s.update(o, Change{
			Phase: PhaseDone, Step: StepNone, SetStep: true, Status: orderv1.OrderStatus_ORDER_STATUS_CANCELLED,
		})
	}
	var ids Change
	err := s.attempt(o, func(ctx context.Context) error {
		var err error
		ids, err = s.undo(ctx, o, step)
		return err
	})
	if err != nil {
		if s.ctx.Err() != nil || errors.Is(err, errMovedOn) {
			return err
		}
		s.logger.LogAttrs(s.ctx, slog.LevelWarn, "order: compensation failed; retrying later",
			slog.String("order_id", o.ID), slog.String("step", step.String()), slog.String("error", err.Error()))
		s.keepIDs(o, ids)
		return errRetryLater
	}
	if s.crash(Point{OrderID: o.ID, Phase: o.Phase, Step: step, Done: true}) {
		return errCrashed
	}
	ids.Step, ids.SetStep = step-1, true
	return s.update(o, ids)
}

// undo runs the compensation of step. Each is idempotent and treats "there
// is nothing to undo" as done. It returns the ids it had to learn.
func (s *Service) undo(ctx context.Context, o *Order, step Step) (Change, error) {
	switch step {
	case StepShip:
		return s.cancelShipment(ctx, o)
	case StepAuthorize:
		return s.undoPayment(ctx, o)
	case StepReserve:
		_, err := s.cfg.Inventory.Release(ctx, &inventoryv1.ReleaseRequest{OrderId: o.ID, Reason: remoteReason(o)})
		// NOT_FOUND: nothing was reserved. FAILED_PRECONDITION: the
		// reservation was committed (a confirmed order was cancelled), and
		// committed stock stays sold.
		switch grpcstatus.Code(err) {
		case codes.OK, codes.NotFound, codes.FailedPrecondition:
			return Change{}, nil
		}
		return Change{}, remote("inventory", err)
	}
	return Change{}, nil
}

// remoteReason is the reason sent to other services when o's steps are
// undone.
func remoteReason(o *Order) string { return cancelNote(o.ID, o.CancelReason) }

// cancelNote says, in at most maxRemoteReasonLen bytes, that an order was
// cancelled and why.
func cancelNote(orderID, reason string) string {
	r := "order " + orderID + " cancelled: " + reason
	if len(r) > maxRemoteReasonLen {
		r = strings.ToValidUTF8(r[:maxRemoteReasonLen], "")
	}
	return r
}

// cancelShipment cancels o's shipment. When its id is unknown (creating
// it failed in a way that may have created it), CreateShipment is repeated,
// which is idempotent by order id, to learn it.
func (s *Service) cancelShipment(ctx context.Context, o *Order) (Change, error) {
	var learnt Change
	id := o.ShipmentID
	if id == "" {
		got, err := s.createShipment(ctx, o)
		var be *businessError
		if errors.As(err, &be) {
			return Change{}, nil // refused again: there is none
		}
		if err != nil {
			return Change{}, err
		}
		id, learnt.ShipmentID = got, got
	}
	_, err := s.cfg.Shipping.CancelShipment(ctx, &shippingv1.CancelShipmentRequest{ShipmentId: id, Reason: remoteReason(o)})
	switch grpcstatus.Code(err) {
	case codes.OK, codes.NotFound:
		return learnt, nil
	case codes.FailedPrecondition:
		s.logger.LogAttrs(ctx, slog.LevelError, "order: shipment of a cancelled order could not be cancelled",
			slog.String("order_id", o.ID), slog.String("shipment_id", id))
		return learnt, nil
	}
	return learnt, remote("shipping", err)
}

// undoPayment releases o's hold, or refunds it if it was captured. When
// the authorization id is unknown (authorizing failed in a way that may
// have authorized), Authorize is repeated with its idempotency key to learn
// it.
func (s *Service) undoPayment(ctx context.Context, o *Order) (Change, error) {
	var learnt Change
	id := o.AuthorizationID
	if id == "" {
		if o.AccountID == "" {
			return Change{}, nil // no account found: nothing was authorized
		}
		_, got, err := s.authorize(ctx, o)
		var be *businessError
		if errors.As(err, &be) {
			return Change{}, nil
		}
		if err != nil {
			return Change{}, err
		}
		id, learnt.AuthorizationID = got, got
	}
	_, err := s.cfg.Payment.Void(ctx, &paymentv1.VoidRequest{
		IdempotencyKey: o.ID + keyVoid, AuthorizationId: id, Reason: remoteReason(o),
	})
	switch grpcstatus.Code(err) {
	case codes.OK, codes.NotFound:
		return learnt, nil
	case codes.FailedPrecondition: // captured: give the money back
	default:
		return learnt, remote("payment", err)
	}
	_, err = s.cfg.Payment.Refund(ctx, &paymentv1.RefundRequest{
		IdempotencyKey: o.ID + keyRefund, AuthorizationId: id, Reason: remoteReason(o),
	})
	switch grpcstatus.Code(err) {
	case codes.OK, codes.NotFound:
		return learnt, nil
	case codes.FailedPrecondition:
		s.logger.LogAttrs(ctx, slog.LevelError, "order: payment of a cancelled order could be neither voided nor refunded",
			slog.String("order_id", o.ID), slog.String("authorization_id", id))
		return learnt, nil
	}
	return learnt, remote("payment", err)
}
