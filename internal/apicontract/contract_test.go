package apicontract

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/switchboard-rpc/switchboard/gen/switchboard/audit/v1"
	_ "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	_ "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	_ "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	_ "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	_ "github.com/switchboard-rpc/switchboard/gen/switchboard/notify/v1"
	_ "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	_ "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	_ "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
)

// kind is the streaming shape of a method.
type kind string

const (
	unary        kind = "unary"
	serverStream kind = "server stream"
	clientStream kind = "client stream"
	bidi         kind = "bidi stream"
)

var services = map[string]map[string]kind{
	"switchboard.identity.v1.IdentityService": {
		"Register": unary, "Login": unary, "Refresh": unary, "RevokeToken": unary,
		"GetUser": unary, "GetJwks": unary,
	},
	"switchboard.inventory.v1.InventoryService": {
		"GetItem": unary, "ListItems": serverStream, "RecordItems": clientStream,
		"Subscribe": bidi, "Reserve": unary, "Release": unary, "CommitReservation": unary,
	},
	"switchboard.payment.v1.PaymentService": {
		"OpenAccount": unary, "GetAccount": unary, "Authorize": unary, "Capture": unary,
		"Void": unary, "Refund": unary, "ListLedgerEntries": serverStream,
	},
	"switchboard.order.v1.OrderService": {
		"PlaceOrder": unary, "GetOrder": unary, "ListOrders": unary, "CancelOrder": unary,
		"WatchOrder": serverStream,
	},
	"switchboard.shipping.v1.ShippingService": {
		"CreateShipment": unary, "CancelShipment": unary, "GetShipment": unary, "Track": serverStream,
	},
	"switchboard.notify.v1.NotifyService": {"ListNotifications": unary},
	"switchboard.audit.v1.AuditService":   {"Query": unary, "Tail": serverStream, "Verify": unary},
	"switchboard.greeter.v1.Greeter": {
		"SayHello": unary, "StreamGreetings": serverStream, "CollectNames": clientStream, "Chat": bidi,
	},
}

func kindOf(m protoreflect.MethodDescriptor) kind {
	switch {
	case m.IsStreamingClient() && m.IsStreamingServer():
		return bidi
	case m.IsStreamingClient():
		return clientStream
	case m.IsStreamingServer():
		return serverStream
	}
	return unary
}

func TestServicesAndMethods(t *testing.T) {
	for svc, methods := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
		if err != nil {
			t.Errorf("service %s: %v", svc, err)
			continue
		}
		sd := d.(protoreflect.ServiceDescriptor)
		got := map[string]kind{}
		for i := 0; i < sd.Methods().Len(); i++ {
			m := sd.Methods().Get(i)
			got[string(m.Name())] = kindOf(m)
		}
		for name, want := range methods {
			if got[name] != want {
				t.Errorf("%s/%s is %q, want %q", svc, name, got[name], want)
			}
		}
		for name := range got {
			if _, ok := methods[name]; !ok {
				t.Errorf("%s/%s is not pinned here: add it to the table", svc, name)
			}
		}
	}
}

// Mutating RPCs a client may retry carry an idempotency key, or are keyed by
// the id of what they act on.
func TestMutatingRequestsAreKeyed(t *testing.T) {
	keyed := map[string]string{
		"switchboard.identity.v1.RegisterRequest":           "idempotency_key",
		"switchboard.payment.v1.OpenAccountRequest":         "idempotency_key",
		"switchboard.payment.v1.AuthorizeRequest":           "idempotency_key",
		"switchboard.payment.v1.CaptureRequest":             "idempotency_key",
		"switchboard.payment.v1.VoidRequest":                "idempotency_key",
		"switchboard.payment.v1.RefundRequest":              "idempotency_key",
		"switchboard.order.v1.PlaceOrderRequest":            "idempotency_key",
		"switchboard.order.v1.CancelOrderRequest":           "order_id",
		"switchboard.inventory.v1.ReserveRequest":           "order_id",
		"switchboard.inventory.v1.ReleaseRequest":           "order_id",
		"switchboard.inventory.v1.CommitReservationRequest": "order_id",
		"switchboard.shipping.v1.CreateShipmentRequest":     "order_id",
		"switchboard.shipping.v1.CancelShipmentRequest":     "shipment_id",
	}
	for msg, field := range keyed {
		md := findMessage(t, msg)
		if md == nil {
			continue
		}
		if md.Fields().ByName(protoreflect.Name(field)) == nil {
			t.Errorf("%s has no %s field", msg, field)
		}
	}
}

func TestEventsExist(t *testing.T) {
	events := []string{
		"Envelope", "UserRegistered", "StockChanged", "StockReserved", "StockReleased",
		"ReservationCommitted", "AccountOpened", "PaymentAuthorized", "PaymentCaptured",
		"PaymentVoided", "PaymentRefunded", "OrderPlaced", "OrderConfirmed", "OrderCancelled",
		"OrderStatusChanged", "ShipmentCreated", "ShipmentStatusChanged", "ShipmentCancelled",
		"NotificationSent",
	}
	for _, e := range events {
		findMessage(t, "switchboard.events.v1."+e)
	}
	env := findMessage(t, "switchboard.events.v1.Envelope")
	if env == nil {
		return
	}
	for _, f := range []string{"id", "type", "source", "subject", "time", "traceparent", "tracestate", "payload"} {
		if env.Fields().ByName(protoreflect.Name(f)) == nil {
			t.Errorf("Envelope has no %s field", f)
		}
	}
}

func findMessage(t *testing.T, name string) protoreflect.MessageDescriptor {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		t.Errorf("message %s: %v", name, err)
		return nil
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		t.Errorf("%s is a %T, want a message", name, d)
		return nil
	}
	return md
}

// The gateway's routes are part of the public API.
func TestHTTPRules(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "proto", "switchboard", "http.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rule := regexp.MustCompile(`(?m)^\s*-?\s*(get|post|put|patch|delete):\s*(\S+)`)
	var got []string
	for _, m := range rule.FindAllStringSubmatch(string(raw), -1) {
		got = append(got, strings.ToUpper(m[1])+" "+m[2])
	}
	sort.Strings(got)
	want := []string{
		"GET /v1/items", "GET /v1/items/{item_id}",
		"GET /v1/orders", "GET /v1/orders/{order_id}", "GET /v1/orders/{order_id}:watch",
		"GET /v1/shipments/{shipment_id}:track",
		"POST /v1/orders", "POST /v1/orders/{order_id}:cancel",
		"POST /v1/sessions", "POST /v1/users",
	}
	have := map[string]bool{}
	for _, g := range got {
		have[g] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("http.yaml lacks the route %q (has %q)", w, got)
		}
	}
}
