package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/internal/system"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
	"github.com/switchboard-rpc/switchboard/services/gateway"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
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

// shop is the system's services, running in this process on free ports.
type shop struct {
	dir   string
	addrs map[string]string
}

// startShop runs every service of the system (without its own gateway)
// until the test ends.
func startShop(t *testing.T) *shop {
	t.Helper()
	dir := t.TempDir()
	cfg := system.Config{
		DataDir:         dir,
		Host:            "127.0.0.1",
		Drain:           10 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
		// The carrier picks parcels up at once and then takes its time:
		// an order stays SHIPPED for the whole test.
		CarrierStep: time.Hour,
		Logger:      slog.New(slog.DiscardHandler),
	}
	run, err := system.Start(cfg, system.Services(), 30*time.Second)
	if err != nil {
		t.Fatalf("start the system: %v", err)
	}
	t.Cleanup(func() {
		if err := run.Stop(15 * time.Second); err != nil {
			t.Errorf("system.Run = %v", err)
		}
	})
	s := &shop{dir: dir, addrs: run.Addrs}
	// The gateway calls as itself: give it its certificate from the run's
	// CA.
	if _, err := certs.EnsureDevPKI(dir+"/certs", []string{"gateway"}); err != nil {
		t.Fatal(err)
	}
	return s
}

// operator dials a service with the operator certificate.
func (s *shop) operator(t *testing.T, service string) *grpc.ClientConn {
	t.Helper()
	src, err := certs.NewSource(certs.FilesIn(s.dir+"/certs", certs.OperatorName))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial("passthrough:///"+s.addrs[service], client.WithCredentials(certs.ClientCredentials(src, service)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// running is a gateway served on a free port.
type running struct {
	gw   *gateway.Gateway
	url  string
	logs *syncBuffer
	tel  *telemetry.Telemetry
}

// serveGateway builds a gateway in front of s, with the services that run
// except notify and audit, changed by edit, and serves it until the test
// ends.
func serveGateway(t *testing.T, s *shop, edit func(*gateway.Config)) *running {
	t.Helper()
	src, err := certs.NewSource(certs.FilesIn(s.dir+"/certs", "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telemetry.New(t.Context(), telemetry.Config{ServiceName: "gateway-test"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{
		Dial: func(service string, opts ...client.Option) (*grpc.ClientConn, error) {
			return client.Dial("passthrough:///"+s.addrs[service], append([]client.Option{
				client.WithCredentials(certs.ClientCredentials(src, service)), client.WithTelemetry(tel),
			}, opts...)...)
		},
		Services:       []string{"identity", "inventory", "payment", "order", "shipping", "greeter"},
		Telemetry:      tel,
		AllowedOrigins: []string{"https://shop.example"},
	}
	if edit != nil {
		edit(&cfg)
	}
	logs := &syncBuffer{}
	gw, err := gateway.New(t.Context(), cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- gw.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 5*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve = %v", err)
		}
		if err := gw.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		if err := tel.Shutdown(ctx); err != nil {
			t.Errorf("telemetry Shutdown = %v", err)
		}
	})
	return &running{gw: gw, url: "http://" + lis.Addr().String(), logs: logs, tel: tel}
}

// response is an HTTP answer, read whole.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// do sends one request; body is marshalled to JSON unless it is a string
// or nil.
func do(t *testing.T, method, url, token string, body any, headers ...string) response {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case io.Reader:
		r = b // no Content-Length: sent chunked
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(buf)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: data}
}

// apiError is the JSON of a google.rpc.Status.
type apiError struct {
	Code    int                      `json:"code"`
	Message string                   `json:"message"`
	Details []map[string]interface{} `json:"details"`
}

// decodeError reads an error body and returns it with the reason of its
// ErrorInfo.
func decodeError(t *testing.T, r response) (apiError, string) {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	for _, d := range e.Details {
		if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" {
			reason, _ := d["reason"].(string)
			return e, reason
		}
	}
	return e, ""
}

// detail returns the detail of e with the given type name, or nil.
func (e apiError) detail(typ string) map[string]interface{} {
	for _, d := range e.Details {
		if d["@type"] == "type.googleapis.com/google.rpc."+typ {
			return d
		}
	}
	return nil
}

// user registers and signs in a user through the gateway, and opens the
// user's payment account, returning the user id and access token.
func user(t *testing.T, s *shop, gw *running, name string) (id, token string) {
	t.Helper()
	email := name + "@example.com"
	r := do(t, http.MethodPost, gw.url+"/v1/users", "", map[string]string{
		"email": email, "password": "correct horse battery", "displayName": name,
	})
	if r.code != http.StatusOK {
		t.Fatalf("POST /v1/users = %d %s", r.code, r.body)
	}
	var reg struct {
		User struct {
			UserID string `json:"userId"`
		} `json:"user"`
	}
	if err := json.Unmarshal(r.body, &reg); err != nil || reg.User.UserID == "" {
		t.Fatalf("POST /v1/users body %s: %v", r.body, err)
	}
	r = do(t, http.MethodPost, gw.url+"/v1/sessions", "", map[string]string{"email": email, "password": "correct horse battery"})
	if r.code != http.StatusOK {
		t.Fatalf("POST /v1/sessions = %d %s", r.code, r.body)
	}
	var login struct {
		AccessToken string `json:"accessToken"`
		TokenType   string `json:"tokenType"`
	}
	if err := json.Unmarshal(r.body, &login); err != nil || login.AccessToken == "" {
		t.Fatalf("POST /v1/sessions body %s: %v", r.body, err)
	}
	// The account may already be open by the signup event; either way it
	// holds 100.00 after this.
	_, err := paymentv1.NewPaymentServiceClient(s.operator(t, "payment")).OpenAccount(t.Context(), &paymentv1.OpenAccountRequest{
		IdempotencyKey: "open-" + name, OwnerId: reg.User.UserID, CurrencyCode: "USD",
		OpeningCredit: &typev1.Money{AmountMinor: 10000, CurrencyCode: "USD"},
	})
	if err != nil && grpcstatus.Code(err) != codes.AlreadyExists {
		t.Fatalf("OpenAccount: %v", err)
	}
	return reg.User.UserID, login.AccessToken
}

// order is the JSON of an order.
type order struct {
	OrderID string `json:"orderId"`
	Status  string `json:"status"`
}

func placeOrder(t *testing.T, gw *running, token, key, item string, qty int) (response, order) {
	t.Helper()
	r := do(t, http.MethodPost, gw.url+"/v1/orders", token, map[string]any{
		"idempotencyKey": key,
		"lines":          []map[string]any{{"itemId": item, "quantity": qty}},
		"shippingAddress": map[string]string{
			"recipient": "Ada", "line1": "1 Main St", "city": "Springfield", "postalCode": "12345", "countryCode": "US",
		},
	})
	var placed struct {
		Order order `json:"order"`
	}
	if r.code == http.StatusOK {
		if err := json.Unmarshal(r.body, &placed); err != nil {
			t.Fatalf("POST /v1/orders body %s: %v", r.body, err)
		}
	}
	return r, placed.Order
}

func TestGateway(t *testing.T) {
	s := startShop(t)
	gw := serveGateway(t, s, func(c *gateway.Config) {
		c.Limits = ratelimit.Limits{Methods: map[string]ratelimit.Limit{
			// One token every 1000s: the third call is refused.
			"/switchboard.greeter.v1.Greeter/SayHello": {Rate: 0.001, Burst: 2},
		}}
	})
	_, token := user(t, s, gw, "ada")

	t.Run("the shopping story", func(t *testing.T) { testStory(t, gw, token) })
	t.Run("bad requests", func(t *testing.T) { testBadRequests(t, s, gw, token) })
	t.Run("tokens", func(t *testing.T) { testTokens(t, gw, token) })
	t.Run("rate limits", func(t *testing.T) { testRateLimits(t, s, gw, token) })
	t.Run("CORS", func(t *testing.T) { testCORS(t, gw) })
	t.Run("operations", func(t *testing.T) { testOperations(t, s, gw, token) })
	t.Run("shutdown ends streams", func(t *testing.T) { testShutdown(t, s) })
}

// register, log in, list items, order, read the order, watch it, cancel.
func testStory(t *testing.T, gw *running, token string) {
	// The catalogue streams as newline-delimited JSON.
	r := do(t, http.MethodGet, gw.url+"/v1/items", "", nil)
	if r.code != http.StatusOK || r.header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("GET /v1/items = %d %q %s", r.code, r.header.Get("Content-Type"), r.body)
	}
	var ids []string
	for line := range strings.Lines(string(r.body)) {
		var chunk struct {
			Result struct {
				Items []struct {
					ItemID string `json:"itemId"`
				} `json:"items"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil {
			t.Fatalf("GET /v1/items line %q: %v", line, err)
		}
		for _, it := range chunk.Result.Items {
			ids = append(ids, it.ItemID)
		}
	}
	if !slices.Contains(ids, "sku-mug") {
		t.Errorf("GET /v1/items lists %v, want sku-mug among them", ids)
	}
	if r := do(t, http.MethodGet, gw.url+"/v1/items/sku-mug", "", nil); r.code != http.StatusOK || !strings.Contains(string(r.body), `"itemId":"sku-mug"`) {
		t.Errorf("GET /v1/items/sku-mug = %d %s", r.code, r.body)
	}

	r, placed := placeOrder(t, gw, token, "story-1", "sku-mug", 1)
	if r.code != http.StatusOK || placed.Status != "ORDER_STATUS_CONFIRMED" {
		t.Fatalf("POST /v1/orders = %d %s, want 200 and CONFIRMED", r.code, r.body)
	}
	r = do(t, http.MethodGet, gw.url+"/v1/orders/"+placed.OrderID, token, nil)
	if r.code != http.StatusOK || !strings.Contains(string(r.body), placed.OrderID) {
		t.Errorf("GET /v1/orders/{id} = %d %s", r.code, r.body)
	}
	r = do(t, http.MethodGet, gw.url+"/v1/orders", token, nil)
	if r.code != http.StatusOK || !strings.Contains(string(r.body), placed.OrderID) {
		t.Errorf("GET /v1/orders = %d %s, want the order listed", r.code, r.body)
	}

	// Watch: each status arrives as a line while the stream stays open;
	// the carrier picks the parcel up at once, then takes an hour.
	statuses := watchUntil(t, gw, token, placed.OrderID, "ORDER_STATUS_SHIPPED")
	if statuses[0] != "ORDER_STATUS_CONFIRMED" && statuses[0] != "ORDER_STATUS_SHIPPED" {
		t.Errorf("watch began with %v, want the current status", statuses)
	}

	// A shipped order can no longer be cancelled: 400 with the
	// precondition that failed.
	r = do(t, http.MethodPost, gw.url+"/v1/orders/"+placed.OrderID+":cancel", token, map[string]string{})
	e, reason := decodeError(t, r)
	if r.code != http.StatusBadRequest || e.Code != int(codes.FailedPrecondition) || reason != "ORDER_SHIPPED" || e.detail("PreconditionFailure") == nil {
		t.Errorf("cancel a shipped order = %d %s, want 400 FAILED_PRECONDITION ORDER_SHIPPED with a PreconditionFailure", r.code, r.body)
	}

	// An order the account cannot pay is cancelled by the saga, and
	// cancelling it again gives it back as it is.
	r, declined := placeOrder(t, gw, token, "story-2", "sku-headset", 2)
	if r.code != http.StatusOK || declined.Status != "ORDER_STATUS_CANCELLED" {
		t.Fatalf("POST /v1/orders over the balance = %d %s, want 200 and CANCELLED", r.code, r.body)
	}
	r = do(t, http.MethodPost, gw.url+"/v1/orders/"+declined.OrderID+":cancel", token, map[string]string{"reason": "changed my mind"})
	if r.code != http.StatusOK || !strings.Contains(string(r.body), `"status":"ORDER_STATUS_CANCELLED"`) {
		t.Errorf("cancel a cancelled order = %d %s, want 200 CANCELLED", r.code, r.body)
	}

	// The access log names the route and status, never the token.
	logs := gw.logs.String()
	if !strings.Contains(logs, `"route":"/v1/orders/{order_id}:watch"`) || !strings.Contains(logs, `"route":"/v1/orders","status":200`) {
		t.Errorf("access log lacks the order routes:\n%s", logs)
	}
	if strings.Contains(logs, token) || strings.Contains(logs, "correct horse") {
		t.Errorf("access log holds a token or a password")
	}
}

// watchUntil reads the order's watch stream line by line until status
// arrives, then drops the stream, and returns the statuses seen.
func watchUntil(t *testing.T, gw *running, token, orderID, status string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gw.url+"/v1/orders/"+orderID+":watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("watch = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var seen []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var chunk struct {
			Result struct {
				Order order `json:"order"`
			} `json:"result"`
			Error *apiError `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &chunk); err != nil || chunk.Error != nil {
			t.Fatalf("watch line %q: %v", sc.Text(), err)
		}
		seen = append(seen, chunk.Result.Order.Status)
		if chunk.Result.Order.Status == status {
			cancel() // the client goes away mid-stream
			return seen
		}
	}
	t.Fatalf("watch ended (%v) after %v, before %s", sc.Err(), seen, status)
	return nil
}

func testBadRequests(t *testing.T, s *shop, gw *running, token string) {
	tests := []struct {
		name       string
		method     string
		path       string
		token      string
		body       any
		wantHTTP   int
		wantReason string
		wantField  string
	}{
		{"malformed JSON", http.MethodPost, "/v1/sessions", "", `{"email": "a@example.com",`, 400, gateway.ReasonMalformedRequest, "body"},
		{"unknown field", http.MethodPost, "/v1/sessions", "", `{"emial": "a@example.com"}`, 400, gateway.ReasonMalformedRequest, "body"},
		{"wrong type", http.MethodPost, "/v1/orders", token, `{"lines": "many"}`, 400, gateway.ReasonMalformedRequest, "body"},
		{"bad query", http.MethodGet, "/v1/orders?pageSize=lots", token, nil, 400, gateway.ReasonMalformedRequest, "query"},
		{"missing required fields", http.MethodPost, "/v1/users", "", map[string]string{}, 400, "", "email"},
		{"unknown route", http.MethodGet, "/v1/nothing-here", "", nil, 404, gateway.ReasonRouteNotFound, ""},
		{"wrong method", http.MethodDelete, "/v1/orders", token, nil, 405, gateway.ReasonMethodNotAllowed, ""},
		{"service not running", http.MethodGet, "/v1/notifications", token, nil, 503, gateway.ReasonServiceNotRunning, ""},
		{"unknown order", http.MethodGet, "/v1/orders/no-such-order", token, nil, 404, "ORDER_NOT_FOUND", ""},
	}
	for _, tt := range tests {
		r := do(t, tt.method, gw.url+tt.path, tt.token, tt.body)
		e, reason := decodeError(t, r)
		if r.code != tt.wantHTTP || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %s %s = %d %q %s, want %d JSON", tt.name, tt.method, tt.path, r.code, r.header.Get("Content-Type"), r.body, tt.wantHTTP)
			continue
		}
		if tt.wantReason != "" && reason != tt.wantReason {
			t.Errorf("%s: reason %q, want %q (%s)", tt.name, reason, tt.wantReason, r.body)
		}
		if tt.wantField != "" && !strings.Contains(fmt.Sprint(e.detail("BadRequest")), "field:"+tt.wantField) {
			t.Errorf("%s: BadRequest %v, want a violation of %q", tt.name, e.detail("BadRequest"), tt.wantField)
		}
	}
	if r := do(t, http.MethodDelete, gw.url+"/v1/orders", token, nil); r.header.Get("Allow") != "GET, POST" {
		t.Errorf("405 Allow = %q, want \"GET, POST\"", r.header.Get("Allow"))
	}

	// Bodies over the limit: streamed past it, and announced by
	// Content-Length (on a gateway with a small limit).
	huge := `{"email": "` + strings.Repeat("a", gateway.DefaultMaxBodyBytes) + `"}`
	r := do(t, http.MethodPost, gw.url+"/v1/sessions", "", io.MultiReader(strings.NewReader(huge)))
	if _, reason := decodeError(t, r); r.code != http.StatusRequestEntityTooLarge || reason != gateway.ReasonBodyTooLarge {
		t.Errorf("streamed body over 1 MiB = %d %s, want 413 %s", r.code, r.body, gateway.ReasonBodyTooLarge)
	}
	small := serveGateway(t, s, func(c *gateway.Config) { c.MaxBodyBytes = 512 })
	r = do(t, http.MethodPost, small.url+"/v1/sessions", "", `{"email": "`+strings.Repeat("a", 600)+`"}`)
	if e, reason := decodeError(t, r); r.code != http.StatusRequestEntityTooLarge || reason != gateway.ReasonBodyTooLarge || e.Code != int(codes.InvalidArgument) {
		t.Errorf("body with Content-Length over 512 = %d %s, want 413 %s", r.code, r.body, gateway.ReasonBodyTooLarge)
	}
}

func testTokens(t *testing.T, gw *running, token string) {
	forged := token[:len(token)-4] + "AAAA"
	tests := []struct {
		name, header, wantReason, wantChallenge string
	}{
		{"no token", "", "TOKEN_MISSING", `Bearer realm="switchboard"`},
		{"not a JWT", "Bearer not-a-token", "TOKEN_MALFORMED", `error="invalid_token"`},
		{"forged signature", "Bearer " + forged, "TOKEN_INVALID_SIGNATURE", `error="invalid_token"`},
		{"other scheme", "Basic YWRhOnB3", "TOKEN_MALFORMED", `error="invalid_token"`},
	}
	for _, tt := range tests {
		var hdrs []string
		if tt.header != "" {
			hdrs = []string{"Authorization", tt.header}
		}
		r := do(t, http.MethodGet, gw.url+"/v1/orders", "", nil, hdrs...)
		_, reason := decodeError(t, r)
		if r.code != http.StatusUnauthorized || reason != tt.wantReason || !strings.Contains(r.header.Get("WWW-Authenticate"), tt.wantChallenge) {
			t.Errorf("%s: GET /v1/orders = %d %q %s, want 401 %s with %s", tt.name, r.code, r.header.Get("WWW-Authenticate"), r.body, tt.wantReason, tt.wantChallenge)
		}
	}
	// Public routes ignore a bad token rather than refuse the request.
	if r := do(t, http.MethodGet, gw.url+"/v1/items/sku-mug", "", nil, "Authorization", "Bearer "+forged); r.code != http.StatusOK {
		t.Errorf("GET /v1/items/sku-mug with a forged token = %d %s, want 200", r.code, r.body)
	}
}

func testRateLimits(t *testing.T, s *shop, gw *running, token string) {
	var r response
	for i := range 3 {
		r = do(t, http.MethodGet, gw.url+"/v1/hello/Ada", token, nil)
		if i < 2 && r.code != http.StatusOK {
			t.Fatalf("GET /v1/hello call %d = %d %s, want 200", i+1, r.code, r.body)
		}
	}
	e, reason := decodeError(t, r)
	retry, err := strconv.Atoi(r.header.Get("Retry-After"))
	if r.code != http.StatusTooManyRequests || reason != "RATE_LIMITED" || e.detail("RetryInfo") == nil || err != nil || retry < 1 {
		t.Errorf("third GET /v1/hello = %d Retry-After %q %s, want 429 RATE_LIMITED with RetryInfo and Retry-After", r.code, r.header.Get("Retry-After"), r.body)
	}

	// Per client: one user's bucket empty does not stop another.
	per := serveGateway(t, s, func(c *gateway.Config) {
		c.Limits = ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 0.001, Burst: 1}}
	})
	_, other := user(t, s, gw, "bo")
	if r := do(t, http.MethodGet, per.url+"/v1/orders", token, nil); r.code != http.StatusOK {
		t.Errorf("first GET /v1/orders of ada = %d %s", r.code, r.body)
	}
	if r := do(t, http.MethodGet, per.url+"/v1/orders", token, nil); r.code != http.StatusTooManyRequests {
		t.Errorf("second GET /v1/orders of ada = %d %s, want 429", r.code, r.body)
	}
	if r := do(t, http.MethodGet, per.url+"/v1/orders", other, nil); r.code != http.StatusOK {
		t.Errorf("first GET /v1/orders of bo = %d %s, want 200", r.code, r.body)
	}
}

func testCORS(t *testing.T, gw *running) {
	tests := []struct {
		name, origin, method, headers string
		want                          int
	}{
		{"allowed", "https://shop.example", "POST", "Authorization, Content-Type", http.StatusNoContent},
		{"other origin", "https://evil.example", "POST", "Content-Type", http.StatusForbidden},
		{"unknown method", "https://shop.example", "DELETE", "", http.StatusForbidden},
		{"unknown header", "https://shop.example", "GET", "X-User-Id", http.StatusForbidden},
	}
	for _, tt := range tests {
		hdrs := []string{"Origin", tt.origin, "Access-Control-Request-Method", tt.method}
		if tt.headers != "" {
			hdrs = append(hdrs, "Access-Control-Request-Headers", tt.headers)
		}
		r := do(t, http.MethodOptions, gw.url+"/v1/orders", "", nil, hdrs...)
		if r.code != tt.want {
			t.Errorf("%s: preflight = %d %s, want %d", tt.name, r.code, r.body, tt.want)
		}
		allowOrigin := r.header.Get("Access-Control-Allow-Origin")
		if (tt.want == http.StatusNoContent) != (allowOrigin == tt.origin) {
			t.Errorf("%s: Access-Control-Allow-Origin = %q", tt.name, allowOrigin)
		}
		if tt.want == http.StatusNoContent && (!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "POST") ||
			!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization")) {
			t.Errorf("%s: preflight headers %v", tt.name, r.header)
		}
	}
	r := do(t, http.MethodGet, gw.url+"/v1/items/sku-mug", "", nil, "Origin", "https://shop.example")
	if r.header.Get("Access-Control-Allow-Origin") != "https://shop.example" || !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Errorf("cross-origin GET headers = %v", r.header)
	}
}

func testOperations(t *testing.T, s *shop, gw *running, token string) {
	r := do(t, http.MethodGet, gw.url+"/openapi.json", "", nil)
	var doc struct {
		Swagger string                     `json:"swagger"`
		Paths   map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); r.code != http.StatusOK || err != nil {
		t.Fatalf("GET /openapi.json = %d, %v", r.code, err)
	}
	for _, p := range []string{"/v1/users", "/v1/sessions", "/v1/items", "/v1/orders", "/v1/orders/{orderId}:watch", "/v1/notifications"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("/openapi.json has no path %s", p)
		}
	}
	if r := do(t, http.MethodGet, gw.url+"/openapi.json", "", nil, "If-None-Match", r.header.Get("ETag")); r.code != http.StatusNotModified {
		t.Errorf("GET /openapi.json with its ETag = %d, want 304", r.code)
	}

	if r := do(t, http.MethodGet, gw.url+"/healthz", "", nil); r.code != http.StatusOK {
		t.Errorf("GET /healthz = %d %s", r.code, r.body)
	}
	var ready gateway.Readiness
	r = do(t, http.MethodGet, gw.url+"/readyz", "", nil)
	if err := json.Unmarshal(r.body, &ready); r.code != http.StatusOK || err != nil || !ready.Ready || ready.Services["order"] != "SERVING" {
		t.Errorf("GET /readyz = %d %s, want 200 with every service SERVING", r.code, r.body)
	}
	// A gateway whose payment service is gone is not ready, and says why.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	broken := serveGateway(t, s, func(c *gateway.Config) {
		dial := c.Dial
		c.Dial = func(service string, opts ...client.Option) (*grpc.ClientConn, error) {
			if service == "payment" {
				src, err := certs.NewSource(certs.FilesIn(s.dir+"/certs", "gateway"))
				if err != nil {
					return nil, err
				}
				return client.Dial("passthrough:///"+deadAddr, append([]client.Option{client.WithCredentials(certs.ClientCredentials(src, service))}, opts...)...)
			}
			return dial(service, opts...)
		}
	})
	r = do(t, http.MethodGet, broken.url+"/readyz", "", nil)
	ready = gateway.Readiness{}
	if err := json.Unmarshal(r.body, &ready); r.code != http.StatusServiceUnavailable || err != nil || !slices.Equal(ready.NotReady, []string{"payment"}) {
		t.Errorf("GET /readyz without payment = %d %s, want 503 naming payment", r.code, r.body)
	}
	if r := do(t, http.MethodGet, broken.url+"/v1/accounts/acct-1", token, nil); r.code != http.StatusServiceUnavailable {
		t.Errorf("GET /v1/accounts without payment = %d %s, want 503", r.code, r.body)
	}

	// The request id comes back, and is made when missing or malformed.
	if r := do(t, http.MethodGet, gw.url+"/healthz", "", nil, "X-Request-Id", "req-42"); r.header.Get("X-Request-Id") != "req-42" {
		t.Errorf("X-Request-Id = %q, want req-42", r.header.Get("X-Request-Id"))
	}
	if r := do(t, http.MethodGet, gw.url+"/healthz", "", nil, "X-Request-Id", "bad id!"); r.header.Get("X-Request-Id") == "bad id!" || r.header.Get("X-Request-Id") == "" {
		t.Errorf("X-Request-Id for a malformed one = %q, want a fresh id", r.header.Get("X-Request-Id"))
	}

	// Metrics by route and status, on the telemetry's registry.
	rec := &metricsRecorder{header: http.Header{}}
	gw.tel.MetricsHandler().ServeHTTP(rec, mustRequest(t, http.MethodGet, "/metrics"))
	metrics := rec.body.String()
	for _, want := range []string{`http_route="/v1/items"`, `http_route="/v1/orders/{order_id}"`, `http_response_status_code="401"`} {
		if !strings.Contains(metrics, "http_server_request_duration_seconds_count{") || !strings.Contains(metrics, want) {
			t.Errorf("metrics lack http_server_request_duration_seconds with %s", want)
		}
	}
}

// testShutdown shuts a gateway down under an open stream: the stream ends
// with UNAVAILABLE and Shutdown returns.
func testShutdown(t *testing.T, s *shop) {
	gw := serveGateway(t, s, nil)
	_, token := user(t, s, gw, "cy")
	r, placed := placeOrder(t, gw, token, "shutdown-1", "sku-sticker", 1)
	if r.code != http.StatusOK {
		t.Fatalf("POST /v1/orders = %d %s", r.code, r.body)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.url+"/v1/orders/"+placed.OrderID+":watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatalf("no first line from the watch: %v", sc.Err())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := gw.gw.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with an open stream = %v", err)
	}
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	if !strings.Contains(last, `"error"`) || !strings.Contains(last, gateway.ReasonShuttingDown) {
		t.Errorf("last line of a stream cut by Shutdown = %q, want an error with %s", last, gateway.ReasonShuttingDown)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading the stream: %v", err)
	}
}

// metricsRecorder is a minimal ResponseWriter for the metrics handler.
type metricsRecorder struct {
	header http.Header
	body   bytes.Buffer
}

func (m *metricsRecorder) Header() http.Header         { return m.header }
func (m *metricsRecorder) Write(p []byte) (int, error) { return m.body.Write(p) }
func (m *metricsRecorder) WriteHeader(int)             {}

func mustRequest(t *testing.T, method, target string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
