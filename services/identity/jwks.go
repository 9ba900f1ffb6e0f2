package identity

import (
	"context"
	"fmt"

	"google.golang.org/grpc/metadata"

	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	"github.com/switchboard-rpc/switchboard/kit/auth"
)

// MaxJWKSKeys bounds the keys JWKSFromClient accepts from one GetJwks
// response; a larger key set is an error.
const MaxJWKSKeys = 64

// JWKSFromClient returns an auth.KeySource that fetches the key set with
// GetJwks through c, for the auth.Verifier of every service:
//
//	conn, _ := env.Dial("identity")
//	v, _ := auth.NewVerifier(identity.JWKSFromClient(identityv1.NewIdentityServiceClient(conn)),
//		auth.DefaultIssuer, auth.DefaultAudience, auth.WithRevocations(store))
//
// The Verifier calls it with the context of the call whose token it is
// verifying; the incoming metadata of that call (its authorization header
// above all) is not forwarded, so the GetJwks call carries only the
// service's own identity. It is safe for concurrent use.
func JWKSFromClient(c identityv1.IdentityServiceClient) auth.KeySource {
	return auth.KeySourceFunc(func(ctx context.Context) ([]auth.JWK, error) {
		ctx = metadata.NewIncomingContext(ctx, metadata.MD{})
		resp, err := c.GetJwks(ctx, &identityv1.GetJwksRequest{})
		if err != nil {
			return nil, fmt.Errorf("identity: GetJwks: %w", err)
		}
		keys := resp.GetKeys()
		if len(keys) > MaxJWKSKeys {
			return nil, fmt.Errorf("identity: GetJwks returned %d keys, more than %d", len(keys), MaxJWKSKeys)
		}
		out := make([]auth.JWK, len(keys))
		for i, k := range keys {
			out[i] = auth.JWK{Kty: k.GetKty(), Crv: k.GetCrv(), X: k.GetX(), Kid: k.GetKid(), Alg: k.GetAlg(), Use: k.GetUse()}
		}
		return out, nil
	})
}
