package etcd_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/switchboard-rpc/switchboard/kit/discovery"
	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd"
	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd/embedded"
)

// fastRegistry returns a registry with a short lease and quick retries.
func fastRegistry(t *testing.T, cli *clientv3.Client, reg prometheus.Registerer) *etcd.Registry {
	t.Helper()
	r, err := etcd.NewRegistry(cli, etcd.WithTTL(2*time.Second), etcd.WithBackoff(50*time.Millisecond, 500*time.Millisecond),
		etcd.WithOpTimeout(2*time.Second), etcd.WithLogger(testLogger()), etcd.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// leaseOf returns the lease a key is held under, 0 if it is absent.
func leaseOf(t *testing.T, cli *clientv3.Client, k string) clientv3.LeaseID {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, k)
	if err != nil {
		return 0
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

func TestRegisterThenDeregister(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv)
	prom := prometheus.NewRegistry()
	r := fastRegistry(t, cli, prom)
	if got, want := r.State(), etcd.StateIdle; got != want {
		t.Errorf("State() before Register = %v, want %v", got, want)
	}
	ep := discovery.Endpoint{Service: "greeter", Addr: "127.0.0.1:7100", Version: "v2", Zone: "z1", Weight: 3,
		Metadata: map[string]string{"build": "42"}}
	if err := r.Register(t.Context(), ep); err != nil {
		t.Fatal(err)
	}
	if got, want := r.State(), etcd.StateRegistered; got != want {
		t.Errorf("State() after Register = %v, want %v", got, want)
	}
	if err := r.Check(t.Context()); err != nil {
		t.Errorf("Check() while registered = %v, want nil", err)
	}
	if got := gauge(t, prom, "switchboard_discovery_registry_state", "state", "registered"); got != 1 {
		t.Errorf("state gauge registered = %v, want 1", got)
	}

	resp, err := cli.Get(t.Context(), key(ep.Addr))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("Get(%s) found %d keys, want 1", key(ep.Addr), len(resp.Kvs))
	}
	if resp.Kvs[0].Lease == 0 {
		t.Errorf("key %s has no lease", key(ep.Addr))
	}
	var stored struct {
		Op       int
		Addr     string
		Metadata map[string]any
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &stored); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"version": "v2", "zone": "z1", "weight": 3.0, "metadata": map[string]any{"build": "42"}}
	if stored.Op != 0 || stored.Addr != ep.Addr || !cmp.Equal(stored.Metadata, want) {
		t.Errorf("stored value = %+v, want Op 0, Addr %s, Metadata %v", stored, ep.Addr, want)
	}

	if err := r.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	if l := leaseOf(t, cli, key(ep.Addr)); l != 0 {
		t.Errorf("key %s still present after Deregister", key(ep.Addr))
	}
	ttl, err := cli.TimeToLive(t.Context(), clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL != -1 {
		t.Errorf("lease TTL after Deregister = %d, want -1 (revoked)", ttl.TTL)
	}
	if got, want := r.State(), etcd.StateStopped; got != want {
		t.Errorf("State() after Deregister = %v, want %v", got, want)
	}
	if got := gauge(t, prom, "switchboard_discovery_registry_state", "state", "stopped"); got != 1 {
		t.Errorf("state gauge stopped = %v, want 1", got)
	}
	if err := r.Register(t.Context(), ep); !errors.Is(err, etcd.ErrStopped) {
		t.Errorf("Register after Deregister = %v, want ErrStopped", err)
	}
}

func TestRegisterRejectsBadEndpoints(t *testing.T) {
	srv := startEtcd(t)
	r := fastRegistry(t, newClient(t, srv), nil)
	for _, ep := range []discovery.Endpoint{
		{Service: "", Addr: "127.0.0.1:1"},
		{Service: "Greeter", Addr: "127.0.0.1:1"},
		{Service: "greeter", Addr: "no-port"},
		{Service: "greeter", Addr: "127.0.0.1:1", Weight: discovery.MaxWeight + 1},
		{Service: "greeter", Addr: "127.0.0.1:1", Version: "v1/evil"},
	} {
		if err := r.Register(t.Context(), ep); err == nil {
			t.Errorf("Register(%+v) = nil, want an error", ep)
		}
	}
	if got, want := r.State(), etcd.StateIdle; got != want {
		t.Errorf("State() after rejected endpoints = %v, want %v", got, want)
	}
}

// TestLeaseLossReregisters revokes the registry's lease from another
// client, as an expiry during a partition would end it, and waits for the
// registry to register again by itself.
func TestLeaseLossReregisters(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv)
	admin := newClient(t, srv)
	prom := prometheus.NewRegistry()
	r := fastRegistry(t, cli, prom)
	addr := "127.0.0.1:7100"
	if err := r.Register(t.Context(), discovery.Endpoint{Service: "greeter", Addr: addr}); err != nil {
		t.Fatal(err)
	}
	first := leaseOf(t, admin, key(addr))
	if first == 0 {
		t.Fatal("no lease after Register")
	}
	if _, err := admin.Revoke(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the key back under a new lease", func() bool {
		l := leaseOf(t, admin, key(addr))
		return l != 0 && l != first
	})
	eventually(t, "state registered", func() bool { return r.State() == etcd.StateRegistered })
	if got := gauge(t, prom, "switchboard_discovery_registry_leases_total", "", ""); got != 2 {
		t.Errorf("leases_total = %v, want 2", got)
	}
}

// TestRegisterWaitsOutAnUnreachableEtcd registers before etcd runs: the
// call gives up with its context, and the registry registers by itself
// once etcd starts.
func TestRegisterWaitsOutAnUnreachableEtcd(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	h := &etcdServer{cfg: embedded.Config{Dir: t.TempDir(), Host: "127.0.0.1", ClientPort: port, Logger: testLogger()}}
	t.Cleanup(h.stop)
	r := fastRegistry(t, newClient(t, h), nil)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err = r.Register(ctx, discovery.Endpoint{Service: "greeter", Addr: "127.0.0.1:7100"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Register with etcd down = %v, want DeadlineExceeded", err)
	}
	if got, want := r.State(), etcd.StateReregistering; got != want {
		t.Errorf("State() with etcd down = %v, want %v", got, want)
	}
	h.start(t)
	admin := newClient(t, h)
	eventually(t, "the registration once etcd is up", func() bool {
		return r.State() == etcd.StateRegistered && leaseOf(t, admin, key("127.0.0.1:7100")) != 0
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
