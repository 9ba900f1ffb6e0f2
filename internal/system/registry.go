package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/discovery"
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
}

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
	return d, nil
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
		return etcd.Scheme + ":///" + service, []client.Option{client.WithDialOptions(grpc.WithResolvers(d.res))}, nil
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
	return errors.Join(d.deregister(context.Background()), d.cli.Close())
}
