package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/switchboard-rpc/switchboard/kit/discovery"
)

// MaxEndpoints bounds the endpoints one Registry holds (they are written
// in one etcd transaction).
const MaxEndpoints = 64

// State is where a Registry stands.
type State int32

// The states of a Registry.
const (
	// StateIdle: nothing registered yet.
	StateIdle State = iota
	// StateReregistering: the endpoints are not (or no longer) in etcd
	// and the registry is writing them under a new lease, backing off
	// while etcd is unreachable. The first registration goes through it
	// too.
	StateReregistering
	// StateRegistered: every endpoint is in etcd under a live lease.
	StateRegistered
	// StateStopped: deregistered; the registry does nothing more.
	StateStopped
)

var stateNames = [...]string{"idle", "re-registering", "registered", "stopped"}

// String returns the state's name as the state gauge labels it.
func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("State(%d)", int32(s))
	}
	return stateNames[s]
}

// ErrStopped is returned by Register after Deregister.
var ErrStopped = errors.New("etcd: registry stopped")

// Registry keeps a process's endpoints in etcd under one lease kept alive
// in the background. When the lease is lost (it expired while etcd was
// unreachable, someone revoked it, etcd came back without its data) the
// registry grants a new one and writes every endpoint again, retrying with
// capped exponential backoff and jitter for as long as it runs. Its methods
// are safe for concurrent use. The caller owns the etcd client and closes
// it after Deregister or Close.
type Registry struct {
	cli *clientv3.Client
	o   options

	state         atomic.Int32
	stateGauge    *prometheus.GaugeVec
	registrations prometheus.Counter

	changed chan struct{}
	halt    chan struct{} // closed by Deregister

	mu      sync.Mutex
	entries map[string]*entry
	lease   clientv3.LeaseID
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// entry is one endpoint of the registry.
type entry struct {
	ep      discovery.Endpoint
	key     string
	val     string
	lease   clientv3.LeaseID // lease it was last written under
	written chan struct{}    // closed once it is first in etcd
}

// NewRegistry returns a Registry writing through cli. Options: WithTTL,
// WithPrefix, WithLogger, WithRegisterer (metrics
// switchboard_discovery_registry_state{state} and
// switchboard_discovery_registry_leases_total), WithBackoff,
// WithOpTimeout.
func NewRegistry(cli *clientv3.Client, opts ...Option) (*Registry, error) {
	if cli == nil {
		return nil, errors.New("etcd: nil client")
	}
	r := &Registry{
		cli:     cli,
		o:       newOptions(opts),
		changed: make(chan struct{}, 1),
		halt:    make(chan struct{}),
		entries: map[string]*entry{},
		done:    make(chan struct{}),
		stateGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchboard_discovery_registry_state",
			Help: "1 for the state the service registry is in (idle, re-registering, registered, stopped), 0 for the others.",
		}, []string{"state"}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_discovery_registry_leases_total",
			Help: "Leases under which the service registry wrote its endpoints; more than one means registrations were lost and restored.",
		}),
	}
	r.setState(StateIdle)
	if reg := r.o.registerer; reg != nil {
		for _, c := range []prometheus.Collector{r.stateGauge, r.registrations} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("etcd: registry metrics: %w", err)
			}
		}
	}
	return r, nil
}

// State returns where the registry stands.
func (r *Registry) State() State { return State(r.state.Load()) }

// Check returns nil while every endpoint is registered, and an error
// naming the state otherwise; it suits a readiness check.
func (r *Registry) Check(context.Context) error {
	if s := r.State(); s != StateRegistered {
		return fmt.Errorf("etcd: registry is %s", s)
	}
	return nil
}

func (r *Registry) setState(s State) {
	r.state.Store(int32(s))
	for i, name := range stateNames {
		v := 0.0
		if State(i) == s {
			v = 1
		}
		r.stateGauge.WithLabelValues(name).Set(v)
	}
}

// Register adds e to the registry and returns once it is in etcd. If ctx
// ends first it returns ctx's error, and the registry keeps trying in the
// background until Deregister. Registering the same service and address
// again replaces its labels.
func (r *Registry) Register(ctx context.Context, e discovery.Endpoint) error {
	if err := e.Validate(); err != nil {
		return err
	}
	val, err := encode(e)
	if err != nil {
		return err
	}
	k := key(r.o.prefix, e)
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return ErrStopped
	}
	en, ok := r.entries[k]
	switch {
	case ok && en.ep.Equal(e):
	case !ok && len(r.entries) >= MaxEndpoints:
		r.mu.Unlock()
		return fmt.Errorf("etcd: registry holds %d endpoints already, at most %d", len(r.entries), MaxEndpoints)
	default:
		en = &entry{ep: e, key: k, val: val, written: make(chan struct{})}
		r.entries[k] = en
	}
	if !r.started {
		r.started = true
		var loopCtx context.Context
		loopCtx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
		go r.run(loopCtx)
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	select {
	case <-en.written:
		return nil
	case <-r.halt:
		return ErrStopped
	case <-ctx.Done():
		return fmt.Errorf("etcd: %s not registered yet, still trying: %w", k, context.Cause(ctx))
	}
}

// run keeps the endpoints registered until ctx ends.
func (r *Registry) run(ctx context.Context) {
	defer close(r.done)
	attempt := 0
	for {
		r.setState(StateReregistering)
		ka, release, err := r.establish(ctx)
		if err == nil {
			attempt = 0
			r.hold(ctx, ka)
			release()
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			wait := r.o.backoff(attempt)
			attempt++
			r.o.logger.LogAttrs(ctx, slog.LevelWarn, "service registration failed; retrying",
				slog.String("error", err.Error()), slog.Int("attempt", attempt), slog.Duration("wait", wait))
			if !sleep(ctx.Done(), wait) {
				return
			}
			continue
		}
		r.o.logger.LogAttrs(ctx, slog.LevelWarn, "service registration lost; registering again")
	}
}

// establish grants a lease, writes every endpoint under it and starts
// keeping it alive; release stops the keep-alive.
func (r *Registry) establish(ctx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, func(), error) {
	octx, cancel := context.WithTimeout(ctx, r.o.opTimeout)
	defer cancel()
	g, err := r.cli.Grant(octx, int64(math.Ceil(r.o.ttl.Seconds())))
	if err != nil {
		return nil, nil, fmt.Errorf("granting a lease: %w", err)
	}
	r.mu.Lock()
	r.lease = g.ID
	entries := r.snapshot()
	r.mu.Unlock()
	// The keep-alive starts before the endpoints are written, so that
	// put's report of the registry as registered is true when callers of
	// Register see it.
	kctx, release := context.WithCancel(ctx)
	fail := func(err error) (<-chan *clientv3.LeaseKeepAliveResponse, func(), error) {
		release()
		r.abandon(ctx, g.ID)
		return nil, nil, err
	}
	ka, err := r.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		return fail(fmt.Errorf("keeping lease %x alive: %w", int64(g.ID), err))
	}
	if err := r.put(octx, g.ID, entries); err != nil {
		return fail(err)
	}
	r.registrations.Inc()
	services := make([]string, 0, len(entries))
	for _, en := range entries {
		services = append(services, en.ep.Service+"@"+en.ep.Addr)
	}
	slices.Sort(services)
	r.o.logger.LogAttrs(ctx, slog.LevelInfo, "services registered",
		slog.Any("endpoints", services), slog.String("lease", fmt.Sprintf("%x", int64(g.ID))), slog.Duration("ttl", r.o.ttl))
	return ka, release, nil
}

// hold watches the lease until it is lost or ctx ends, writing endpoints
// added meanwhile.
func (r *Registry) hold(ctx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ka:
			if !ok {
				// The channel also closes when ctx ends: then the lease
				// is still held, and Deregister deletes the keys and
				// revokes it.
				if ctx.Err() == nil {
					r.mu.Lock()
					r.lease = 0
					r.mu.Unlock()
				}
				return
			}
		case <-r.changed:
			r.mu.Lock()
			lease := r.lease
			var pending []*entry
			for _, en := range r.snapshot() {
				if en.lease != lease {
					pending = append(pending, en)
				}
			}
			r.mu.Unlock()
			if len(pending) == 0 {
				continue
			}
			octx, cancel := context.WithTimeout(ctx, r.o.opTimeout)
			err := r.put(octx, lease, pending)
			cancel()
			if err != nil {
				// Start over under a new lease, which writes everything.
				r.o.logger.LogAttrs(ctx, slog.LevelWarn, "registering an endpoint failed",
					slog.String("error", err.Error()))
				r.abandon(ctx, lease)
				return
			}
		}
	}
}

// snapshot returns the entries in key order. r.mu must be held.
func (r *Registry) snapshot() []*entry {
	out := make([]*entry, 0, len(r.entries))
	for _, en := range r.entries {
		out = append(out, en)
	}
	slices.SortFunc(out, func(a, b *entry) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	return out
}

// put writes entries under lease, which is being kept alive, in one
// transaction; then the registry is registered, and the entries are
// marked written, which lets their Register calls return.
func (r *Registry) put(ctx context.Context, lease clientv3.LeaseID, entries []*entry) error {
	ops := make([]clientv3.Op, 0, len(entries))
	for _, en := range entries {
		ops = append(ops, clientv3.OpPut(en.key, en.val, clientv3.WithLease(lease)))
	}
	if _, err := r.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("writing endpoints: %w", err)
	}
	r.setState(StateRegistered)
	r.mu.Lock()
	for _, en := range entries {
		if r.entries[en.key] == en {
			en.lease = lease
			select {
			case <-en.written:
			default:
				close(en.written)
			}
		}
	}
	r.mu.Unlock()
	return nil
}

// abandon revokes a lease the registry gives up on, so its keys do not
// linger until it expires; failures only mean they will.
func (r *Registry) abandon(ctx context.Context, lease clientv3.LeaseID) {
	r.mu.Lock()
	if r.lease == lease {
		r.lease = 0
	}
	r.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.o.opTimeout)
	defer cancel()
	_, _ = r.cli.Revoke(rctx, lease)
}

// Deregister stops keeping the endpoints alive, deletes their keys (only
// those still held under its lease) and revokes the lease, so resolvers
// drop them at once. Servers call it first when shutting down, before
// draining. After it, Register fails with ErrStopped. It is safe to call
// more than once.
func (r *Registry) Deregister(ctx context.Context) error {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	close(r.halt)
	started, cancel := r.started, r.cancel
	r.mu.Unlock()
	defer r.setState(StateStopped)
	if started {
		cancel()
		select {
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("etcd: deregister: %w", context.Cause(ctx))
		}
	}
	r.mu.Lock()
	lease := r.lease
	r.lease = 0
	entries := r.snapshot()
	r.mu.Unlock()
	if lease == 0 {
		return nil
	}
	ops := make([]clientv3.Op, 0, len(entries))
	for _, en := range entries {
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(en.key), "=", lease)},
			[]clientv3.Op{clientv3.OpDelete(en.key)}, nil))
	}
	var errs []error
	if _, err := r.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		errs = append(errs, fmt.Errorf("deleting endpoints: %w", err))
	}
	if _, err := r.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		errs = append(errs, fmt.Errorf("revoking lease: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("etcd: deregister (the keys expire with the lease): %w", err)
	}
	r.o.logger.LogAttrs(ctx, slog.LevelInfo, "services deregistered", slog.Int("endpoints", len(entries)))
	return nil
}

// Close deregisters within the registry's operation timeout.
func (r *Registry) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.o.opTimeout)
	defer cancel()
	return r.Deregister(ctx)
}
