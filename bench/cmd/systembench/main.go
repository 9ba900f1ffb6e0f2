// Command systembench measures the whole shop the way a user runs it: it
// starts the system in this process (every service on its own loopback
// port over mTLS, the gateway, events over the embedded NATS), prepares
// users and stock with internal/loadgen, and drives closed-loop load:
//
//   - GetItem straight over gRPC (the baseline) and through the REST
//     gateway, so the gateway's cost shows as a ratio;
//   - PlaceOrder over gRPC on the embedded defaults (SQLite) and, when
//     PostgreSQL answers, on PostgreSQL (a fresh database per service),
//     as orders/s and p99 latency.
//
// It prints one table and writes the figures as JSON (-json FILE). The
// machine is shared and noisy: compare ratios from the same run, not
// absolute figures across runs.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver for the admin connection
	"google.golang.org/grpc"

	"github.com/switchboard-rpc/switchboard/internal/loadgen"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/internal/system"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "systembench:", err)
		os.Exit(1)
	}
}

// Result is one measured figure and, when it has one, its baseline from
// the same run.
type Result struct {
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Baseline string  `json:"baseline,omitempty"`
	BaseVal  float64 `json:"baseline_value,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
	Goal     string  `json:"goal,omitempty"`
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("systembench", flag.ContinueOnError)
	duration := fs.Duration("duration", 5*time.Second, "length of each load run")
	workers := fs.Int("workers", 32, "closed-loop callers")
	users := fs.Int("users", 20, "users the calls are spread over")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	postgres := fs.Bool("postgres", true, "also measure PlaceOrder on PostgreSQL when it answers")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of each load run to `PREFIX`-<n>-<scenario>.prof")
	var merge mergeFlag
	fs.Var(&merge, "merge", "name=file of JSON lines (benchratio -out) to include in the -json file under name; repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	var results []Result

	sqlite, err := startShop(nil)
	if err != nil {
		return err
	}
	fx, err := loadgen.Setup(ctx, sqlite.conns, *users)
	if err != nil {
		sqlite.stop()
		return err
	}
	cfg := loadgen.Config{Workers: *workers, Duration: *duration, Users: *users}
	runs := 0
	measure := func(scenario string, t loadgen.Target) (loadgen.OpReport, error) {
		c := cfg
		c.Scenario = scenario
		runs++
		stop, err := startProfile(*cpuProfile, runs, scenario)
		if err != nil {
			return loadgen.OpReport{}, err
		}
		rep, err := loadgen.Run(ctx, c, t, fx)
		stop()
		if err != nil {
			return loadgen.OpReport{}, err
		}
		if rep.Errors() > 0 {
			return loadgen.OpReport{}, fmt.Errorf("%s: %d calls failed: %v", scenario, rep.Errors(), rep.Ops[0].Errors)
		}
		return rep.Ops[0], nil
	}
	direct, err := measure(loadgen.GetItem, loadgen.NewGRPCTarget(sqlite.conns))
	if err == nil {
		var ht *loadgen.HTTPTarget
		if ht, err = loadgen.NewHTTPTarget(sqlite.gateway, *workers); err == nil {
			var via loadgen.OpReport
			via, err = measure(loadgen.GetItem, ht)
			ht.Close()
			results = append(results,
				Result{Name: "GetItem direct gRPC", Value: direct.PerSecond, Unit: "calls/s"},
				Result{Name: "GetItem via gateway", Value: via.PerSecond, Unit: "calls/s", Baseline: "GetItem direct gRPC", BaseVal: direct.PerSecond, Ratio: via.PerSecond / direct.PerSecond, Goal: ">= 0.5"},
				Result{Name: "GetItem direct p99", Value: direct.P99, Unit: "ms"},
				Result{Name: "GetItem via gateway p99", Value: via.P99, Unit: "ms"},
			)
		}
	}
	if err == nil {
		var po loadgen.OpReport
		if po, err = measure(loadgen.PlaceOrder, loadgen.NewGRPCTarget(sqlite.conns)); err == nil {
			results = append(results,
				Result{Name: "PlaceOrder SQLite", Value: po.PerSecond, Unit: "orders/s", Goal: ">= 1000"},
				Result{Name: "PlaceOrder SQLite p99", Value: po.P99, Unit: "ms", Goal: "<= 50"},
			)
		}
	}
	sqlite.stop()
	if err != nil {
		return err
	}

	if *postgres {
		dbs, cleanup, perr := postgresDatabases(ctx)
		switch {
		case perr != nil && os.Getenv("CI") == "true":
			return perr
		case perr != nil:
			fmt.Fprintln(os.Stderr, "systembench: PostgreSQL skipped:", perr)
		default:
			defer cleanup()
			pg, err := startShop(dbs)
			if err != nil {
				return err
			}
			fx, err = loadgen.Setup(ctx, pg.conns, *users)
			if err == nil {
				var po loadgen.OpReport
				if po, err = measure(loadgen.PlaceOrder, loadgen.NewGRPCTarget(pg.conns)); err == nil {
					results = append(results,
						Result{Name: "PlaceOrder PostgreSQL", Value: po.PerSecond, Unit: "orders/s", Goal: ">= 1000"},
						Result{Name: "PlaceOrder PostgreSQL p99", Value: po.P99, Unit: "ms", Goal: "<= 50"},
					)
				}
			}
			pg.stop()
			if err != nil {
				return err
			}
		}
	}

	printTable(stdout, results, *workers, *duration)
	if *jsonOut != "" {
		doc := map[string]any{"system": map[string]any{"workers": *workers, "seconds": duration.Seconds(), "results": results}}
		for _, m := range merge {
			lines, err := readJSONLines(m.file)
			if err != nil {
				return err
			}
			doc[m.name] = lines
		}
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// startProfile starts a CPU profile written to prefix-n-scenario.prof,
// or does nothing when prefix is empty; the function it returns stops it.
func startProfile(prefix string, n int, scenario string) (func(), error) {
	if prefix == "" {
		return func() {}, nil
	}
	f, err := os.Create(fmt.Sprintf("%s-%d-%s.prof", prefix, n, scenario))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// mergeFlag collects -merge name=file flags.
type mergeFlag []struct{ name, file string }

func (m *mergeFlag) String() string { return fmt.Sprint(*m) }

func (m *mergeFlag) Set(v string) error {
	name, file, ok := strings.Cut(v, "=")
	if !ok || name == "" || file == "" {
		return fmt.Errorf("-merge %q: want name=file", v)
	}
	*m = append(*m, struct{ name, file string }{name, file})
	return nil
}

// readJSONLines reads a file of one JSON object a line.
func readJSONLines(name string) ([]json.RawMessage, error) {
	b, err := os.ReadFile(name) //nolint:gosec // a file named on the command line
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if !json.Valid(line) {
			return nil, fmt.Errorf("%s: a line is not JSON: %.60s", name, line)
		}
		out = append(out, json.RawMessage(line))
	}
	return out, nil
}

func printTable(w io.Writer, results []Result, workers int, d time.Duration) {
	_, _ = fmt.Fprintf(w, "the shop in one process, %d closed-loop callers, %v per run\n", workers, d)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "figure\tvalue\tbaseline\tratio\tgoal")
	for _, r := range results {
		base, ratio := "", ""
		if r.Baseline != "" {
			base = fmt.Sprintf("%.0f %s (%s)", r.BaseVal, r.Unit, r.Baseline)
			ratio = fmt.Sprintf("%.2fx", r.Ratio)
		}
		_, _ = fmt.Fprintf(tw, "%s\t%.1f %s\t%s\t%s\t%s\n", r.Name, r.Value, r.Unit, base, ratio, r.Goal)
	}
	_ = tw.Flush()
}

// shop is a running system and the operator's connections to it.
type shop struct {
	conns   loadgen.Conns
	gateway string
	stop    func()
}

// startShop runs the system on free ports in a temporary directory: on
// SQLite, or on the PostgreSQL databases given per service. Rate limits
// are lifted (the load is the point) and the carrier does not move, so the
// figures are of placing orders.
func startShop(databases map[string]string) (*shop, error) {
	dir, err := os.MkdirTemp("", "systembench-")
	if err != nil {
		return nil, err
	}
	unlimited := ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1e7, Burst: 1e7}}
	cfg := system.Config{
		DataDir: dir, Host: "127.0.0.1", BasePort: 0,
		Drain: 10 * time.Millisecond, ShutdownTimeout: 30 * time.Second,
		CarrierStep: time.Hour, Limits: unlimited, Databases: databases,
		SignupCredit: 1_000_000_000,
		Gateway:      system.GatewayConfig{Addr: "127.0.0.1:0", Limits: unlimited},
		Logger:       slog.New(slog.DiscardHandler),
	}
	run, err := system.Start(cfg, system.Services(), time.Minute)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	addrs := run.Addrs
	var conns []*grpc.ClientConn
	stop := func() {
		for _, c := range conns {
			_ = c.Close()
		}
		if err := run.Stop(time.Minute); err != nil {
			fmt.Fprintln(os.Stderr, "systembench: stopping the system:", err)
		}
		_ = os.RemoveAll(dir)
	}
	src, err := certs.NewSource(certs.FilesIn(cfg.CertsDir(), certs.OperatorName))
	if err != nil {
		stop()
		return nil, err
	}
	s := &shop{gateway: addrs[system.GatewayName], stop: stop}
	for _, d := range []struct {
		name string
		to   *grpc.ClientConnInterface
	}{{"identity", &s.conns.Identity}, {"inventory", &s.conns.Inventory}, {"payment", &s.conns.Payment}, {"order", &s.conns.Order}} {
		conn, err := client.Dial("passthrough:///"+addrs[d.name], client.WithCredentials(certs.ClientCredentials(src, d.name)))
		if err != nil {
			stop()
			return nil, err
		}
		conns = append(conns, conn)
		*d.to = conn
	}
	return s, nil
}

// postgresDatabases creates a fresh PostgreSQL database per service and
// returns their DSNs and a function that drops them.
func postgresDatabases(ctx context.Context) (map[string]string, func(), error) {
	admin, err := sql.Open("pgx", sqltest.AdminDSN())
	if err != nil {
		return nil, nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := admin.PingContext(pctx); err != nil {
		_ = admin.Close()
		return nil, nil, err
	}
	base, err := url.Parse(sqltest.AdminDSN())
	if err != nil {
		_ = admin.Close()
		return nil, nil, err
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	dbs := map[string]string{}
	var names []string
	drop := func() {
		for _, n := range names {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, _ = admin.ExecContext(dctx, "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)")
			cancel()
		}
		_ = admin.Close()
	}
	for _, svc := range system.Services() {
		name := "sbbench_" + svc.Name + "_" + suffix
		if _, err := admin.ExecContext(pctx, "CREATE DATABASE "+name); err != nil {
			drop()
			return nil, nil, err
		}
		names = append(names, name)
		u := *base
		u.Path = "/" + name
		dbs[svc.Name] = u.String()
	}
	return dbs, drop, nil
}
