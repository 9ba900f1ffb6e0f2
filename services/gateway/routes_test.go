package gateway

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"unicode"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/switchboard-rpc/switchboard/gen/openapi"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// lowerCamel turns a template's snake_case variables into the OpenAPI
// document's lowerCamel ones.
func lowerCamel(template string) string {
	var b strings.Builder
	up := false
	for _, r := range template {
		switch {
		case r == '_':
			up = true
		case up:
			b.WriteRune(unicode.ToUpper(r))
			up = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// The route table must list exactly the operations of the generated
// OpenAPI document, so that a rule added to http.yaml cannot slip past
// the token check's list of public routes.
func TestRouteTableMatchesOpenAPI(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openapi.Document, &doc); err != nil {
		t.Fatalf("OpenAPI document: %v", err)
	}
	want := map[string]string{} // "GET /v1/items" -> "InventoryService_ListItems"
	for path, ops := range doc.Paths {
		for method, op := range ops {
			want[strings.ToUpper(method)+" "+path] = op.OperationID
		}
	}
	got := map[string]string{}
	for _, r := range routeTable {
		svc, method, _ := strings.Cut(strings.TrimPrefix(r.rpc, "/"), "/")
		got[r.method+" "+lowerCamel(r.path)] = svc[strings.LastIndexByte(svc, '.')+1:] + "_" + method
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("OpenAPI operation %s (%s): route table has %q", k, v, got[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("route table has %s, the OpenAPI document does not", k)
		}
	}
	if _, err := newRoutes(); err != nil {
		t.Errorf("newRoutes() = %v", err)
	}
}

func TestPatternString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/v1/items", "/v1/items"},
		{"/v1/items/{item_id}", "/v1/items/{item_id=*}"},
		{"/v1/orders/{order_id}:watch", "/v1/orders/{order_id=*}:watch"},
		{"/v1/accounts/{account_id}/entries", "/v1/accounts/{account_id=*}/entries"},
		{"/v1/audit:verify", "/v1/audit:verify"},
	}
	for _, tt := range tests {
		if got := patternString(tt.in); got != tt.want {
			t.Errorf("patternString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestTemplateMatches(t *testing.T) {
	tests := []struct {
		template, path string
		want           bool
	}{
		{"/v1/orders", "/v1/orders", true},
		{"/v1/orders/{order_id}", "/v1/orders/o-1", true},
		{"/v1/orders/{order_id}", "/v1/orders/", false},
		{"/v1/orders/{order_id}:watch", "/v1/orders/o-1:watch", true},
		{"/v1/orders/{order_id}:watch", "/v1/orders/o-1:cancel", false},
		{"/v1/orders/{order_id}:watch", "/v1/orders/o-1", false},
		{"/v1/items", "/v1/items/x", false},
		{"/v1/audit:verify", "/v1/audit:verify", true},
		{"/v1/audit:verify", "/v1/audit", false},
	}
	for _, tt := range tests {
		if got := templateMatches(tt.template, tt.path); got != tt.want {
			t.Errorf("templateMatches(%q, %q) = %v, want %v", tt.template, tt.path, got, tt.want)
		}
	}
}

func TestAllowedMethods(t *testing.T) {
	rs, err := newRoutes()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want []string
	}{
		{"/v1/orders", []string{"GET", "POST"}},
		{"/v1/audit:verify", []string{"POST"}},
		// A variable takes a verb in: GET reads the order "o-1:cancel".
		{"/v1/orders/o-1:cancel", []string{"GET", "POST"}},
		{"/v1/items/sku", []string{"GET"}},
		{"/v1/nothing", nil},
	}
	for _, tt := range tests {
		if got := rs.allowed(tt.path); !slices.Equal(got, tt.want) {
			t.Errorf("allowed(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestIncomingHeaderAllowList(t *testing.T) {
	g := &Gateway{}
	tests := []struct {
		header string
		want   string
		ok     bool
	}{
		{"X-Canary", "x-canary", true},
		{"Traceparent", "traceparent", true},
		{"Tracestate", "tracestate", true},
		{"Cookie", "", false},
		{"X-User-Id", "", false},
		{"Grpc-Metadata-X-User-Id", "", false},
		{"X-Request-Id", "", false}, // sent by the kit client from the context
		{"Host", "", false},
	}
	for _, tt := range tests {
		got, ok := g.incomingHeader(tt.header)
		if got != tt.want || ok != tt.ok {
			t.Errorf("incomingHeader(%q) = %q, %v, want %q, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
}

// Whatever an INTERNAL-class error says stays at the gateway; statuses
// without an ErrorInfo get a generic message.
func TestSanitizeNeverLeaksInternals(t *testing.T) {
	g := &Gateway{logger: slog.New(slog.DiscardHandler), cfg: Config{MaxBodyBytes: DefaultMaxBodyBytes}}
	secret := "pq: password authentication failed for user admin at 10.0.0.7"
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
		wantHTTP int
		reason   string
	}{
		{"internal with info", status.Error(codes.Internal, "order.switchboard.dev", "DB", secret), codes.Internal, 500, status.ReasonInternal},
		{"bare internal", grpcstatus.Error(codes.Internal, secret), codes.Internal, 500, status.ReasonInternal},
		{"unknown", grpcstatus.Error(codes.Unknown, secret), codes.Internal, 500, status.ReasonInternal},
		{"data loss", grpcstatus.Error(codes.DataLoss, secret), codes.Internal, 500, status.ReasonInternal},
		{"plain error", &leaky{secret}, codes.Internal, 500, status.ReasonInternal},
		{"transport", grpcstatus.Error(codes.Unavailable, "dial tcp "+secret), codes.Unavailable, 503, ReasonUpstreamUnavailable},
		{"bare not found", grpcstatus.Error(codes.NotFound, secret), codes.NotFound, 404, "NOT_FOUND"},
		{"canceled", grpcstatus.Error(codes.Canceled, secret), codes.Canceled, 499, "CANCELED"},
		{"exhausted", status.ResourceExhausted(status.KitDomain, "RATE_LIMITED", "slow down", 0), codes.ResourceExhausted, 429, "RATE_LIMITED"},
	}
	for _, tt := range tests {
		st, code := g.publicStatus(t.Context(), httptest.NewRequest(http.MethodGet, "/v1/items", nil), tt.err)
		if st.Code() != tt.wantCode || code != tt.wantHTTP {
			t.Errorf("%s: publicStatus = %v, %d, want %v, %d", tt.name, st.Code(), code, tt.wantCode, tt.wantHTTP)
		}
		body, _ := json.Marshal(st.Proto())
		if strings.Contains(string(body), "10.0.0.7") || strings.Contains(st.Message(), "password") {
			t.Errorf("%s: public status %s leaks the error", tt.name, body)
		}
		if got := status.Reason(st.Err()); tt.reason != "CANCELED" && got != tt.reason {
			t.Errorf("%s: reason = %q, want %q", tt.name, got, tt.reason)
		}
	}
}

type leaky struct{ msg string }

func (e *leaky) Error() string { return e.msg }

func TestWWWAuthenticate(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{errTokenMissing, `Bearer realm="switchboard"`},
		{errHeaderMalformed, `Bearer realm="switchboard", error="invalid_token", error_description="authorization header must be one Bearer <token>"`},
	}
	for _, tt := range tests {
		h := http.Header{}
		setErrorHeaders(h, grpcstatus.Convert(tt.err))
		if got := h.Get("WWW-Authenticate"); got != tt.want {
			t.Errorf("WWW-Authenticate for %v = %q, want %q", tt.err, got, tt.want)
		}
	}
}
