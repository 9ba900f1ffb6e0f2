package notify

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

// Limits of the event fields notify stores. An event over them is refused
// with events.ErrPermanent, except the display name, which is shortened.
const (
	MaxIDLen          = 128
	MaxEmailLen       = 254
	MaxDisplayNameLen = 100
	// MaxTextLen bounds the reason and description put in a message.
	MaxTextLen = 500
)

// The types of the events notify consumes.
var (
	TypeUserRegistered        = typeName(&eventsv1.UserRegistered{})
	TypeOrderPlaced           = typeName(&eventsv1.OrderPlaced{})
	TypeOrderConfirmed        = typeName(&eventsv1.OrderConfirmed{})
	TypeOrderCancelled        = typeName(&eventsv1.OrderCancelled{})
	TypeShipmentStatusChanged = typeName(&eventsv1.ShipmentStatusChanged{})
)

func typeName(m proto.Message) string { return string(m.ProtoReflect().Descriptor().FullName()) }

// EventTypes returns the full names of the event types the service
// consumes: UserRegistered (welcome mail, and the user's address),
// OrderPlaced (who placed the order), OrderConfirmed and OrderCancelled
// (a mail each) and ShipmentStatusChanged (a mail on DELIVERED).
func (s *Service) EventTypes() []string {
	return []string{TypeUserRegistered, TypeOrderPlaced, TypeOrderConfirmed, TypeOrderCancelled, TypeShipmentStatusChanged}
}

// HandleEvent handles one event within tx, the consumer's transaction,
// after the consumer recorded the event id in its inbox in that
// transaction. It touches the database only through tx and has no other
// effect, so it may be re-run after a rollback: it records what it learns
// of users and orders and, for the events that cause a mail, the rendered
// notification, PENDING; the sender loop sends it once tx has committed
// (call Wake then). A notification is stored at most once per event id.
//
// A payload that cannot be decoded, or lacks an id the event needs, fails
// with an error wrapping events.ErrPermanent. An event about a user or
// order that notify has not heard of yet fails with an error matching
// ErrUnknownRecipient, which is transient: see the package documentation.
// Event types it does not consume, and shipment changes other than to
// DELIVERED, are ignored.
func (s *Service) HandleEvent(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
	if env == nil {
		return fmt.Errorf("notify: %w: nil envelope", events.ErrPermanent)
	}
	var err error
	switch env.GetType() {
	case TypeUserRegistered:
		var m eventsv1.UserRegistered
		if err = decode(env, &m); err == nil {
			err = s.onUserRegistered(ctx, tx, env, &m)
		}
	case TypeOrderPlaced:
		var m eventsv1.OrderPlaced
		if err = decode(env, &m); err == nil {
			err = s.recordOrder(ctx, tx, m.GetOrderId(), m.GetUserId())
		}
	case TypeOrderConfirmed:
		var m eventsv1.OrderConfirmed
		if err = decode(env, &m); err == nil {
			err = s.onOrderConfirmed(ctx, tx, env, &m)
		}
	case TypeOrderCancelled:
		var m eventsv1.OrderCancelled
		if err = decode(env, &m); err == nil {
			err = s.onOrderCancelled(ctx, tx, env, &m)
		}
	case TypeShipmentStatusChanged:
		var m eventsv1.ShipmentStatusChanged
		if err = decode(env, &m); err == nil {
			err = s.onShipmentStatusChanged(ctx, tx, env, &m)
		}
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("notify: event %s (%s): %w", env.GetId(), env.GetType(), err)
	}
	return nil
}

// decode unmarshals env's payload into m, and checks the envelope id.
func decode(env *eventsv1.Envelope, m proto.Message) error {
	if !validID(env.GetId()) {
		return fmt.Errorf("%w: envelope id %q is not 1 to %d characters", events.ErrPermanent, env.GetId(), MaxIDLen)
	}
	if env.GetPayload() == nil {
		return fmt.Errorf("%w: no payload", events.ErrPermanent)
	}
	if err := env.GetPayload().UnmarshalTo(m); err != nil {
		return fmt.Errorf("%w: decode payload: %w", events.ErrPermanent, err)
	}
	return nil
}

// need checks the ids an event must carry.
func need(fields ...string) error {
	for i := 0; i+1 < len(fields); i += 2 {
		if !validID(fields[i+1]) {
			return fmt.Errorf("%w: %s %q is not 1 to %d characters of UTF-8", events.ErrPermanent, fields[i], fields[i+1], MaxIDLen)
		}
	}
	return nil
}

func validID(s string) bool { return s != "" && len(s) <= MaxIDLen && utf8.ValidString(s) }

func (s *Service) onUserRegistered(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope, m *eventsv1.UserRegistered) error {
	if err := need("user_id", m.GetUserId()); err != nil {
		return err
	}
	email := strings.TrimSpace(m.GetEmail())
	if email == "" || len(email) > MaxEmailLen || !utf8.ValidString(email) {
		return fmt.Errorf("%w: e-mail address of user %q is empty, longer than %d bytes or not UTF-8", events.ErrPermanent, m.GetUserId(), MaxEmailLen)
	}
	u := User{ID: m.GetUserId(), Email: email, DisplayName: oneLine(m.GetDisplayName(), MaxDisplayNameLen)}
	if err := s.store.PutUser(ctx, tx, u, time.Now()); err != nil {
		return err
	}
	return s.notify(ctx, tx, env, u, TemplateWelcome, TemplateData{})
}

// recordOrder records who placed an order.
func (s *Service) recordOrder(ctx context.Context, tx *sql.Tx, orderID, userID string) error {
	if err := need("order_id", orderID, "user_id", userID); err != nil {
		return err
	}
	return s.store.PutOrder(ctx, tx, orderID, userID)
}

func (s *Service) onOrderConfirmed(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope, m *eventsv1.OrderConfirmed) error {
	if err := s.recordOrder(ctx, tx, m.GetOrderId(), m.GetUserId()); err != nil {
		return err
	}
	u, err := s.store.User(ctx, tx, m.GetUserId())
	if err != nil {
		return err
	}
	return s.notify(ctx, tx, env, u, TemplateOrderConfirmed, TemplateData{
		OrderID: m.GetOrderId(), Total: formatMoney(m.GetTotal()), ShipmentID: oneLine(m.GetShipmentId(), MaxIDLen),
	})
}

func (s *Service) onOrderCancelled(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope, m *eventsv1.OrderCancelled) error {
	if err := s.recordOrder(ctx, tx, m.GetOrderId(), m.GetUserId()); err != nil {
		return err
	}
	u, err := s.store.User(ctx, tx, m.GetUserId())
	if err != nil {
		return err
	}
	return s.notify(ctx, tx, env, u, TemplateOrderCancelled, TemplateData{
		OrderID: m.GetOrderId(), Reason: oneLine(m.GetReason(), MaxTextLen),
	})
}

func (s *Service) onShipmentStatusChanged(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope, m *eventsv1.ShipmentStatusChanged) error {
	if m.GetStatus() != shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED {
		return nil
	}
	if err := need("order_id", m.GetOrderId(), "shipment_id", m.GetShipmentId()); err != nil {
		return err
	}
	userID, err := s.store.OrderUser(ctx, tx, m.GetOrderId())
	if err != nil {
		return err
	}
	u, err := s.store.User(ctx, tx, userID)
	if err != nil {
		return err
	}
	return s.notify(ctx, tx, env, u, TemplateShipmentDelivered, TemplateData{
		OrderID: m.GetOrderId(), ShipmentID: m.GetShipmentId(), Description: oneLine(m.GetDescription(), MaxTextLen),
	})
}

// notify renders template name for u and stores the notification,
// PENDING and due now.
func (s *Service) notify(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope, u User, name string, d TemplateData) error {
	d.Shop, d.Email, d.Name = s.cfg.ShopName, u.Email, u.DisplayName
	if d.Name == "" {
		d.Name = u.Email
	}
	subject, body, err := s.templates.Render(name, d)
	if err != nil {
		return err
	}
	now := time.Now()
	n := &Notification{
		ID: uuid.NewString(), UserID: u.ID, EventID: env.GetId(), EventType: env.GetType(), Channel: ChannelEmail,
		Recipient: u.Email, RecipientName: u.DisplayName, Subject: subject, Template: name, Body: body,
		Status: StatusPending, NextAttempt: now, Created: now,
	}
	_, err = s.store.Add(ctx, tx, n)
	return err
}

// oneLine returns s on one line (runs of white space, line breaks
// included, become one space), cut to at most n characters; invalid UTF-8
// is replaced.
func oneLine(s string, n int) string {
	return truncate(strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " "), n)
}

// formatMoney formats an amount with its currency's minor unit, such as
// "12.50 EUR" or "1200 JPY"; "" when m is nil.
func formatMoney(m *typev1.Money) string {
	if m == nil {
		return ""
	}
	code := oneLine(m.GetCurrencyCode(), 3)
	exp := minorUnits(code)
	amount := m.GetAmountMinor()
	sign := ""
	if amount < 0 {
		sign, amount = "-", -amount
	}
	digits := strconv.FormatUint(uint64(amount), 10) //nolint:gosec // non-negative (MinInt64 wraps to its own magnitude)
	if exp == 0 {
		return sign + digits + " " + code
	}
	if len(digits) <= exp {
		digits = strings.Repeat("0", exp-len(digits)+1) + digits
	}
	return sign + digits[:len(digits)-exp] + "." + digits[len(digits)-exp:] + " " + code
}

// minorUnits is the number of decimals of an ISO 4217 currency: 2 for
// most, 0 and 3 for those listed.
func minorUnits(code string) int {
	switch code {
	case "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF":
		return 0
	case "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND":
		return 3
	}
	return 2
}
