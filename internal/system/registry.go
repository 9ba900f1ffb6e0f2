package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/discovery"
	"github.com/switchboard-rpc/switchboard/kit/discovery/canary"
	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd"
	"github.com/switchboard-rpc/switchboard/kit/discovery/static"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
)

// registerWait bounds how long a starting run waits for its first
// registration; past it the registry keeps trying in the background.
const registerWait = 5 * time.Second

// discoveryRun is how a run finds its peers and is found: without a
// registry, peers are fixed addresses behind the static resolver; with one
// (Config.RegistryEndpoints), every service the run serves registers in
// etcd and peers it does not serve are reached as etcd:///<service>.
// A nil *discoveryRun is a run with neither, and its methods do nothing.
type discoveryRun struct {
	cfg Config
	log *slog.Logger
	cli *clientv3.Client
	reg *etcd.Registry
	res *etcd.Resolver

	// stopCanary stops following the canary policy and withdraws its
	// table; nil without a registry.
	stopCanary func()
	calls      *prometheus.CounterVec
}

// DefaultCanaryKey is the etcd key of the canary policy when
// Config.CanaryPolicy is empty.
const DefaultCanaryKey = "switchboard/canary"

// canaryPollInterval is how often a policy file is checked for changes.
const canaryPollInterval = 2 * time.Second

// openDiscovery connects to the registry when one is configured.
func openDiscovery(cfg Config, tel *telemetry.Telemetry) (*discoveryRun, error) {
	d := &discoveryRun{cfg: cfg, log: cfg.Logger.With(slog.String("component", "discovery"))}
	if len(cfg.RegistryEndpoints) == 0 {
		return d, nil
	}
	cli, err := etcd.NewClient(cfg.RegistryEndpoints, d.log)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	opts := []etcd.Option{etcd.WithLogger(d.log), etcd.WithRegisterer(tel.Registry())}
	if cfg.RegistryTTL > 0 {
		opts = append(opts, etcd.WithTTL(cfg.RegistryTTL))
	}
	reg, err := etcd.NewRegistry(cli, opts...)
	if err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	res, err := etcd.NewResolver(cli, opts...)
	if err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	d.cli, d.reg, d.res = cli, reg, res
	if err := d.followCanary(tel); err != nil {
		_ = cli.Close()
		return nil, err
	}
	return d, nil
}

// followCanary publishes the process's canary table and keeps it
// following the policy: Config.CanaryPolicy, a file, or else the etcd key
// DefaultCanaryKey. Calls through the registry are balanced by it, and
// counted by target service and version.
func (d *discoveryRun) followCanary(tel *telemetry.Telemetry) error {
	d.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_canary_calls_total",
		Help: "Calls sent through the registry, by target service and the version that served them.",
	}, []string{"service", "version"})
	if err := tel.Registry().Register(d.calls); err != nil {
		return fmt.Errorf("canary metrics: %w", err)
	}
	var src canary.Source = etcd.NewPolicySource(d.cli, DefaultCanaryKey, etcd.WithLogger(d.log))
	if d.cfg.CanaryPolicy != "" {
		src = canary.FileSource(d.cfg.CanaryPolicy, canaryPollInterval)
	}
	table := canary.NewTable(nil, d.log)
	withdraw := canary.Publish("", table)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := table.Follow(ctx, src); err != nil && !errors.Is(err, context.Canceled) {
			d.log.LogAttrs(ctx, slog.LevelError, "canary policy no longer followed", slog.String("error", err.Error()))
		}
	}()
	d.stopCanary = func() {
		cancel()
		<-done
		withdraw()
	}
	return nil
}

// target returns how to dial service: at its address in this run's book,
// at a configured peer address, through etcd when a registry is
// configured, else at its slot on Host.
func (d *discoveryRun) target(service string, book map[string]string) (string, []client.Option, error) {
	if err := discovery.ValidateService(service); err != nil {
		return "", nil, err
	}
	addr, ok := book[service]
	if !ok {
		addr, ok = d.cfg.Peers[service]
	}
	if !ok && d.res != nil {
		observe := func(_ context.Context, _, version string, _ error) {
			d.calls.WithLabelValues(service, version).Inc()
		}
		return etcd.Scheme + ":///" + service, []client.Option{
			client.WithDialOptions(grpc.WithResolvers(d.res)),
			client.WithLoadBalancing(canary.Name),
			client.WithUnaryInterceptors(canary.UnaryInterceptor(observe)),
			client.WithStreamInterceptors(canary.StreamInterceptor(observe)),
		}, nil
	}
	if !ok {
		addr, ok = d.cfg.peer(service)
	}
	if !ok {
		return "", nil, fmt.Errorf("no address for service %q", service)
	}
	b := static.FromAddrs(map[string][]string{service: {addr}})
	return static.Scheme + ":///" + service, []client.Option{client.WithDialOptions(grpc.WithResolvers(b))}, nil
}

// register advertises every running service. It waits a little for the
// first registration and otherwise lets the registry keep trying: a run
// must not fail because etcd is briefly away.
func (d *discoveryRun) register(ctx context.Context, all []*running) error {
	if d.reg == nil {
		return nil
	}
	host, err := d.advertiseHost()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, registerWait)
	defer cancel()
	for _, r := range all {
		_, port, err := net.SplitHostPort(r.lis.Addr().String())
		if err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		ep := discovery.Endpoint{Service: r.svc.Name, Addr: net.JoinHostPort(host, port), Version: d.cfg.Version, Zone: d.cfg.Zone}
		if err := d.reg.Register(wctx, ep); err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				d.log.LogAttrs(ctx, slog.LevelWarn, "not registered yet; retrying in the background",
					slog.String("service", ep.Service), slog.String("addr", ep.Addr))
				continue
			}
			return fmt.Errorf("registry: %w", err)
		}
	}
	return nil
}

// advertiseHost is the host peers dial: AdvertiseHost, else Host, else
// (Host is a wildcard) the machine's name.
func (d *discoveryRun) advertiseHost() (string, error) {
	if d.cfg.AdvertiseHost != "" {
		return d.cfg.AdvertiseHost, nil
	}
	if ip := net.ParseIP(d.cfg.Host); d.cfg.Host != "" && (ip == nil || !ip.IsUnspecified()) {
		return d.cfg.Host, nil
	}
	name, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("registry: no advertise host given and the host name is unknown: %w", err)
	}
	return name, nil
}

// deregister removes the run's endpoints from the registry, first thing
// when the run stops, so peers move away before the servers drain.
func (d *discoveryRun) deregister(ctx context.Context) error {
	if d.reg == nil {
		return nil
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), registerWait)
	defer cancel()
	if err := d.reg.Deregister(dctx); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

// close deregisters if that has not happened and disconnects from etcd,
// after the run's connections have closed.
func (d *discoveryRun) close() error {
	if d.cli == nil {
		return nil
	}
	d.stopCanary()
	return errors.Join(d.deregister(context.Background()), d.cli.Close())
}
