// Package static resolves a service to a fixed list of addresses, for runs
// without a registry such as "switchboard up" (every service in one
// process) and for tests.
//
// Importing the package registers the "static" scheme globally: the target
// carries its addresses,
//
//	static:///inventory?addrs=127.0.0.1:7102,127.0.0.1:7112
//
// and NewBuilder serves targets from a map instead, with each endpoint's
// version, zone and weight, to one ClientConn at a time:
//
//	b := static.NewBuilder(map[string][]discovery.Endpoint{"inventory": eps})
//	conn, err := client.Dial("static:///inventory", ..., client.WithDialOptions(grpc.WithResolvers(b)))
//
// Addresses given in the target win over the map. The list never changes:
// a replica that stops is left out of balancing by its failing connection
// (and health checks), not by the resolver.
package static
