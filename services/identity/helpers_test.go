package identity

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	"github.com/switchboard-rpc/switchboard/internal/redistest"
	"github.com/switchboard-rpc/switchboard/internal/servicetest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/auth/revocation"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is the start of every fake clock.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a settable time source, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(t0.UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// testAuthenticator is the real bearer-token authenticator of v, plus the
// calling service taken from servicetest.HeaderService, trusted as a
// verified certificate would be: tests have no mTLS. Users come from
// tokens only, never from a test header.
func testAuthenticator(v *auth.Verifier) server.Authenticator {
	base := v.Authenticator()
	return func(ctx context.Context, call server.Call) (context.Context, error) {
		ctx, err := base(ctx, call)
		if err != nil {
			return ctx, err
		}
		if names := metadata.ValueFromIncomingContext(ctx, servicetest.HeaderService); len(names) == 1 {
			ctx = identity.WithService(ctx, &identity.Service{Name: names[0]})
		}
		return ctx, nil
	}
}

// env is the identity service served by kit/server on loopback, with the
// test authenticator, the service's rules and authz.New(Policy()).
type env struct {
	svc         *Service
	client      identityv1.IdentityServiceClient
	verifier    *auth.Verifier // keys from GetJwks over gRPC, revocations shared with svc
	revocations *revocation.Memory
	clock       *clock
	db          *sqldb.DB
}

// newEnv serves a service on db; edit may change its Config.
func newEnv(t *testing.T, db *sqldb.DB, edit func(*Config)) *env {
	t.Helper()
	e := &env{revocations: revocation.NewMemory(0), clock: newClock(), db: db}
	cfg := Config{Revocations: e.revocations, InsecureTestHashing: true, now: e.clock.Now}
	if edit != nil {
		edit(&cfg)
	}
	svc, err := Open(t.Context(), db, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	e.svc = svc

	// The Verifier needs the server's address, so the server starts with an
	// authenticator that defers to the Verifier's, set before any call.
	var authn atomic.Pointer[server.Authenticator]
	served := servicetest.Serve(t, svc.Register, Policy(), server.WithAuthenticator(
		func(ctx context.Context, call server.Call) (context.Context, error) {
			return (*authn.Load())(ctx, call)
		}))
	conn := dial(t, served.Target())
	e.client = identityv1.NewIdentityServiceClient(conn)

	// The Verifier gets its keys the way every service does: GetJwks over
	// gRPC, as the order service.
	jwksConn := dial(t, served.Target(), client.WithUnaryInterceptors(asService("order")))
	e.verifier, err = auth.NewVerifier(JWKSFromClient(identityv1.NewIdentityServiceClient(jwksConn)),
		auth.DefaultIssuer, auth.DefaultAudience, auth.WithRevocations(e.revocations), auth.WithRefreshInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	a := testAuthenticator(e.verifier)
	authn.Store(&a)
	return e
}

// dial returns a connection of the kit's client to target, closed at the
// end of the test.
func dial(t *testing.T, target string, opts ...client.Option) *grpc.ClientConn {
	t.Helper()
	conn, err := client.Dial(target, append([]client.Option{client.WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// asService is a client interceptor that names the calling service.
func asService(name string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(servicetest.AsService(ctx, name), method, req, reply, cc, opts...)
	}
}

// caller returns a context for a call from service (none when ""), with
// the access token when it is not "".
func caller(t *testing.T, service, token string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	ctx = servicetest.AsService(ctx, service)
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return ctx
}

// gw is a call through the gateway, without a user.
func gw(t *testing.T) context.Context { return caller(t, "gateway", "") }

// onBoth runs fn on a fresh database of each engine.
func onBoth(t *testing.T, fn func(t *testing.T, db *sqldb.DB)) {
	t.Helper()
	sqltest.Each(t, nil, "", fn)
}

// newDB returns a fresh SQLite database.
func newDB(t *testing.T) *sqldb.DB {
	t.Helper()
	return sqltest.New(t, sqldb.SQLite, nil, "")
}

// wantStatus fails t unless err is a status with code and, when reason is
// not "", that reason in domain (Domain unless the reason is the kit's).
func wantStatus(t *testing.T, what string, err error, code codes.Code, reason string) {
	t.Helper()
	st, ok := grpcstatus.FromError(err)
	if err == nil || !ok {
		t.Fatalf("%s: error = %v, want %v", what, err, code)
	}
	if st.Code() != code {
		t.Fatalf("%s: code = %v, want %v (%v)", what, st.Code(), code, err)
	}
	if reason != "" {
		if got := status.Reason(err); got != reason {
			t.Errorf("%s: reason = %q, want %q", what, got, reason)
		}
	}
}

// register registers a user with a password and returns it.
func (e *env) register(t *testing.T, email, password string) *identityv1.User {
	t.Helper()
	resp, err := e.client.Register(gw(t), &identityv1.RegisterRequest{
		Email: email, Password: password, DisplayName: "Test User",
	})
	if err != nil {
		t.Fatalf("Register(%q): %v", email, err)
	}
	return resp.GetUser()
}

// login logs in and returns the response.
func (e *env) login(t *testing.T, email, password string) *identityv1.LoginResponse {
	t.Helper()
	resp, err := e.client.Login(gw(t), &identityv1.LoginRequest{Email: email, Password: password})
	if err != nil {
		t.Fatalf("Login(%q): %v", email, err)
	}
	return resp
}

// protoDiff compares protos.
func protoDiff(want, got any) string { return cmp.Diff(want, got, protocmp.Transform()) }

// testRedis returns a client of the machine's Redis and a key prefix of the
// test's own (see internal/redistest).
func testRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	return redistest.New(t, "identity")
}
