package canary

import (
	"context"

	"google.golang.org/grpc"
)

// Observer is told, after each call, which version served it ("" when the
// balancer is not the canary one or the replica has no version).
type Observer func(ctx context.Context, method, version string, err error)

// UnaryInterceptor tracks the version of every unary call (see Track) and
// reports it to observe once the call ends; add it with kit/client's
// WithUnaryInterceptors to label client metrics or logs by version.
func UnaryInterceptor(observe Observer) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, c := Track(ctx)
		err := invoker(ctx, method, req, reply, cc, opts...)
		observe(ctx, method, c.Version(), err)
		return err
	}
}

// StreamInterceptor reports the version a stream was sent to once it is
// established (or failed to be).
func StreamInterceptor(observe Observer) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		ctx, c := Track(ctx)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		observe(ctx, method, c.Version(), err)
		return cs, err
	}
}
