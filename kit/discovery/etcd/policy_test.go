package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/discovery/canary"
	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd"
)

// TestPolicyFromEtcdKeyApplies routes through the canary balancer over
// etcd-registered v1 and v2 replicas and changes the policy at its etcd
// key: new calls follow it on the same ClientConn.
func TestPolicyFromEtcdKeyApplies(t *testing.T) {
	h := startEtcd(t)
	admin := newClient(t, h)
	const policyKey = "switchboard/canary"
	if _, err := admin.Put(t.Context(), policyKey, "greeter: {v1: 100}"); err != nil {
		t.Fatal(err)
	}
	tab := canary.NewTable(nil, testLogger())
	t.Cleanup(canary.Publish(t.Name(), tab))
	ctx, cancel := context.WithCancel(t.Context())
	followed := make(chan error, 1)
	go func() {
		followed <- tab.Follow(ctx, etcd.NewPolicySource(newClient(t, h), policyKey, etcd.WithLogger(testLogger())))
	}()
	defer func() {
		cancel()
		if err := <-followed; !errors.Is(err, context.Canceled) {
			t.Errorf("Follow returned %v after its context ended, want context.Canceled", err)
		}
	}()

	v1, v2 := startReplica(t), startReplica(t)
	register(t, h, v1, "v1")
	register(t, h, v2, "v2")
	res := newResolver(t, newClient(t, h), nil)
	conn, err := client.Dial("etcd:///greeter", client.WithInsecure(),
		client.WithServiceConfig(`{"loadBalancingConfig":[`+canary.LoadBalancingConfig(t.Name(), "")+`]}`),
		client.WithDialOptions(grpc.WithResolvers(res)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c := greeterv1.NewGreeterClient(conn)

	onlyTo := func(want, avoid *replica) bool {
		before := counts(want, avoid)
		for i := range 20 {
			ctx, cancel := context.WithTimeout(canary.WithKey(t.Context(), fmt.Sprint(i)), 10*time.Second)
			_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ada"}, grpc.WaitForReady(true))
			cancel()
			if err != nil {
				t.Fatalf("SayHello: %v", err)
			}
		}
		after := counts(want, avoid)
		return after[0]-before[0] == 20 && after[1] == before[1]
	}
	eventually(t, "every call on v1", func() bool { return onlyTo(v1, v2) })
	if _, err := admin.Put(t.Context(), policyKey, "greeter: {v1: 0, v2: 100}"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every call on v2 after the policy change", func() bool { return onlyTo(v2, v1) })
	if _, err := admin.Delete(t.Context(), policyKey); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no policy once the key is deleted", func() bool { return len(tab.Policies()) == 0 })
}
