package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/switchboard-rpc/switchboard/internal/system"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd"
	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd/embedded"
	"github.com/switchboard-rpc/switchboard/kit/events/natsbus"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
)

// Bounds of a dev run.
const (
	// devPortStride separates the ports of one service's replicas: replica
	// n (from 0) of the service at slot s listens on base+s+n*stride.
	devPortStride = 10
	// devMaxReplicas bounds the replicas of one service.
	devMaxReplicas = 9
	// devLineMax bounds one forwarded line of a child's output.
	devLineMax = 64 << 10
)

// devOptions are the settings of switchboard dev.
type devOptions struct {
	replicas        map[string]int
	data, host      string
	basePort        int
	metricsBase     int
	etcdPort        int
	broker          string
	redis, database string
	logLevel        string
	logFormat       string
	startTimeout    time.Duration
	shutdownTimeout time.Duration
}

// devProcess is one child process of the plan.
type devProcess struct {
	Name    string // service-replica, e.g. inventory-2
	Service string
	Replica int // from 1
	Addr    string
	Metrics string // empty: off
	// Wave orders the start: every service's first replica (wave 0) is
	// ready before the others (wave 1) start, so first-start work such as
	// migrations and key files happens once.
	Wave int
	Args []string
}

func newDevCommand() *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the system as one process per replica, found through an embedded etcd",
		Long: `dev runs the system the way it runs in production, on one machine: it starts
an embedded etcd (data under <data>/etcd) and, unless --broker is given, an
embedded NATS JetStream (data under <data>/nats), then runs every service as
processes of this same binary ("switchboard serve <service>"), as many per
service as --replicas asks (one by default). Each replica listens on its own
port, registers in etcd under a lease, and reaches the services it calls as
etcd:///<service>, balanced over their replicas with health checking.

Replica n (from 1) of the service at slot s listens on --host at
--base-port + s + 10*(n-1); each process serves /metrics on its own port
from --metrics-base-port up, as the table shows. Every service's first replica starts and registers before
the others start. dev prints a table of the processes once all are
registered, forwards SIGINT and SIGTERM to them and waits for them, up to
--shutdown-timeout, and fails if a process exits while starting or running.`,
		Example: `  switchboard dev
  switchboard dev --replicas inventory=3,order=2 --data ./var-dev
  grpcurl -cacert var-dev/certs/ca.pem -cert var-dev/certs/operator.pem \
    -key var-dev/certs/operator-key.pem 127.0.0.1:7112 list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.add(cmd.Flags())
	return cmd
}

// add defines the dev command's flags on fs, bound to o.
func (o *devOptions) add(fs *pflag.FlagSet) {
	fs.StringToIntVar(&o.replicas, "replicas", nil, "replicas per service, as name=count,... (others run one)")
	fs.StringVar(&o.data, "data", "./var-dev", "directory for data, certificates, etcd and NATS, shared by every process")
	fs.StringVar(&o.host, "host", "127.0.0.1", "address every process listens on")
	fs.IntVar(&o.basePort, "base-port", 7100, "port of the first replica of the first service")
	fs.IntVar(&o.metricsBase, "metrics-base-port", 9100, "port of the first process's /metrics; the others follow (0: off)")
	fs.IntVar(&o.etcdPort, "etcd-port", 2379, "client port of the embedded etcd; its peer port is the next one (0: free ports)")
	fs.StringVar(&o.broker, "broker", "", "event broker URL for every process (empty: an embedded NATS JetStream)")
	fs.StringVar(&o.redis, "redis", "", "Redis URL for revoked tokens shared by the processes (empty: each process keeps its own)")
	fs.StringVar(&o.database, "database-url", "", "database of every process: postgres://... (empty: SQLite files under --data)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level of dev and its processes: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format of dev and its processes: text or json")
	fs.DurationVar(&o.startTimeout, "start-timeout", 90*time.Second, "bound on starting every process and seeing it registered")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 15*time.Second, "bound on each process's graceful shutdown")
}

// validate checks the options against the services known.
func (o devOptions) validate(services []system.Service) error {
	known := map[string]bool{}
	names := make([]string, 0, len(services))
	for _, s := range services {
		known[s.Name] = true
		names = append(names, s.Name)
	}
	for svc, n := range o.replicas {
		if !known[svc] {
			return errBadFlag("replicas", svc, "services among "+strings.Join(names, ", "))
		}
		if n < 1 || n > devMaxReplicas {
			return errBadFlag("replicas", fmt.Sprintf("%s=%d", svc, n), fmt.Sprintf("1 to %d replicas", devMaxReplicas))
		}
	}
	if o.data == "" {
		return errBadFlag("data", "", "a directory")
	}
	if o.basePort < 1 {
		return errBadFlag("base-port", strconv.Itoa(o.basePort), "a port")
	}
	if o.etcdPort < 0 || o.etcdPort > 65534 {
		return errBadFlag("etcd-port", strconv.Itoa(o.etcdPort), "a port, or 0")
	}
	if o.startTimeout <= 0 || o.shutdownTimeout <= 0 {
		return errBadFlag("start-timeout and shutdown-timeout", o.startTimeout.String()+", "+o.shutdownTimeout.String(), "positive durations")
	}
	return nil
}

// devPlan lays out the processes: their ports and their command lines,
// given where etcd and the broker are.
func devPlan(o devOptions, services []system.Service, etcdURL, brokerURL string) ([]devProcess, error) {
	if err := o.validate(services); err != nil {
		return nil, err
	}
	ordered := slices.Clone(services)
	slices.SortStableFunc(ordered, func(a, b system.Service) int { return a.Offset - b.Offset })
	var procs []devProcess
	for wave := range 2 {
		for _, svc := range ordered {
			n := max(o.replicas[svc.Name], 1)
			for r := range n {
				if (r == 0) != (wave == 0) {
					continue
				}
				port := o.basePort + svc.Offset + r*devPortStride
				if port > 65535 {
					return nil, errBadFlag("base-port", strconv.Itoa(o.basePort), "room for every replica's port below 65536")
				}
				p := devProcess{
					Name: fmt.Sprintf("%s-%d", svc.Name, r+1), Service: svc.Name, Replica: r + 1, Wave: wave,
					Addr: net.JoinHostPort(o.host, strconv.Itoa(port)),
				}
				if o.metricsBase > 0 {
					mport := o.metricsBase + len(procs)
					if mport > 65535 {
						return nil, errBadFlag("metrics-base-port", strconv.Itoa(o.metricsBase), "room for every process's port below 65536")
					}
					p.Metrics = net.JoinHostPort(o.host, strconv.Itoa(mport))
				}
				p.Args = []string{"serve", svc.Name,
					"--data", o.data,
					"--host", o.host,
					// serve listens at its slot from --base-port.
					"--base-port", strconv.Itoa(port - svc.Offset),
					"--metrics", p.Metrics,
					"--registry", etcdURL,
					"--broker", brokerURL,
					"--log-level", o.logLevel,
					"--log-format", o.logFormat,
					"--shutdown-timeout", o.shutdownTimeout.String(),
				}
				if o.redis != "" {
					p.Args = append(p.Args, "--redis", o.redis)
				}
				if o.database != "" {
					p.Args = append(p.Args, "--database-url", o.database)
				}
				procs = append(procs, p)
			}
		}
	}
	return procs, nil
}

// runDev starts etcd, the broker and every process, and supervises them
// until ctx ends or one of them fails.
func runDev(ctx context.Context, o devOptions, stdout, stderr io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return errBadFlag("log-level", o.logLevel, "debug, info, warn or error")
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return errBadFlag("log-format", o.logFormat, "text or json")
	}
	services := system.Services()
	if err := o.validate(services); err != nil {
		return err
	}
	log := telemetry.NewLogger(stderr, o.logFormat, level).With(slog.String("component", "dev"))
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("dev: finding this binary: %w", err)
	}
	names := []string{system.GatewayName}
	for _, s := range services {
		names = append(names, s.Name)
	}
	// One PKI for every process, made before any starts.
	if _, err := certs.EnsureDevPKI(filepath.Join(o.data, "certs"), names); err != nil {
		return err
	}

	peerPort := 0
	if o.etcdPort != 0 {
		peerPort = o.etcdPort + 1
	}
	etcdSrv, err := embedded.Start(ctx, embedded.Config{
		Dir: filepath.Join(o.data, "etcd"), Host: o.host, ClientPort: o.etcdPort, PeerPort: peerPort,
		StartTimeout: o.startTimeout, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer etcdSrv.Close()
	brokerURL := o.broker
	if brokerURL == "" {
		nats, err := natsbus.StartEmbedded(filepath.Join(o.data, "nats"))
		if err != nil {
			return fmt.Errorf("dev: embedded NATS: %w", err)
		}
		defer nats.Shutdown()
		brokerURL = nats.ClientURL()
	}
	procs, err := devPlan(o, services, etcdSrv.Endpoint(), brokerURL)
	if err != nil {
		return err
	}
	cli, err := etcd.NewClient([]string{etcdSrv.Endpoint()}, log)
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()

	sup := &supervisor{exe: exe, out: stderr, log: log, exited: make(chan childExit, len(procs))}
	// Stops the children on every early return; a no-op after the stop below.
	defer func() { _ = sup.stop(o.shutdownTimeout + 5*time.Second) }()
	for wave := range 2 {
		var batch []devProcess
		for _, p := range procs {
			if p.Wave == wave {
				batch = append(batch, p)
			}
		}
		if len(batch) == 0 {
			continue
		}
		for _, p := range batch {
			if err := sup.start(p); err != nil {
				return err
			}
		}
		if err := waitRegistered(ctx, cli, batch, sup, o.startTimeout); err != nil {
			return err
		}
	}
	printDevTable(stdout, procs, sup, etcdSrv.Endpoint(), brokerURL, o.data)
	log.LogAttrs(ctx, slog.LevelInfo, "dev ready", slog.Int("processes", len(procs)))

	select {
	case <-ctx.Done():
		log.LogAttrs(ctx, slog.LevelInfo, "dev stopping")
		return sup.stop(o.shutdownTimeout + 5*time.Second)
	case ex := <-sup.exited:
		return fmt.Errorf("dev: %s exited: %w", ex.name, ex.err)
	}
}

// waitRegistered waits until every process of batch is registered in
// etcd, failing if one exits first or the timeout passes.
func waitRegistered(ctx context.Context, cli *clientv3.Client, batch []devProcess, sup *supervisor, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := cli.Get(ctx, etcd.DefaultPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err == nil {
			have := map[string]bool{}
			for _, kv := range resp.Kvs {
				have[string(kv.Key)] = true
			}
			missing := 0
			for _, p := range batch {
				if !have[etcd.DefaultPrefix+p.Service+"/"+p.Addr] {
					missing++
				}
			}
			if missing == 0 {
				return nil
			}
		}
		select {
		case ex := <-sup.exited:
			return fmt.Errorf("dev: %s exited while starting: %w", ex.name, ex.err)
		case <-ctx.Done():
			return fmt.Errorf("dev: processes not registered within %s: %w", timeout, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// childExit reports a child that ended.
type childExit struct {
	name string
	err  error
}

// supervisor runs the children and stops them.
type supervisor struct {
	exe    string
	out    io.Writer
	log    *slog.Logger
	exited chan childExit

	mu       sync.Mutex
	children []*child
	stopped  bool
}

type child struct {
	p    devProcess
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs p, its output forwarded line by line with its name.
func (s *supervisor) start(p devProcess) error {
	cmd := exec.Command(s.exe, p.Args...) //nolint:gosec // this same binary, with arguments the plan built
	pw := &prefixWriter{prefix: "[" + p.Name + "] ", out: s.out, mu: &s.mu}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dev: starting %s: %w", p.Name, err)
	}
	c := &child{p: p, cmd: cmd, done: make(chan struct{})}
	s.mu.Lock()
	s.children = append(s.children, c)
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		pw.flush()
		close(c.done)
		s.mu.Lock()
		stopping := s.stopped
		s.mu.Unlock()
		if !stopping {
			if err == nil {
				err = errors.New("stopped on its own")
			}
			s.exited <- childExit{name: p.Name, err: err}
		}
	}()
	return nil
}

// pid returns the process id of the child named name, 0 if none.
func (s *supervisor) pid(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.children {
		if c.p.Name == name && c.cmd.Process != nil {
			return c.cmd.Process.Pid
		}
	}
	return 0
}

// stop sends SIGTERM to every child and waits for them up to bound, then
// kills those left. It is safe to call more than once.
func (s *supervisor) stop(bound time.Duration) error {
	s.mu.Lock()
	already := s.stopped
	s.stopped = true
	children := slices.Clone(s.children)
	s.mu.Unlock()
	if already {
		return nil
	}
	for _, c := range children {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	var killed []string
	for _, c := range children {
		select {
		case <-c.done:
		case <-deadline.C:
			for _, c := range children {
				select {
				case <-c.done:
				default:
					_ = c.cmd.Process.Kill()
					<-c.done
					killed = append(killed, c.p.Name)
				}
			}
		}
	}
	var errs []error
	for _, c := range children {
		if st := c.cmd.ProcessState; st != nil && !st.Success() && !slices.Contains(killed, c.p.Name) {
			errs = append(errs, fmt.Errorf("%s: %s", c.p.Name, st))
		}
	}
	if len(killed) > 0 {
		errs = append(errs, fmt.Errorf("killed after %s: %s", bound, strings.Join(killed, ", ")))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dev: stopping: %w", err)
	}
	return nil
}

// prefixWriter forwards whole lines, each with a prefix, to out.
type prefixWriter struct {
	prefix string
	out    io.Writer
	mu     *sync.Mutex // shared by every child writing to out
	buf    []byte
}

func (w *prefixWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > devLineMax {
				w.emit(w.buf)
				w.buf = w.buf[:0]
			}
			return len(b), nil
		}
		w.emit(w.buf[:i+1])
		w.buf = w.buf[i+1:]
	}
}

func (w *prefixWriter) flush() {
	if len(w.buf) > 0 {
		w.emit(append(w.buf, '\n'))
		w.buf = nil
	}
}

func (w *prefixWriter) emit(line []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	bw := bufio.NewWriter(w.out)
	_, _ = bw.WriteString(w.prefix)
	_, _ = bw.Write(line)
	_ = bw.Flush()
}

// printDevTable prints the processes and where to reach them.
func printDevTable(out io.Writer, procs []devProcess, sup *supervisor, etcdURL, brokerURL, data string) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "PROCESS\tPID\tADDRESS\tMETRICS")
	sorted := slices.Clone(procs)
	slices.SortStableFunc(sorted, func(a, b devProcess) int {
		if c := strings.Compare(a.Service, b.Service); c != 0 {
			return c
		}
		return a.Replica - b.Replica
	})
	for _, p := range sorted {
		metrics := "-"
		if p.Metrics != "" {
			metrics = "http://" + p.Metrics + "/metrics"
		}
		_, _ = fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", p.Name, sup.pid(p.Name), p.Addr, metrics)
	}
	_, _ = fmt.Fprintf(w, "etcd\t-\t%s\t-\n", etcdURL)
	_, _ = fmt.Fprintf(w, "broker\t-\t%s\t-\n", brokerURL)
	_ = w.Flush()
	_, _ = fmt.Fprintf(out, "\nservices reach each other as etcd:///<service>; list them with:\n  etcdctl --endpoints %s get --prefix %s --keys-only\ncertificates in %s\n",
		etcdURL, etcd.DefaultPrefix, filepath.Join(data, "certs"))
}
