package servicetest

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Test-only identity headers, trusted by Authenticator. They stand in for
// the mTLS certificate and the verified access token: a real server never
// takes identity from a header.
const (
	// HeaderService names the calling service.
	HeaderService = "x-test-service"
	// HeaderUser is the ID of the calling user.
	HeaderUser = "x-test-user"
	// HeaderRoles holds the user's roles, one value per role.
	HeaderRoles = "x-test-roles"
)

// Authenticator is a server.Authenticator FOR TESTS ONLY: it believes the
// test headers without any check. The calling service is the first
// HeaderService value; the user, when HeaderUser is set, has the roles of
// HeaderRoles. A real server never takes identity from a header.
func Authenticator(ctx context.Context, _ server.Call) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(HeaderService); len(v) > 0 {
		ctx = identity.WithService(ctx, &identity.Service{Name: v[0], SPIFFEID: "spiffe://" + identity.TrustDomain + "/" + v[0]})
	}
	if v := md.Get(HeaderUser); len(v) > 0 {
		ctx = identity.WithUser(ctx, &identity.User{ID: v[0], Roles: md.Get(HeaderRoles)})
	}
	return ctx, nil
}

// As returns ctx with the outgoing test headers of a call made by service
// (no service when empty) for user (no user when empty) with roles. Roles
// are sent only with a user.
func As(ctx context.Context, service, user string, roles ...string) context.Context {
	var kv []string
	if service != "" {
		kv = append(kv, HeaderService, service)
	}
	if user != "" {
		kv = append(kv, HeaderUser, user)
		for _, r := range roles {
			kv = append(kv, HeaderRoles, r)
		}
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// AsService returns ctx with the outgoing test header of a call made by
// service without a user.
func AsService(ctx context.Context, service string) context.Context {
	return As(ctx, service, "")
}

// Serve starts a server on 127.0.0.1:0 with the kit's chain: validation,
// the test-only Authenticator and authz.New(policy). register registers
// the service and its validation rules; opts come after the defaults, so
// they may replace them (server.WithAuthenticator, for example). The
// server is shut down, and the returned insecure client connection
// closed, at the end of the test.
func Serve(tb testing.TB, register func(grpc.ServiceRegistrar, *validate.Set), policy authz.Policy, opts ...server.Option) *grpc.ClientConn {
	tb.Helper()
	az, err := authz.New(policy)
	if err != nil {
		tb.Fatal(err)
	}
	rules := validate.NewSet()
	srv, err := server.New(append([]server.Option{
		server.WithInsecure(),
		server.WithValidator(rules),
		server.WithAuthenticator(Authenticator),
		server.WithAuthorizer(az.Authorize),
		server.WithShutdown(0, 5*time.Second),
	}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	register(srv, rules)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; err != nil {
			tb.Errorf("Serve returned %v", err)
		}
	})
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}
