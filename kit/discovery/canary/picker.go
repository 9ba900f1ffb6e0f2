package canary

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/connectivity"

	"github.com/switchboard-rpc/switchboard/kit/discovery"
)

// atomicConfig holds the balancer's current Config.
type atomicConfig struct{ p atomic.Pointer[Config] }

func (a *atomicConfig) store(c *Config) { a.p.Store(c) }

func (a *atomicConfig) load() *Config {
	if c := a.p.Load(); c != nil {
		return c
	}
	return &Config{}
}

// member is one READY child: its picker and the version it serves.
type member struct {
	picker  balancer.Picker
	version *string
	weight  uint32
}

// group round-robins over members in proportion to their weights.
type group struct {
	members []*member
	ring    []*member
	next    atomic.Uint32
}

func (g *group) build() {
	var most uint32
	for _, m := range g.members {
		most = max(most, m.weight)
	}
	for round := range most {
		for _, m := range g.members {
			if m.weight > round {
				g.ring = append(g.ring, m)
			}
		}
	}
	// Start each picker at a random place so clients do not move in step.
	g.next.Store(rand.Uint32()) //nolint:gosec // spreading load, not a secret
}

func (g *group) pick() *member {
	n := g.next.Add(1)
	return g.ring[n%uint32(len(g.ring))] //nolint:gosec // the ring holds at most MaxWeight entries per endpoint
}

// plan is one service's policy laid out for picking, restricted to
// positive weights.
type plan struct {
	src      *Policies
	versions []string
	cum      []uint64 // cumulative weights
}

func (pl *plan) total() uint64 {
	if len(pl.cum) == 0 {
		return 0
	}
	return pl.cum[len(pl.cum)-1]
}

// at returns the version whose weight range holds point.
func (pl *plan) at(point uint64) string {
	i, _ := slices.BinarySearch(pl.cum, point+1)
	return pl.versions[i]
}

// picker picks among READY children by the canary policy.
type picker struct {
	table, service string
	byVersion      map[string]*group
	all            *group
	plan           atomic.Pointer[plan]
}

func newPicker(table, service string, children []endpointsharding.ChildState) *picker {
	p := &picker{table: table, service: service, byVersion: map[string]*group{}, all: &group{}}
	versions := map[string]*string{}
	for _, c := range children {
		if c.State.ConnectivityState != connectivity.Ready {
			continue
		}
		e, _ := discovery.FromAttributes(c.Endpoint.Attributes)
		vp, ok := versions[e.Version]
		if !ok {
			v := e.Version
			vp = &v
			versions[v] = vp
		}
		m := &member{picker: c.State.Picker, version: vp, weight: e.EffectiveWeight()}
		g := p.byVersion[e.Version]
		if g == nil {
			g = &group{}
			p.byVersion[e.Version] = g
		}
		g.members = append(g.members, m)
		p.all.members = append(p.all.members, m)
	}
	for _, g := range p.byVersion {
		g.build()
	}
	p.all.build()
	return p
}

// Pick sends the call to a READY replica of the version the policy, the
// key or the override chooses.
func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	m := p.choose(info.Ctx).pick()
	record(info.Ctx, m.version)
	return m.picker.Pick(info)
}

func (p *picker) choose(ctx context.Context) *group {
	if v := outgoing(ctx, OverrideHeader); v != "" {
		if g := p.byVersion[v]; g != nil {
			return g
		}
	}
	pl := p.currentPlan()
	if pl == nil {
		return p.all
	}
	var point uint64
	if key := keyFrom(ctx); key != "" {
		point = hash(key)
	} else {
		point = rand.Uint64() //nolint:gosec // spreading load, not a secret
	}
	if g := p.byVersion[pl.at(point%pl.total())]; g != nil {
		return g
	}
	// The chosen version has no READY replica: the policy's others, by
	// weight, then anything READY.
	var avail uint64
	for i, v := range pl.versions {
		if p.byVersion[v] != nil {
			avail += weightAt(pl, i)
		}
	}
	if avail == 0 {
		return p.all
	}
	point %= avail
	for i, v := range pl.versions {
		g := p.byVersion[v]
		if g == nil {
			continue
		}
		w := weightAt(pl, i)
		if point < w {
			return g
		}
		point -= w
	}
	return p.all
}

func weightAt(pl *plan, i int) uint64 {
	if i == 0 {
		return pl.cum[0]
	}
	return pl.cum[i] - pl.cum[i-1]
}

// currentPlan returns the service's plan under the table's current
// policies, or nil when it has none.
func (p *picker) currentPlan() *plan {
	t := lookup(p.table)
	if t == nil {
		return nil
	}
	src := t.current()
	if cached := p.plan.Load(); cached != nil && cached.src == src {
		if cached.total() == 0 {
			return nil
		}
		return cached
	}
	pl := &plan{src: src}
	pol := (*src)[p.service]
	for _, v := range sortedVersions(pol) {
		if w := pol[v]; w > 0 {
			pl.versions = append(pl.versions, v)
			pl.cum = append(pl.cum, pl.total()+uint64(w))
		}
	}
	p.plan.Store(pl)
	if pl.total() == 0 {
		return nil
	}
	return pl
}

func sortedVersions(p Policy) []string {
	out := make([]string, 0, len(p))
	for v := range p {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// hash maps a sticky key to 64 well-mixed bits: FNV-1a, then the
// splitmix64 finalizer so that keys differing in a digit spread evenly.
func hash(key string) uint64 {
	x := uint64(14695981039346656037) // FNV-1a offset basis
	for i := 0; i < len(key); i++ {
		x ^= uint64(key[i])
		x *= 1099511628211 // FNV prime
	}
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
