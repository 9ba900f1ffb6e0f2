package canary_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/discovery"
	"github.com/switchboard-rpc/switchboard/kit/discovery/canary"
	"github.com/switchboard-rpc/switchboard/kit/discovery/static"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fleet is greeter replicas labelled with versions, counting calls by
// version; each answer names the version that served it.
type fleet struct {
	servers map[string]*server.Server // by address
	eps     []discovery.Endpoint
	calls   map[string]*atomic.Int64 // by version
}

func startFleet(t *testing.T, versions ...string) *fleet {
	t.Helper()
	f := &fleet{servers: map[string]*server.Server{}, calls: map[string]*atomic.Int64{}}
	for _, v := range versions {
		if f.calls[v] == nil {
			f.calls[v] = &atomic.Int64{}
		}
		n := f.calls[v]
		srv, addr := greetertest.Start(t, &greetertest.Fake{
			SayHelloFunc: func(context.Context, *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
				n.Add(1)
				return &greeterv1.SayHelloResponse{Message: v}, nil
			},
		})
		f.servers[addr] = srv
		f.eps = append(f.eps, discovery.Endpoint{Service: "greeter", Addr: addr, Version: v})
	}
	return f
}

// dial connects to the fleet through the canary balancer reading table,
// with kit/client's health checking.
func (f *fleet) dial(t *testing.T, table string) greeterv1.GreeterClient {
	t.Helper()
	b := static.NewBuilder(map[string][]discovery.Endpoint{"greeter": f.eps})
	sc := `{"loadBalancingConfig":[` + canary.LoadBalancingConfig(table, "") + `],"healthCheckConfig":{"serviceName":""}}`
	conn, err := client.Dial("static:///greeter", client.WithInsecure(), client.WithServiceConfig(sc),
		client.WithDialOptions(grpc.WithResolvers(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return greeterv1.NewGreeterClient(conn)
}

// publish publishes a table under the test's name.
func publish(t *testing.T, doc string) (*canary.Table, string) {
	t.Helper()
	p, err := canary.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tab := canary.NewTable(p, nil)
	t.Cleanup(canary.Publish(t.Name(), tab))
	return tab, t.Name()
}

// hello makes a call and returns the version that answered it.
func hello(ctx context.Context, t *testing.T, c greeterv1.GreeterClient) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ada"}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("SayHello: %v", err)
	}
	return resp.GetMessage()
}

// warm waits until every replica is READY: calls reach each version.
func warm(t *testing.T, c greeterv1.GreeterClient, versions ...string) {
	t.Helper()
	for _, v := range versions {
		ctx := metadata.AppendToOutgoingContext(t.Context(), canary.OverrideHeader, v)
		deadline := time.Now().Add(10 * time.Second)
		for hello(ctx, t, c) != v {
			if time.Now().After(deadline) {
				t.Fatalf("version %s never answered", v)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestWeightedSplitWithDistinctKeys(t *testing.T) {
	f := startFleet(t, "v1", "v1", "v2")
	_, table := publish(t, "greeter: {v1: 80, v2: 20}")
	c := f.dial(t, table)
	warm(t, c, "v1", "v2")
	const n, workers = 10_000, 8
	var v1, v2 atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				ctx, cancel := context.WithTimeout(canary.WithKey(t.Context(), fmt.Sprintf("user-%d", i)), 10*time.Second)
				resp, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ada"})
				cancel()
				if err != nil {
					errs <- err
					return
				}
				if resp.GetMessage() == "v2" {
					v2.Add(1)
				} else {
					v1.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("SayHello: %v", err)
	}
	got := map[string]int64{"v1": v1.Load(), "v2": v2.Load()}
	share := float64(got["v2"]) / n * 100
	if share < 17 || share > 23 {
		t.Errorf("v2 got %.1f%% of %d calls (%v), want 20 ± 3", share, n, got)
	}
}

func TestSameKeySameVersion(t *testing.T) {
	f := startFleet(t, "v1", "v2")
	_, table := publish(t, "greeter: {v1: 50, v2: 50}")
	c := f.dial(t, table)
	warm(t, c, "v1", "v2")
	seen := map[string]int{}
	for k := range 40 {
		key := fmt.Sprintf("user-%d", k)
		first := ""
		for i := range 10 {
			// The key through WithKey, through the header and as the
			// verified user the call is made for must agree.
			ctx := canary.WithKey(t.Context(), key)
			switch i % 3 {
			case 1:
				ctx = metadata.AppendToOutgoingContext(t.Context(), canary.KeyHeader, key)
			case 2:
				ctx = identity.WithUser(t.Context(), &identity.User{ID: key})
			}
			v := hello(ctx, t, c)
			if first == "" {
				first = v
				seen[v]++
			} else if v != first {
				t.Fatalf("key %s: call %d went to %s, first went to %s", key, i, v, first)
			}
		}
	}
	if seen["v1"] == 0 || seen["v2"] == 0 {
		t.Errorf("40 keys at 50/50 split %v, want both versions used", seen)
	}
}

func TestOverrideHeaderWins(t *testing.T) {
	f := startFleet(t, "v1", "v2")
	_, table := publish(t, "greeter: {v1: 100, v2: 0}")
	c := f.dial(t, table)
	warm(t, c, "v1", "v2")
	tests := []struct {
		override, want string
	}{
		{"", "v1"},
		{"v2", "v2"},
		{"v1", "v1"},
		{"v9", "v1"}, // no such version: the policy decides
	}
	for _, tc := range tests {
		for i := range 20 {
			ctx := canary.WithKey(t.Context(), fmt.Sprintf("user-%d", i))
			if tc.override != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, canary.OverrideHeader, tc.override)
			}
			if got := hello(ctx, t, c); got != tc.want {
				t.Errorf("with x-canary %q: call went to %s, want %s", tc.override, got, tc.want)
			}
		}
	}
}

func TestFallbackWhenVersionHasNoReadyReplica(t *testing.T) {
	f := startFleet(t, "v1", "v2")
	_, table := publish(t, "greeter: {v2: 100, v1: 1}")
	c := f.dial(t, table)
	warm(t, c, "v1", "v2")
	if got := hello(t.Context(), t, c); got != "v2" {
		t.Fatalf("with v2 serving, call went to %s, want v2", got)
	}
	for addr, srv := range f.servers {
		for _, e := range f.eps {
			if e.Addr == addr && e.Version == "v2" {
				srv.SetServing("", false)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for hello(t.Context(), t, c) != "v1" {
		if time.Now().After(deadline) {
			t.Fatal("calls never fell back to v1")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range 50 {
		if got := hello(canary.WithKey(t.Context(), fmt.Sprint(i)), t, c); got != "v1" {
			t.Errorf("v2 NOT_SERVING: call went to %s, want v1", got)
		}
	}
}

func TestNoPolicyRoundRobinsOverAll(t *testing.T) {
	f := startFleet(t, "v1", "v2")
	c := f.dial(t, "table that is never published")
	warm(t, c, "v1", "v2")
	got := map[string]int{}
	for range 40 {
		got[hello(t.Context(), t, c)]++
	}
	if got["v1"] != 20 || got["v2"] != 20 {
		t.Errorf("without a policy, 40 calls split %v, want 20 and 20", got)
	}
}

func TestFilePolicyReloads(t *testing.T) {
	f := startFleet(t, "v1", "v2")
	path := filepath.Join(t.TempDir(), "canary.yaml")
	if err := os.WriteFile(path, []byte("greeter: {v1: 100}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tab := canary.NewTable(nil, nil)
	t.Cleanup(canary.Publish(t.Name(), tab))
	ctx, cancel := context.WithCancel(t.Context())
	followed := make(chan error, 1)
	go func() { followed <- tab.Follow(ctx, canary.FileSource(path, 100*time.Millisecond)) }()
	defer func() {
		cancel()
		if err := <-followed; !errors.Is(err, context.Canceled) {
			t.Errorf("Follow returned %v after its context ended, want context.Canceled", err)
		}
	}()
	c := f.dial(t, t.Name())
	warm(t, c, "v1", "v2")
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			all := true
			for i := range 20 {
				if hello(canary.WithKey(t.Context(), fmt.Sprint(i)), t, c) != want {
					all = false
				}
			}
			if all {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("calls never all went to %s", want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("v1")
	if err := os.WriteFile(path, []byte("greeter:\n  v1: 0\n  v2: 100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("v2")
	// A broken document keeps the last good policy.
	if err := os.WriteFile(path, []byte("greeter: [not, weights]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := tab.Policies().String(); got != "greeter{v1:0 v2:100}" {
		t.Errorf("policies after a broken document = %q, want greeter{v1:0 v2:100}", got)
	}
	waitFor("v2")
}

func TestInterceptorReportsVersion(t *testing.T) {
	f := startFleet(t, "v1", "v2")
	_, table := publish(t, "greeter: {v1: 50, v2: 50}")
	var reported atomic.Value
	b := static.NewBuilder(map[string][]discovery.Endpoint{"greeter": f.eps})
	conn, err := client.Dial("static:///greeter", client.WithInsecure(),
		client.WithServiceConfig(`{"loadBalancingConfig":[`+canary.LoadBalancingConfig(table, "greeter")+`]}`),
		client.WithUnaryInterceptors(canary.UnaryInterceptor(func(_ context.Context, _, version string, _ error) {
			reported.Store(version)
		})),
		client.WithDialOptions(grpc.WithResolvers(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c := greeterv1.NewGreeterClient(conn)
	warm(t, c, "v1", "v2")
	for i := range 20 {
		got := hello(canary.WithKey(t.Context(), fmt.Sprint(i)), t, c)
		if r, _ := reported.Load().(string); r != got {
			t.Errorf("call %d: interceptor reported %q, served by %q", i, r, got)
		}
	}
}
