package main

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-rpc/switchboard/internal/flagenv"
	"github.com/switchboard-rpc/switchboard/internal/system"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
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
	carrierStep            time.Duration
}

func (f *runFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.config, "config", "", "YAML file of settings (keys are flag names)")
	fs.StringVar(&f.data, "data", "./var", "directory for data and the development certificates")
	fs.StringVar(&f.host, "host", "127.0.0.1", "address services listen on")
	fs.IntVar(&f.basePort, "base-port", 7100, "port of the first service; the others follow it")
	fs.StringVar(&f.metrics, "metrics", "127.0.0.1:9090", "address of the Prometheus /metrics endpoint (empty: off)")
	fs.StringVar(&f.otlp, "otlp-endpoint", "", "OTLP/gRPC endpoint for traces (empty: traces are not exported)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&f.drain, "drain", 500*time.Millisecond, "how long a stopping service reports NOT_SERVING before it stops taking calls")
	fs.StringVar(&f.redis, "redis", "", "Redis URL for revoked tokens shared by all processes (empty: in this process)")
	fs.StringVar(&f.database, "database-url", "", "database of a service run alone: postgres://... (empty: SQLite under --data)")
	fs.DurationVar(&f.carrierStep, "carrier-step", 2*time.Second, "how long the simulated carrier takes per shipment status")
	fs.Float64Var(&f.rate, "rate-limit", 200, "calls per second each caller may make to each service (0: unlimited)")
	fs.IntVar(&f.burst, "rate-burst", 400, "calls a caller may make at once above --rate-limit")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 15*time.Second, "bound on a graceful shutdown")
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
	return system.Config{
		DataDir:         f.data,
		Host:            f.host,
		BasePort:        f.basePort,
		MetricsAddr:     f.metrics,
		OTLPEndpoint:    f.otlp,
		Drain:           f.drain,
		ShutdownTimeout: f.shutdownTimeout,
		RedisURL:        f.redis,
		CarrierStep:     f.carrierStep,
		DatabaseURL:     f.database,
		Limits:          ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: f.rate, Burst: f.burst}},
		Logger:          telemetry.NewLogger(cmd.ErrOrStderr(), format, level),
		Out:             stdout,
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
It prints each service's address once all answer their health checks, and
shuts down gracefully on SIGINT or SIGTERM.

Every flag can also be set with SWITCHBOARD_<FLAG> (for example
SWITCHBOARD_BASE_PORT=7200) or in the YAML file given by --config.`,
		Example: `  switchboard up
  switchboard up --data /tmp/sb --base-port 7200
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
	for _, s := range system.Services() {
		names = append(names, s.Name)
	}
	cmd := &cobra.Command{
		Use:   "serve <service>",
		Short: "Run one service in its own process",
		Long: `serve runs one service alone, for deployments with one process per service.
It listens on --host at --base-port plus the service's slot, behind mutual TLS
with the certificates under <data>/certs.

Services: ` + strings.Join(names, ", ") + `.

Every flag can also be set with SWITCHBOARD_<FLAG> or in the YAML file given
by --config.`,
		Example:   `  switchboard serve greeter --host 0.0.0.0 --data /var/lib/switchboard`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: names,
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, ok := system.Lookup(args[0])
			if !ok {
				return errBadFlag("service", args[0], strings.Join(names, ", "))
			}
			cfg, err := f.resolve(cmd, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			return system.Run(cmd.Context(), cfg, []system.Service{svc})
		},
	}
	f.add(cmd)
	return cmd
}
