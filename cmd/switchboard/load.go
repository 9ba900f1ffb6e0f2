package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/switchboard-rpc/switchboard/internal/flagenv"
	"github.com/switchboard-rpc/switchboard/internal/loadgen"
	"github.com/switchboard-rpc/switchboard/internal/system"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/client"
)

// loadFlags are the settings of load.
type loadFlags struct {
	cfg          loadgen.Config
	data, host   string
	basePort     int
	gateway      string
	asJSON       bool
	setupTimeout time.Duration
}

func newLoadCommand() *cobra.Command {
	var f loadFlags
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Drive a running system with load and report latency percentiles",
		Long: `load drives a running system (switchboard up, or services run with serve)
with the shop's flows: signed-in users reading items (get-item), placing orders
of one unit with unique idempotency keys (place-order), or a mix of both.

Before the run it prepares the shop as the operator, with the certificates
under <data>/certs: it registers --users users (or signs them in again), opens
each a funded account and stocks the item the orders buy (sku-load).

Calls go straight to the services over gRPC (--via grpc) or through the REST
gateway (--via http). Without --rate the run is a closed loop: --workers
callers each send the next call when the last returns. With --rate it is an
open loop at that many calls per second, with at most --workers in flight;
latency is measured from when each call was due.

It prints a progress bar on stderr and, at the end, a table of calls, errors,
throughput and p50/p90/p99/p99.9 latency per operation (--json for machines).
It exits non-zero if any call failed.

Every flag can also be set with SWITCHBOARD_<FLAG>.`,
		Example: `  switchboard load --scenario place-order --workers 32 --duration 30s
  switchboard load --via http --scenario mix --rate 500 --duration 1m --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flagenv.Apply(cmd.Flags(), "", os.LookupEnv); err != nil {
				return err
			}
			return runLoad(cmd, f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.cfg.Via, "via", loadgen.ViaGRPC, "how calls reach the shop: grpc or http (the gateway)")
	fs.StringVar(&f.cfg.Scenario, "scenario", loadgen.Mix, "place-order, get-item or mix")
	fs.IntVar(&f.cfg.MixOrders, "mix-orders", 20, "percentage of place-order calls in the mix")
	fs.IntVar(&f.cfg.Workers, "workers", 16, "callers (closed loop), or most calls in flight (open loop)")
	fs.Float64Var(&f.cfg.Rate, "rate", 0, "calls per second of an open loop (0: closed loop)")
	fs.DurationVar(&f.cfg.Duration, "duration", 10*time.Second, "length of the run")
	fs.Int64Var(&f.cfg.Requests, "requests", 0, "end after this many calls (0: run for --duration)")
	fs.IntVar(&f.cfg.Users, "users", 20, "users the calls are spread over")
	fs.DurationVar(&f.cfg.Timeout, "timeout", 5*time.Second, "bound on each call")
	fs.StringVar(&f.data, "data", "./var", "data directory of the system (for <data>/certs)")
	fs.StringVar(&f.host, "host", "127.0.0.1", "host of the services")
	fs.IntVar(&f.basePort, "base-port", 7100, "port of the first service, as given to up")
	fs.StringVar(&f.gateway, "gateway", "http://127.0.0.1:8080", "gateway URL for --via http")
	fs.BoolVar(&f.asJSON, "json", false, "print the report as JSON")
	fs.DurationVar(&f.setupTimeout, "setup-timeout", 2*time.Minute, "bound on preparing users and stock")
	return cmd
}

// errCallsFailed says a load run had failed calls.
var errCallsFailed = errors.New("load: some calls failed")

func runLoad(cmd *cobra.Command, f loadFlags) error {
	cc := system.Config{DataDir: f.data}
	src, err := certs.NewSource(certs.FilesIn(cc.CertsDir(), certs.OperatorName))
	if err != nil {
		return fmt.Errorf("load: operator certificate (is the system running with --data %s?): %w", f.data, err)
	}
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	dial := func(name string) (*grpc.ClientConn, error) {
		svc, ok := system.Lookup(name)
		if !ok {
			return nil, fmt.Errorf("load: no service %s", name)
		}
		addr := net.JoinHostPort(f.host, strconv.Itoa(f.basePort+svc.Offset))
		conn, err := client.Dial("passthrough:///"+addr, client.WithCredentials(certs.ClientCredentials(src, name)))
		if err != nil {
			return nil, fmt.Errorf("load: dial %s at %s: %w", name, addr, err)
		}
		conns = append(conns, conn)
		return conn, nil
	}
	var c loadgen.Conns
	for _, d := range []struct {
		name string
		to   *grpc.ClientConnInterface
	}{{"identity", &c.Identity}, {"inventory", &c.Inventory}, {"payment", &c.Payment}, {"order", &c.Order}} {
		conn, err := dial(d.name)
		if err != nil {
			return err
		}
		*d.to = conn
	}

	ctx := cmd.Context()
	setupCtx, cancel := context.WithTimeout(ctx, f.setupTimeout)
	fx, err := loadgen.Setup(setupCtx, c, f.cfg.Users)
	cancel()
	if err != nil {
		return err
	}
	var target loadgen.Target = loadgen.NewGRPCTarget(c)
	if f.cfg.Via == loadgen.ViaHTTP {
		ht, err := loadgen.NewHTTPTarget(f.gateway, f.cfg.Workers)
		if err != nil {
			return err
		}
		defer ht.Close()
		target = ht
	}
	f.cfg.Progress = cmd.ErrOrStderr()
	rep, err := loadgen.Run(ctx, f.cfg, target, fx)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if f.asJSON {
		err = rep.WriteJSON(out)
	} else {
		err = rep.WriteTable(out)
	}
	if err != nil {
		return err
	}
	if rep.Errors() > 0 {
		return errCallsFailed
	}
	return nil
}
