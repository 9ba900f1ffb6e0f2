package main

import (
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-rpc/switchboard/internal/flagenv"
	"github.com/switchboard-rpc/switchboard/internal/system"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
	"github.com/switchboard-rpc/switchboard/services/notify"
)

// runFlags are the settings up and serve share.
type runFlags struct {
	config, data, host     string
	basePort               int
	metrics, otlp          string
	logFormat, logLevel    string
	drain, shutdownTimeout time.Duration
	rate                   float64
	burst                  int
	redis, database        string
	broker                 string
	signupCredit           int64
	smtpAddr, smtpUser     string
	smtpPassword, smtpTLS  string
	mailFrom               string
	pprof                  bool
	carrierStep            time.Duration
	gateway                gatewayFlags
	registry               registryFlags
}

// registryFlags are the settings of service discovery over etcd.
type registryFlags struct {
	endpoints     []string
	advertise     string
	version, zone string
	canary        string
}

// gatewayFlags are the settings of the REST gateway.
type gatewayFlags struct {
	addr    string
	origins []string
	maxBody int64
	timeout time.Duration
	rate    float64
	burst   int
}

func (f *runFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.config, "config", "", "YAML file of settings (keys are flag names)")
	fs.StringVar(&f.data, "data", "./var", "directory for data and the development certificates")
	fs.StringVar(&f.host, "host", "127.0.0.1", "address services listen on")
	fs.IntVar(&f.basePort, "base-port", 7100, "port of the first service; the others follow it")
	fs.StringVar(&f.metrics, "metrics", "127.0.0.1:9090", "address of the Prometheus /metrics endpoint (empty: off)")
	fs.BoolVar(&f.pprof, "pprof", false, "also serve runtime profiles under /debug/pprof/ on the --metrics address")
	fs.StringVar(&f.otlp, "otlp-endpoint", "", "OTLP/gRPC endpoint for traces (empty: traces are not exported)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&f.drain, "drain", 500*time.Millisecond, "how long a stopping service reports NOT_SERVING before it stops taking calls")
	fs.StringVar(&f.redis, "redis", "", "Redis URL for revoked tokens shared by all processes (empty: in this process)")
	fs.StringVar(&f.broker, "broker", "", "event broker: nats://host:4222, kafka://host:9092 or amqp://user:pass@host:5672/ (empty: NATS embedded under --data)")
	fs.Int64Var(&f.signupCredit, "signup-credit", 10000, "opening credit, in US cents, of each new user's account")
	fs.StringVar(&f.smtpAddr, "smtp-addr", "", "SMTP server (host:port) notify sends e-mail through (empty: .eml files under <data>/mail)")
	fs.StringVar(&f.smtpUser, "smtp-user", "", "SMTP user name (empty: no authentication)")
	fs.StringVar(&f.smtpPassword, "smtp-password", "", "SMTP password")
	fs.StringVar(&f.smtpTLS, "smtp-tls", "opportunistic", "SMTP TLS: opportunistic, required, implicit or disabled")
	fs.StringVar(&f.mailFrom, "mail-from", "", "sender address of notify's e-mail (empty: notify's default)")
	fs.StringVar(&f.database, "database-url", "", "database of a service run alone: postgres://... (empty: SQLite under --data)")
	fs.DurationVar(&f.carrierStep, "carrier-step", 2*time.Second, "how long the simulated carrier takes per shipment status")
	fs.Float64Var(&f.rate, "rate-limit", 200, "calls per second each caller may make to each service (0: unlimited)")
	fs.IntVar(&f.burst, "rate-burst", 400, "calls a caller may make at once above --rate-limit")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 15*time.Second, "bound on a graceful shutdown")
	fs.StringSliceVar(&f.registry.endpoints, "registry", nil, "etcd endpoints, comma-separated: register every service served there and reach the others as etcd:///<service> (empty: fixed addresses)")
	fs.StringVar(&f.registry.advertise, "advertise-host", "", "host registered for peers to dial (empty: --host, or the machine's name when --host is 0.0.0.0)")
	fs.StringVar(&f.registry.version, "registry-version", "", "version label of this run's registrations, for canary routing (e.g. v2)")
	fs.StringVar(&f.registry.zone, "registry-zone", "", "zone label of this run's registrations")
	fs.StringVar(&f.registry.canary, "canary-policy", "", "YAML file of canary weights per service and version, re-read when it changes (empty: the etcd key "+system.DefaultCanaryKey+")")
	fs.StringVar(&f.gateway.addr, "gateway-addr", "127.0.0.1:8080", "address of the REST/JSON gateway (empty: off; serve runs it as the service gateway)")
	fs.StringSliceVar(&f.gateway.origins, "gateway-origins", nil, "origins browsers may call the gateway from (CORS), comma-separated; * for any")
	fs.Int64Var(&f.gateway.maxBody, "gateway-max-body", 1<<20, "largest request body the gateway takes, in bytes")
	fs.DurationVar(&f.gateway.timeout, "gateway-timeout", 10*time.Second, "deadline of a unary call through the gateway")
	fs.Float64Var(&f.gateway.rate, "gateway-rate-limit", 50, "requests per second each client (user, else IP address) may make to the gateway (0: unlimited)")
	fs.IntVar(&f.gateway.burst, "gateway-rate-burst", 100, "requests a client may make at once above --gateway-rate-limit")
}

// resolve applies the environment and the config file, then builds the
// run's configuration.
func (f *runFlags) resolve(cmd *cobra.Command, stdout io.Writer) (system.Config, error) {
	if err := flagenv.Apply(cmd.Flags(), f.configPath(cmd), os.LookupEnv); err != nil {
		return system.Config{}, err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return system.Config{}, err
	}
	format := strings.ToLower(f.logFormat)
	if format != "text" && format != "json" {
		return system.Config{}, errBadFlag("log-format", f.logFormat, "text or json")
	}
	if f.gateway.maxBody <= 0 {
		return system.Config{}, errBadFlag("gateway-max-body", strconv.FormatInt(f.gateway.maxBody, 10), "a positive number of bytes")
	}
	if f.gateway.timeout <= 0 {
		return system.Config{}, errBadFlag("gateway-timeout", f.gateway.timeout.String(), "a positive duration")
	}
	tlsModes := map[string]notify.TLSMode{
		"opportunistic": notify.TLSOpportunistic, "required": notify.TLSRequired,
		"implicit": notify.TLSImplicit, "disabled": notify.TLSDisabled,
	}
	smtpTLS, ok := tlsModes[strings.ToLower(f.smtpTLS)]
	if !ok {
		return system.Config{}, errBadFlag("smtp-tls", f.smtpTLS, "opportunistic, required, implicit or disabled")
	}
	return system.Config{
		SMTP: notify.SMTPConfig{
			Addr: f.smtpAddr, Username: f.smtpUser, Password: identity.Secret(f.smtpPassword), TLS: smtpTLS,
		},
		MailFrom:        f.mailFrom,
		DataDir:         f.data,
		Host:            f.host,
		BasePort:        f.basePort,
		MetricsAddr:     f.metrics,
		Pprof:           f.pprof,
		OTLPEndpoint:    f.otlp,
		Drain:           f.drain,
		ShutdownTimeout: f.shutdownTimeout,
		RedisURL:        f.redis,
		Broker:          f.broker,
		SignupCredit:    f.signupCredit,
		CarrierStep:     f.carrierStep,
		DatabaseURL:     f.database,
		Limits:          ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: f.rate, Burst: f.burst}},
		Gateway: system.GatewayConfig{
			Addr:           f.gateway.addr,
			AllowedOrigins: f.gateway.origins,
			MaxBodyBytes:   f.gateway.maxBody,
			Timeout:        f.gateway.timeout,
			Limits:         ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: f.gateway.rate, Burst: f.gateway.burst}},
		},
		Logger: telemetry.NewLogger(cmd.ErrOrStderr(), format, level),
		Out:    stdout,

		// Service discovery over etcd.
		RegistryEndpoints: f.registry.endpoints,
		AdvertiseHost:     f.registry.advertise,
		Version:           f.registry.version,
		Zone:              f.registry.zone,
		CanaryPolicy:      f.registry.canary,
	}, nil
}

// configPath is the --config flag, or SWITCHBOARD_CONFIG.
func (f *runFlags) configPath(cmd *cobra.Command) string {
	if cmd.Flags().Changed("config") {
		return f.config
	}
	if v, ok := os.LookupEnv(flagenv.EnvName("config")); ok {
		return v
	}
	return f.config
}

func newUpCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole system in one process on embedded defaults",
		Long: `up runs every service of the system in one process, each on its own loopback
port behind mutual TLS, on embedded defaults: data under --data, a development
CA and certificates created under <data>/certs on first start and reused after.
It prints each service's address once all answer their health checks, then
starts the REST/JSON gateway on --gateway-addr (GET /openapi.json describes
it), and shuts down gracefully on SIGINT or SIGTERM.

Every flag can also be set with SWITCHBOARD_<FLAG> (for example
SWITCHBOARD_BASE_PORT=7200) or in the YAML file given by --config.`,
		Example: `  switchboard up
  switchboard up --data /tmp/sb --base-port 7200
  curl http://127.0.0.1:8080/v1/items
  grpcurl -cacert var/certs/ca.pem -cert var/certs/operator.pem \
    -key var/certs/operator-key.pem 127.0.0.1:7100 list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.resolve(cmd, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if cfg.DatabaseURL != "" {
				return errBadFlag("database-url", cfg.DatabaseURL, "empty for up: each service keeps its own SQLite file (use serve for PostgreSQL)")
			}
			return system.Run(cmd.Context(), cfg, system.Services())
		},
	}
	f.add(cmd)
	return cmd
}

func newServeCommand() *cobra.Command {
	var f runFlags
	var names []string
	var peers map[string]string
	for _, s := range system.Services() {
		names = append(names, s.Name)
	}
	names = append(names, system.GatewayName)
	cmd := &cobra.Command{
		Use:   "serve <service>",
		Short: "Run one service in its own process",
		Long: `serve runs one service alone, for deployments with one process per service.
It listens on --host at --base-port plus the service's slot, behind mutual TLS
with the certificates under <data>/certs.

Services: ` + strings.Join(names, ", ") + `. The gateway serves HTTP on
--gateway-addr and calls the services at their slots on --host, or at the
addresses of --peers.

Every flag can also be set with SWITCHBOARD_<FLAG> or in the YAML file given
by --config.`,
		Example:   `  switchboard serve greeter --host 0.0.0.0 --data /var/lib/switchboard`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: names,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.resolve(cmd, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			cfg.Peers = peers
			if args[0] == system.GatewayName {
				if cfg.Gateway.Addr == "" {
					return errBadFlag("gateway-addr", "", "an address to serve the gateway on")
				}
				return system.Run(cmd.Context(), cfg, nil)
			}
			svc, ok := system.Lookup(args[0])
			if !ok {
				return errBadFlag("service", args[0], strings.Join(names, ", "))
			}
			cfg.Gateway.Addr = "" // only serve gateway runs it
			return system.Run(cmd.Context(), cfg, []system.Service{svc})
		},
	}
	f.add(cmd)
	cmd.Flags().StringToStringVar(&peers, "peers", nil, "addresses of the services this one calls, as name=host:port,... (default: --host at their slots)")
	return cmd
}
