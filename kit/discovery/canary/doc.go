// Package canary routes a share of each service's calls to a new version
// of it, by a declarative policy that can change while clients run.
//
// A policy gives each service's versions a weight; the version of a
// replica is the Version its registration carries (kit/discovery):
//
//	inventory: {v1: 80, v2: 20}
//	order:
//	  v1: 100
//
// The package registers a grpc balancer named Name ("switchboard_canary").
// It keeps one pick-first child per endpoint with client-side health
// checking (like round_robin), groups the READY ones by version, and for
// each call:
//
//   - takes the version from the outgoing "x-canary" metadata header if
//     the caller set one and that version has a READY replica (an operator
//     or a test pins a call);
//   - else picks a version by weight, sticky per user: the key set with
//     WithKey (or the "x-canary-key" outgoing header) is hashed onto the
//     weights, so one user always lands on the same version while the
//     policy holds; calls without a key are spread at random by weight;
//   - falls back to the other versions of the policy, by weight, when the
//     chosen one has no READY replica, and to any READY replica when none
//     of them has;
//   - round-robins among the chosen version's READY replicas, in
//     proportion to their weights.
//
// A service without a policy is balanced round-robin over all its READY
// replicas.
//
// # Using it
//
// Policies live in a Table, fed by a Source (a file polled for changes,
// or an etcd key watched with kit/discovery/etcd's PolicySource) through
// Table.Follow; a new policy applies to the next pick, with no restart and
// no reconnection. Publish names the table the balancer reads; a
// ClientConn selects the balancer in its service config, with kit/client:
//
//	table := canary.NewTable(nil, logger)
//	defer canary.Publish("", table)()
//	go table.Follow(ctx, canary.FileSource("canary.yaml", 2*time.Second))
//	conn, err := client.Dial("etcd:///inventory", client.WithLoadBalancing(canary.Name), ...)
//
// With an empty balancer config, the table is the one published as "" and
// the service is the one the target names; LoadBalancingConfig spells both
// out for a service config of one's own.
//
// # Which version served a call
//
// Track returns a context whose calls record the version they were sent
// to; Interceptor does that for every call and reports the version, for
// example to label client metrics.
package canary
