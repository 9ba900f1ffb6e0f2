package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/credentials"
)

// ServerTLS returns a TLS configuration for a gRPC (HTTP/2) server that
// presents src's certificate and requires every client to present one that
// chains to src's CA bundle and carries a Switchboard SPIFFE ID. TLS 1.3
// only. Each handshake takes src's current material (through
// GetConfigForClient), so reloaded files apply to new connections; open
// connections keep theirs. Session resumption is off, so every connection
// is verified against the current bundle. src must not be nil.
func ServerTLS(src *Source) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return src.current().server, nil
		},
	}
}

// ClientTLS returns a TLS configuration for a client that presents src's
// certificate and accepts only a server whose certificate chains to src's
// CA bundle and whose SPIFFE ID is spiffe://switchboard.local/<service>.
// TLS 1.3 only.
//
// Host names are not checked: services are dialled at loopback addresses,
// pod IPs and balancer names that certificates do not list, and the SPIFFE
// ID is what says who the server is. So the standard verification is
// turned off (InsecureSkipVerify) and done in VerifyConnection instead,
// against the bundle current at the handshake, together with the identity
// check. src must not be nil.
func ClientTLS(src *Source, service string) *tls.Config {
	want := SPIFFEID(service)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		// Verified in VerifyConnection, by chain and SPIFFE ID instead of
		// host name.
		InsecureSkipVerify: true, //nolint:gosec // see above
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return src.current().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(src.current().roots, cs.PeerCertificates, want)
		},
	}
}

var errNoServerCertificate = errors.New("certs: server presented no certificate")

// verifyServer verifies a server's chain against roots, and its identity.
func verifyServer(roots *x509.CertPool, chain []*x509.Certificate, want string) error {
	if len(chain) == 0 {
		return errNoServerCertificate
	}
	opts := x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: time.Now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := chain[0].Verify(opts); err != nil {
		return fmt.Errorf("certs: server certificate: %w", err)
	}
	svc, err := ServiceFromCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("certs: server certificate: %w", err)
	}
	if svc.SPIFFEID != want {
		return fmt.Errorf("certs: server is %s, want %s", svc.SPIFFEID, want)
	}
	return nil
}

// ServerCredentials returns gRPC server credentials from ServerTLS(src).
func ServerCredentials(src *Source) credentials.TransportCredentials {
	return credentials.NewTLS(ServerTLS(src))
}

// ClientCredentials returns gRPC client credentials from
// ClientTLS(src, service): a connection made with them reaches only the
// named service.
func ClientCredentials(src *Source, service string) credentials.TransportCredentials {
	return credentials.NewTLS(ClientTLS(src, service))
}
