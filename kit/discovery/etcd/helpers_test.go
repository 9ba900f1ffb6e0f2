package etcd_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd"
	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd/embedded"
	"github.com/switchboard-rpc/switchboard/kit/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger logs to stderr when -v is given, else nowhere.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// etcdServer is an embedded etcd that a test may stop and start again.
// Its one cleanup, registered before any client's, closes whichever
// server runs last, after the clients: an etcd closing with clients
// connected waits seconds for their streams.
type etcdServer struct {
	cfg embedded.Config
	srv *embedded.Server
}

// startEtcd starts an embedded etcd for the test.
func startEtcd(t *testing.T) *etcdServer {
	t.Helper()
	h := &etcdServer{cfg: embedded.Config{Dir: t.TempDir(), Logger: testLogger()}}
	h.start(t)
	t.Cleanup(h.stop)
	return h
}

// start starts the server on the configured data and ports.
func (h *etcdServer) start(t *testing.T) {
	t.Helper()
	srv, err := embedded.Start(t.Context(), h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv, h.cfg = srv, srv.Config()
}

// stop stops the server if it runs.
func (h *etcdServer) stop() {
	if h.srv != nil {
		h.srv.Close()
		h.srv = nil
	}
}

func (h *etcdServer) endpoint() string {
	return "http://" + net.JoinHostPort(h.cfg.Host, strconv.Itoa(h.cfg.ClientPort))
}

// newClient connects to h for the test.
func newClient(t *testing.T, h *etcdServer) *clientv3.Client {
	t.Helper()
	cli, err := etcd.NewClient([]string{h.endpoint()}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// eventually polls cond every 50ms until it holds or 20s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// replica is a greeter server that counts the calls it answers.
type replica struct {
	srv   *server.Server
	addr  string
	calls atomic.Int64
	// killed is set once the replica's server has stopped; afterKill
	// counts the calls whose handler started after that.
	killed    atomic.Bool
	afterKill atomic.Int64
}

func startReplica(t *testing.T) *replica {
	t.Helper()
	r := &replica{}
	r.srv, r.addr = greetertest.Start(t, &greetertest.Fake{
		SayHelloFunc: func(_ context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
			if r.killed.Load() {
				r.afterKill.Add(1)
			}
			r.calls.Add(1)
			return &greeterv1.SayHelloResponse{Message: "hello " + req.GetName()}, nil
		},
	})
	return r
}

const sayHello = "/switchboard.greeter.v1.Greeter/SayHello"

// dialEtcd dials etcd:///greeter through res with the kit's defaults and
// SayHello retried.
func dialEtcd(t *testing.T, res *etcd.Resolver) greeterv1.GreeterClient {
	t.Helper()
	conn, err := client.Dial("etcd:///greeter", client.WithInsecure(),
		client.WithIdempotentMethods(sayHello),
		client.WithBreaker(nil),
		client.WithDialOptions(grpc.WithResolvers(res)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return greeterv1.NewGreeterClient(conn)
}

// call makes one SayHello and fails the test on error.
func call(t *testing.T, c greeterv1.GreeterClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ada"}); err != nil {
		t.Fatalf("SayHello: %v", err)
	}
}

// counts returns each replica's call count.
func counts(rs ...*replica) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.calls.Load()
	}
	return out
}

// gauge reads a gauge (or counter) with the given label pair from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || hasLabel(m, label, value) {
				if g := m.GetGauge(); g != nil {
					return g.GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{%s=%q}", name, label, value)
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// key is where the registry stores a greeter endpoint.
func key(addr string) string { return fmt.Sprintf("%sgreeter/%s", etcd.DefaultPrefix, addr) }
