package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-rpc/switchboard/kit/certs"
)

const certsExample = `  # Create (or renew) the development PKI, then call a service as the operator:
  switchboard certs init --dir var/certs
  grpcurl -cacert var/certs/ca.pem -cert var/certs/operator.pem -key var/certs/operator-key.pem 127.0.0.1:7101 list`

// newCertsCommand builds "switchboard certs": the development CA and the
// certificates of services and operators.
func newCertsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Manage the development CA and the mTLS certificates of services and operators",
		Long: `Every hop in Switchboard is mTLS. A service is identified by the URI SAN
spiffe://switchboard.local/<service> of its certificate; the "operator"
certificate is for people and their tools, such as grpcurl.

"switchboard up" keeps a development PKI in var/certs by itself; these
commands create, renew, issue and inspect its files by hand:

  ca.pem, ca-key.pem              the development CA (1 year)
  <name>.pem, <name>-key.pem      a service or operator certificate (7 days)

Keys are ECDSA P-256 and readable by their owner only. Running services
pick up renewed certificates without a restart.`,
		Example: certsExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newCertsInitCommand(), newCertsIssueCommand(), newCertsShowCommand())
	return cmd
}

func newCertsInitCommand() *cobra.Command {
	var (
		dir      string
		services []string
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the development CA and certificates, renewing what is missing or expiring",
		Long: `init makes --dir hold a valid development PKI: it creates the CA if there
is none, and issues a certificate for every service in --services and for
the operator that is missing, unusable, or has less than a third of its
lifetime left. Valid files are reused, so init is safe to run any time; it
prints what it created, reissued or reused.

A CA with less than a third of its lifetime left is replaced, and the old
CA stays in ca.pem as trusted until it expires. An unusable ca.pem is an
error: remove the directory to start over.`,
		Example: `  switchboard certs init --dir var/certs --services order,inventory,payment
  grpcurl -cacert var/certs/ca.pem -cert var/certs/operator.pem -key var/certs/operator-key.pem 127.0.0.1:7101 list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			results, err := certs.EnsureDevPKI(dir, services)
			if err != nil {
				return err
			}
			now := time.Now()
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			for _, r := range results {
				line := fmt.Sprintf("%s\t%s\t%s\texpires %s (%s)", r.Name, r.Action, r.CertFile,
					r.Certificate.NotAfter.UTC().Format(time.RFC3339), certDaysLeft(r.Certificate, now))
				if r.Reason != "" {
					line += ": " + r.Reason
				}
				if _, err := fmt.Fprintln(w, line); err != nil {
					return err
				}
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "var/certs", "directory of the CA and certificates")
	cmd.Flags().StringSliceVar(&services, "services", []string{
		"identity", "inventory", "payment", "order", "shipping", "notify", "audit", "gateway", "greeter",
	}, "services to issue certificates for (the operator's is always issued)")
	return cmd
}

func newCertsIssueCommand() *cobra.Command {
	var (
		dir   string
		dns   []string
		ips   []string
		valid time.Duration
	)
	cmd := &cobra.Command{
		Use:   "issue <name>",
		Short: "Issue a certificate for a service or operator with the development CA",
		Long: `issue writes a new certificate and key for <name> into --dir, signed by the
CA there (run "switchboard certs init" first), replacing any it had. The
certificate's identity is spiffe://switchboard.local/<name>; it also names
localhost, <name>, 127.0.0.1 and ::1, plus what --dns and --ip add, and
serves as server and client certificate. Names are 1 to 63 lowercase
letters, digits and inner hyphens.`,
		Example: `  switchboard certs issue alice --dir var/certs --valid 24h
  switchboard certs issue order --dir var/certs --dns order.shop.internal --ip 10.0.0.7
  grpcurl -cacert var/certs/ca.pem -cert var/certs/alice.pem -key var/certs/alice-key.pem 127.0.0.1:7101 list`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := []certs.IssueOption{certs.WithLifetime(valid), certs.WithDNSNames(dns...)}
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return fmt.Errorf("--ip %q is not an IP address", s)
				}
				opts = append(opts, certs.WithIPAddresses(ip))
			}
			ca, err := certs.LoadCA(dir)
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%w; run \"switchboard certs init --dir %s\" first", err, dir)
			}
			if err != nil {
				return err
			}
			cert, err := ca.Issue(args[0], opts...)
			if err != nil {
				return err
			}
			files := certs.FilesIn(dir, args[0])
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "issued %s: %s and %s, serial %x, expires %s (%s)\n",
				certs.SPIFFEID(args[0]), files.Cert, files.Key, cert.SerialNumber,
				cert.NotAfter.UTC().Format(time.RFC3339), certDaysLeft(cert, time.Now()))
			return err
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "var/certs", "directory of the CA and certificates")
	cmd.Flags().StringSliceVar(&dns, "dns", nil, "extra DNS names (repeat or separate with commas)")
	cmd.Flags().StringSliceVar(&ips, "ip", nil, "extra IP addresses (repeat or separate with commas)")
	cmd.Flags().DurationVar(&valid, "valid", certs.DefaultLifetime, "how long the certificate is valid (capped by the CA's expiry)")
	return cmd
}

func newCertsShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show <file.pem>",
		Short: "Print the identity, names and expiry of the certificates in a PEM file",
		Long: `show prints, for every certificate in a PEM file, its subject, issuer,
serial, SPIFFE ID, DNS and IP names, validity and the days it has left.`,
		Example: `  switchboard certs show var/certs/order.pem
  switchboard certs show var/certs/ca.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(filepath.Clean(args[0]))
			if err != nil {
				return err
			}
			list, err := x509.ParseCertificates(certPEMBlocks(data))
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if len(list) == 0 {
				return fmt.Errorf("%s: no certificate", args[0])
			}
			for i, c := range list {
				if i > 0 {
					if _, err := fmt.Fprintln(cmd.OutOrStdout()); err != nil {
						return err
					}
				}
				if err := showCertificate(cmd.OutOrStdout(), c, time.Now()); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// certPEMBlocks returns the DER of every CERTIFICATE block in data, one after
// the other, as x509.ParseCertificates takes them.
func certPEMBlocks(data []byte) []byte {
	var der []byte
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return der
		}
		if block.Type == "CERTIFICATE" {
			der = append(der, block.Bytes...)
		}
	}
}

func showCertificate(out io.Writer, c *x509.Certificate, now time.Time) error {
	id := "none"
	if svc, err := certs.ServiceFromCertificate(c); err == nil {
		id = svc.SPIFFEID
	}
	var uris, ips []string
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	kind := "leaf"
	if c.IsCA {
		kind = "CA"
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"subject", c.Subject.String()},
		{"issuer", c.Issuer.String()},
		{"kind", kind},
		{"serial", fmt.Sprintf("%x", c.SerialNumber)},
		{"spiffe id", id},
		{"uri sans", certsJoin(uris)},
		{"dns sans", certsJoin(c.DNSNames)},
		{"ip sans", certsJoin(ips)},
		{"not before", c.NotBefore.UTC().Format(time.RFC3339)},
		{"not after", c.NotAfter.UTC().Format(time.RFC3339)},
		{"days left", certDays(c, now)},
	} {
		if _, err := fmt.Fprintf(w, "%s:\t%s\n", row[0], row[1]); err != nil {
			return err
		}
	}
	return w.Flush()
}

func certsJoin(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// certDays gives the days c has left at now: "6.2", or "-1.5 (expired)".
func certDays(c *x509.Certificate, now time.Time) string {
	d := c.NotAfter.Sub(now).Hours() / 24
	if d < 0 {
		return fmt.Sprintf("%.1f (expired)", d)
	}
	return fmt.Sprintf("%.1f", d)
}

// certDaysLeft says how long c has left at now, in days.
func certDaysLeft(c *x509.Certificate, now time.Time) string {
	days := c.NotAfter.Sub(now).Hours() / 24
	if days < 0 {
		return fmt.Sprintf("expired %.1f days ago", -days)
	}
	return fmt.Sprintf("%.1f days left", days)
}
