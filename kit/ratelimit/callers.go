package ratelimit

import (
	"context"
	"hash/maphash"
	"math/bits"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/switchboard-rpc/switchboard/kit/identity"
)

// Kinds of caller keys, so that a user, a service and an address with the
// same name never share a bucket.
const (
	callerNone uint8 = iota
	callerUser
	callerService
	callerIP
	callerAddr // a peer address that is not IP, by its string form
)

// callerKey identifies a caller. It is comparable and built without
// allocating for users, services and IP peers.
type callerKey struct {
	kind uint8
	id   string
	ip   netip.Addr
}

// callerOf returns the key of the caller in ctx: the verified user, else
// the client an edge service forwarded, else the verified calling
// service, else the peer's address.
func callerOf(ctx context.Context, edges map[string]bool) callerKey {
	if u := identity.UserFrom(ctx); u != nil && u.ID != "" {
		return callerKey{kind: callerUser, id: u.ID}
	}
	if s := identity.ServiceFrom(ctx); s != nil && s.Name != "" {
		if edges[s.Name] {
			if ip, ok := forwardedFor(ctx); ok {
				return callerKey{kind: callerIP, ip: addrKey(ip)}
			}
		}
		return callerKey{kind: callerService, id: s.Name}
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return callerKey{kind: callerNone}
	}
	if a, ok := p.Addr.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return callerKey{kind: callerIP, ip: addrKey(ip)}
		}
	}
	return callerKey{kind: callerAddr, id: p.Addr.String()}
}

// forwardedFor returns the first address of the call's x-forwarded-for
// metadata: the client an edge relays.
func forwardedFor(ctx context.Context) (netip.Addr, bool) {
	vals := metadata.ValueFromIncomingContext(ctx, "x-forwarded-for")
	if len(vals) == 0 {
		return netip.Addr{}, false
	}
	first, _, _ := strings.Cut(vals[0], ",")
	ip, err := netip.ParseAddr(strings.TrimSpace(first))
	if err != nil {
		return netip.Addr{}, false
	}
	return ip, true
}

// addrKey returns the address that stands for ip: ip itself for IPv4, its
// /64 prefix for IPv6, since a single host commonly holds a whole /64.
func addrKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// maxShards bounds how many ways the caller LRU is split.
const maxShards = 64

// callers holds the caller buckets in a sharded LRU: each shard has its
// own lock and holds at most its share of the bound.
type callers struct {
	seed   maphash.Seed
	mask   uint64
	shards []shard
	newB   func() *bucket
}

type shard struct {
	mu  sync.Mutex
	lru *simplelru.LRU[callerKey, *bucket]
	_   [48]byte // keep shards on separate cache lines
}

// newCallers returns an LRU of at most size buckets made by newB.
func newCallers(size int, newB func() *bucket) *callers {
	// The largest power of two shards, up to maxShards, that gives each
	// at least one entry; size/n entries each keeps the total within size.
	shift := bits.Len(uint(min(size, maxShards))) - 1
	n := 1 << shift
	c := &callers{seed: maphash.MakeSeed(), mask: 1<<shift - 1, shards: make([]shard, n), newB: newB}
	for i := range c.shards {
		// NewLRU fails only for a size below one, which n rules out.
		c.shards[i].lru, _ = simplelru.NewLRU[callerKey, *bucket](size/n, nil)
	}
	return c
}

// get returns the bucket of k, making it if k has none.
func (c *callers) get(k callerKey) *bucket {
	var h uint64
	if k.kind == callerIP {
		h = maphash.Comparable(c.seed, k.ip)
	} else {
		h = maphash.String(c.seed, k.id)
	}
	s := &c.shards[h&c.mask]
	s.mu.Lock()
	b, ok := s.lru.Get(k)
	if !ok {
		b = c.newB()
		s.lru.Add(k, b)
	}
	s.mu.Unlock()
	return b
}

// len returns how many callers have a bucket.
func (c *callers) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.lru.Len()
		s.mu.Unlock()
	}
	return n
}
