package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"

	"github.com/switchboard-rpc/switchboard/kit/discovery"
)

// Scheme is the URL scheme of etcd targets: "etcd:///inventory".
const Scheme = "etcd"

// Resolver is a grpc resolver.Builder for "etcd:///<service>" targets. For
// each ClientConn it lists the service's registrations, pushes them with
// their version, zone and weight as attributes (discovery.FromAttributes),
// and follows changes with a watch. When etcd stops answering it keeps the
// last endpoints it knew, marks the service stale (Stale, the
// switchboard_discovery_resolver_stale gauge, one log line) and keeps
// retrying; calls go on to the replicas it knew. It is safe for concurrent
// use; pass it to a ClientConn with grpc.WithResolvers (kit/client:
// client.WithDialOptions). The caller owns the etcd client and closes it
// after the ClientConns.
type Resolver struct {
	cli *clientv3.Client
	o   options

	mu       sync.Mutex
	watchers map[*watcher]struct{}

	staleDesc, endpointsDesc *prometheus.Desc
}

// NewResolver returns a Resolver reading through cli. Options: WithPrefix,
// WithLogger, WithRegisterer (gauges switchboard_discovery_resolver_stale
// and switchboard_discovery_resolver_endpoints by service),
// WithProbeInterval, WithBackoff, WithOpTimeout.
func NewResolver(cli *clientv3.Client, opts ...Option) (*Resolver, error) {
	if cli == nil {
		return nil, errors.New("etcd: nil client")
	}
	r := &Resolver{
		cli:      cli,
		o:        newOptions(opts),
		watchers: map[*watcher]struct{}{},
		staleDesc: prometheus.NewDesc("switchboard_discovery_resolver_stale",
			"1 while etcd is unreachable and the service's endpoints are the last ones known.", []string{"service"}, nil),
		endpointsDesc: prometheus.NewDesc("switchboard_discovery_resolver_endpoints",
			"Endpoints the resolver currently gives the service's clients.", []string{"service"}, nil),
	}
	if reg := r.o.registerer; reg != nil {
		if err := reg.Register(r); err != nil {
			return nil, fmt.Errorf("etcd: resolver metrics: %w", err)
		}
	}
	return r, nil
}

// Scheme returns "etcd".
func (r *Resolver) Scheme() string { return Scheme }

// Build starts following the service the target names.
func (r *Resolver) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	svc := strings.TrimPrefix(t.Endpoint(), "/")
	if err := discovery.ValidateService(svc); err != nil {
		return nil, fmt.Errorf("etcd: target %q: %w", t.String(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{
		r:       r,
		service: svc,
		prefix:  servicePrefix(r.o.prefix, svc),
		cc:      cc,
		cancel:  cancel,
		done:    make(chan struct{}),
		now:     make(chan struct{}, 1),
		log:     r.o.logger.With(slog.String("service", svc)),
	}
	r.mu.Lock()
	r.watchers[w] = struct{}{}
	r.mu.Unlock()
	go w.run(ctx)
	return w, nil
}

// Stale reports whether any ClientConn of service is running on the last
// endpoints known because etcd does not answer.
func (r *Resolver) Stale(service string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for w := range r.watchers {
		if w.service == service && w.isStale() {
			return true
		}
	}
	return false
}

// Endpoints returns the endpoints last given to service's ClientConns
// (those of the most recently updated one), sorted by address.
func (r *Resolver) Endpoints(service string) []discovery.Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []discovery.Endpoint
	for w := range r.watchers {
		if w.service == service {
			if eps := w.current(); len(eps) >= len(out) {
				out = eps
			}
		}
	}
	return out
}

// Describe implements prometheus.Collector.
func (r *Resolver) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.staleDesc
	ch <- r.endpointsDesc
}

// Collect implements prometheus.Collector: per service, stale if any of
// its ClientConns is, and the most endpoints any of them has.
func (r *Resolver) Collect(ch chan<- prometheus.Metric) {
	type agg struct {
		stale bool
		n     int
	}
	by := map[string]agg{}
	r.mu.Lock()
	for w := range r.watchers {
		a := by[w.service]
		a.stale = a.stale || w.isStale()
		a.n = max(a.n, len(w.current()))
		by[w.service] = a
	}
	r.mu.Unlock()
	for svc, a := range by {
		stale := 0.0
		if a.stale {
			stale = 1
		}
		ch <- prometheus.MustNewConstMetric(r.staleDesc, prometheus.GaugeValue, stale, svc)
		ch <- prometheus.MustNewConstMetric(r.endpointsDesc, prometheus.GaugeValue, float64(a.n), svc)
	}
}

// watcher follows one service for one ClientConn.
type watcher struct {
	r       *Resolver
	service string
	prefix  string
	cc      resolver.ClientConn
	cancel  context.CancelFunc
	done    chan struct{}
	now     chan struct{}
	log     *slog.Logger

	mu     sync.Mutex
	stale  bool
	pushed bool                          // the ClientConn has had a list
	eps    map[string]discovery.Endpoint // by key
}

func (w *watcher) isStale() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stale
}

func (w *watcher) current() []discovery.Endpoint {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]discovery.Endpoint, 0, len(w.eps))
	for _, e := range w.eps {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b discovery.Endpoint) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

// ResolveNow asks for an immediate check of etcd.
func (w *watcher) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case w.now <- struct{}{}:
	default:
	}
}

// Close stops following the service.
func (w *watcher) Close() {
	w.cancel()
	<-w.done
	w.r.mu.Lock()
	delete(w.r.watchers, w)
	w.r.mu.Unlock()
}

// run lists and watches until ctx ends; any failure to reach etcd marks
// the endpoints stale and starts over with a fresh list.
func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	attempt := 0
	for ctx.Err() == nil {
		listed, err := w.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if listed {
			attempt = 0
		}
		w.markStale(ctx, err)
		if !sleep(ctx.Done(), w.r.o.backoff(attempt)) {
			return
		}
		attempt++
	}
}

// follow lists the service, pushes it, then applies watch events and
// probes etcd until something fails. It reports whether the list
// succeeded.
func (w *watcher) follow(ctx context.Context) (bool, error) {
	octx, cancel := context.WithTimeout(ctx, w.r.o.opTimeout)
	resp, err := w.r.cli.Get(octx, w.prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return false, fmt.Errorf("listing: %w", err)
	}
	eps := make(map[string]discovery.Endpoint, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if e, err := decode(w.r.o.prefix, w.service, string(kv.Key), kv.Value); err == nil {
			eps[string(kv.Key)] = e
		} else {
			w.log.LogAttrs(ctx, slog.LevelWarn, "ignoring a malformed registration", slog.String("error", err.Error()))
		}
	}
	w.replace(ctx, eps)

	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	wch := w.r.cli.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	probe := time.NewTicker(w.r.o.probe)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case wr, ok := <-wch:
			if !ok {
				return true, errors.New("watch closed")
			}
			if err := wr.Err(); err != nil {
				return true, fmt.Errorf("watching: %w", err)
			}
			if len(wr.Events) == 0 {
				continue
			}
			next := w.copyEndpoints()
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				switch ev.Type {
				case clientv3.EventTypePut:
					if e, err := decode(w.r.o.prefix, w.service, k, ev.Kv.Value); err == nil {
						next[k] = e
					} else {
						w.log.LogAttrs(ctx, slog.LevelWarn, "ignoring a malformed registration", slog.String("error", err.Error()))
					}
				case clientv3.EventTypeDelete:
					delete(next, k)
				}
			}
			w.replace(ctx, next)
		case <-probe.C:
			if err := w.probe(ctx); err != nil {
				return true, err
			}
		case <-w.now:
			if err := w.probe(ctx); err != nil {
				return true, err
			}
		}
	}
}

// probe checks that etcd answers.
func (w *watcher) probe(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, min(w.r.o.opTimeout, w.r.o.probe))
	defer cancel()
	if _, err := w.r.cli.Get(octx, w.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("probing: %w", err)
	}
	return nil
}

func (w *watcher) copyEndpoints() map[string]discovery.Endpoint {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]discovery.Endpoint, len(w.eps))
	for k, v := range w.eps {
		out[k] = v
	}
	return out
}

// replace makes eps the endpoints and pushes them; a successful list or
// watch event also ends staleness.
func (w *watcher) replace(ctx context.Context, eps map[string]discovery.Endpoint) {
	w.mu.Lock()
	wasStale := w.stale
	w.stale, w.pushed = false, true
	w.eps = eps
	w.mu.Unlock()
	if wasStale {
		w.log.LogAttrs(ctx, slog.LevelInfo, "etcd answers again; endpoints are current", slog.Int("endpoints", len(eps)))
	}
	list := w.current()
	if err := w.cc.UpdateState(discovery.ResolverState(list)); err != nil && len(list) > 0 {
		w.log.LogAttrs(ctx, slog.LevelWarn, "the balancer rejected the endpoints", slog.String("error", err.Error()))
	}
}

// markStale keeps the endpoints and says they may be out of date, once per
// outage.
func (w *watcher) markStale(ctx context.Context, cause error) {
	w.mu.Lock()
	was, pushed := w.stale, w.pushed
	w.stale = true
	n := len(w.eps)
	w.mu.Unlock()
	if !pushed {
		// Nothing known yet: let calls fail with the reason instead of
		// waiting for a first list.
		w.cc.ReportError(fmt.Errorf("etcd: resolving %s: %w", w.service, cause))
	}
	if !was {
		w.log.LogAttrs(ctx, slog.LevelWarn, "etcd unreachable; keeping the last known endpoints",
			slog.Int("endpoints", n), slog.String("error", cause.Error()))
	}
}
