package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/identity"
)

// leaf makes a certificate with the URI SANs uris, signed by parent with
// parentKey, or self-signed when parent is nil. It returns the certificate
// and the PEM of its key.
func leaf(t *testing.T, parent *x509.Certificate, parentKey any, uris ...string) (*x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// signedByDevCA writes a certificate with uris, signed by the CA in dir,
// as <dir>/<file>.pem and <dir>/<file>-key.pem.
func signedByDevCA(t *testing.T, dir, file string, uris ...string) {
	t.Helper()
	ca, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.CAFile), filepath.Join(dir, certs.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cert, keyPEM := leaf(t, ca.Leaf, ca.PrivateKey, uris...)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if err := os.WriteFile(filepath.Join(dir, file+".pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file+"-key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

// pipeHandshake runs a TLS handshake between server and client over an
// in-memory pipe and returns what each side made of it.
func pipeHandshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	sc, cc := net.Pipe()
	deadline := time.Now().Add(5 * time.Second)
	_ = sc.SetDeadline(deadline)
	_ = cc.SetDeadline(deadline)
	errc := make(chan error, 1)
	go func() {
		defer func() { _ = sc.Close() }()
		errc <- tls.Server(sc, server).Handshake()
	}()
	conn := tls.Client(cc, client)
	clientErr = conn.Handshake()
	if clientErr == nil {
		// In TLS 1.3 the server checks the client's certificate after the
		// client is done: its verdict arrives as an alert, or EOF.
		if _, err := conn.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
			clientErr = err
		}
	}
	_ = cc.Close()
	return <-errc, clientErr
}

func TestHandshake(t *testing.T) {
	dir, ca := devPKI(t, "greeter")
	otherDir, _ := devPKI(t, "greeter")
	if _, err := ca.Issue("expired", certs.WithClock(func() time.Time { return time.Now().Add(-30 * 24 * time.Hour) })); err != nil {
		t.Fatal(err)
	}
	signedByDevCA(t, dir, "anonymous")
	signedByDevCA(t, dir, "foreign", "spiffe://example.org/greeter")

	greeterSrc := source(t, dir, "greeter")
	addr := serveGreeter(t, certs.ServerCredentials(greeterSrc))
	operator := source(t, dir, certs.OperatorName)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	caFile := filepath.Join(dir, certs.CAFile)
	file := func(dir, name string) (string, string) {
		return filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	}
	raw := func(dir, name string) *tls.Config {
		c, k := file(dir, name)
		return rawClient(t, c, k, caFile)
	}
	tls12 := raw(dir, certs.OperatorName)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	tests := []struct {
		name   string
		client *tls.Config // nil: plaintext
		// Parts of the errors each side reports; both "" for success.
		serverErr, clientErr string
	}{
		{"mTLS with the expected service", certs.ClientTLS(operator, "greeter"), "", ""},
		{"plaintext client", nil, "", ""},
		{"TLS client without a certificate", &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "localhost"},
			"client didn't provide a certificate", "certificate required"},
		{"TLS 1.2 client", tls12, "unsupported versions", "protocol version not supported"},
		{"client certificate from another CA", raw(otherDir, certs.OperatorName),
			"certificate signed by unknown authority", "unknown certificate authority"},
		{"expired client certificate", raw(dir, "expired"), "certificate has expired", "expired certificate"},
		{"client certificate without SPIFFE ID", raw(dir, "anonymous"), "has 0 URI SANs", "bad certificate"},
		{"client certificate from a foreign trust domain", raw(dir, "foreign"),
			"not in trust domain switchboard.local", "bad certificate"},
		{"server is not the expected service", certs.ClientTLS(operator, "inventory"),
			"bad certificate", "server is spiffe://switchboard.local/greeter, want spiffe://switchboard.local/inventory"},
		{"server certificate from another CA", certs.ClientTLS(source(t, otherDir, certs.OperatorName), "greeter"),
			"bad certificate", "certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds := insecure.NewCredentials()
			if tt.client != nil {
				creds = credentials.NewTLS(tt.client)
				serverErr, clientErr := pipeHandshake(t, certs.ServerTLS(greeterSrc), tt.client)
				for _, side := range []struct {
					name string
					err  error
					want string
				}{{"server", serverErr, tt.serverErr}, {"client", clientErr, tt.clientErr}} {
					if (side.want == "") != (side.err == nil) || (side.err != nil && !strings.Contains(side.err.Error(), side.want)) {
						t.Errorf("%s handshake error = %v, want one with %q", side.name, side.err, side.want)
					}
				}
			}
			serial, err := hello(t, dial(t, addr, creds))
			if tt.serverErr == "" && tt.client != nil {
				if err != nil {
					t.Fatalf("SayHello = %v, want success", err)
				}
				if want := readCert(t, filepath.Join(dir, "greeter.pem")).SerialNumber; serial.Cmp(want) != 0 {
					t.Errorf("server presented serial %x, want greeter's %x", serial, want)
				}
				return
			}
			if status.Code(err) != codes.Unavailable {
				t.Errorf("SayHello = %v, want UNAVAILABLE", err)
			}
		})
	}
}

type authInfo struct{}

func (authInfo) AuthType() string { return "other" }

func TestServiceFromPeer(t *testing.T) {
	good, _ := leaf(t, nil, nil, "spiffe://switchboard.local/order")
	verified := func(c *x509.Certificate) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c}}},
		}})
	}
	withURIs := func(uris ...string) context.Context {
		c, _ := leaf(t, nil, nil, uris...)
		return verified(c)
	}
	tests := []struct {
		name string
		ctx  context.Context
		want *identity.Service // nil: not found
	}{
		{"verified SPIFFE ID", verified(good), &identity.Service{Name: "order", SPIFFEID: "spiffe://switchboard.local/order"}},
		{"operator", withURIs("spiffe://switchboard.local/operator"), &identity.Service{Name: "operator", SPIFFEID: "spiffe://switchboard.local/operator"}},
		{"no peer", context.Background(), nil},
		{"no auth info", peer.NewContext(context.Background(), &peer.Peer{}), nil},
		{"not TLS", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: authInfo{}}), nil},
		{"no verified chain", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{good}},
		}}), nil},
		{"no URI SAN", withURIs(), nil},
		{"foreign trust domain", withURIs("spiffe://example.org/order"), nil},
		{"two SPIFFE IDs", withURIs("spiffe://switchboard.local/order", "spiffe://switchboard.local/payment"), nil},
		{"SPIFFE ID and another URI", withURIs("spiffe://switchboard.local/order", "https://switchboard.local/order"), nil},
		{"not spiffe scheme", withURIs("https://switchboard.local/order"), nil},
		{"no name", withURIs("spiffe://switchboard.local/"), nil},
		{"nested path", withURIs("spiffe://switchboard.local/ns/order"), nil},
		{"upper case name", withURIs("spiffe://switchboard.local/Order"), nil},
		{"query", withURIs("spiffe://switchboard.local/order?x=1"), nil},
		{"port", withURIs("spiffe://switchboard.local:443/order"), nil},
		{"user info", withURIs("spiffe://me@switchboard.local/order"), nil},
	}
	for _, tt := range tests {
		got, ok := certs.ServiceFromPeer(tt.ctx)
		if ok != (tt.want != nil) || (ok && *got != *tt.want) {
			t.Errorf("ServiceFromPeer(%s) = %+v, %v, want %+v", tt.name, got, ok, tt.want)
		}
	}
}

// TestServiceFromPeerOverTLS checks the identity a real server handler
// sees.
func TestServiceFromPeerOverTLS(t *testing.T) {
	dir, _ := devPKI(t, "greeter", "order")
	got := make(chan *identity.Service, 1)
	capture := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		svc, _ := certs.ServiceFromPeer(ctx)
		got <- svc
		return h(ctx, req)
	}
	addr := serveGreeter(t, certs.ServerCredentials(source(t, dir, "greeter")), grpc.UnaryInterceptor(capture))
	for _, name := range []string{"order", certs.OperatorName} {
		if _, err := hello(t, dial(t, addr, certs.ClientCredentials(source(t, dir, name), "greeter"))); err != nil {
			t.Fatalf("SayHello as %s: %v", name, err)
		}
		want := identity.Service{Name: name, SPIFFEID: "spiffe://switchboard.local/" + name}
		if svc := <-got; svc == nil || *svc != want {
			t.Errorf("ServiceFromPeer in handler = %+v, want %+v", svc, want)
		}
	}

	plain := serveGreeter(t, insecure.NewCredentials(), grpc.UnaryInterceptor(capture))
	if _, err := dial(t, plain, insecure.NewCredentials()).SayHello(ctxTimeout(t, 5*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	if svc := <-got; svc != nil {
		t.Errorf("ServiceFromPeer over plaintext = %+v, want none", svc)
	}
}
