// Package system runs Switchboard's services: all of them in one process
// (switchboard up) or one alone (switchboard serve). Each service listens on
// its own loopback port behind mutual TLS with a certificate from the
// development CA, so even in one process every call crosses a real network
// hop.
package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/auth/revocation"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
	"github.com/switchboard-rpc/switchboard/kit/validate"
	"github.com/switchboard-rpc/switchboard/services/greeter"
	"github.com/switchboard-rpc/switchboard/services/identity"
	"github.com/switchboard-rpc/switchboard/services/inventory"
	"github.com/switchboard-rpc/switchboard/services/order"
	"github.com/switchboard-rpc/switchboard/services/payment"
	"github.com/switchboard-rpc/switchboard/services/shipping"
)

// Component is a service opened by the runner: it registers its gRPC
// implementations and validation rules, and closes what it started.
type Component interface {
	Register(s grpc.ServiceRegistrar, rules *validate.Set)
	Close() error
}

// Service is one service as the runner sees it.
type Service struct {
	// Name is the service name: its certificate's identity and its port
	// slot.
	Name string
	// Offset is the service's port relative to the base port.
	Offset int
	// Open builds the service from what env provides.
	Open func(ctx context.Context, env *Env) (Component, error)
	// Policy says who may call each method; everything else is denied.
	Policy authz.Policy
}

// Env is what the runner gives a service it opens.
type Env struct {
	cfg         Config
	name        string
	logger      *slog.Logger
	dial        func(service string) (*grpc.ClientConn, error)
	onStop      []func() error
	revocations auth.Revocations
	// keys verifies access tokens: the identity service sets its own
	// issuer; other services fetch the keys from identity.
	keys auth.KeySource
	// local holds the components of this run, for in-process hooks
	// between services until events carry them (see Local).
	local *locals
}

// locals are the components opened so far in this run.
type locals struct {
	mu    sync.Mutex
	comps map[string]Component
}

// Local returns the component of another service of this run, if it runs
// in this process. Hooks look it up when they fire, so the order services
// open in does not matter.
func (e *Env) Local(service string) (Component, bool) {
	e.local.mu.Lock()
	defer e.local.mu.Unlock()
	c, ok := e.local.comps[service]
	return c, ok
}

// Logger is the service's logger.
func (e *Env) Logger() *slog.Logger { return e.logger }

// Config is the run's configuration.
func (e *Env) Config() Config { return e.cfg }

// Dial returns a connection, as this service and over mTLS, to another
// service of the run. The runner closes it when the run ends.
func (e *Env) Dial(service string) (*grpc.ClientConn, error) { return e.dial(service) }

// DB opens the service's database, migrated by the service itself: its
// entry in the Config's Databases, else DatabaseURL, else a SQLite file
// <data>/<service>.db.
// The runner closes it when the run ends.
func (e *Env) DB(ctx context.Context) (*sqldb.DB, error) {
	dsn := e.cfg.Databases[e.name]
	if dsn == "" {
		dsn = e.cfg.DatabaseURL
	}
	if dsn == "" {
		if err := os.MkdirAll(e.cfg.DataDir, 0o700); err != nil {
			return nil, err
		}
		dsn = filepath.Join(e.cfg.DataDir, e.name+".db")
	}
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	e.OnStop(db.Close)
	return db, nil
}

// OnStop registers fn to run when the run stops, after the servers.
func (e *Env) OnStop(fn func() error) { e.onStop = append(e.onStop, fn) }

// greeterComponent serves the greeter.
type greeterComponent struct{}

func (greeterComponent) Register(s grpc.ServiceRegistrar, rules *validate.Set) {
	greeter.Rules(rules)
	greeterv1.RegisterGreeterServer(s, &greeter.Service{})
}

func (greeterComponent) Close() error { return nil }

// Services lists every service the runner knows, in port order.
func Services() []Service {
	return []Service{
		{
			Name: "greeter", Offset: 0,
			Open:   func(context.Context, *Env) (Component, error) { return greeterComponent{}, nil },
			Policy: greeter.Policy(),
		},
		{
			Name: "identity", Offset: 1,
			Open: func(ctx context.Context, env *Env) (Component, error) {
				db, err := env.DB(ctx)
				if err != nil {
					return nil, err
				}
				svc, err := identity.Open(ctx, db, identity.Config{
					KeyFile:     filepath.Join(env.cfg.DataDir, "identity-signing-keys.pem"),
					Revocations: env.revocations,
				}, env.Logger())
				if err != nil {
					return nil, err
				}
				env.keys = svc.Issuer()
				return svc, nil
			},
			Policy: identity.Policy(),
		},
		{
			Name: "inventory", Offset: 2,
			Open: func(ctx context.Context, env *Env) (Component, error) {
				db, err := env.DB(ctx)
				if err != nil {
					return nil, err
				}
				svc, err := inventory.Open(ctx, db, inventory.Config{}, env.Logger())
				if err != nil {
					return nil, err
				}
				if err := svc.Seed(ctx, demoCatalog()); err != nil {
					return nil, errors.Join(err, svc.Close())
				}
				return svc, nil
			},
			Policy: inventory.Policy(),
		},
		{
			Name: "payment", Offset: 3,
			Open: func(ctx context.Context, env *Env) (Component, error) {
				db, err := env.DB(ctx)
				if err != nil {
					return nil, err
				}
				return payment.Open(ctx, db, payment.Config{}, env.Logger())
			},
			Policy: payment.Policy(),
		},
		{
			Name: "shipping", Offset: 5,
			Open: func(ctx context.Context, env *Env) (Component, error) {
				db, err := env.DB(ctx)
				if err != nil {
					return nil, err
				}
				return shipping.Open(ctx, db, shipping.Config{
					StepInterval: env.cfg.CarrierStep,
					// Until events carry it, the carrier's progress reaches
					// an order service in this process directly.
					OnStatusChange: func(ctx context.Context, _, orderID string, _, to shippingv1.ShipmentStatus) {
						if c, ok := env.Local("order"); ok {
							if err := c.(*order.Service).ShipmentStatusChanged(ctx, orderID, to); err != nil {
								env.Logger().LogAttrs(ctx, slog.LevelWarn, "order did not take the shipment's status",
									slog.String("order_id", orderID), slog.String("error", err.Error()))
							}
						}
					},
				}, env.Logger())
			},
			Policy: shipping.Policy(),
		},
		{
			Name: "order", Offset: 4,
			Open: func(ctx context.Context, env *Env) (Component, error) {
				db, err := env.DB(ctx)
				if err != nil {
					return nil, err
				}
				inv, err := env.Dial("inventory")
				if err != nil {
					return nil, err
				}
				pay, err := env.Dial("payment")
				if err != nil {
					return nil, err
				}
				ship, err := env.Dial("shipping")
				if err != nil {
					return nil, err
				}
				return order.Open(ctx, db, order.Config{
					Inventory: inventoryv1.NewInventoryServiceClient(inv),
					Payment:   paymentv1.NewPaymentServiceClient(pay),
					Shipping:  shippingv1.NewShippingServiceClient(ship),
					// A confirmed order's parcel may be picked up.
					OnConfirmed: func(ctx context.Context, orderID, _ string) {
						if c, ok := env.Local("shipping"); ok {
							if err := c.(*shipping.Service).Release(ctx, orderID); err != nil {
								env.Logger().LogAttrs(ctx, slog.LevelWarn, "releasing the shipment failed",
									slog.String("order_id", orderID), slog.String("error", err.Error()))
							}
						}
					},
				}, env.Logger())
			},
			Policy: order.Policy(),
		},
	}
}

// Lookup returns the service named name.
func Lookup(name string) (Service, bool) {
	for _, s := range Services() {
		if s.Name == name {
			return s, true
		}
	}
	return Service{}, false
}

// Config configures a run. Only cmd/switchboard fills it in.
type Config struct {
	// DataDir holds everything the run keeps: certs/ and, as services
	// arrive, their databases.
	DataDir string
	// Host is the address services listen on.
	Host string
	// BasePort is the port of the first service; the others follow. 0
	// puts every service on a free port (tests).
	BasePort int
	// MetricsAddr serves Prometheus metrics at /metrics; empty turns it
	// off.
	MetricsAddr string
	// OTLPEndpoint receives traces when set.
	OTLPEndpoint string
	// Drain is how long a stopping service reports NOT_SERVING before it
	// stops taking calls.
	Drain time.Duration
	// DatabaseURL is the database of a service run alone ("postgres://...");
	// empty means a SQLite file per service under DataDir.
	DatabaseURL string
	// Databases gives some services a database of their own by name,
	// overriding DatabaseURL: how one process runs every service on
	// PostgreSQL.
	Databases map[string]string
	// CarrierStep is how long the simulated carrier takes per shipment
	// status; zero means shipping's default.
	CarrierStep time.Duration
	// RedisURL ("redis://host:6379/0") holds revoked access tokens, shared
	// by every process; empty keeps them in this process, which is right
	// only when one process runs every service.
	RedisURL string
	// Peers gives the addresses of services this run calls but does not
	// serve, by name; a service not listed is looked for on Host at its
	// slot.
	Peers map[string]string
	// Limits are the rate limits of every service.
	Limits ratelimit.Limits
	// ShutdownTimeout bounds the whole shutdown.
	ShutdownTimeout time.Duration
	// Logger receives the logs.
	Logger *slog.Logger
	// Out receives the table of addresses once every service is ready.
	Out io.Writer
}

// peer returns the address of a service that is not part of this run: from
// Peers, else on Host at its slot from BasePort.
func (c Config) peer(name string) (string, bool) {
	if addr, ok := c.Peers[name]; ok {
		return addr, true
	}
	svc, ok := Lookup(name)
	if !ok {
		return "", false
	}
	return c.addr(svc), true
}

// CertsDir is where the development PKI lives under the data directory.
func (c Config) CertsDir() string { return filepath.Join(c.DataDir, "certs") }

// addr is where s listens: its slot from BasePort, or any free port when
// BasePort is 0.
func (c Config) addr(s Service) string {
	port := 0
	if c.BasePort != 0 {
		port = c.BasePort + s.Offset
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port))
}

// running is a service being served.
type running struct {
	svc    Service
	srv    *server.Server
	lis    net.Listener
	served chan error
}

// Run serves services until ctx ends, then shuts them down gracefully. It
// makes or refreshes the development PKI first, binds every port before
// serving any (so a port in use fails the run at once), checks every
// service answers its health check over mTLS, and prints the table of
// addresses.
func Run(ctx context.Context, cfg Config, services []Service) (err error) {
	if len(services) == 0 {
		return errors.New("system: no services to run")
	}
	log := cfg.Logger
	begin := time.Now()
	names := make([]string, len(services))
	for i, s := range services {
		names[i] = s.Name
	}
	results, err := certs.EnsureDevPKI(cfg.CertsDir(), names)
	if err != nil {
		return err
	}
	for _, r := range results {
		if r.Action != certs.Reused {
			attrs := []slog.Attr{slog.String("name", r.Name), slog.String("file", r.CertFile)}
			if r.Reason != "" {
				attrs = append(attrs, slog.String("reason", r.Reason))
			}
			log.LogAttrs(ctx, slog.LevelInfo, "certificate "+string(r.Action), attrs...)
		}
	}

	tel, err := telemetry.New(ctx, telemetry.Config{ServiceName: "switchboard", OTLPEndpoint: cfg.OTLPEndpoint})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		err = errors.Join(err, tel.Shutdown(sctx))
	}()

	// Bind every port first: a port in use fails the run at once, and the
	// services can dial each other at the addresses actually bound.
	var all []*running
	defer func() {
		for _, r := range all {
			_ = r.lis.Close()
		}
	}()
	book := map[string]string{}
	for _, svc := range services {
		lis, err := net.Listen("tcp", cfg.addr(svc))
		if err != nil {
			return fmt.Errorf("%s: %w", svc.Name, err)
		}
		book[svc.Name] = lis.Addr().String()
		all = append(all, &running{svc: svc, lis: lis, served: make(chan error, 1)})
	}
	revocations, closeRevocations, err := newRevocations(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeRevocations()) }()
	local := &locals{comps: map[string]Component{}}
	var stops []func() error
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			err = errors.Join(err, stops[i]())
		}
	}()
	for _, r := range all {
		stop, err := open(ctx, cfg, tel, r, book, revocations, local)
		stops = append(stops, stop)
		if err != nil {
			return err
		}
	}

	var metrics *http.Server
	if cfg.MetricsAddr != "" {
		lis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", tel.MetricsHandler())
		metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = metrics.Serve(lis) }()
	}

	for _, r := range all {
		go func() { r.served <- r.srv.Serve(r.lis) }()
	}
	if err := ready(ctx, cfg, all); err != nil {
		return errors.Join(err, shutdown(ctx, cfg, all, metrics))
	}
	printTable(cfg, all, time.Since(begin))
	log.LogAttrs(ctx, slog.LevelInfo, "switchboard ready", slog.Int("services", len(all)), slog.Duration("took", time.Since(begin)))

	// Development certificates live 7 days: renew them while running; the
	// servers' Sources pick the new files up by themselves.
	renew := time.NewTicker(time.Hour)
	defer renew.Stop()
	exited := firstExit(all)
	var serveErr error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case serveErr = <-exited:
			break wait
		case <-renew.C:
			if _, err := certs.EnsureDevPKI(cfg.CertsDir(), names); err != nil {
				log.LogAttrs(ctx, slog.LevelError, "renewing certificates failed", slog.String("error", err.Error()))
			}
		}
	}
	log.LogAttrs(ctx, slog.LevelInfo, "switchboard stopping")
	return errors.Join(serveErr, shutdown(ctx, cfg, all, metrics))
}

// open builds r's server: its certificate, its component, its chain. The
// returned function closes what open made, once the server has stopped.
func open(ctx context.Context, cfg Config, tel *telemetry.Telemetry, r *running, book map[string]string, revocations auth.Revocations, local *locals) (func() error, error) {
	svc := r.svc
	logger := cfg.Logger.With(slog.String("service", svc.Name))
	env := &Env{cfg: cfg, name: svc.Name, logger: logger, revocations: revocations, local: local}
	stop := func() error {
		var errs []error
		for i := len(env.onStop) - 1; i >= 0; i-- {
			errs = append(errs, env.onStop[i]())
		}
		return errors.Join(errs...)
	}
	src, err := certs.NewSource(certs.FilesIn(cfg.CertsDir(), svc.Name), certs.WithLogger(logger))
	if err != nil {
		return stop, fmt.Errorf("%s: %w", svc.Name, err)
	}
	if err := tel.Registry().Register(src.Collector()); err != nil {
		return stop, fmt.Errorf("%s: certificate metrics: %w", svc.Name, err)
	}
	env.dial = func(target string) (*grpc.ClientConn, error) {
		addr, ok := book[target]
		if !ok {
			addr, ok = cfg.peer(target)
		}
		if !ok {
			return nil, fmt.Errorf("%s: no address for service %q", svc.Name, target)
		}
		conn, err := client.Dial("passthrough:///"+addr,
			client.WithCredentials(certs.ClientCredentials(src, target)),
			client.WithTelemetry(tel))
		if err != nil {
			return nil, err
		}
		env.OnStop(conn.Close)
		return conn, nil
	}
	comp, err := svc.Open(ctx, env)
	if err != nil {
		return stop, fmt.Errorf("%s: %w", svc.Name, err)
	}
	env.OnStop(comp.Close)
	local.mu.Lock()
	local.comps[svc.Name] = comp
	local.mu.Unlock()
	keys := env.keys
	if keys == nil {
		conn, err := env.Dial("identity")
		if err != nil {
			return stop, err
		}
		keys = identity.JWKSFromClient(identityv1.NewIdentityServiceClient(conn))
	}
	verifier, err := auth.NewVerifier(keys, auth.DefaultIssuer, auth.DefaultAudience,
		auth.WithRevocations(revocations), auth.WithLogger(logger))
	if err != nil {
		return stop, fmt.Errorf("%s: %w", svc.Name, err)
	}
	policy, err := authz.New(svc.Policy)
	if err != nil {
		return stop, fmt.Errorf("%s: %w", svc.Name, err)
	}
	limiter, err := ratelimit.New(cfg.Limits)
	if err != nil {
		return stop, fmt.Errorf("%s: %w", svc.Name, err)
	}
	rules := validate.NewSet()
	srv, err := server.New(
		server.WithCredentials(certs.ServerCredentials(src)),
		server.WithTelemetry(tel),
		server.WithLogger(logger),
		server.WithValidator(rules),
		// The calling service from its certificate, the user from a
		// verified access token.
		server.WithAuthenticator(verifier.Authenticator()),
		server.WithAuthorizer(policy.Authorize),
		server.WithLimiter(limiter.Limit),
		server.WithAccessLog(telemetry.AccessLogOptions{Identity: peerName}),
		server.WithShutdown(cfg.Drain, cfg.ShutdownTimeout),
	)
	if err != nil {
		return stop, err
	}
	comp.Register(srv, rules)
	r.srv = srv
	return stop, nil
}

// peerName names the caller in the access log: its service identity when
// it presented a verified certificate, else its address.
func peerName(ctx context.Context) string {
	if svc, ok := certs.ServiceFromPeer(ctx); ok {
		return svc.Name
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}

// ready checks each service's health over mTLS, as the operator, within
// a bounded time.
func ready(ctx context.Context, cfg Config, all []*running) error {
	src, err := certs.NewSource(certs.FilesIn(cfg.CertsDir(), certs.OperatorName))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, r := range all {
		conn, err := client.Dial("passthrough:///"+r.lis.Addr().String(),
			client.WithCredentials(certs.ClientCredentials(src, r.svc.Name)), client.WithHealthCheck(false))
		if err != nil {
			return err
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		_ = conn.Close()
		if err != nil {
			return fmt.Errorf("%s did not become ready: %w", r.svc.Name, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("%s reports %v", r.svc.Name, resp.GetStatus())
		}
	}
	return nil
}

func printTable(cfg Config, all []*running, took time.Duration) {
	if cfg.Out == nil {
		return
	}
	w := tabwriter.NewWriter(cfg.Out, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "SERVICE\tADDRESS")
	sorted := append([]*running(nil), all...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].svc.Offset < sorted[j].svc.Offset })
	for _, r := range sorted {
		_, _ = fmt.Fprintf(w, "%s\t%s\n", r.svc.Name, r.lis.Addr())
	}
	if cfg.MetricsAddr != "" {
		_, _ = fmt.Fprintf(w, "metrics\thttp://%s/metrics\n", cfg.MetricsAddr)
	}
	_ = w.Flush()
	dir := cfg.CertsDir()
	_, _ = fmt.Fprintf(cfg.Out, "\nready in %s. Certificates in %s; try:\n  grpcurl -cacert %s -cert %s -key %s %s list\n",
		took.Round(time.Millisecond), dir,
		filepath.Join(dir, certs.CAFile), filepath.Join(dir, certs.OperatorName+".pem"), filepath.Join(dir, certs.OperatorName+"-key.pem"),
		sorted[0].lis.Addr())
}

// firstExit reports the first service whose Serve returned.
func firstExit(all []*running) <-chan error {
	out := make(chan error, len(all))
	for _, r := range all {
		go func() {
			err := <-r.served
			r.served <- err // leave it for shutdown
			if err == nil {
				err = fmt.Errorf("%s stopped serving", r.svc.Name)
			}
			out <- err
		}()
	}
	return out
}

// shutdown stops every service at once, bounded by the shutdown timeout.
func shutdown(ctx context.Context, cfg Config, all []*running, metrics *http.Server) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, r := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.srv.Shutdown(sctx)
			if serveErr := <-r.served; serveErr != nil {
				err = errors.Join(err, serveErr)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", r.svc.Name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if metrics != nil {
		errs = append(errs, metrics.Shutdown(sctx))
	}
	return errors.Join(errs...)
}

// newRevocations returns the store of revoked access tokens: Redis when
// configured, else one in-process store shared by the run's services.
func newRevocations(ctx context.Context, cfg Config) (auth.Revocations, func() error, error) {
	if cfg.RedisURL == "" {
		return revocation.NewMemory(0), func() error { return nil }, nil
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("redis: %w", err)
	}
	rdb := redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, nil, fmt.Errorf("redis: %w", err)
	}
	return revocation.NewRedis(rdb, "switchboard:"), rdb.Close, nil
}
