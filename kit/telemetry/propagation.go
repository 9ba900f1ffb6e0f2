package telemetry

import (
	"context"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
)

// propagationHandler is tracePropagation as a stats handler, for a process
// that exports no spans but records its call metrics with stats handlers
// (Config.ExactCallMetrics), where grpc's per-call events are paid for
// anyway and the metrics handler, which comes after it, sees the caller's
// trace context. It carries W3C trace context through: the server side puts the caller's span context in the
// call's context (so logs carry its trace id and outgoing calls continue
// the trace), the client side injects the context's span context into
// outgoing metadata. It starts no spans, so a process that does not trace
// pays almost nothing, while the traces of the processes around it stay
// whole: the next hop sees the caller's span as its parent.
type propagationHandler struct {
	trace  *tracePropagation
	client bool
}

func (h *propagationHandler) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	if h.client {
		return h.trace.inject(ctx)
	}
	return h.trace.extract(ctx)
}

func (*propagationHandler) HandleRPC(context.Context, stats.RPCStats) {}

func (*propagationHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (*propagationHandler) HandleConn(context.Context, stats.ConnStats) {}

// incomingCarrier reads propagation fields from a server call's metadata.
type incomingCarrier struct{ ctx context.Context }

func (c incomingCarrier) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (incomingCarrier) Set(string, string) {}

func (c incomingCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}

// outgoingCarrier collects the fields a propagator injects.
type outgoingCarrier struct{ kv []string }

func (*outgoingCarrier) Get(string) string { return "" }

func (c *outgoingCarrier) Set(key, value string) { c.kv = append(c.kv, key, value) }

func (c *outgoingCarrier) Keys() []string {
	keys := make([]string, 0, len(c.kv)/2)
	for i := 0; i < len(c.kv); i += 2 {
		keys = append(keys, c.kv[i])
	}
	return keys
}
