package authz_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/services/greeter"
)

// testServiceHeader names the calling service in the end-to-end test. It
// stands in for the mTLS certificate: a real server never takes identity
// from a header.
const testServiceHeader = "x-test-service"

// headerAuthenticator is a test-only authentication hook that trusts
// testServiceHeader.
func headerAuthenticator(ctx context.Context, _ server.Call) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(testServiceHeader); len(v) == 1 {
		return identity.WithService(ctx, &identity.Service{Name: v[0]}), nil
	}
	return ctx, nil
}

func TestDeniedOverGRPC(t *testing.T) {
	a, err := authz.New(authz.Policy{
		Service: "switchboard.greeter.v1.Greeter",
		Methods: map[string]authz.Rule{
			authz.AnyMethod: {Services: []string{"frontend"}},
			"Chat":          {Roles: []string{"chatter"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := greetertest.Start(t, &greeter.Service{},
		server.WithAuthenticator(headerAuthenticator),
		server.WithAuthorizer(a.Authorize))
	client, _ := greetertest.Dial(t, addr)

	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"unary SayHello", func(ctx context.Context) error {
			_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ann"})
			return err
		}},
		{"server stream StreamGreetings", func(ctx context.Context) error {
			stream, err := client.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "ann", Count: 2})
			if err != nil {
				return err
			}
			for {
				if _, err := stream.Recv(); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
			}
		}},
		{"client stream CollectNames", func(ctx context.Context) error {
			stream, err := client.CollectNames(ctx)
			if err != nil {
				return err
			}
			// A denied stream may end before the message is sent: the
			// status comes with CloseAndRecv.
			_ = stream.Send(&greeterv1.CollectNamesRequest{Name: "ann"})
			_, err = stream.CloseAndRecv()
			return err
		}},
		{"bidi stream Chat", func(ctx context.Context) error {
			stream, err := client.Chat(ctx)
			if err != nil {
				return err
			}
			_ = stream.Send(&greeterv1.ChatRequest{Name: "ann"})
			if err := stream.CloseSend(); err != nil {
				return err
			}
			for {
				if _, err := stream.Recv(); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
			}
		}},
	}
	tests := []struct {
		service string // "" sends no header
		call    string
		want    string // reason, or allowed
	}{
		{"frontend", "unary SayHello", allowed},
		{"frontend", "server stream StreamGreetings", allowed},
		{"frontend", "client stream CollectNames", allowed},
		{"intruder", "unary SayHello", authz.ReasonMethodNotAllowed},
		{"intruder", "server stream StreamGreetings", authz.ReasonMethodNotAllowed},
		{"intruder", "client stream CollectNames", authz.ReasonMethodNotAllowed},
		{"", "unary SayHello", authz.ReasonServiceRequired},
		{"", "server stream StreamGreetings", authz.ReasonServiceRequired},
		// Chat needs a user with a role; the header gives none.
		{"frontend", "bidi stream Chat", authz.ReasonUserRequired},
		{"", "bidi stream Chat", authz.ReasonServiceRequired},
	}
	for _, tt := range tests {
		var call func(context.Context) error
		for _, c := range calls {
			if c.name == tt.call {
				call = c.call
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		if tt.service != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, testServiceHeader, tt.service)
		}
		err := call(ctx)
		cancel()
		if tt.want == allowed {
			if err != nil {
				t.Errorf("%s as %q = %v, want nil", tt.call, tt.service, err)
			}
			continue
		}
		if got := grpcstatus.Code(err); got != codes.PermissionDenied {
			t.Errorf("%s as %q: code = %v, want PermissionDenied (err %v)", tt.call, tt.service, got, err)
			continue
		}
		if got := reasonOf(t, err); got != tt.want {
			t.Errorf("%s as %q: reason = %q, want %q", tt.call, tt.service, got, tt.want)
		}
	}
}
