package authz_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	inventoryService = "switchboard.inventory.v1.InventoryService"
	paymentService   = "switchboard.payment.v1.PaymentService"
	reflectionV1     = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
)

// caller is who makes a call in a test: a calling service, maybe a user.
type caller struct {
	service string   // "" for no verified service
	user    string   // "" for no verified user
	roles   []string // the user's roles
}

func (c caller) String() string {
	s := c.service
	if s == "" {
		s = "(no service)"
	}
	if c.user != "" {
		s += "+user" + "[" + strings.Join(c.roles, ",") + "]"
	}
	return s
}

func (c caller) context(ctx context.Context) context.Context {
	if c.service != "" {
		ctx = identity.WithService(ctx, &identity.Service{
			Name: c.service, SPIFFEID: "spiffe://" + identity.TrustDomain + "/" + c.service,
		})
	}
	if c.user != "" {
		ctx = identity.WithUser(ctx, &identity.User{ID: c.user, Roles: c.roles})
	}
	return ctx
}

var (
	order    = caller{service: "order"}
	gateway  = caller{service: "gateway"}
	shipping = caller{service: "shipping"}
	operator = caller{service: authz.Operator}
	nobody   = caller{}
	customer = caller{service: "gateway", user: "u-1", roles: []string{"customer"}}
	support  = caller{service: "gateway", user: "u-2", roles: []string{"support"}}
	admin    = caller{service: "gateway", user: "u-3", roles: []string{"admin"}}
	noRoles  = caller{service: "gateway", user: "u-4"}
	orphan   = caller{user: "u-1", roles: []string{"customer"}} // a user but no service
)

// shopAuthorizer builds an Authorizer from the inventory and payment
// policies in testdata.
func shopAuthorizer(t testing.TB, opts ...authz.Option) *authz.Authorizer {
	t.Helper()
	inv, err := authz.Load(filepath.Join("testdata", "inventory.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pay, err := authz.Load(filepath.Join("testdata", "payment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := authz.New(inv, append([]authz.Option{authz.WithPolicies(pay)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// reasonOf returns "" for nil and the ErrorInfo reason of a
// PERMISSION_DENIED error in domain status.KitDomain; anything else fails
// the test.
func reasonOf(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	if got := grpcstatus.Code(err); got != codes.PermissionDenied {
		t.Fatalf("code = %v, want PermissionDenied (err %v)", got, err)
	}
	info := status.Info(err)
	if got := info.GetDomain(); got != status.KitDomain {
		t.Errorf("ErrorInfo domain = %q, want %q", got, status.KitDomain)
	}
	return info.GetReason()
}

// allowed is the want of a call the policy allows.
const allowed = ""

func TestAuthorizeShop(t *testing.T) {
	a := shopAuthorizer(t)
	tests := []struct {
		caller caller
		method string
		want   string // reason, or allowed
	}{
		// Only order may reserve stock and move money.
		{order, inventoryv1.InventoryService_Reserve_FullMethodName, allowed},
		{order, inventoryv1.InventoryService_Release_FullMethodName, allowed},
		{order, inventoryv1.InventoryService_CommitReservation_FullMethodName, allowed},
		{order, paymentv1.PaymentService_Authorize_FullMethodName, allowed},
		{order, paymentv1.PaymentService_Capture_FullMethodName, allowed},
		{order, paymentv1.PaymentService_Void_FullMethodName, allowed},
		{gateway, inventoryv1.InventoryService_Reserve_FullMethodName, authz.ReasonMethodNotAllowed},
		{shipping, inventoryv1.InventoryService_Release_FullMethodName, authz.ReasonMethodNotAllowed},
		{operator, inventoryv1.InventoryService_CommitReservation_FullMethodName, authz.ReasonMethodNotAllowed},
		{customer, inventoryv1.InventoryService_Reserve_FullMethodName, authz.ReasonMethodNotAllowed},
		{admin, inventoryv1.InventoryService_Reserve_FullMethodName, authz.ReasonMethodNotAllowed},
		{gateway, paymentv1.PaymentService_Authorize_FullMethodName, authz.ReasonMethodNotAllowed},
		{shipping, paymentv1.PaymentService_Capture_FullMethodName, authz.ReasonMethodNotAllowed},
		{operator, paymentv1.PaymentService_Void_FullMethodName, authz.ReasonMethodNotAllowed},
		{support, paymentv1.PaymentService_Void_FullMethodName, authz.ReasonMethodNotAllowed},

		// GetItem: order, or any signed-in user through any service.
		{order, inventoryv1.InventoryService_GetItem_FullMethodName, allowed},
		{customer, inventoryv1.InventoryService_GetItem_FullMethodName, allowed},
		{noRoles, inventoryv1.InventoryService_GetItem_FullMethodName, allowed},
		{caller{service: "shipping", user: "u-9"}, inventoryv1.InventoryService_GetItem_FullMethodName, allowed},
		{gateway, inventoryv1.InventoryService_GetItem_FullMethodName, authz.ReasonUserRequired},
		{shipping, inventoryv1.InventoryService_GetItem_FullMethodName, authz.ReasonUserRequired},

		// ListItems is public: any calling service, with or without a user.
		{gateway, inventoryv1.InventoryService_ListItems_FullMethodName, allowed},
		{shipping, inventoryv1.InventoryService_ListItems_FullMethodName, allowed},
		{customer, inventoryv1.InventoryService_ListItems_FullMethodName, allowed},

		// RecordItems: the operator, or an admin user.
		{operator, inventoryv1.InventoryService_RecordItems_FullMethodName, allowed},
		{admin, inventoryv1.InventoryService_RecordItems_FullMethodName, allowed},
		{customer, inventoryv1.InventoryService_RecordItems_FullMethodName, authz.ReasonMethodNotAllowed},
		{noRoles, inventoryv1.InventoryService_RecordItems_FullMethodName, authz.ReasonMethodNotAllowed},
		{order, inventoryv1.InventoryService_RecordItems_FullMethodName, authz.ReasonUserRequired},

		// Payment's "*" rule: the operator only, for methods without a rule.
		{operator, paymentv1.PaymentService_OpenAccount_FullMethodName, allowed},
		{operator, paymentv1.PaymentService_ListLedgerEntries_FullMethodName, allowed},
		{order, paymentv1.PaymentService_OpenAccount_FullMethodName, authz.ReasonMethodNotAllowed},
		{customer, paymentv1.PaymentService_ListLedgerEntries_FullMethodName, authz.ReasonMethodNotAllowed},

		// A method's own rule replaces "*": the operator may not refund.
		{operator, paymentv1.PaymentService_Refund_FullMethodName, authz.ReasonUserRequired},
		{support, paymentv1.PaymentService_Refund_FullMethodName, allowed},
		{customer, paymentv1.PaymentService_Refund_FullMethodName, authz.ReasonMethodNotAllowed},
		{customer, paymentv1.PaymentService_GetAccount_FullMethodName, allowed},
		{support, paymentv1.PaymentService_GetAccount_FullMethodName, allowed},
		{admin, paymentv1.PaymentService_GetAccount_FullMethodName, authz.ReasonMethodNotAllowed},

		// No verified calling service: denied, public methods included.
		{nobody, inventoryv1.InventoryService_ListItems_FullMethodName, authz.ReasonServiceRequired},
		{nobody, inventoryv1.InventoryService_Reserve_FullMethodName, authz.ReasonServiceRequired},
		{orphan, inventoryv1.InventoryService_GetItem_FullMethodName, authz.ReasonServiceRequired},
		{caller{service: ""}, paymentv1.PaymentService_Authorize_FullMethodName, authz.ReasonServiceRequired},

		// Methods no policy covers.
		{order, "/switchboard.order.v1.OrderService/PlaceOrder", authz.ReasonMethodUnknown},
		{order, "/switchboard.inventory.v1.InventoryService/DeleteEverything", authz.ReasonMethodUnknown},
		{operator, "/grpc.health.v1.Health/Check", authz.ReasonMethodUnknown},
		{order, "", authz.ReasonMethodUnknown},

		// Server reflection: the operator only, by default.
		{operator, reflectionV1, allowed},
		{operator, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", allowed},
		{operator, "/grpc.reflection.v2.ServerReflection/ServerReflectionInfo", allowed},
		{gateway, reflectionV1, authz.ReasonMethodNotAllowed},
		{customer, reflectionV1, authz.ReasonMethodNotAllowed},
	}
	for _, tt := range tests {
		ctx := tt.caller.context(t.Context())
		err := a.Authorize(ctx, server.Call{FullMethod: tt.method})
		if got := reasonOf(t, err); got != tt.want {
			t.Errorf("Authorize(%v, %s) = %v, want reason %q", tt.caller, tt.method, err, tt.want)
		}
	}
}

func TestAuthorizeErrorDetails(t *testing.T) {
	a := shopAuthorizer(t)
	ctx := gateway.context(t.Context())
	err := a.Authorize(ctx, server.Call{FullMethod: inventoryv1.InventoryService_Reserve_FullMethodName})
	st, ok := grpcstatus.FromError(err)
	if !ok {
		t.Fatalf("Authorize = %v, want a status error", err)
	}
	if got, want := st.Code(), codes.PermissionDenied; got != want {
		t.Errorf("code = %v, want %v", got, want)
	}
	if got, want := st.Message(), `service "gateway" may not call `+inventoryv1.InventoryService_Reserve_FullMethodName; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	info := status.Info(err)
	if got, want := info.GetReason(), authz.ReasonMethodNotAllowed; got != want {
		t.Errorf("reason = %q, want %q", got, want)
	}
	if got, want := info.GetDomain(), status.KitDomain; got != want {
		t.Errorf("domain = %q, want %q", got, want)
	}
	if got, want := info.GetMetadata()["method"], inventoryv1.InventoryService_Reserve_FullMethodName; got != want {
		t.Errorf("metadata[method] = %q, want %q", got, want)
	}
}

func TestWithReflection(t *testing.T) {
	tests := []struct {
		rule   authz.Rule
		caller caller
		want   string
	}{
		{authz.Rule{Public: true}, gateway, allowed},
		{authz.Rule{Services: []string{"gateway"}}, gateway, allowed},
		{authz.Rule{Services: []string{"gateway"}}, operator, authz.ReasonMethodNotAllowed},
		{authz.Rule{}, operator, authz.ReasonMethodNotAllowed},
		{authz.Rule{Roles: []string{"admin"}}, admin, allowed},
		{authz.Rule{Roles: []string{"admin"}}, operator, authz.ReasonUserRequired},
	}
	for _, tt := range tests {
		a := shopAuthorizer(t, authz.WithReflection(tt.rule))
		err := a.Authorize(tt.caller.context(t.Context()), server.Call{FullMethod: reflectionV1, ClientStream: true, ServerStream: true})
		if got := reasonOf(t, err); got != tt.want {
			t.Errorf("WithReflection(%+v): Authorize(%v) = %v, want reason %q", tt.rule, tt.caller, err, tt.want)
		}
	}
}

func TestPolicyInGo(t *testing.T) {
	// The policy of testdata/inventory.yaml, written in Go.
	inv := authz.Policy{
		Service: inventoryService,
		Methods: map[string]authz.Rule{
			"GetItem":           {Services: []string{"order"}, Roles: []string{authz.AnyUser}},
			"ListItems":         {Public: true},
			"Subscribe":         {Roles: []string{authz.AnyUser}},
			"RecordItems":       {Services: []string{authz.Operator}, Roles: []string{"admin"}},
			"Reserve":           {Services: []string{"order"}},
			"Release":           {Services: []string{"order"}},
			"CommitReservation": {Services: []string{"order"}},
		},
	}
	fromYAML, err := authz.Load(filepath.Join("testdata", "inventory.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(inv, fromYAML); diff != "" {
		t.Errorf("Load(inventory.yaml) differs from the Go policy (-go +yaml):\n%s", diff)
	}
	a, err := authz.New(inv)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if got, want := a.Services(), []string{inventoryService}; !cmp.Equal(got, want) {
		t.Errorf("Services() = %v, want %v", got, want)
	}
}

func TestNewErrors(t *testing.T) {
	ok := map[string]authz.Rule{"Reserve": {Services: []string{"order"}}}
	tests := []struct {
		name   string
		policy authz.Policy
		more   []authz.Policy
		opts   []authz.Option
		want   string // in the error
	}{
		{"unknown method", authz.Policy{Service: inventoryService, Methods: map[string]authz.Rule{
			"Reserve": {Services: []string{"order"}}, "Teleport": {Services: []string{"order"}},
		}}, nil, nil, `no method "Teleport"`},
		{"full method as key", authz.Policy{Service: inventoryService, Methods: map[string]authz.Rule{
			inventoryv1.InventoryService_Reserve_FullMethodName: {Services: []string{"order"}},
		}}, nil, nil, "no method"},
		{"unknown service", authz.Policy{Service: "switchboard.nothing.v1.Nothing", Methods: ok}, nil, nil, "no such service"},
		{"not a service", authz.Policy{Service: "switchboard.inventory.v1.GetItemRequest", Methods: ok}, nil, nil, "not a service"},
		{"no service", authz.Policy{Methods: ok}, nil, nil, "without a service name"},
		{"no methods", authz.Policy{Service: inventoryService}, nil, nil, "no methods"},
		{"two policies for one service", authz.Policy{Service: inventoryService, Methods: ok},
			[]authz.Policy{{Service: inventoryService, Methods: ok}}, nil, "more than one policy"},
		{"public with services", authz.Policy{Service: inventoryService, Methods: map[string]authz.Rule{
			"GetItem": {Public: true, Services: []string{"order"}},
		}}, nil, nil, "public rule"},
		{"public with roles", authz.Policy{Service: inventoryService, Methods: map[string]authz.Rule{
			"GetItem": {Public: true, Roles: []string{"admin"}},
		}}, nil, nil, "public rule"},
		{"star service", authz.Policy{Service: inventoryService, Methods: map[string]authz.Rule{
			"GetItem": {Services: []string{"*"}},
		}}, nil, nil, "public: true"},
		{"empty service name", authz.Policy{Service: inventoryService, Methods: map[string]authz.Rule{
			"GetItem": {Services: []string{""}},
		}}, nil, nil, "invalid service name"},
		{"empty role", authz.Policy{Service: inventoryService, Methods: map[string]authz.Rule{
			"GetItem": {Roles: []string{" admin"}},
		}}, nil, nil, "invalid role"},
		{"bad reflection rule", authz.Policy{Service: inventoryService, Methods: ok}, nil,
			[]authz.Option{authz.WithReflection(authz.Rule{Public: true, Services: []string{"x"}})}, "reflection rule"},
		{"bad second policy", authz.Policy{Service: inventoryService, Methods: ok},
			[]authz.Policy{{Service: paymentService, Methods: map[string]authz.Rule{"Steal": {}}}}, nil, `no method "Steal"`},
	}
	for _, tt := range tests {
		opts := append([]authz.Option{authz.WithPolicies(tt.more...)}, tt.opts...)
		a, err := authz.New(tt.policy, opts...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New = %v, %v; want an error containing %q", tt.name, a, err, tt.want)
		}
	}
}

func TestNewReportsEveryMistake(t *testing.T) {
	_, err := authz.New(authz.Policy{Service: inventoryService, Methods: map[string]authz.Rule{
		"Teleport": {}, "Reserve": {Services: []string{"*"}},
	}}, authz.WithPolicies(authz.Policy{Service: "switchboard.nothing.v1.Nothing", Methods: map[string]authz.Rule{"X": {}}}))
	if err == nil {
		t.Fatal("New = nil error, want one")
	}
	for _, want := range []string{`no method "Teleport"`, "method Reserve", "switchboard.nothing.v1.Nothing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New error %q does not contain %q", err, want)
		}
	}
}

func TestDenyAllRule(t *testing.T) {
	a, err := authz.New(authz.Policy{Service: inventoryService, Methods: map[string]authz.Rule{
		authz.AnyMethod: {Public: true},
		"Reserve":       {},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		caller caller
		method string
		want   string
	}{
		{order, inventoryv1.InventoryService_Reserve_FullMethodName, authz.ReasonMethodNotAllowed},
		{admin, inventoryv1.InventoryService_Reserve_FullMethodName, authz.ReasonMethodNotAllowed},
		{order, inventoryv1.InventoryService_Release_FullMethodName, allowed},
		{shipping, inventoryv1.InventoryService_Subscribe_FullMethodName, allowed},
	}
	for _, tt := range tests {
		err := a.Authorize(tt.caller.context(t.Context()), server.Call{FullMethod: tt.method})
		if got := reasonOf(t, err); got != tt.want {
			t.Errorf("Authorize(%v, %s) = %v, want reason %q", tt.caller, tt.method, err, tt.want)
		}
	}
}

func TestParse(t *testing.T) {
	got, err := authz.Parse([]byte(`
service: switchboard.inventory.v1.InventoryService
methods:
  GetItem:   {roles: ["*"], services: ["gateway", "order"], public: false}
  Reserve:   {services: [order]}
  ListItems: {public: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := authz.Policy{
		Service: inventoryService,
		Methods: map[string]authz.Rule{
			"GetItem":   {Roles: []string{"*"}, Services: []string{"gateway", "order"}},
			"Reserve":   {Services: []string{"order"}},
			"ListItems": {Public: true},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse mismatch (-want +got):\n%s", diff)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"empty", "", "empty document"},
		{"unknown key", "service: s\nmethods:\n  GetItem: {users: [\"*\"]}\n", "field users not found"},
		{"unknown top-level key", "service: s\nmethod: {}\n", "field method not found"},
		{"duplicate method", "service: s\nmethods:\n  GetItem: {}\n  GetItem: {}\n", "already defined"},
		{"two documents", "service: a\nmethods: {X: {}}\n---\nservice: b\n", "more than one YAML document"},
		{"not yaml", "service: [", "parse policy"},
		{"wrong type", "service: s\nmethods:\n  GetItem: {public: maybe}\n", "parse policy"},
	}
	for _, tt := range tests {
		_, err := authz.Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Parse = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := authz.Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Errorf("Load(missing file) = nil error, want one")
	}
}

func TestAuthorizeDoesNotAllocateOnAllow(t *testing.T) {
	a := shopAuthorizer(t)
	tests := []struct {
		caller caller
		method string
	}{
		{order, inventoryv1.InventoryService_Reserve_FullMethodName},
		{customer, paymentv1.PaymentService_GetAccount_FullMethodName},
		{noRoles, inventoryv1.InventoryService_GetItem_FullMethodName},
		{gateway, inventoryv1.InventoryService_ListItems_FullMethodName},
		{operator, reflectionV1},
	}
	for _, tt := range tests {
		ctx := tt.caller.context(t.Context())
		call := server.Call{FullMethod: tt.method}
		var err error
		allocs := testing.AllocsPerRun(100, func() { err = a.Authorize(ctx, call) })
		if err != nil {
			t.Fatalf("Authorize(%v, %s) = %v, want nil", tt.caller, tt.method, err)
		}
		if allocs != 0 {
			t.Errorf("Authorize(%v, %s) allocates %v times, want 0", tt.caller, tt.method, allocs)
		}
	}
}

func BenchmarkAuthorize(b *testing.B) {
	a := shopAuthorizer(b)
	benchmarks := []struct {
		name   string
		caller caller
		method string
	}{
		{"service", order, inventoryv1.InventoryService_Reserve_FullMethodName},
		{"user role", support, paymentv1.PaymentService_GetAccount_FullMethodName},
		{"denied", gateway, inventoryv1.InventoryService_Reserve_FullMethodName},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			ctx := bm.caller.context(b.Context())
			call := server.Call{FullMethod: bm.method}
			b.ReportAllocs()
			for b.Loop() {
				_ = a.Authorize(ctx, call)
			}
		})
	}
}
