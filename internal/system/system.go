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
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
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
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
	"github.com/switchboard-rpc/switchboard/kit/validate"
	"github.com/switchboard-rpc/switchboard/services/audit"
	"github.com/switchboard-rpc/switchboard/services/greeter"
	"github.com/switchboard-rpc/switchboard/services/identity"
	"github.com/switchboard-rpc/switchboard/services/inventory"
	"github.com/switchboard-rpc/switchboard/services/notify"
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
	// Calls names the services this one calls while it works (not just to
	// fetch keys). A stopping run stops callers first, so that their work
	// in flight finishes against services that still answer.
	Calls []string
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
	// broker carries the run's events; events is the service's part in
	// them (see Outbox and Consume).
	broker *broker
	events *eventsOf
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
					Outbox:      env.Outbox(ctx, db),
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
				svc, err := inventory.Open(ctx, db, inventory.Config{Outbox: env.Outbox(ctx, db)}, env.Logger())
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
				svc, err := payment.Open(ctx, db, payment.Config{Outbox: env.Outbox(ctx, db), SignupCredit: env.cfg.SignupCredit}, env.Logger())
				if err != nil {
					return nil, err
				}
				// A new user gets an account with the signup credit.
				return env.consumed(ctx, db, svc, payment.EventTypes(), svc.HandleEvent)
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
				svc, err := shipping.Open(ctx, db, shipping.Config{
					StepInterval: env.cfg.CarrierStep,
					Outbox:       env.Outbox(ctx, db),
				}, env.Logger())
				if err != nil {
					return nil, err
				}
				// A confirmed order's parcel may be picked up.
				return env.consumed(ctx, db, svc, shipping.EventTypes(), svc.HandleEvent)
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
				svc, err := order.Open(ctx, db, order.Config{
					Inventory: inventoryv1.NewInventoryServiceClient(inv),
					Payment:   paymentv1.NewPaymentServiceClient(pay),
					Shipping:  shippingv1.NewShippingServiceClient(ship),
					Outbox:    env.Outbox(ctx, db),
				}, env.Logger())
				if err != nil {
					return nil, err
				}
				// The carrier's progress moves the order to shipped and
				// delivered.
				return env.consumed(ctx, db, svc, order.EventTypes(), svc.HandleEvent)
			},
			Policy: order.Policy(),
			Calls:  []string{"inventory", "payment", "shipping"},
		},
		{
			Name: "notify", Offset: 6,
			Open: func(ctx context.Context, env *Env) (Component, error) {
				db, err := env.DB(ctx)
				if err != nil {
					return nil, err
				}
				cfg := notify.Config{MailDir: filepath.Join(env.cfg.DataDir, "mail")}
				if env.cfg.SMTP.Addr != "" {
					sender, err := notify.NewSMTPSender(env.cfg.SMTP)
					if err != nil {
						return nil, err
					}
					cfg = notify.Config{Sender: sender, From: env.cfg.MailFrom}
				}
				svc, err := notify.Open(ctx, db, cfg, env.Logger())
				if err != nil {
					return nil, err
				}
				return env.consumed(ctx, db, svc, svc.EventTypes(), svc.HandleEvent,
					events.WithAfterCommit(func(context.Context, *eventsv1.Envelope) { svc.Wake() }))
			},
			Policy: notify.Policy(),
		},
		{
			Name: "audit", Offset: 7,
			Open: func(ctx context.Context, env *Env) (Component, error) {
				db, err := env.DB(ctx)
				if err != nil {
					return nil, err
				}
				svc, err := audit.Open(ctx, db, audit.Config{}, env.Logger())
				if err != nil {
					return nil, err
				}
				// Every event, from every service, into the hash chain.
				return env.consumed(ctx, db, svc, svc.EventTypes(), svc.HandleEvent,
					events.WithAfterCommit(func(context.Context, *eventsv1.Envelope) { svc.Wake() }))
			},
			Policy: audit.Policy(),
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
	// Pprof also serves the runtime profiles (net/http/pprof) under
	// /debug/pprof/ on MetricsAddr.
	Pprof bool
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
	// Broker carries the events between services: nats://host:4222,
	// kafka://host1:9092,host2:9092, or amqp://user:pass@host:5672/.
	// Empty: a NATS JetStream server embedded in the process, with its
	// files under <data>/nats.
	Broker string
	// SignupCredit is the opening credit, in US cents, of the account
	// payment opens for each new user. 0: payment's default.
	SignupCredit int64
	// SMTP sends notify's e-mail when its Addr is set; otherwise each
	// message is written as an .eml file under <data>/mail.
	SMTP notify.SMTPConfig
	// MailFrom is the sender address of e-mail sent over SMTP.
	MailFrom string
	// Peers gives the addresses of services this run calls but does not
	// serve, by name; a service not listed is looked for on Host at its
	// slot.
	Peers map[string]string
	// Limits are the rate limits of every service.
	Limits ratelimit.Limits
	// RegistryEndpoints are etcd's client URLs. When set, every service
	// the run serves registers there (see registry.go) and the services it
	// calls but neither serves nor finds in Peers are reached as
	// etcd:///<service>.
	RegistryEndpoints []string
	// RegistryTTL is the registrations' lease; zero means 10s.
	RegistryTTL time.Duration
	// AdvertiseHost is the host registered for peers to dial; empty means
	// Host, or the machine's name when Host is a wildcard.
	AdvertiseHost string
	// Version and Zone label the run's registrations (the canary balancer
	// routes by Version).
	Version, Zone string
	// CanaryPolicy is a YAML file of canary weights per service and
	// version ("inventory: {v1: 80, v2: 20}"), re-read when it changes;
	// empty means the etcd key DefaultCanaryKey. Used with a registry.
	CanaryPolicy string
	// Gateway configures the REST gateway; its Addr empty turns it off.
	Gateway GatewayConfig
	// ShutdownTimeout bounds the whole shutdown.
	ShutdownTimeout time.Duration
	// Logger receives the logs.
	Logger *slog.Logger
	// Out receives the table of addresses once every service is ready.
	Out io.Writer
	// OnReady, if set, is called once every service is ready, with the
	// address each serves at (host:port) and, under GatewayName, the
	// gateway's URL.
	OnReady func(addrs map[string]string)
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
	// stop closes what open made (component, consumers, relay, database),
	// once.
	stop func() error
}

// Run serves services until ctx ends, then shuts them down gracefully. It
// makes or refreshes the development PKI first, binds every port before
// serving any (so a port in use fails the run at once), checks every
// service answers its health check over mTLS, and prints the table of
// addresses.
func Run(ctx context.Context, cfg Config, services []Service) (err error) {
	if len(services) == 0 && cfg.Gateway.Addr == "" {
		return errors.New("system: no services to run")
	}
	log := cfg.Logger
	begin := time.Now()
	names := make([]string, len(services))
	for i, s := range services {
		names[i] = s.Name
	}
	if cfg.Gateway.Addr != "" {
		names = append(names, GatewayName)
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
	disc, err := openDiscovery(cfg, tel)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, disc.close()) }()
	gw, err := listenGateway(cfg)
	if err != nil {
		return err
	}
	defer gw.closeListener()
	revocations, closeRevocations, err := newRevocations(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeRevocations()) }()
	brk, err := openBroker(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, brk.close()) }()
	var stops []func() error
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			err = errors.Join(err, stops[i]())
		}
	}()
	for _, r := range all {
		stop, err := open(ctx, cfg, tel, r, book, revocations, brk, disc)
		r.stop = sync.OnceValue(stop)
		stops = append(stops, r.stop)
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
		if cfg.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = metrics.Serve(lis) }()
	}

	for _, r := range all {
		go func() { r.served <- r.srv.Serve(r.lis) }()
	}
	if err := ready(ctx, cfg, all); err != nil {
		return errors.Join(err, shutdown(ctx, cfg, all, metrics, gw))
	}
	// The gateway comes last, once the services it fronts are ready.
	if err := gw.start(ctx, cfg, tel, book, revocations, disc); err != nil {
		return errors.Join(err, shutdown(ctx, cfg, all, metrics, gw))
	}
	if err := disc.register(ctx, all); err != nil {
		return errors.Join(err, shutdown(ctx, cfg, all, metrics, gw))
	}
	printTable(cfg, all, gw, time.Since(begin))
	if cfg.OnReady != nil {
		addrs := make(map[string]string, len(all)+1)
		for _, r := range all {
			addrs[r.svc.Name] = r.lis.Addr().String()
		}
		if gw != nil {
			addrs[GatewayName] = gw.url()
		}
		cfg.OnReady(addrs)
	}
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
		case <-gw.exited():
			serveErr = gw.serveErr()
			break wait
		case <-renew.C:
			if _, err := certs.EnsureDevPKI(cfg.CertsDir(), names); err != nil {
				log.LogAttrs(ctx, slog.LevelError, "renewing certificates failed", slog.String("error", err.Error()))
			}
		}
	}
	log.LogAttrs(ctx, slog.LevelInfo, "switchboard stopping")
	// Deregister first, so peers stop calling, then drain and stop.
	return errors.Join(serveErr, disc.deregister(ctx), shutdown(ctx, cfg, all, metrics, gw))
}

// open builds r's server: its certificate, its component, its chain. The
// returned function closes what open made, once the server has stopped.
func open(ctx context.Context, cfg Config, tel *telemetry.Telemetry, r *running, book map[string]string, revocations auth.Revocations, brk *broker, disc *discoveryRun) (func() error, error) {
	svc := r.svc
	logger := cfg.Logger.With(slog.String("service", svc.Name))
	env := &Env{cfg: cfg, name: svc.Name, logger: logger, revocations: revocations, broker: brk}
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
		dialTarget, opts, err := disc.target(target, book)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", svc.Name, err)
		}
		conn, err := client.Dial(dialTarget, append(opts,
			client.WithCredentials(certs.ClientCredentials(src, target)),
			client.WithTelemetry(tel))...)
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
	// Registered after Close, so the consumers stop before the service
	// closes.
	env.OnStop(env.events.startConsumers(ctx))
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
	// Anonymous calls the gateway relays count against their clients'
	// addresses, not against the gateway.
	limits := cfg.Limits
	limits.Edges = append(slices.Clone(limits.Edges), GatewayName)
	limiter, err := ratelimit.New(limits)
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

func printTable(cfg Config, all []*running, gw *gatewayRun, took time.Duration) {
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
	if gw != nil {
		_, _ = fmt.Fprintf(w, "%s\t%s\n", GatewayName, gw.url())
	}
	if cfg.MetricsAddr != "" {
		_, _ = fmt.Fprintf(w, "metrics\thttp://%s/metrics\n", cfg.MetricsAddr)
	}
	_ = w.Flush()
	dir := cfg.CertsDir()
	_, _ = fmt.Fprintf(cfg.Out, "\nready in %s. Certificates in %s; try:\n", took.Round(time.Millisecond), dir)
	if len(sorted) > 0 {
		_, _ = fmt.Fprintf(cfg.Out, "  grpcurl -cacert %s -cert %s -key %s %s list\n",
			filepath.Join(dir, certs.CAFile), filepath.Join(dir, certs.OperatorName+".pem"), filepath.Join(dir, certs.OperatorName+"-key.pem"),
			sorted[0].lis.Addr())
	}
	if gw != nil {
		_, _ = fmt.Fprintf(cfg.Out, "  curl %s/v1/items\n", gw.url())
	}
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

// shutdown stops the gateway, then every service at once, bounded by the
// shutdown timeout.
func shutdown(ctx context.Context, cfg Config, all []*running, metrics *http.Server, gw *gatewayRun) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	var mu sync.Mutex
	var errs []error
	if err := gw.stop(sctx); err != nil {
		errs = append(errs, err)
	}
	// Callers stop before the services they call: an order's saga in
	// flight finishes against inventory, payment and shipping, and the
	// order service closes (leaving unfinished sagas to recovery) before
	// they stop. Each wave's servers drain together; then the wave's
	// services close.
	for _, wave := range stopWaves(all) {
		var wg sync.WaitGroup
		for _, r := range wave {
			wg.Go(func() {
				err := r.srv.Shutdown(sctx)
				if serveErr := <-r.served; serveErr != nil {
					err = errors.Join(err, serveErr)
				}
				if r.stop != nil {
					// Its error is reported once, by Run's own call.
					_ = r.stop()
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", r.svc.Name, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	if metrics != nil {
		errs = append(errs, metrics.Shutdown(sctx))
	}
	return errors.Join(errs...)
}

// stopWaves orders the running services for a stop: each wave holds the
// services that no service still running calls (Service.Calls).
func stopWaves(all []*running) [][]*running {
	left := slices.Clone(all)
	var waves [][]*running
	for len(left) > 0 {
		called := map[string]bool{}
		for _, r := range left {
			for _, c := range r.svc.Calls {
				called[c] = true
			}
		}
		var wave, rest []*running
		for _, r := range left {
			if called[r.svc.Name] {
				rest = append(rest, r)
			} else {
				wave = append(wave, r)
			}
		}
		if len(wave) == 0 { // a cycle: stop the rest together
			wave, rest = rest, nil
		}
		waves = append(waves, wave)
		left = rest
	}
	return waves
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
