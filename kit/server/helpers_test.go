package server_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type fakeGreeter = greetertest.Fake

func rules() *validate.Set { return greetertest.Rules() }

func start(t *testing.T, impl greeterv1.GreeterServer, opts ...server.Option) (*server.Server, string) {
	t.Helper()
	return greetertest.Start(t, impl, opts...)
}

func dial(t *testing.T, addr string, opts ...client.Option) (greeterv1.GreeterClient, *grpc.ClientConn) {
	t.Helper()
	return greetertest.Dial(t, addr, opts...)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

func withoutHealthCheck() client.Option { return client.WithHealthCheck(false) }
