package discovery_test

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/resolver"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/discovery"
	"github.com/switchboard-rpc/switchboard/services/greeter"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestDNSTargetWithKitDefaults dials a replica the way a pod reaches a
// Kubernetes headless Service, through grpc's dns resolver, with kit/client's
// default service config (round_robin, health checking, retries).
func TestDNSTargetWithKitDefaults(t *testing.T) {
	_, addr := greetertest.Start(t, &greeter.Service{})
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial("dns:///localhost:"+port, client.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := greeterv1.NewGreeterClient(conn).SayHello(ctx, &greeterv1.SayHelloRequest{Name: "Ada"})
	if err != nil {
		t.Fatalf("SayHello via dns:///localhost:%s: %v", port, err)
	}
	if resp.GetMessage() == "" {
		t.Error("SayHello answered an empty message")
	}
}

func TestServiceFromTarget(t *testing.T) {
	tests := []struct{ target, want string }{
		{"etcd:///inventory", "inventory"},
		{"static:///inventory?addrs=127.0.0.1:1", "inventory"},
		{"dns:///inventory.shop.svc.cluster.local:7102", "inventory"},
		{"dns:///inventory:7102", "inventory"},
		{"dns://8.8.8.8/order.shop.svc:7104", "order"},
		{"passthrough:///127.0.0.1:7102", "127.0.0.1"},
	}
	for _, tc := range tests {
		u, err := url.Parse(tc.target)
		if err != nil {
			t.Fatal(err)
		}
		if got := discovery.ServiceFromTarget(resolver.Target{URL: *u}); got != tc.want {
			t.Errorf("ServiceFromTarget(%q) = %q, want %q", tc.target, got, tc.want)
		}
	}
}

func TestAttributesRoundTrip(t *testing.T) {
	eps := []discovery.Endpoint{
		{Service: "inventory", Addr: "127.0.0.1:7102", Version: "v1", Zone: "a", Weight: 2, Metadata: map[string]string{"k": "v"}},
		{Service: "inventory", Addr: "127.0.0.1:7112", Version: "v2"},
	}
	st := discovery.ResolverState(eps)
	if len(st.Endpoints) != len(eps) {
		t.Fatalf("ResolverState gave %d endpoints, want %d", len(st.Endpoints), len(eps))
	}
	for i, ep := range st.Endpoints {
		got, ok := discovery.FromAttributes(ep.Attributes)
		if !ok || !got.Equal(eps[i]) {
			t.Errorf("FromAttributes(endpoint %d) = %+v, %v; want %+v", i, got, ok, eps[i])
		}
		if ep.Addresses[0].Addr != eps[i].Addr {
			t.Errorf("endpoint %d address = %s, want %s", i, ep.Addresses[0].Addr, eps[i].Addr)
		}
	}
	if !st.Endpoints[0].Attributes.Equal(discovery.WithEndpoint(nil, eps[0])) {
		t.Error("attributes of equal endpoints are not Equal")
	}
	if _, ok := discovery.FromAttributes(nil); ok {
		t.Error("FromAttributes(nil) reported an endpoint")
	}
}

func TestValidate(t *testing.T) {
	good := discovery.Endpoint{Service: "inventory", Addr: "10.0.0.1:7102", Version: "v1", Weight: discovery.MaxWeight}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v, want nil", good, err)
	}
	bad := []discovery.Endpoint{
		{Service: "", Addr: "10.0.0.1:1"},
		{Service: "in_ventory", Addr: "10.0.0.1:1"},
		{Service: "inventory", Addr: "10.0.0.1"},
		{Service: "inventory", Addr: "10.0.0.1:1", Zone: "a\nb"},
		{Service: "inventory", Addr: "10.0.0.1:1", Metadata: map[string]string{"": "x"}},
	}
	for _, e := range bad {
		if err := e.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", e)
		}
	}
}
