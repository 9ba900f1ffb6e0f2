package gateway

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	auditv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/audit/v1"
	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	notifyv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/notify/v1"
	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
)

// upstream is a service the gateway fronts: its name in the system (and
// in its certificate), its gRPC service and how its generated HTTP
// handlers are registered over a connection.
type upstream struct {
	name     string
	service  string // full gRPC service name
	register func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error
}

// upstreams lists every service with HTTP rules in
// proto/switchboard/http.yaml. A service of this list that the Config does
// not name gets its routes all the same, answering UNAVAILABLE.
var upstreams = []upstream{
	{"identity", identityv1.IdentityService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return identityv1.RegisterIdentityServiceHandlerClient(ctx, mux, identityv1.NewIdentityServiceClient(cc))
	}},
	{"inventory", inventoryv1.InventoryService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return inventoryv1.RegisterInventoryServiceHandlerClient(ctx, mux, inventoryv1.NewInventoryServiceClient(cc))
	}},
	{"payment", paymentv1.PaymentService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return paymentv1.RegisterPaymentServiceHandlerClient(ctx, mux, paymentv1.NewPaymentServiceClient(cc))
	}},
	{"order", orderv1.OrderService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return orderv1.RegisterOrderServiceHandlerClient(ctx, mux, orderv1.NewOrderServiceClient(cc))
	}},
	{"shipping", shippingv1.ShippingService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return shippingv1.RegisterShippingServiceHandlerClient(ctx, mux, shippingv1.NewShippingServiceClient(cc))
	}},
	{"notify", notifyv1.NotifyService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return notifyv1.RegisterNotifyServiceHandlerClient(ctx, mux, notifyv1.NewNotifyServiceClient(cc))
	}},
	{"audit", auditv1.AuditService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return auditv1.RegisterAuditServiceHandlerClient(ctx, mux, auditv1.NewAuditServiceClient(cc))
	}},
	{"greeter", greeterv1.Greeter_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return greeterv1.RegisterGreeterHandlerClient(ctx, mux, greeterv1.NewGreeterClient(cc))
	}},
}

// Upstreams returns the names of the services the gateway fronts, in a
// stable order: those Config.Services may name.
func Upstreams() []string {
	names := make([]string, len(upstreams))
	for i, u := range upstreams {
		names[i] = u.name
	}
	return names
}

// route is one HTTP rule of proto/switchboard/http.yaml, with what the
// gateway does before forwarding it.
type route struct {
	method string // HTTP method
	path   string // path template, as in http.yaml
	rpc    string // full gRPC method, "/package.Service/Method"
	// public routes need no access token: the gateway neither verifies
	// nor forwards one, and limits them by client address.
	public bool
	// stream is set from the method's descriptor: the server streams.
	stream bool
	// key is the route as runtime.HTTPPattern prints it, with the method:
	// "GET /v1/orders/{order_id=*}:watch".
	key string
}

// routeTable lists the HTTP rules of proto/switchboard/http.yaml. A test
// checks it against the generated OpenAPI document, so a rule added there
// without a line here fails the build's tests; a route missing here all
// the same needs a token (see routeFor).
var routeTable = []route{
	{method: http.MethodPost, path: "/v1/users", rpc: "/switchboard.identity.v1.IdentityService/Register", public: true},
	{method: http.MethodPost, path: "/v1/sessions", rpc: "/switchboard.identity.v1.IdentityService/Login", public: true},
	{method: http.MethodPost, path: "/v1/sessions:refresh", rpc: "/switchboard.identity.v1.IdentityService/Refresh", public: true},
	{method: http.MethodPost, path: "/v1/sessions:revoke", rpc: "/switchboard.identity.v1.IdentityService/RevokeToken"},
	{method: http.MethodGet, path: "/v1/users/{user_id}", rpc: "/switchboard.identity.v1.IdentityService/GetUser"},
	{method: http.MethodGet, path: "/v1/jwks", rpc: "/switchboard.identity.v1.IdentityService/GetJwks", public: true},
	{method: http.MethodGet, path: "/v1/items", rpc: "/switchboard.inventory.v1.InventoryService/ListItems", public: true},
	{method: http.MethodGet, path: "/v1/items/{item_id}", rpc: "/switchboard.inventory.v1.InventoryService/GetItem", public: true},
	{method: http.MethodGet, path: "/v1/accounts/{account_id}", rpc: "/switchboard.payment.v1.PaymentService/GetAccount"},
	{method: http.MethodGet, path: "/v1/accounts/{account_id}/entries", rpc: "/switchboard.payment.v1.PaymentService/ListLedgerEntries"},
	{method: http.MethodPost, path: "/v1/orders", rpc: "/switchboard.order.v1.OrderService/PlaceOrder"},
	{method: http.MethodGet, path: "/v1/orders", rpc: "/switchboard.order.v1.OrderService/ListOrders"},
	{method: http.MethodGet, path: "/v1/orders/{order_id}", rpc: "/switchboard.order.v1.OrderService/GetOrder"},
	{method: http.MethodPost, path: "/v1/orders/{order_id}:cancel", rpc: "/switchboard.order.v1.OrderService/CancelOrder"},
	{method: http.MethodGet, path: "/v1/orders/{order_id}:watch", rpc: "/switchboard.order.v1.OrderService/WatchOrder"},
	{method: http.MethodGet, path: "/v1/shipments/{shipment_id}", rpc: "/switchboard.shipping.v1.ShippingService/GetShipment"},
	{method: http.MethodGet, path: "/v1/shipments/{shipment_id}:track", rpc: "/switchboard.shipping.v1.ShippingService/Track"},
	{method: http.MethodGet, path: "/v1/notifications", rpc: "/switchboard.notify.v1.NotifyService/ListNotifications"},
	{method: http.MethodGet, path: "/v1/audit/records", rpc: "/switchboard.audit.v1.AuditService/Query"},
	{method: http.MethodPost, path: "/v1/audit:verify", rpc: "/switchboard.audit.v1.AuditService/Verify"},
	{method: http.MethodGet, path: "/v1/hello/{name}", rpc: "/switchboard.greeter.v1.Greeter/SayHello"},
}

// routes indexes routeTable by key, with stream and key filled in.
type routes struct {
	byKey map[string]*route
	all   []*route
}

// newRoutes checks routeTable against the registered descriptors and
// indexes it.
func newRoutes() (*routes, error) {
	rs := &routes{byKey: make(map[string]*route, len(routeTable))}
	for i := range routeTable {
		r := routeTable[i] // a copy: the table stays as written
		md, err := methodDescriptor(r.rpc)
		if err != nil {
			return nil, fmt.Errorf("gateway: route %s %s: %w", r.method, r.path, err)
		}
		r.stream = md.IsStreamingServer()
		r.key = r.method + " " + patternString(r.path)
		if _, dup := rs.byKey[r.key]; dup {
			return nil, fmt.Errorf("gateway: route %s %s listed twice", r.method, r.path)
		}
		rs.byKey[r.key] = &r
		rs.all = append(rs.all, &r)
	}
	return rs, nil
}

// find returns the route the mux matched for r, from the pattern it puts
// in the request context.
func (rs *routes) find(r *http.Request) (*route, bool) {
	pat, ok := runtime.HTTPPattern(r.Context())
	if !ok {
		return nil, false
	}
	rt, ok := rs.byKey[r.Method+" "+pat.String()]
	return rt, ok
}

// allowed returns the methods of the routes whose template matches path,
// for the Allow header of a 405.
func (rs *routes) allowed(path string) []string {
	var out []string
	for _, r := range rs.all {
		if templateMatches(r.path, path) && !slices.Contains(out, r.method) {
			out = append(out, r.method)
		}
	}
	slices.Sort(out)
	return out
}

// methods returns every method of the table, for CORS.
func (rs *routes) methods() []string {
	var out []string
	for _, r := range rs.all {
		if !slices.Contains(out, r.method) {
			out = append(out, r.method)
		}
	}
	slices.Sort(out)
	return out
}

// patternString returns the form runtime.Pattern.String gives a template
// of http.yaml: each variable {name} becomes {name=*}. The templates of
// this API use only literal segments, single-segment variables and a verb.
func patternString(template string) string {
	var b strings.Builder
	for i := 0; i < len(template); i++ {
		c := template[i]
		if c == '}' && !strings.Contains(template[strings.LastIndexByte(template[:i], '{'):i], "=") {
			b.WriteString("=*")
		}
		b.WriteByte(c)
	}
	return b.String()
}

// templateMatches reports whether path matches template, where a variable
// {name} matches one non-empty segment and a trailing ":verb" must match
// exactly.
func templateMatches(template, path string) bool {
	tsegs := strings.Split(strings.TrimPrefix(template, "/"), "/")
	psegs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(tsegs) != len(psegs) {
		return false
	}
	last := len(tsegs) - 1
	if tlast, verb, ok := strings.Cut(tsegs[last], ":"); ok {
		i := strings.LastIndexByte(psegs[last], ':')
		if i < 0 || psegs[last][i+1:] != verb {
			return false
		}
		tsegs[last], psegs[last] = tlast, psegs[last][:i]
	}
	for i, t := range tsegs {
		if strings.HasPrefix(t, "{") {
			if psegs[i] == "" {
				return false
			}
			continue
		}
		if t != psegs[i] {
			return false
		}
	}
	return true
}

// methodDescriptor finds a method, "/package.Service/Method", among the
// registered descriptors.
func methodDescriptor(full string) (protoreflect.MethodDescriptor, error) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	if !ok {
		return nil, fmt.Errorf("%q is not /package.Service/Method", full)
	}
	sd, err := serviceDescriptor(svc)
	if err != nil {
		return nil, err
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, fmt.Errorf("service %s has no method %s", svc, method)
	}
	return md, nil
}

// serviceDescriptor finds a registered service by its full name.
func serviceDescriptor(name string) (protoreflect.ServiceDescriptor, error) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", name, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a service", name)
	}
	return sd, nil
}
