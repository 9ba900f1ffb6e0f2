package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/services/greeter"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// devPKI makes a development PKI for services (and the operator) in a new
// temporary directory.
func devPKI(t *testing.T, services ...string) (string, *certs.CA) {
	t.Helper()
	dir := t.TempDir()
	if _, err := certs.EnsureDevPKI(dir, services); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, ca
}

func source(t *testing.T, dir, name string, opts ...certs.Option) *certs.Source {
	t.Helper()
	src, err := certs.NewSource(certs.FilesIn(dir, name), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// serveGreeter serves the greeter with creds on a loopback port until the
// end of the test.
func serveGreeter(t *testing.T, creds credentials.TransportCredentials, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append(opts, grpc.Creds(creds))...)
	greeterv1.RegisterGreeterServer(srv, &greeter.Service{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) greeterv1.GreeterClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return greeterv1.NewGreeterClient(conn)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// hello calls SayHello and returns the serial of the certificate the
// server presented on the connection that carried the call.
func hello(t *testing.T, c greeterv1.GreeterClient) (*big.Int, error) {
	t.Helper()
	var p peer.Peer
	_, err := c.SayHello(ctxTimeout(t, 5*time.Second), &greeterv1.SayHelloRequest{Name: "tls"}, grpc.Peer(&p))
	if err != nil {
		return nil, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		t.Fatalf("peer auth info %T has no TLS peer certificate", p.AuthInfo)
	}
	return info.State.PeerCertificates[0].SerialNumber, nil
}

// rawClient returns a client TLS configuration built by hand from files,
// for certificates a Source would refuse to load.
func rawClient(t *testing.T, certFile, keyFile, caFile string) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      roots,
		ServerName:   "localhost",
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(path, path[:len(path)-len(".pem")]+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf
}
