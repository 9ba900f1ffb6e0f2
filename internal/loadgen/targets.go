package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
)

// Fixture defaults.
const (
	// LoadItem is the item PlaceOrder buys; the setup stocks it.
	LoadItem = "sku-load"
	// loadStock is the stock the setup gives LoadItem.
	loadStock = 10_000_000
	// loadCredit is each load user's opening credit, in cents.
	loadCredit   = 1_000_000_000
	loadPassword = "load-generator-password"
	// maxItems bounds the items GetItem spreads over.
	maxItems = 100
)

// Conns are the operator's connections to the services, for the setup and
// for calls via gRPC. The caller closes them.
type Conns struct {
	Identity, Inventory, Payment, Order grpc.ClientConnInterface
}

// withToken returns ctx carrying u's access token.
func withToken(ctx context.Context, u User) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+u.Token)
}

// Setup prepares the shop for a run as the operator: users registered (or
// signed in again when they exist from an earlier run) each with a funded
// account, LoadItem stocked, and the items to read.
func Setup(ctx context.Context, c Conns, users int) (Fixture, error) {
	if users < 1 || users > MaxUsers {
		return Fixture{}, fmt.Errorf("loadgen: %d users: want 1 to %d", users, MaxUsers)
	}
	inv := inventoryv1.NewInventoryServiceClient(c.Inventory)
	rec, err := inv.RecordItems(ctx)
	if err != nil {
		return Fixture{}, fmt.Errorf("loadgen: stock %s: %w", LoadItem, err)
	}
	if err := rec.Send(&inventoryv1.RecordItemsRequest{
		ItemId: LoadItem, Name: "Load test item", Description: "Bought by switchboard load.",
		// A cent, so the signup credit pays for many orders.
		Price:    &typev1.Money{AmountMinor: 1, CurrencyCode: "USD"},
		Quantity: loadStock,
	}); err != nil {
		return Fixture{}, fmt.Errorf("loadgen: stock %s: %w", LoadItem, err)
	}
	if _, err := rec.CloseAndRecv(); err != nil {
		return Fixture{}, fmt.Errorf("loadgen: stock %s: %w", LoadItem, err)
	}
	fx := Fixture{OrderItem: LoadItem}
	list, err := inv.ListItems(ctx, &inventoryv1.ListItemsRequest{PageSize: maxItems})
	if err != nil {
		return Fixture{}, fmt.Errorf("loadgen: list items: %w", err)
	}
	for {
		resp, err := list.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Fixture{}, fmt.Errorf("loadgen: list items: %w", err)
		}
		for _, it := range resp.GetItems() {
			if len(fx.Items) < maxItems {
				fx.Items = append(fx.Items, it.GetItemId())
			}
		}
	}

	fx.Users = make([]User, users)
	errs := make([]error, users)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4) // a password hash takes 64 MiB
	for i := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			fx.Users[i], errs[i] = setupUser(ctx, c, i)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Fixture{}, err
	}
	return fx, nil
}

func setupUser(ctx context.Context, c Conns, i int) (User, error) {
	id := identityv1.NewIdentityServiceClient(c.Identity)
	email := fmt.Sprintf("load-%d@load.switchboard.test", i)
	_, err := id.Register(ctx, &identityv1.RegisterRequest{
		Email: email, Password: loadPassword, DisplayName: fmt.Sprintf("Load user %d", i),
		IdempotencyKey: "load-user-" + email,
	})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return User{}, fmt.Errorf("loadgen: register %s: %w", email, err)
	}
	login, err := id.Login(ctx, &identityv1.LoginRequest{Email: email, Password: loadPassword})
	if err != nil {
		return User{}, fmt.Errorf("loadgen: sign in %s: %w", email, err)
	}
	u := User{ID: login.GetUser().GetUserId(), Token: login.GetAccessToken()}
	pay := paymentv1.NewPaymentServiceClient(c.Payment)
	_, err = pay.OpenAccount(ctx, &paymentv1.OpenAccountRequest{
		IdempotencyKey: "load-open-" + u.ID, OwnerId: u.ID, CurrencyCode: "USD",
		OpeningCredit: &typev1.Money{AmountMinor: loadCredit, CurrencyCode: "USD"},
	})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return User{}, fmt.Errorf("loadgen: open the account of %s: %w", email, err)
	}
	return u, nil
}

// address is where every load order is shipped.
var address = &typev1.PostalAddress{
	Recipient: "Load Tester", Line1: "1 Benchmark Way", City: "Springfield", PostalCode: "12345", CountryCode: "US",
}

func placeRequest(key, itemID string) *orderv1.PlaceOrderRequest {
	return &orderv1.PlaceOrderRequest{
		IdempotencyKey:  key,
		Lines:           []*orderv1.OrderLine{{ItemId: itemID, Quantity: 1}},
		ShippingAddress: address,
	}
}

// GRPCTarget calls the services straight over gRPC.
type GRPCTarget struct {
	inv    inventoryv1.InventoryServiceClient
	orders orderv1.OrderServiceClient
}

// NewGRPCTarget calls through c.
func NewGRPCTarget(c Conns) *GRPCTarget {
	return &GRPCTarget{inv: inventoryv1.NewInventoryServiceClient(c.Inventory), orders: orderv1.NewOrderServiceClient(c.Order)}
}

// GetItem implements Target.
func (g *GRPCTarget) GetItem(ctx context.Context, u User, itemID string) error {
	_, err := g.inv.GetItem(withToken(ctx, u), &inventoryv1.GetItemRequest{ItemId: itemID})
	return err
}

// PlaceOrder implements Target.
func (g *GRPCTarget) PlaceOrder(ctx context.Context, u User, key, itemID string) (bool, error) {
	resp, err := g.orders.PlaceOrder(withToken(ctx, u), placeRequest(key, itemID))
	if err != nil {
		return false, err
	}
	return resp.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED, nil
}

// HTTPTarget calls the REST gateway.
type HTTPTarget struct {
	base   *url.URL
	client *http.Client
}

// NewHTTPTarget calls the gateway at base (for example
// http://127.0.0.1:8080) with up to conns keep-alive connections.
func NewHTTPTarget(base string, conns int) (*HTTPTarget, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("loadgen: gateway URL %q: want http(s)://host:port", base)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns
	tr.MaxIdleConnsPerHost = conns
	tr.IdleConnTimeout = 30 * time.Second
	return &HTTPTarget{base: u, client: &http.Client{Transport: tr}}, nil
}

// Close closes idle connections.
func (h *HTTPTarget) Close() { h.client.CloseIdleConnections() }

// maxBody bounds the answers read.
const maxBody = 1 << 20

func (h *HTTPTarget) do(ctx context.Context, u User, method, path string, in, out proto.Message) error {
	var body io.Reader
	if in != nil {
		b, err := protojson.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base.JoinPath(path).String(), body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+u.Token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &HTTPError{Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	if out == nil {
		return nil
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, out)
}

// GetItem implements Target.
func (h *HTTPTarget) GetItem(ctx context.Context, u User, itemID string) error {
	return h.do(ctx, u, http.MethodGet, "/v1/items/"+url.PathEscape(itemID), nil, nil)
}

// PlaceOrder implements Target.
func (h *HTTPTarget) PlaceOrder(ctx context.Context, u User, key, itemID string) (bool, error) {
	var resp orderv1.PlaceOrderResponse
	if err := h.do(ctx, u, http.MethodPost, "/v1/orders", placeRequest(key, itemID), &resp); err != nil {
		return false, err
	}
	return resp.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED, nil
}
