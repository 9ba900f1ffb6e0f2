// Package demo drives one customer's story through the running shop's
// REST gateway, step by step, and checks each answer: register, sign in,
// browse the catalog, order, watch the order to delivery, track the
// parcel, read the e-mails sent, and verify the audit log (over gRPC as
// the operator: audit is not a customer's to read).
package demo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/audit/v1"
	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	notifyv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/notify/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
)

// Config is one run of the story.
type Config struct {
	// GatewayURL is the gateway, for example http://127.0.0.1:8080.
	GatewayURL string
	// Audit is the operator's connection to the audit service.
	Audit grpc.ClientConnInterface
	// Out receives the story, one line per step.
	Out io.Writer
	// Timeout bounds the whole story; the parcel's delivery takes most of
	// it. Default 2 minutes.
	Timeout time.Duration
}

// maxBody bounds every answer read.
const maxBody = 4 << 20

// story is a run in progress.
type story struct {
	cfg    Config
	base   *url.URL
	client *http.Client
	token  string
	step   int
}

// Run tells the story and returns the first step that failed, if any.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	base, err := url.Parse(cfg.GatewayURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("demo: gateway URL %q: want http(s)://host:port", cfg.GatewayURL)
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	s := &story{cfg: cfg, base: base, client: &http.Client{}}
	defer s.client.CloseIdleConnections()
	return s.run(ctx)
}

func (s *story) run(ctx context.Context) error {
	var b [4]byte
	_, _ = rand.Read(b[:])
	email := "ada-" + hex.EncodeToString(b[:]) + "@example.com"
	const password = "correct horse battery staple"

	var user *identityv1.User
	if err := s.do(ctx, "register "+email, func() (string, error) {
		var resp identityv1.RegisterResponse
		err := s.call(ctx, http.MethodPost, "/v1/users", &identityv1.RegisterRequest{
			Email: email, Password: password, DisplayName: "Ada", IdempotencyKey: "demo-" + email,
		}, &resp)
		user = resp.GetUser()
		return "user " + user.GetUserId(), err
	}); err != nil {
		return err
	}
	if err := s.do(ctx, "sign in", func() (string, error) {
		var resp identityv1.LoginResponse
		err := s.call(ctx, http.MethodPost, "/v1/sessions", &identityv1.LoginRequest{Email: email, Password: password}, &resp)
		s.token = resp.GetAccessToken()
		if err == nil && s.token == "" {
			err = errors.New("no access token in the answer")
		}
		return fmt.Sprintf("%s token, valid %ds", resp.GetTokenType(), resp.GetExpiresIn()), err
	}); err != nil {
		return err
	}

	var item *inventoryv1.Item
	if err := s.do(ctx, "browse the catalog", func() (string, error) {
		var items []*inventoryv1.Item
		err := s.stream(ctx, "/v1/items", func() proto.Message { return &inventoryv1.ListItemsResponse{} }, func(m proto.Message) bool {
			items = append(items, m.(*inventoryv1.ListItemsResponse).GetItems()...)
			return true
		})
		if err != nil {
			return "", err
		}
		for _, it := range items {
			if it.GetAvailable() > 0 && (item == nil || it.GetPrice().GetAmountMinor() < item.GetPrice().GetAmountMinor()) {
				item = it
			}
		}
		if item == nil {
			return "", fmt.Errorf("none of %d items is in stock", len(items))
		}
		return fmt.Sprintf("%d items; the cheapest in stock is %q at %s", len(items), item.GetName(), money(item.GetPrice())), nil
	}); err != nil {
		return err
	}
	if err := s.do(ctx, "look at "+item.GetItemId(), func() (string, error) {
		var resp inventoryv1.GetItemResponse
		err := s.call(ctx, http.MethodGet, "/v1/items/"+url.PathEscape(item.GetItemId()), nil, &resp)
		return fmt.Sprintf("%d available", resp.GetItem().GetAvailable()), err
	}); err != nil {
		return err
	}

	var order *orderv1.Order
	if err := s.do(ctx, "order one "+item.GetItemId(), func() (string, error) {
		var resp orderv1.PlaceOrderResponse
		err := s.call(ctx, http.MethodPost, "/v1/orders", &orderv1.PlaceOrderRequest{
			IdempotencyKey:  "demo-order-" + email,
			Lines:           []*orderv1.OrderLine{{ItemId: item.GetItemId(), Quantity: 1}},
			ShippingAddress: &typev1.PostalAddress{Recipient: "Ada", Line1: "12 St James's Square", City: "London", PostalCode: "SW1Y 4JH", CountryCode: "GB"},
		}, &resp)
		order = resp.GetOrder()
		if err == nil && order.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
			err = fmt.Errorf("order %s is %v (%s), want CONFIRMED", order.GetOrderId(), order.GetStatus(), order.GetCancelReason())
		}
		return fmt.Sprintf("order %s %v, total %s", order.GetOrderId(), short(order.GetStatus().String()), money(order.GetTotal())), err
	}); err != nil {
		return err
	}
	if err := s.do(ctx, "watch the order to delivery", func() (string, error) {
		var seen []string
		err := s.stream(ctx, "/v1/orders/"+url.PathEscape(order.GetOrderId())+":watch", func() proto.Message { return &orderv1.WatchOrderResponse{} }, func(m proto.Message) bool {
			o := m.(*orderv1.WatchOrderResponse).GetOrder()
			if st := short(o.GetStatus().String()); len(seen) == 0 || seen[len(seen)-1] != st {
				seen = append(seen, st)
			}
			order = o
			return o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_DELIVERED
		})
		if err == nil && order.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_DELIVERED {
			err = fmt.Errorf("the watch ended at %v", order.GetStatus())
		}
		return strings.Join(seen, " → "), err
	}); err != nil {
		return err
	}
	if err := s.do(ctx, "track the parcel", func() (string, error) {
		var last string
		n := 0
		err := s.stream(ctx, "/v1/shipments/"+url.PathEscape(order.GetShipmentId())+":track", func() proto.Message { return &shippingv1.TrackResponse{} }, func(m proto.Message) bool {
			ev := m.(*shippingv1.TrackResponse).GetEvent()
			n++
			last = ev.GetDescription()
			return ev.GetStatus() != shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED
		})
		return fmt.Sprintf("%d tracking events, last %q", n, last), err
	}); err != nil {
		return err
	}
	if err := s.do(ctx, "read the e-mails sent", func() (string, error) {
		want := []string{"OrderConfirmed", "ShipmentStatusChanged", "UserRegistered"}
		var got []string
		// Notify sends from events, a moment after the facts.
		for {
			var resp notifyv1.ListNotificationsResponse
			if err := s.call(ctx, http.MethodGet, "/v1/notifications", nil, &resp); err != nil {
				return "", err
			}
			got = got[:0]
			var subjects []string
			for _, n := range resp.GetNotifications() {
				got = append(got, strings.TrimPrefix(n.GetEventType(), "switchboard.events.v1."))
				subjects = append(subjects, fmt.Sprintf("%q", n.GetSubject()))
			}
			slices.Sort(got)
			if slices.Equal(got, want) {
				return strings.Join(subjects, ", "), nil
			}
			select {
			case <-ctx.Done():
				return "", fmt.Errorf("e-mails for %v, want %v: %w", got, want, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}); err != nil {
		return err
	}
	if s.cfg.Audit == nil {
		return nil
	}
	return s.do(ctx, "verify the audit log", func() (string, error) {
		auditor := auditv1.NewAuditServiceClient(s.cfg.Audit)
		mine, err := auditor.Query(ctx, &auditv1.QueryRequest{Subject: order.GetOrderId(), PageSize: 100})
		if err != nil {
			return "", err
		}
		resp, err := auditor.Verify(ctx, &auditv1.VerifyRequest{})
		if err != nil {
			return "", err
		}
		if !resp.GetOk() {
			return "", fmt.Errorf("the chain is broken: %v", resp)
		}
		return fmt.Sprintf("%d records chained and intact, %d about the order", resp.GetRecordsChecked(), len(mine.GetRecords())), nil
	})
}

// do runs one step and prints its outcome.
func (s *story) do(ctx context.Context, what string, fn func() (string, error)) error {
	s.step++
	begin := time.Now()
	detail, err := fn()
	took := time.Since(begin).Round(time.Millisecond)
	if err != nil {
		_, _ = fmt.Fprintf(s.cfg.Out, "%2d. ✗ %s (%s): %v\n", s.step, what, took, err)
		return fmt.Errorf("demo: step %d, %s: %w", s.step, what, err)
	}
	_, _ = fmt.Fprintf(s.cfg.Out, "%2d. ✓ %s (%s): %s\n", s.step, what, took, detail)
	return ctx.Err()
}

// Error is a gateway answer with an error status.
type Error struct {
	Status int
	Body   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, http.StatusText(e.Status), e.Body)
}

func (s *story) request(ctx context.Context, method, path string, in proto.Message) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := protojson.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	u := *s.base
	u.Path = path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		_ = resp.Body.Close()
		return nil, &Error{Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	return resp, nil
}

// call makes one unary call through the gateway.
func (s *story) call(ctx context.Context, method, path string, in, out proto.Message) error {
	resp, err := s.request(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return err
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, out)
}

// stream reads a server stream from the gateway, one JSON object a line
// ({"result": ...} or {"error": ...}), until it ends or more returns
// false.
func (s *story) stream(ctx context.Context, path string, newMsg func() proto.Message, more func(proto.Message) bool) error {
	resp, err := s.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxBody)
	for sc.Scan() {
		var line struct {
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("stream line %q: %w", sc.Text(), err)
		}
		if len(line.Error) > 0 {
			return fmt.Errorf("stream ended with %s", line.Error)
		}
		m := newMsg()
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(line.Result, m); err != nil {
			return fmt.Errorf("stream message: %w", err)
		}
		if !more(m) {
			return nil
		}
	}
	return sc.Err()
}

// money formats an amount as "12.00 USD".
func money(m *typev1.Money) string {
	return fmt.Sprintf("%d.%02d %s", m.GetAmountMinor()/100, m.GetAmountMinor()%100, m.GetCurrencyCode())
}

// short drops the enum prefix: ORDER_STATUS_CONFIRMED → CONFIRMED.
func short(enum string) string {
	for _, p := range []string{"ORDER_STATUS_", "SHIPMENT_STATUS_"} {
		enum = strings.TrimPrefix(enum, p)
	}
	return enum
}
