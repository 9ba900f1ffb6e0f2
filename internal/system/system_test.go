package system

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	auditv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/audit/v1"
	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	notifyv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/notify/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testConfig(dir string, out *syncBuffer) Config {
	return Config{
		DataDir:         dir,
		Host:            "127.0.0.1",
		BasePort:        0, // every service on a free port
		Drain:           10 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
		Logger:          slog.New(slog.DiscardHandler),
		Out:             out,
	}
}

// runUntilReady starts Run and waits until it is ready; the returned
// function stops it and returns Run's error.
func runUntilReady(t *testing.T, cfg Config) (addr string, stop func() error) {
	t.Helper()
	addrs, stop := runAll(t, cfg)
	return addrs["greeter"], stop
}

func TestRunServesOverMTLSAndStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	out := &syncBuffer{}
	addr, stop := runUntilReady(t, testConfig(dir, out))

	src, err := certs.NewSource(certs.FilesIn(dir+"/certs", certs.OperatorName))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial("passthrough:///"+addr, client.WithCredentials(certs.ClientCredentials(src, "greeter")))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := greeterv1.NewGreeterClient(conn).SayHello(t.Context(), &greeterv1.SayHelloRequest{Name: "Ada"})
	_ = conn.Close()
	if err != nil || resp.GetMessage() != "Hello, Ada!" {
		t.Errorf("SayHello over mTLS = %v, %v", resp, err)
	}
	if err := stop(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}

	// A second start reuses the certificates.
	first := certSerial(t, dir)
	_, stop = runUntilReady(t, testConfig(dir, &syncBuffer{}))
	if err := stop(); err != nil {
		t.Errorf("second Run = %v", err)
	}
	if got := certSerial(t, dir); got != first {
		t.Errorf("second start reissued the greeter certificate (serial %s, was %s)", got, first)
	}
}

func certSerial(t *testing.T, dir string) string {
	t.Helper()
	src, err := certs.NewSource(certs.FilesIn(dir+"/certs", "greeter"))
	if err != nil {
		t.Fatal(err)
	}
	return src.Leaf().SerialNumber.String()
}

func TestRunFailsFastWhenAPortIsTaken(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lis.Close() }()
	cfg := testConfig(t.TempDir(), &syncBuffer{})
	cfg.BasePort = lis.Addr().(*net.TCPAddr).Port
	err = Run(t.Context(), cfg, Services())
	if err == nil || !strings.Contains(err.Error(), strconv.Itoa(cfg.BasePort)) {
		t.Errorf("Run on a taken port = %v, want an error naming the port", err)
	}
}

func TestUsersSignInAndCallServicesWithTheirToken(t *testing.T) {
	dir := t.TempDir()
	addrs, stop := runAll(t, testConfig(dir, &syncBuffer{}))
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	src, err := certs.NewSource(certs.FilesIn(dir+"/certs", certs.OperatorName))
	if err != nil {
		t.Fatal(err)
	}
	dialAs := func(service string) *grpc.ClientConn {
		conn, err := client.Dial("passthrough:///"+addrs[service], client.WithCredentials(certs.ClientCredentials(src, service)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	ctx := t.Context()
	id := identityv1.NewIdentityServiceClient(dialAs("identity"))
	if _, err := id.Register(ctx, &identityv1.RegisterRequest{Email: "ada@example.com", Password: "correct horse battery", DisplayName: "Ada"}); err != nil {
		t.Fatal(err)
	}
	login, err := id.Login(ctx, &identityv1.LoginRequest{Email: "ada@example.com", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	inv := inventoryv1.NewInventoryServiceClient(dialAs("inventory"))
	tests := []struct {
		name  string
		token string
		want  codes.Code
	}{
		{"the user's token", login.GetAccessToken(), codes.OK},
		{"a forged token", login.GetAccessToken()[:len(login.GetAccessToken())-4] + "AAAA", codes.Unauthenticated},
	}
	for _, tt := range tests {
		callCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tt.token)
		resp, err := inv.GetItem(callCtx, &inventoryv1.GetItemRequest{ItemId: "sku-mug"})
		if got := grpcstatus.Code(err); got != tt.want {
			t.Errorf("GetItem with %s = %v, want %v", tt.name, err, tt.want)
		}
		if err == nil && resp.GetItem().GetAvailable() <= 0 {
			t.Errorf("GetItem(sku-mug) = %v, want the seeded demo item in stock", resp.GetItem())
		}
	}
}

// runAll starts every service and returns their addresses by name.
func runAll(t *testing.T, cfg Config) (map[string]string, func() error) {
	t.Helper()
	run, err := Start(cfg, Services(), 10*time.Second)
	if err != nil {
		t.Fatalf("Start = %v", err)
	}
	return run.Addrs, func() error { return run.Stop(10 * time.Second) }
}

// The whole story across five services over mTLS: a user registers, gets
// an account, orders, and the order is confirmed, shipped and delivered.
func TestOrderIsPlacedConfirmedAndDelivered(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, &syncBuffer{})
	cfg.CarrierStep = 20 * time.Millisecond
	addrs, stop := runAll(t, cfg)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	src, err := certs.NewSource(certs.FilesIn(dir+"/certs", certs.OperatorName))
	if err != nil {
		t.Fatal(err)
	}
	dialAs := func(service string) *grpc.ClientConn {
		conn, err := client.Dial("passthrough:///"+addrs[service], client.WithCredentials(certs.ClientCredentials(src, service)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	id := identityv1.NewIdentityServiceClient(dialAs("identity"))
	reg, err := id.Register(ctx, &identityv1.RegisterRequest{Email: "bo@example.com", Password: "correct horse battery", DisplayName: "Bo"})
	if err != nil {
		t.Fatal(err)
	}
	login, err := id.Login(ctx, &identityv1.LoginRequest{Email: "bo@example.com", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	// UserRegistered reaches payment through the broker, which opens the
	// account with the signup credit.
	pay := paymentv1.NewPaymentServiceClient(dialAs("payment"))
	waitForAccount(ctx, t, pay, reg.GetUser().GetUserId())
	userCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+login.GetAccessToken())
	orders := orderv1.NewOrderServiceClient(dialAs("order"))
	placed, err := orders.PlaceOrder(userCtx, &orderv1.PlaceOrderRequest{
		IdempotencyKey: "first-order",
		Lines:          []*orderv1.OrderLine{{ItemId: "sku-mug", Quantity: 2}},
		ShippingAddress: &typev1.PostalAddress{
			Recipient: "Bo", Line1: "1 Main St", City: "Springfield", PostalCode: "12345", CountryCode: "US",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := placed.GetOrder().GetStatus(); got != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
		t.Fatalf("PlaceOrder = %v (%s), want CONFIRMED", got, placed.GetOrder().GetCancelReason())
	}
	if got := placed.GetOrder().GetTotal().GetAmountMinor(); got != 2400 {
		t.Errorf("total = %d, want 2400 (2 x 1200)", got)
	}
	watch, err := orders.WatchOrder(userCtx, &orderv1.WatchOrderRequest{OrderId: placed.GetOrder().GetOrderId()})
	if err != nil {
		t.Fatal(err)
	}
	var last orderv1.OrderStatus
	for {
		m, err := watch.Recv()
		if err != nil {
			break
		}
		last = m.GetOrder().GetStatus()
	}
	if last != orderv1.OrderStatus_ORDER_STATUS_DELIVERED {
		t.Errorf("WatchOrder ended at %v, want DELIVERED", last)
	}
	acct, err := pay.GetAccount(ctx, &paymentv1.GetAccountRequest{OwnerId: reg.GetUser().GetUserId(), CurrencyCode: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	if got := acct.GetAccount().GetBalance().GetAmountMinor(); got != 10000-2400 {
		t.Errorf("balance after the order = %d, want %d", got, 10000-2400)
	}

	// notify sent the welcome, the confirmation and the delivery e-mails,
	// from the events; the user sees them.
	notes := notifyv1.NewNotifyServiceClient(dialAs("notify"))
	wantMail := []string{"switchboard.events.v1.OrderConfirmed", "switchboard.events.v1.ShipmentStatusChanged", "switchboard.events.v1.UserRegistered"}
	var gotMail []string
	for ctx.Err() == nil {
		resp, err := notes.ListNotifications(userCtx, &notifyv1.ListNotificationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		gotMail = gotMail[:0]
		for _, n := range resp.GetNotifications() {
			gotMail = append(gotMail, n.GetEventType())
		}
		slices.Sort(gotMail)
		if slices.Equal(gotMail, wantMail) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Equal(gotMail, wantMail) {
		t.Errorf("notifications = %v, want %v", gotMail, wantMail)
	}
	mails, err := filepath.Glob(filepath.Join(dir, "mail", "*.eml"))
	if err != nil || len(mails) != len(wantMail) {
		t.Errorf("%d .eml files (%v), want %d", len(mails), err, len(wantMail))
	}

	// audit recorded the events of every service in a chain that
	// verifies.
	auditor := auditv1.NewAuditServiceClient(dialAs("audit"))
	sources := map[string]bool{}
	for ctx.Err() == nil && len(sources) < 5 {
		resp, err := auditor.Query(ctx, &auditv1.QueryRequest{PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetRecords() {
			sources[r.GetSource()] = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, src := range []string{"identity", "inventory", "payment", "order", "shipping"} {
		if !sources[src] {
			t.Errorf("no audit record from %s (got %v)", src, sources)
		}
	}
	verified, err := auditor.Verify(ctx, &auditv1.VerifyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !verified.GetOk() || verified.GetRecordsChecked() == 0 {
		t.Errorf("Verify = %v, want ok over every record", verified)
	}
}

// waitForAccount waits until payment has opened the user's USD account.
func waitForAccount(ctx context.Context, t *testing.T, pay paymentv1.PaymentServiceClient, userID string) *paymentv1.Account {
	t.Helper()
	for {
		resp, err := pay.GetAccount(ctx, &paymentv1.GetAccountRequest{OwnerId: userID, CurrencyCode: "USD"})
		if err == nil {
			return resp.GetAccount()
		}
		if grpcstatus.Code(err) != codes.NotFound {
			t.Fatalf("GetAccount = %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no account for user %s: %v", userID, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// getStatus returns the HTTP status of a GET of url.
func getStatus(t *testing.T, url string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// up serves the gateway once the services are ready, and prints it;
// serve gateway runs it alone in front of the services as peers.
func TestGatewayRunsWithTheServicesAndAlone(t *testing.T) {
	dir := t.TempDir()
	out := &syncBuffer{}
	cfg := testConfig(dir, out)
	cfg.Gateway.Addr = "127.0.0.1:0"
	addrs, stop := runAll(t, cfg)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	gatewayURL := regexp.MustCompile(`(?m)^gateway\s+(http://127\.0\.0\.1:\d+)$`)
	m := gatewayURL.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no gateway in the table: %s", out.String())
	}
	for _, path := range []string{"/readyz", "/v1/items/sku-mug"} {
		if got := getStatus(t, m[1]+path); got != http.StatusOK {
			t.Errorf("up: GET %s = %d, want 200", path, got)
		}
	}

	aloneOut := &syncBuffer{}
	alone := testConfig(dir, aloneOut)
	alone.Gateway.Addr = "127.0.0.1:0"
	alone.Peers = addrs
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, alone, nil) }()
	deadline := time.Now().Add(10 * time.Second)
	for m = gatewayURL.FindStringSubmatch(aloneOut.String()); m == nil; m = gatewayURL.FindStringSubmatch(aloneOut.String()) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("gateway alone not ready after 10s: %s (%v)", aloneOut.String(), <-done)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, path := range []string{"/readyz", "/v1/items/sku-mug"} {
		if got := getStatus(t, m[1]+path); got != http.StatusOK {
			t.Errorf("serve gateway: GET %s = %d, want 200", path, got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run of the gateway alone = %v", err)
	}
}

func TestStopWavesStopCallersFirst(t *testing.T) {
	svc := func(name string, calls ...string) *running { return &running{svc: Service{Name: name, Calls: calls}} }
	names := func(waves [][]*running) [][]string {
		var out [][]string
		for _, w := range waves {
			var ns []string
			for _, r := range w {
				ns = append(ns, r.svc.Name)
			}
			out = append(out, ns)
		}
		return out
	}
	tests := []struct {
		name string
		all  []*running
		want [][]string
	}{
		{"the shop", []*running{svc("identity"), svc("inventory"), svc("order", "inventory", "payment", "shipping"), svc("payment"), svc("shipping")},
			[][]string{{"identity", "order"}, {"inventory", "payment", "shipping"}}},
		{"a chain", []*running{svc("c"), svc("b", "c"), svc("a", "b")}, [][]string{{"a"}, {"b"}, {"c"}}},
		{"callee not running", []*running{svc("order", "inventory")}, [][]string{{"order"}}},
		{"a cycle stops together", []*running{svc("a", "b"), svc("b", "a")}, [][]string{{"a", "b"}}},
	}
	for _, tt := range tests {
		if got := names(stopWaves(tt.all)); !slices.EqualFunc(got, tt.want, slices.Equal) {
			t.Errorf("%s: stopWaves = %v, want %v", tt.name, got, tt.want)
		}
	}
}
