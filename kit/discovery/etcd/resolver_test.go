package etcd_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/discovery"
	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd"
)

func newResolver(t *testing.T, cli *clientv3.Client, reg prometheus.Registerer) *etcd.Resolver {
	t.Helper()
	res, err := etcd.NewResolver(cli, etcd.WithProbeInterval(200*time.Millisecond), etcd.WithOpTimeout(time.Second),
		etcd.WithBackoff(50*time.Millisecond, 500*time.Millisecond), etcd.WithLogger(testLogger()), etcd.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// register registers r as one greeter replica with a registry of its own
// (its own process, in production).
func register(t *testing.T, h *etcdServer, r *replica, version string) (*etcd.Registry, *clientv3.Client) {
	t.Helper()
	cli := newClient(t, h)
	reg := fastRegistry(t, cli, nil)
	if err := reg.Register(t.Context(), discovery.Endpoint{Service: "greeter", Addr: r.addr, Version: version}); err != nil {
		t.Fatal(err)
	}
	return reg, cli
}

// reaches reports whether calls reach every replica in want and none in
// avoid, over a batch of calls.
func reaches(t *testing.T, c greeterv1.GreeterClient, want, avoid []*replica) bool {
	t.Helper()
	before := append(counts(want...), counts(avoid...)...)
	for range 6 * (len(want) + 1) {
		call(t, c)
	}
	after := append(counts(want...), counts(avoid...)...)
	for i := range want {
		if after[i] == before[i] {
			return false
		}
	}
	for i := len(want); i < len(after); i++ {
		if after[i] != before[i] {
			return false
		}
	}
	return true
}

// TestResolverFollowsRegistrations adds and removes replicas in etcd and
// checks a real ClientConn sends calls exactly to the registered ones,
// with their labels in the resolver's list.
func TestResolverFollowsRegistrations(t *testing.T) {
	h := startEtcd(t)
	res := newResolver(t, newClient(t, h), nil)
	a, b, c := startReplica(t), startReplica(t), startReplica(t)
	regA, _ := register(t, h, a, "v1")
	register(t, h, b, "v2")
	conn := dialEtcd(t, res)
	eventually(t, "calls reaching a and b only", func() bool { return reaches(t, conn, []*replica{a, b}, []*replica{c}) })

	got := res.Endpoints("greeter")
	if len(got) != 2 {
		t.Fatalf("Endpoints(greeter) = %v, want 2 endpoints", got)
	}
	versions := map[string]string{}
	for _, e := range got {
		versions[e.Addr] = e.Version
	}
	if versions[a.addr] != "v1" || versions[b.addr] != "v2" {
		t.Errorf("versions by address = %v, want %s: v1, %s: v2", versions, a.addr, b.addr)
	}

	register(t, h, c, "v1")
	eventually(t, "calls reaching the new replica c", func() bool { return reaches(t, conn, []*replica{a, b, c}, nil) })

	if err := regA.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "calls leaving the deregistered a", func() bool { return reaches(t, conn, []*replica{b, c}, []*replica{a}) })
	if res.Stale("greeter") {
		t.Error("Stale(greeter) = true with etcd up, want false")
	}
}

// TestEtcdOutage stops etcd under a running client and registered
// replicas: calls go on over the last known endpoints and the resolver
// says they are stale; once etcd is back (same data and port), every
// registration returns by itself and the resolver is current again.
func TestEtcdOutage(t *testing.T) {
	h := startEtcd(t)
	prom := prometheus.NewRegistry()
	res := newResolver(t, newClient(t, h), prom)
	a, b := startReplica(t), startReplica(t)
	regA, _ := register(t, h, a, "v1")
	regB, _ := register(t, h, b, "v1")
	conn := dialEtcd(t, res)
	eventually(t, "calls reaching both replicas", func() bool { return reaches(t, conn, []*replica{a, b}, nil) })

	h.stop()
	eventually(t, "the resolver reporting stale endpoints", func() bool { return res.Stale("greeter") })
	if got := gauge(t, prom, "switchboard_discovery_resolver_stale", "service", "greeter"); got != 1 {
		t.Errorf("resolver stale gauge = %v, want 1", got)
	}
	if got := gauge(t, prom, "switchboard_discovery_resolver_endpoints", "service", "greeter"); got != 2 {
		t.Errorf("resolver endpoints gauge = %v, want 2", got)
	}
	if !reaches(t, conn, []*replica{a, b}, nil) {
		t.Errorf("with etcd down, calls did not reach both last known replicas: counts %v", counts(a, b))
	}
	eventually(t, "registries re-registering", func() bool {
		return regA.State() == etcd.StateReregistering && regB.State() == etcd.StateReregistering
	})

	h.start(t)
	admin := newClient(t, h)
	eventually(t, "both registrations back", func() bool {
		return regA.State() == etcd.StateRegistered && regB.State() == etcd.StateRegistered &&
			leaseOf(t, admin, key(a.addr)) != 0 && leaseOf(t, admin, key(b.addr)) != 0
	})
	eventually(t, "the resolver current again", func() bool { return !res.Stale("greeter") })
	if got := gauge(t, prom, "switchboard_discovery_resolver_stale", "service", "greeter"); got != 0 {
		t.Errorf("resolver stale gauge after recovery = %v, want 0", got)
	}
	call(t, conn)
}

// TestReplicaKilledUnderLoad kills one of three replicas (its server
// stopped hard, its etcd session gone as when a process dies) under a
// steady loop of retried idempotent calls: no call fails, traffic moves
// to the two others, and the replica leaves the resolver when its lease
// ends.
func TestReplicaKilledUnderLoad(t *testing.T) {
	h := startEtcd(t)
	res := newResolver(t, newClient(t, h), nil)
	rs := []*replica{startReplica(t), startReplica(t), startReplica(t)}
	var victimCli *clientv3.Client
	for i, r := range rs {
		_, cli := register(t, h, r, "v1")
		if i == 0 {
			victimCli = cli
		}
	}
	conn := dialEtcd(t, res)
	eventually(t, "calls reaching all three", func() bool { return reaches(t, conn, rs, nil) })

	var failed atomic.Int64
	var failure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				_, err := conn.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "load"})
				cancel()
				if err != nil {
					failed.Add(1)
					failure.Store(err.Error())
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	rs[0].srv.GRPC().Stop()
	rs[0].killed.Store(true)
	_ = victimCli.Close() // its keep-alive stops: the lease ends within the TTL
	atKill := counts(rs...)
	eventually(t, "the killed replica leaving the resolver", func() bool { return len(res.Endpoints("greeter")) == 2 })
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	after := counts(rs...)
	if n := failed.Load(); n != 0 {
		t.Errorf("%d calls failed under load, last: %v", n, failure.Load())
	}
	// A call the replica was handling when it was stopped may finish
	// after; none may start.
	if n := rs[0].afterKill.Load(); n != 0 {
		t.Errorf("killed replica started %d calls after its kill, want 0", n)
	}
	for i := 1; i < 3; i++ {
		if after[i] <= atKill[i] {
			t.Errorf("replica %d answered no calls after the kill (counts at kill %v, after %v)", i, atKill, after)
		}
	}
}

// TestNotServingReplicaGetsNoNewCalls marks one replica NOT_SERVING
// through its health service: client-side health checking keeps new
// calls off it while it stays registered.
func TestNotServingReplicaGetsNoNewCalls(t *testing.T) {
	h := startEtcd(t)
	res := newResolver(t, newClient(t, h), nil)
	a, b := startReplica(t), startReplica(t)
	register(t, h, a, "v1")
	register(t, h, b, "v1")
	conn := dialEtcd(t, res)
	eventually(t, "calls reaching both", func() bool { return reaches(t, conn, []*replica{a, b}, nil) })
	a.srv.SetServing("", false)
	eventually(t, "calls avoiding the NOT_SERVING replica", func() bool { return reaches(t, conn, []*replica{b}, []*replica{a}) })
	before := counts(a, b)
	for range 100 {
		call(t, conn)
	}
	after := counts(a, b)
	if after[0] != before[0] || after[1]-before[1] != 100 {
		t.Errorf("over 100 calls: NOT_SERVING replica got %d, serving one %d; want 0 and 100", after[0]-before[0], after[1]-before[1])
	}
	if got := len(res.Endpoints("greeter")); got != 2 {
		t.Errorf("Endpoints(greeter) has %d entries, want 2 (a NOT_SERVING replica stays registered)", got)
	}
}
