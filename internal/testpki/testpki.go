// Package testpki makes a throwaway certificate authority with server and
// client certificates in memory, for tests and benchmarks that need real
// mutual TLS on loopback. Production certificates come from kit/certs.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"time"
)

// PKI is a CA and the TLS configurations of one server and one client it
// issued, both requiring TLS 1.3 and verifying the peer.
type PKI struct {
	// Pool trusts the CA.
	Pool *x509.CertPool
	// Server is the server's TLS config: it presents a certificate for
	// 127.0.0.1 and localhost and requires a client certificate.
	Server *tls.Config
	// Client is the client's TLS config: it presents a client certificate
	// and verifies the server's.
	Client *tls.Config
}

// New makes a fresh PKI; it panics only if the system's random source
// fails.
func New() *PKI {
	caKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "testpki CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER := must(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey))
	ca := must(x509.ParseCertificate(caDER))
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	issue := func(serial int64, name string, usage x509.ExtKeyUsage) tls.Certificate {
		key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			URIs:         []*url.URL{{Scheme: "spiffe", Host: "switchboard.local", Path: "/" + name}},
		}
		der := must(x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey))
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	return &PKI{
		Pool: pool,
		Server: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{issue(2, "server", x509.ExtKeyUsageServerAuth)},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
		},
		Client: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{issue(3, "client", x509.ExtKeyUsageClientAuth)},
			RootCAs:      pool,
			ServerName:   "localhost",
		},
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
