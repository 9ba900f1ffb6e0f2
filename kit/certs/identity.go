package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/switchboard-rpc/switchboard/kit/identity"
)

// OperatorName is the name of the certificate for people and their tools
// (grpcurl, grpc-health-probe): spiffe://switchboard.local/operator.
const OperatorName = "operator"

// ErrInvalidName is returned for a service name that cannot be a
// Switchboard identity.
var ErrInvalidName = errors.New("invalid service name")

// ValidateName checks that name can be a Switchboard identity and a file
// name under a certificate directory: 1 to 63 of a-z, 0-9 and '-', starting
// and ending with a letter or digit (a DNS label, since the name is also a
// DNS SAN), and not "ca", which names the CA's files. The error wraps
// ErrInvalidName.
func ValidateName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("%w %q: want 1 to 63 characters", ErrInvalidName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-' && i != 0 && i != len(name)-1:
		default:
			return fmt.Errorf("%w %q: want lowercase letters, digits and inner hyphens", ErrInvalidName, name)
		}
	}
	if name == "ca" {
		return fmt.Errorf("%w %q: reserved for the CA's files", ErrInvalidName, name)
	}
	return nil
}

// SPIFFEID returns the SPIFFE ID of the service name:
// "spiffe://switchboard.local/<name>". It does not validate name.
func SPIFFEID(name string) string {
	return "spiffe://" + identity.TrustDomain + "/" + name
}

// ServiceFromCertificate returns the Switchboard identity in cert. Following
// the X.509-SVID specification, cert must have exactly one URI SAN, and it
// must be spiffe://switchboard.local/<name> with a valid name. It does not
// verify cert: callers pass verified certificates only.
func ServiceFromCertificate(cert *x509.Certificate) (*identity.Service, error) {
	if cert == nil {
		return nil, errors.New("no certificate")
	}
	if n := len(cert.URIs); n != 1 {
		return nil, fmt.Errorf("certificate %q has %d URI SANs, want exactly one SPIFFE ID", cert.Subject.CommonName, n)
	}
	return parseSPIFFEID(cert.URIs[0])
}

func parseSPIFFEID(u *url.URL) (*identity.Service, error) {
	if u.Scheme != "spiffe" || u.Opaque != "" || u.User != nil || u.RawQuery != "" ||
		u.Fragment != "" || u.RawPath != "" {
		return nil, fmt.Errorf("URI SAN %q is not a SPIFFE ID", u.Redacted())
	}
	if u.Host != identity.TrustDomain {
		return nil, fmt.Errorf("SPIFFE ID %q is not in trust domain %s", u.String(), identity.TrustDomain)
	}
	name, ok := strings.CutPrefix(u.Path, "/")
	if !ok {
		return nil, fmt.Errorf("SPIFFE ID %q names no service", u.String())
	}
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("SPIFFE ID %q: %w", u.String(), err)
	}
	return &identity.Service{Name: name, SPIFFEID: SPIFFEID(name)}, nil
}

// ServiceFromPeer returns the calling service of a gRPC server call: the
// identity in the peer certificate that the TLS handshake verified. It
// returns false when the call did not come over TLS, when the handshake
// verified no chain (so on the client side of a connection made with
// ClientCredentials, which verifies by itself), or when the certificate
// does not carry exactly one spiffe://switchboard.local/<name> URI SAN.
func ServiceFromPeer(ctx context.Context) (*identity.Service, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil {
		return nil, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, false
	}
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return nil, false
	}
	svc, err := ServiceFromCertificate(chains[0][0])
	if err != nil {
		return nil, false
	}
	return svc, true
}
