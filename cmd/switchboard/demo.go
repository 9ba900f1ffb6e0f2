package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-rpc/switchboard/internal/demo"
	"github.com/switchboard-rpc/switchboard/internal/flagenv"
	"github.com/switchboard-rpc/switchboard/internal/system"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/client"
)

func newDemoCommand() *cobra.Command {
	var (
		gateway, data, host string
		basePort            int
		timeout             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Tell a customer's story through the running system's gateway",
		Long: `demo drives a complete story through the REST gateway of a running system
(switchboard up): it registers a new customer, signs in, browses the catalog,
orders the cheapest item in stock, watches the order until the parcel is
delivered, tracks the parcel, reads the e-mails notify sent, and verifies the
audit log (over gRPC as the operator, with the certificates under
<data>/certs). Each step is printed with what it saw; demo exits non-zero at
the first step that fails.

With up's default --carrier-step of 2s the delivery takes about ten seconds.

Every flag can also be set with SWITCHBOARD_<FLAG>.`,
		Example: `  switchboard up &
  switchboard demo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flagenv.Apply(cmd.Flags(), "", os.LookupEnv); err != nil {
				return err
			}
			cfg := demo.Config{GatewayURL: gateway, Out: cmd.OutOrStdout(), Timeout: timeout}
			svc, _ := system.Lookup("audit")
			src, err := certs.NewSource(certs.FilesIn(system.Config{DataDir: data}.CertsDir(), certs.OperatorName))
			if err != nil {
				return fmt.Errorf("demo: operator certificate (is the system running with --data %s?): %w", data, err)
			}
			addr := net.JoinHostPort(host, strconv.Itoa(basePort+svc.Offset))
			conn, err := client.Dial("passthrough:///"+addr, client.WithCredentials(certs.ClientCredentials(src, svc.Name)))
			if err != nil {
				return fmt.Errorf("demo: dial audit at %s: %w", addr, err)
			}
			defer func() { _ = conn.Close() }()
			cfg.Audit = conn
			return demo.Run(cmd.Context(), cfg)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&gateway, "gateway", "http://127.0.0.1:8080", "URL of the gateway")
	fs.StringVar(&data, "data", "./var", "data directory of the system (for <data>/certs)")
	fs.StringVar(&host, "host", "127.0.0.1", "host of the services")
	fs.IntVar(&basePort, "base-port", 7100, "port of the first service, as given to up")
	fs.DurationVar(&timeout, "timeout", 2*time.Minute, "bound on the whole story")
	return cmd
}
