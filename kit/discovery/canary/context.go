package canary

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc/metadata"

	"github.com/switchboard-rpc/switchboard/kit/identity"
)

// Metadata headers the balancer reads from the outgoing call.
const (
	// OverrideHeader pins a call to a version: "x-canary: v2".
	OverrideHeader = "x-canary"
	// KeyHeader carries the sticky key (a user id) when the context has
	// none from WithKey.
	KeyHeader = "x-canary-key"
)

type keyCtx struct{}

// WithKey returns a context whose calls are routed by key (usually the
// user's id): the same key always lands on the same version while the
// policy is unchanged.
func WithKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyCtx{}, key)
}

// keyFrom returns the sticky key of a call: WithKey's, else the
// x-canary-key outgoing header, else the id of the verified user the call
// is made for (kit/identity), so that a user's calls through a gateway or
// from one service to the next all land on the same version.
func keyFrom(ctx context.Context) string {
	if k, ok := ctx.Value(keyCtx{}).(string); ok && k != "" {
		return k
	}
	if k := outgoing(ctx, KeyHeader); k != "" {
		return k
	}
	if u := identity.UserFrom(ctx); u != nil {
		return u.ID
	}
	return ""
}

// outgoing returns the first value of an outgoing metadata header.
func outgoing(ctx context.Context, header string) string {
	if v := metadata.ValueFromOutgoingContext(ctx, header); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Choice records the version the balancer sent a call to. It is safe for
// concurrent use.
type Choice struct{ v atomic.Pointer[string] }

type choiceCtx struct{}

// Track returns a context whose calls record, in the returned Choice, the
// version the balancer picked for them (the last attempt's, when grpc
// retries).
func Track(ctx context.Context) (context.Context, *Choice) {
	c := &Choice{}
	return context.WithValue(ctx, choiceCtx{}, c), c
}

// Version returns the version picked, "" before a pick or when the replica
// has no version.
func (c *Choice) Version() string {
	if p := c.v.Load(); p != nil {
		return *p
	}
	return ""
}

func record(ctx context.Context, version *string) {
	if c, ok := ctx.Value(choiceCtx{}).(*Choice); ok {
		c.v.Store(version)
	}
}
