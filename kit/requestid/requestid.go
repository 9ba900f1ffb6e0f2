// Package requestid carries a request id through a call graph: servers take
// it from the incoming "x-request-id" header or make one, clients send it on,
// and logs print it. It is safe for concurrent use.
package requestid

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"

	"google.golang.org/grpc/metadata"
)

// Header is the metadata key (and HTTP header) that carries the id.
const Header = "x-request-id"

// MaxLen bounds an id taken from a caller; longer or malformed ids are
// replaced with a fresh one.
const MaxLen = 128

type ctxKey struct{}

// idContext is the context NewContext returns: one allocation where
// context.WithValue would take two (its node and the string boxed in it).
type idContext struct {
	context.Context
	id string
}

// Value returns the idContext itself for the package's key, so that
// FromContext reads the id without boxing it, and defers to the parent for
// any other key.
func (c *idContext) Value(key any) any {
	if key == (ctxKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// String names the context as context.WithValue's do, for debugging.
func (c *idContext) String() string {
	return fmt.Sprintf("%v.WithValue(requestid, %s)", c.Context, c.id)
}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id string) context.Context {
	return &idContext{Context: ctx, id: id}
}

// FromContext returns the id carried by ctx, or "" when there is none.
func FromContext(ctx context.Context) string {
	if c, ok := ctx.Value(ctxKey{}).(*idContext); ok {
		return c.id
	}
	return ""
}

// New returns a fresh random id: 32 hex characters (128 random bits). Ids
// must be unique, not secret, so they come from the runtime's fast
// per-thread generator rather than crypto/rand.
func New() string {
	var raw [16]byte
	binary.BigEndian.PutUint64(raw[:8], rand.Uint64()) //nolint:gosec // ids need uniqueness, not secrecy
	binary.BigEndian.PutUint64(raw[8:], rand.Uint64()) //nolint:gosec // ids need uniqueness, not secrecy
	var out [32]byte
	hex.Encode(out[:], raw[:])
	return string(out[:])
}

// FromIncoming returns the id in the incoming metadata of ctx if it is
// present and well formed, else a fresh one.
func FromIncoming(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, Header); len(v) > 0 && Valid(v[0]) {
		return v[0]
	}
	return New()
}

// Valid reports whether id is acceptable from a caller: 1 to MaxLen
// characters of letters, digits, '-', '_', '.' and ':'.
func Valid(id string) bool {
	if id == "" || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}
