package ratelimit_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/google/go-cmp/cmp"

	_ "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1" // registers the inventory service
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	getItem = "/switchboard.inventory.v1.InventoryService/GetItem"
	reserve = "/switchboard.inventory.v1.InventoryService/Reserve"
	release = "/switchboard.inventory.v1.InventoryService/Release"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ now atomic.Int64 }

func (c *fakeClock) since() time.Duration    { return time.Duration(c.now.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.now.Add(int64(d)) }

func newLimiter(t testing.TB, limits ratelimit.Limits, opts ...ratelimit.Option) (*ratelimit.Limiter, *fakeClock) {
	t.Helper()
	clock := &fakeClock{}
	l, err := ratelimit.New(limits, append([]ratelimit.Option{ratelimit.WithClock(clock.since)}, opts...)...)
	if err != nil {
		t.Fatalf("New(%+v) = %v", limits, err)
	}
	return l, clock
}

func userCtx(ctx context.Context, id string) context.Context {
	return identity.WithUser(ctx, &identity.User{ID: id})
}

func serviceCtx(ctx context.Context, name string) context.Context {
	return identity.WithService(ctx, &identity.Service{Name: name})
}

func peerCtx(ctx context.Context, addr string) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr))})
}

// checkExhausted fails unless err is RESOURCE_EXHAUSTED with reason
// RATE_LIMITED in the kit's domain, and returns its retry delay.
func checkExhausted(t *testing.T, err error) time.Duration {
	t.Helper()
	if got := grpcstatus.Code(err); got != codes.ResourceExhausted {
		t.Fatalf("code = %v, want ResourceExhausted (err %v)", got, err)
	}
	info := status.Info(err)
	if got, want := info.GetReason(), ratelimit.ReasonRateLimited; got != want {
		t.Errorf("reason = %q, want %q", got, want)
	}
	if got, want := info.GetDomain(), status.KitDomain; got != want {
		t.Errorf("domain = %q, want %q", got, want)
	}
	d, ok := status.RetryDelay(err)
	if !ok {
		t.Fatalf("RetryDelay(%v) = _, false, want a RetryInfo", err)
	}
	return d
}

func TestBurstThenExhausted(t *testing.T) {
	tests := []struct {
		name   string
		limits ratelimit.Limits
		burst  int           // calls admitted at once
		retry  time.Duration // RetryInfo delay of the next call
	}{
		{"method 10/s burst 3", ratelimit.Limits{Default: ratelimit.Limit{Rate: 10, Burst: 3}}, 3, 100 * time.Millisecond},
		{"method 2/s default burst", ratelimit.Limits{Default: ratelimit.Limit{Rate: 2}}, 2, 500 * time.Millisecond},
		{"method 0.5/s default burst", ratelimit.Limits{Default: ratelimit.Limit{Rate: 0.5}}, 1, 2 * time.Second},
		{"caller 4/s burst 5", ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 4, Burst: 5}}, 5, 250 * time.Millisecond},
		{"caller tighter than method", ratelimit.Limits{
			Default:     ratelimit.Limit{Rate: 100, Burst: 100},
			PerIdentity: ratelimit.Limit{Rate: 1, Burst: 2},
		}, 2, time.Second},
		{"method tighter than caller", ratelimit.Limits{
			Default:     ratelimit.Limit{Rate: 1, Burst: 2},
			PerIdentity: ratelimit.Limit{Rate: 100, Burst: 100},
		}, 2, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, clock := newLimiter(t, tt.limits)
			ctx := userCtx(t.Context(), "u-1")
			call := server.Call{FullMethod: getItem}
			for i := range tt.burst {
				if err := l.Limit(ctx, call); err != nil {
					t.Fatalf("call %d: Limit = %v, want nil", i+1, err)
				}
			}
			err := l.Limit(ctx, call)
			if got := checkExhausted(t, err); got != tt.retry {
				t.Errorf("RetryDelay after %d calls = %v, want %v", tt.burst, got, tt.retry)
			}
			// Part of the way there, the delay shrinks by as much.
			clock.advance(tt.retry / 4)
			if got, want := checkExhausted(t, l.Limit(ctx, call)), tt.retry-tt.retry/4; got != want {
				t.Errorf("RetryDelay a quarter later = %v, want %v", got, want)
			}
			// Once the delay has passed, one more call is admitted, and
			// only one.
			clock.advance(tt.retry - tt.retry/4)
			if err := l.Limit(ctx, call); err != nil {
				t.Errorf("Limit after waiting RetryDelay = %v, want nil", err)
			}
			checkExhausted(t, l.Limit(ctx, call))
		})
	}
}

func TestRefill(t *testing.T) {
	l, clock := newLimiter(t, ratelimit.Limits{Default: ratelimit.Limit{Rate: 10, Burst: 5}})
	ctx, call := t.Context(), server.Call{FullMethod: getItem}
	admitted := func() int {
		n := 0
		for l.Limit(ctx, call) == nil {
			n++
		}
		return n
	}
	if got, want := admitted(), 5; got != want {
		t.Errorf("admitted at first = %d, want %d", got, want)
	}
	clock.advance(300 * time.Millisecond)
	if got, want := admitted(), 3; got != want {
		t.Errorf("admitted after 300ms = %d, want %d", got, want)
	}
	clock.advance(time.Hour) // the bucket fills up to its burst, no more
	if got, want := admitted(), 5; got != want {
		t.Errorf("admitted after an hour = %d, want %d", got, want)
	}
}

func TestPerIdentityIsolation(t *testing.T) {
	bg := t.Context()
	callers := []struct {
		name string
		ctx  context.Context
	}{
		{"user u-1", userCtx(serviceCtx(bg, "gateway"), "u-1")},
		{"user u-2 via the same service", userCtx(serviceCtx(bg, "gateway"), "u-2")},
		{"service gateway", serviceCtx(bg, "gateway")},
		{"service order", serviceCtx(bg, "order")},
		{"user named like a service", userCtx(bg, "order")},
		{"peer 192.0.2.1", peerCtx(bg, "192.0.2.1:5000")},
		{"peer 192.0.2.2", peerCtx(bg, "192.0.2.2:5000")},
		{"peer 2001:db8:1::1", peerCtx(bg, "[2001:db8:1::1]:5000")},
		{"peer 2001:db8:2::1", peerCtx(bg, "[2001:db8:2::1]:5000")},
		{"no identity", bg},
	}
	const burst = 3
	call := server.Call{FullMethod: reserve}
	for _, exhausted := range callers {
		l, _ := newLimiter(t, ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1, Burst: burst}})
		for range burst {
			if err := l.Limit(exhausted.ctx, call); err != nil {
				t.Fatalf("Limit(%s) = %v, want nil", exhausted.name, err)
			}
		}
		checkExhausted(t, l.Limit(exhausted.ctx, call))
		for _, other := range callers {
			if other.name == exhausted.name {
				continue
			}
			for i := range burst {
				if err := l.Limit(other.ctx, call); err != nil {
					t.Errorf("with %s exhausted, call %d of %s: Limit = %v, want nil", exhausted.name, i+1, other.name, err)
				}
			}
		}
		if got, want := l.Identities(), len(callers); got != want {
			t.Errorf("Identities() = %d, want %d", got, want)
		}
	}
}

func TestCallerKeys(t *testing.T) {
	// Callers that share a bucket: a user whichever service forwards it,
	// a port of the same address, an address of the same IPv6 /64.
	bg := t.Context()
	tests := []struct {
		name string
		a, b context.Context
	}{
		{"user through two services", userCtx(serviceCtx(bg, "gateway"), "u-1"), userCtx(serviceCtx(bg, "order"), "u-1")},
		{"service from two addresses", serviceCtx(peerCtx(bg, "192.0.2.1:1"), "order"), serviceCtx(peerCtx(bg, "192.0.2.9:2"), "order")},
		{"two ports of one address", peerCtx(bg, "192.0.2.1:1000"), peerCtx(bg, "192.0.2.1:2000")},
		{"IPv4 and IPv4-mapped IPv6", peerCtx(bg, "192.0.2.1:1000"), peerCtx(bg, "[::ffff:192.0.2.1]:1000")},
		{"one IPv6 /64", peerCtx(bg, "[2001:db8:1:2::1]:1000"), peerCtx(bg, "[2001:db8:1:2:ffff::9]:1000")},
	}
	for _, tt := range tests {
		l, _ := newLimiter(t, ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1, Burst: 1}})
		call := server.Call{FullMethod: getItem}
		if err := l.Limit(tt.a, call); err != nil {
			t.Fatalf("%s: first Limit = %v, want nil", tt.name, err)
		}
		if err := l.Limit(tt.b, call); grpcstatus.Code(err) != codes.ResourceExhausted {
			t.Errorf("%s: second caller's Limit = %v, want ResourceExhausted (same bucket)", tt.name, err)
		}
		if got, want := l.Identities(), 1; got != want {
			t.Errorf("%s: Identities() = %d, want %d", tt.name, got, want)
		}
	}
}

func TestEdgeClientsAreCallers(t *testing.T) {
	bg := t.Context()
	via := func(service, xff string) context.Context {
		ctx := serviceCtx(peerCtx(bg, "10.0.0.7:4000"), service)
		if xff != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("x-forwarded-for", xff))
		}
		return ctx
	}
	tests := []struct {
		name      string
		a, b      context.Context
		shareWith bool // a and b share a bucket
	}{
		{"two clients through the edge", via("gateway", "192.0.2.1"), via("gateway", "192.0.2.2"), false},
		{"one client through the edge twice", via("gateway", "192.0.2.1"), via("gateway", "192.0.2.1, 10.0.0.1"), true},
		{"the edge's clients are not the edge", via("gateway", "192.0.2.1"), via("gateway", ""), false},
		{"an edge without forwarded metadata is itself", via("gateway", ""), via("gateway", ""), true},
		{"unparsable metadata: the edge itself", via("gateway", "not an address"), via("gateway", ""), true},
		{"a service that is no edge is not believed", via("order", "192.0.2.1"), via("order", "192.0.2.2"), true},
		{"a user through the edge is the user", userCtx(via("gateway", "192.0.2.1"), "u-1"), userCtx(via("gateway", "192.0.2.2"), "u-1"), true},
	}
	for _, tt := range tests {
		l, _ := newLimiter(t, ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1, Burst: 1}, Edges: []string{"gateway"}})
		call := server.Call{FullMethod: getItem}
		if err := l.Limit(tt.a, call); err != nil {
			t.Fatalf("%s: first Limit = %v, want nil", tt.name, err)
		}
		err := l.Limit(tt.b, call)
		if got := grpcstatus.Code(err) == codes.ResourceExhausted; got != tt.shareWith {
			t.Errorf("%s: second caller's Limit = %v, want shared bucket %v", tt.name, err, tt.shareWith)
		}
	}
}

func TestMethodOverride(t *testing.T) {
	l, _ := newLimiter(t, ratelimit.Limits{
		Default: ratelimit.Limit{Rate: 1, Burst: 2},
		Methods: map[string]ratelimit.Limit{
			reserve: {Rate: 1, Burst: 5},
			release: {}, // no limit
		},
	})
	ctx := serviceCtx(t.Context(), "order")
	tests := []struct {
		method string
		want   int // calls admitted before the first refusal; -1 for no limit
	}{
		{getItem, 2},
		{reserve, 5},
		{release, -1},
		{"/switchboard.inventory.v1.InventoryService/ListItems", 2}, // a bucket of its own
		{"/grpc.health.v1.Health/Check", 2},                         // not in Methods: Default
	}
	for _, tt := range tests {
		call := server.Call{FullMethod: tt.method}
		n := 0
		for ; n < 100 && l.Limit(ctx, call) == nil; n++ {
		}
		want := tt.want
		if want < 0 {
			want = 100
		}
		if n != want {
			t.Errorf("calls admitted to %s = %d, want %d", tt.method, n, want)
		}
	}
}

func TestMethodRefusalRefundsCaller(t *testing.T) {
	l, _ := newLimiter(t, ratelimit.Limits{
		Methods:     map[string]ratelimit.Limit{reserve: {Rate: 1, Burst: 1}},
		PerIdentity: ratelimit.Limit{Rate: 1, Burst: 3},
	})
	ctx := serviceCtx(t.Context(), "order")
	if err := l.Limit(ctx, server.Call{FullMethod: reserve}); err != nil {
		t.Fatalf("first Reserve: %v", err)
	}
	// Refused by Reserve's bucket many times: the caller keeps its tokens.
	for range 10 {
		checkExhausted(t, l.Limit(ctx, server.Call{FullMethod: reserve}))
	}
	for i := range 2 {
		if err := l.Limit(ctx, server.Call{FullMethod: getItem}); err != nil {
			t.Errorf("GetItem %d after refused Reserves = %v, want nil", i+1, err)
		}
	}
	checkExhausted(t, l.Limit(ctx, server.Call{FullMethod: getItem}))
}

func TestIdentitiesBounded(t *testing.T) {
	tests := []struct{ bound, callers int }{
		{1, 10},
		{100, 1000},
		{1000, 5000},
		{1 << 14, 1 << 16},
	}
	for _, tt := range tests {
		l, _ := newLimiter(t, ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1, Burst: 1}},
			ratelimit.WithMaxIdentities(tt.bound))
		call := server.Call{FullMethod: getItem}
		bg := t.Context()
		for i := range tt.callers {
			if err := l.Limit(userCtx(bg, fmt.Sprintf("u-%d", i)), call); err != nil {
				t.Fatalf("bound %d: user %d: Limit = %v, want nil", tt.bound, i, err)
			}
		}
		if got := l.Identities(); got > tt.bound || got < tt.bound/2 {
			t.Errorf("bound %d: Identities() after %d callers = %d, want at most %d (and at least half)", tt.bound, tt.callers, got, tt.bound)
		}
		// The latest caller is remembered: still exhausted.
		last := userCtx(bg, fmt.Sprintf("u-%d", tt.callers-1))
		if err := l.Limit(last, call); grpcstatus.Code(err) != codes.ResourceExhausted {
			t.Errorf("bound %d: latest caller again: Limit = %v, want ResourceExhausted", tt.bound, err)
		}
	}
}

func TestZeroLimitsAdmitAll(t *testing.T) {
	l, _ := newLimiter(t, ratelimit.Limits{})
	ctx := userCtx(t.Context(), "u-1")
	for i := range 10_000 {
		if err := l.Limit(ctx, server.Call{FullMethod: getItem}); err != nil {
			t.Fatalf("call %d: Limit = %v, want nil", i, err)
		}
	}
	if got := l.Identities(); got != 0 {
		t.Errorf("Identities() = %d, want 0 without PerIdentity", got)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name   string
		limits ratelimit.Limits
		opts   []ratelimit.Option
		want   string // in the error
	}{
		{"negative rate", ratelimit.Limits{Default: ratelimit.Limit{Rate: -1}}, nil, "default: rate -1"},
		{"negative burst", ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1, Burst: -1}}, nil, "per_identity: burst -1"},
		{"burst without rate", ratelimit.Limits{Default: ratelimit.Limit{Burst: 5}}, nil, "without a rate"},
		{"too fast", ratelimit.Limits{Default: ratelimit.Limit{Rate: 2e9}}, nil, "at most one call a nanosecond"},
		{"too slow for burst", ratelimit.Limits{Default: ratelimit.Limit{Rate: 1e-9, Burst: 1 << 30}}, nil, "burst too large"},
		{"not a full method", ratelimit.Limits{Methods: map[string]ratelimit.Limit{"GetItem": {Rate: 1}}}, nil, "want a full method"},
		{"no leading slash", ratelimit.Limits{Methods: map[string]ratelimit.Limit{strings.TrimPrefix(getItem, "/"): {Rate: 1}}}, nil, "want a full method"},
		{"unknown service", ratelimit.Limits{Methods: map[string]ratelimit.Limit{"/switchboard.nothing.v1.Nothing/Do": {Rate: 1}}}, nil, "no such service"},
		{"unknown method", ratelimit.Limits{Methods: map[string]ratelimit.Limit{"/switchboard.inventory.v1.InventoryService/Teleport": {Rate: 1}}}, nil, "has no method Teleport"},
		{"bad method limit", ratelimit.Limits{Methods: map[string]ratelimit.Limit{getItem: {Rate: -3}}}, nil, "method " + getItem},
		{"zero max identities", ratelimit.Limits{}, []ratelimit.Option{ratelimit.WithMaxIdentities(0)}, "WithMaxIdentities(0)"},
	}
	for _, tt := range tests {
		l, err := ratelimit.New(tt.limits, tt.opts...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New = %v, %v; want an error containing %q", tt.name, l, err, tt.want)
		}
	}
}

func TestLimitsFromYAML(t *testing.T) {
	var got ratelimit.Limits
	err := yaml.Unmarshal([]byte(`
default:      {rate: 1000, burst: 200}
methods:
  /switchboard.inventory.v1.InventoryService/Reserve: {rate: 50, burst: 10}
  /switchboard.inventory.v1.InventoryService/Release: {}
per_identity: {rate: 20.5}
`), &got)
	if err != nil {
		t.Fatal(err)
	}
	want := ratelimit.Limits{
		Default: ratelimit.Limit{Rate: 1000, Burst: 200},
		Methods: map[string]ratelimit.Limit{
			reserve: {Rate: 50, Burst: 10},
			release: {},
		},
		PerIdentity: ratelimit.Limit{Rate: 20.5},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("yaml.Unmarshal mismatch (-want +got):\n%s", diff)
	}
	if _, err := ratelimit.New(got); err != nil {
		t.Errorf("New(limits from YAML) = %v", err)
	}
}

func TestLimitConcurrent(t *testing.T) {
	// Many goroutines on one frozen bucket: exactly its burst is admitted,
	// and the caller's tokens the method refused are given back.
	const methodBurst, callerBurst, workers = 500, 2000, 8
	l, _ := newLimiter(t, ratelimit.Limits{
		Default:     ratelimit.Limit{Rate: 1, Burst: methodBurst},
		Methods:     map[string]ratelimit.Limit{release: {}},
		PerIdentity: ratelimit.Limit{Rate: 1, Burst: callerBurst},
	})
	ctx := serviceCtx(t.Context(), "order")
	var admitted atomic.Int64
	done := make(chan struct{})
	for range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for range methodBurst {
				if l.Limit(ctx, server.Call{FullMethod: getItem}) == nil {
					admitted.Add(1)
				}
			}
		}()
	}
	for range workers {
		<-done
	}
	if got, want := admitted.Load(), int64(methodBurst); got != want {
		t.Errorf("admitted = %d, want %d", got, want)
	}
	n := 0
	for ; l.Limit(ctx, server.Call{FullMethod: release}) == nil; n++ {
	}
	if got, want := n, callerBurst-methodBurst; got != want {
		t.Errorf("caller tokens left = %d, want %d", got, want)
	}
}

func BenchmarkLimit(b *testing.B) {
	benchmarks := []struct {
		name   string
		limits ratelimit.Limits
		ctx    func(i int) context.Context
	}{
		{"method", ratelimit.Limits{Default: ratelimit.Limit{Rate: 1e9, Burst: 1 << 20}}, func(int) context.Context {
			return serviceCtx(b.Context(), "order")
		}},
		{"method+caller", ratelimit.Limits{
			Default:     ratelimit.Limit{Rate: 1e9, Burst: 1 << 20},
			PerIdentity: ratelimit.Limit{Rate: 1e9, Burst: 1 << 20},
		}, func(int) context.Context { return serviceCtx(b.Context(), "order") }},
		{"method+caller/1000 users", ratelimit.Limits{
			Default:     ratelimit.Limit{Rate: 1e9, Burst: 1 << 20},
			PerIdentity: ratelimit.Limit{Rate: 1e9, Burst: 1 << 20},
		}, func(i int) context.Context { return userCtx(b.Context(), fmt.Sprintf("u-%d", i)) }},
		{"method+caller/peer IP", ratelimit.Limits{
			Default:     ratelimit.Limit{Rate: 1e9, Burst: 1 << 20},
			PerIdentity: ratelimit.Limit{Rate: 1e9, Burst: 1 << 20},
		}, func(int) context.Context { return peerCtx(b.Context(), "[2001:db8::1]:4000") }},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			l, err := ratelimit.New(bm.limits)
			if err != nil {
				b.Fatal(err)
			}
			ctxs := make([]context.Context, 1000)
			for i := range ctxs {
				ctxs[i] = bm.ctx(i)
			}
			call := server.Call{FullMethod: getItem}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					_ = l.Limit(ctxs[i%len(ctxs)], call)
					i++
				}
			})
		})
	}
}
