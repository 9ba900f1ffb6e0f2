// Package discovery describes the replicas of a service the way the kit's
// resolvers and balancers exchange them: an Endpoint (service, address,
// version, zone, weight, metadata) and the grpc attributes that carry it
// from a resolver to a balancer.
//
// The resolvers live in subpackages: kit/discovery/etcd watches
// registrations in etcd ("etcd:///inventory") and registers a server's own
// endpoints under a lease; kit/discovery/static serves fixed addresses
// ("static:///inventory?addrs=127.0.0.1:7102,127.0.0.1:7112"), which is
// what "switchboard up" uses. kit/discovery/canary is a balancer that
// splits traffic between versions by a declarative policy.
//
// # Kubernetes
//
// On Kubernetes no registry is needed: a headless Service
// (clusterIP: None) publishes one DNS A record per ready pod, and grpc's
// built-in dns resolver turns it into one address per replica:
//
//	client.Dial("dns:///inventory.shop.svc.cluster.local:7102", ...)
//
// kit/client's default service config (round_robin with client-side
// health checking) then spreads calls over every pod and stops sending new
// ones to a pod whose health service reports NOT_SERVING, before its
// readiness probe fails. grpc re-resolves DNS when a connection breaks and
// at most every 30 seconds otherwise, so pods that come and go are picked
// up without restarts. A ClusterIP (non-headless) Service would hide the
// replicas behind one virtual IP and defeat per-call balancing.
package discovery
