// Package ratelimit admits or refuses calls with token buckets, per method
// and per caller. It plugs into kit/server as its Limiter hook, which runs
// after authentication, so the caller is known:
//
//	l, err := ratelimit.New(ratelimit.Limits{
//		Default:     ratelimit.Limit{Rate: 1000, Burst: 200},
//		Methods:     map[string]ratelimit.Limit{"/switchboard.order.v1.OrderService/PlaceOrder": {Rate: 50, Burst: 10}},
//		PerIdentity: ratelimit.Limit{Rate: 20, Burst: 40},
//	})
//	...
//	srv, err := server.New(server.WithLimiter(l.Limit), ...)
//
// or, from a configuration file:
//
//	default:      {rate: 1000, burst: 200}
//	methods:
//	  /switchboard.order.v1.OrderService/PlaceOrder: {rate: 50, burst: 10}
//	per_identity: {rate: 20, burst: 40}
//
// # Semantics
//
// A [Limit] is a token bucket that refills at Rate tokens a second and
// holds at most Burst; every call, and every stream when it opens, takes
// one token. A zero Rate means no limit; a zero Burst means one second's
// worth of tokens (at least one).
//
// Every call must pass two buckets:
//
//   - the bucket of its method, shared by all callers: the method's entry
//     in Limits.Methods (by full method, "/package.Service/Method"), else
//     a bucket of its own with Limits.Default. It protects the server.
//   - the bucket of its caller, shared by all the caller's calls, with
//     Limits.PerIdentity. It keeps one caller from taking everyone's share.
//
// The caller is, in order: the verified user's id (identity.UserFrom), the
// verified calling service's name (identity.ServiceFrom), the peer's IP
// address (an IPv6 address counts by its /64 prefix, since one host
// commonly holds a whole /64). Users, services and addresses never share
// a bucket even when their names coincide.
//
// The caller's bucket is tried first: a caller over its own limit is
// refused without touching the shared method bucket, and a caller refused
// by the method bucket gets its token back.
//
// # Refusals
//
// A refused call gets RESOURCE_EXHAUSTED with an ErrorInfo (domain
// status.KitDomain, reason RATE_LIMITED) and a RetryInfo whose delay is
// the time until the bucket has a token again, exactly; clients read it
// with kit/status.RetryDelay.
//
// # Memory and concurrency
//
// Caller buckets live in a bounded LRU (100,000 callers by default, see
// [WithMaxIdentities]), split into shards with a lock each, so that a
// client inventing identities (addresses, user ids) cannot grow memory
// without end. A caller evicted for lack of room starts again with a full
// bucket. Method buckets live in a map read without locks, bounded too:
// methods beyond the first 1,024 share one bucket. Taking a token is a
// lock-free compare-and-swap (the generic cell rate algorithm, which is a
// token bucket kept as one timestamp).
//
// A Limiter is safe for concurrent use and holds no goroutines or other
// resources: there is nothing to close.
package ratelimit
