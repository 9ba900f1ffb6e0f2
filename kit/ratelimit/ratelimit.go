package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// ReasonRateLimited is the ErrorInfo reason (domain status.KitDomain) of
// the RESOURCE_EXHAUSTED errors Limit returns.
const ReasonRateLimited = server.ReasonRateLimited

// DefaultMaxIdentities is how many callers have a bucket at most, unless
// WithMaxIdentities says otherwise.
const DefaultMaxIdentities = 100_000

// maxMethods bounds the method buckets made for Limits.Default; further
// methods share one. A server's methods are far fewer, but an unknown
// service handler would let clients name methods at will.
const maxMethods = 1024

// Limit is a token bucket: it refills at Rate tokens a second and holds at
// most Burst. Each call takes one token.
type Limit struct {
	// Rate is the sustained number of calls a second. Zero means no limit.
	Rate float64 `yaml:"rate"`
	// Burst is how many calls may come at once, after a quiet spell. Zero
	// means one second's worth: Rate rounded up, at least one.
	Burst int `yaml:"burst"`
}

// Limits configures a Limiter. The zero value limits nothing.
type Limits struct {
	// Default is the limit of each method not in Methods: every such
	// method has a bucket of its own, shared by all its callers.
	Default Limit `yaml:"default"`
	// Methods overrides Default for the methods it names, by full method
	// ("/package.Service/Method"). A zero Limit here means no limit.
	Methods map[string]Limit `yaml:"methods"`
	// PerIdentity is the limit of each caller across all methods: the
	// verified user, else the calling service, else the peer address.
	PerIdentity Limit `yaml:"per_identity"`
	// Edges are services that relay calls of outside clients, such as a
	// REST gateway. A call from an edge without a verified user is the
	// client's, not the edge's: its caller is the first address in the
	// call's x-forwarded-for metadata, which only a verified edge is
	// believed about. Without that metadata the edge itself is the
	// caller.
	Edges []string `yaml:"edges"`
}

// Option configures a Limiter.
type Option func(*options)

type options struct {
	maxIdentities int
	clock         func() time.Duration
}

// WithMaxIdentities bounds how many callers have a bucket (default
// DefaultMaxIdentities); the least recently seen is forgotten first.
func WithMaxIdentities(n int) Option { return func(o *options) { o.maxIdentities = n } }

// Limiter admits or refuses calls by Limits. It is safe for concurrent
// use; it has nothing to close.
type Limiter struct {
	epoch time.Time
	clock func() time.Duration // time since epoch; nil means the real clock

	methods  atomic.Pointer[map[string]*bucket] // nil value: no limit
	mu       sync.Mutex                         // serializes additions to methods
	def      rate                               // Limits.Default
	overflow *bucket                            // shared by methods beyond maxMethods

	perCaller *callers        // nil when PerIdentity is no limit
	edges     map[string]bool // Limits.Edges
}

// Its Limit method is a kit/server Limiter.
var _ server.Limiter = (*Limiter)(nil).Limit

// rate is a Limit in the units buckets use; the zero rate is no limit.
type rate struct{ interval, window int64 }

func (r rate) unlimited() bool { return r.interval == 0 }

func (r rate) bucket() *bucket { return newBucket(r.interval, r.window) }

// New returns a Limiter for limits. It fails on a negative, infinite or
// too fine rate or burst, a burst without a rate, and a method name that
// is malformed or not registered in protoregistry (import the service's
// generated package), so that a typo cannot silently leave a method
// without its limit.
func New(limits Limits, opts ...Option) (*Limiter, error) {
	o := options{maxIdentities: DefaultMaxIdentities}
	for _, opt := range opts {
		opt(&o)
	}
	var errs []error
	if o.maxIdentities < 1 {
		errs = append(errs, fmt.Errorf("ratelimit: WithMaxIdentities(%d): must be at least 1", o.maxIdentities))
	}
	def, err := compile(limits.Default)
	if err != nil {
		errs = append(errs, fmt.Errorf("ratelimit: default: %w", err))
	}
	perCaller, err := compile(limits.PerIdentity)
	if err != nil {
		errs = append(errs, fmt.Errorf("ratelimit: per_identity: %w", err))
	}
	methods := make(map[string]*bucket, len(limits.Methods))
	names := make([]string, 0, len(limits.Methods))
	for name := range limits.Methods {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := checkMethod(name); err != nil {
			errs = append(errs, fmt.Errorf("ratelimit: method %q: %w", name, err))
			continue
		}
		r, err := compile(limits.Methods[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("ratelimit: method %s: %w", name, err))
			continue
		}
		methods[name] = nil
		if !r.unlimited() {
			methods[name] = r.bucket()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	l := &Limiter{epoch: time.Now(), clock: o.clock, def: def}
	l.methods.Store(&methods)
	if !def.unlimited() {
		l.overflow = def.bucket()
	}
	if !perCaller.unlimited() {
		l.perCaller = newCallers(o.maxIdentities, perCaller.bucket)
	}
	if len(limits.Edges) > 0 {
		l.edges = make(map[string]bool, len(limits.Edges))
		for _, e := range limits.Edges {
			l.edges[e] = true
		}
	}
	return l, nil
}

// compile checks l and returns it in bucket units.
func compile(l Limit) (rate, error) {
	switch {
	case math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) || l.Rate < 0:
		return rate{}, fmt.Errorf("rate %v: must be zero (no limit) or a positive number", l.Rate)
	case l.Burst < 0:
		return rate{}, fmt.Errorf("burst %d: must not be negative", l.Burst)
	case l.Rate == 0 && l.Burst != 0:
		return rate{}, fmt.Errorf("burst %d without a rate: a zero rate means no limit", l.Burst)
	case l.Rate == 0:
		return rate{}, nil
	case l.Rate > float64(time.Second):
		return rate{}, fmt.Errorf("rate %v: at most one call a nanosecond; use zero for no limit", l.Rate)
	}
	burst := l.Burst
	if burst == 0 {
		burst = int(max(1, math.Ceil(l.Rate)))
	}
	interval := int64(float64(time.Second) / l.Rate)
	if float64(interval)*float64(burst) > 1<<62 {
		return rate{}, fmt.Errorf("rate %v with burst %d: burst too large for so slow a rate", l.Rate, burst)
	}
	return rate{interval: interval, window: interval * int64(burst)}, nil
}

// checkMethod checks that name is "/package.Service/Method" and names a
// registered method.
func checkMethod(name string) error {
	svc, method, ok := strings.Cut(strings.TrimPrefix(name, "/"), "/")
	if !strings.HasPrefix(name, "/") || !ok || svc == "" || method == "" || strings.Contains(method, "/") {
		return errors.New(`want a full method, "/package.Service/Method"`)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return fmt.Errorf("no such service registered (is its generated package imported?): %w", err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return fmt.Errorf("%s is not a service", svc)
	}
	if sd.Methods().ByName(protoreflect.Name(method)) == nil {
		return fmt.Errorf("service %s has no method %s", svc, method)
	}
	return nil
}

// now returns the time since the epoch, in nanoseconds.
func (l *Limiter) now() int64 {
	if l.clock != nil {
		return int64(l.clock())
	}
	return int64(time.Since(l.epoch))
}

// Limit takes a token from the bucket of the caller in ctx and from that of
// call's method. It returns nil when both had one, and otherwise a
// RESOURCE_EXHAUSTED error with reason RATE_LIMITED and a RetryInfo saying
// how long until the refusing bucket has a token again. It matches
// kit/server's Limiter: pass l.Limit to server.WithLimiter.
func (l *Limiter) Limit(ctx context.Context, call server.Call) error {
	now := l.now()
	var mine *bucket
	if l.perCaller != nil {
		mine = l.perCaller.get(callerOf(ctx, l.edges))
		if ok, wait := mine.take(now); !ok {
			return exhausted("too many calls from this caller", wait)
		}
	}
	if b := l.method(call.FullMethod); b != nil {
		if ok, wait := b.take(now); !ok {
			if mine != nil {
				mine.refund()
			}
			return exhausted("too many calls to "+call.FullMethod, wait)
		}
	}
	return nil
}

// method returns the bucket of the named method, nil when it has no limit.
func (l *Limiter) method(name string) *bucket {
	if b, ok := (*l.methods.Load())[name]; ok {
		return b
	}
	if l.def.unlimited() {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.methods.Load()
	if b, ok := old[name]; ok {
		return b
	}
	if len(old) >= maxMethods {
		return l.overflow
	}
	// Copy on write: readers never lock, and each method is added once.
	next := maps.Clone(old)
	b := l.def.bucket()
	next[name] = b
	l.methods.Store(&next)
	return b
}

// Identities returns how many callers have a bucket now, at most the bound
// of WithMaxIdentities.
func (l *Limiter) Identities() int {
	if l.perCaller == nil {
		return 0
	}
	return l.perCaller.len()
}

// exhausted returns the RESOURCE_EXHAUSTED error of a refused call.
func exhausted(what string, wait time.Duration) error {
	shown := (wait + time.Millisecond - 1).Truncate(time.Millisecond)
	return status.ResourceExhausted(status.KitDomain, ReasonRateLimited,
		fmt.Sprintf("rate limit exceeded: %s; retry in %s", what, shown), wait)
}
