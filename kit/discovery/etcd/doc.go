// Package etcd is service discovery over etcd: a Registry that keeps a
// server's endpoints registered under a lease, a grpc Resolver for
// "etcd:///<service>" targets that follows them, and a PolicySource that
// feeds a canary policy stored at a key.
//
// Each endpoint is a key <prefix><service>/<addr> (prefix DefaultPrefix)
// holding the JSON of etcd's naming/endpoints package ({"Op":0, "Addr":
// ..., "Metadata": {...}}), so etcd's stock resolver can read it too; the
// Metadata holds the endpoint's version, zone, weight and labels, which
// this package's Resolver hands to balancers as attributes.
//
// A server registers when it is ready and deregisters first when it stops:
//
//	cli, _ := etcd.NewClient([]string{"127.0.0.1:2379"}, logger)
//	reg, _ := etcd.NewRegistry(cli, etcd.WithLogger(logger), etcd.WithRegisterer(promReg))
//	_ = reg.Register(ctx, discovery.Endpoint{Service: "inventory", Addr: "10.0.0.7:7102", Version: "v2"})
//	...
//	_ = reg.Deregister(ctx) // then drain, then stop
//
// The registry outlives etcd outages: a lost lease (expired during a
// partition, revoked, or gone with an etcd that restarted without its data)
// is replaced and every endpoint written again, with capped exponential
// backoff and jitter, for as long as the registry runs. State and the
// switchboard_discovery_registry_state gauge say where it stands.
//
// A client resolves through the same etcd:
//
//	res, _ := etcd.NewResolver(cli, etcd.WithLogger(logger))
//	conn, _ := client.Dial("etcd:///inventory", creds, client.WithDialOptions(grpc.WithResolvers(res)))
//
// The replica whose lease ends (its process died) leaves the list within
// the lease's TTL; one that stops cleanly leaves at once. With kit/client's
// default service config calls are balanced round-robin over the READY
// replicas, and client-side health checking keeps new calls off a replica
// reporting NOT_SERVING while it drains.
package etcd
