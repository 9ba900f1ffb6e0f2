package auth

import (
	"context"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/server"
)

// authorizationKey is the metadata key of the bearer token.
const authorizationKey = "authorization"

// Authenticator returns the kit/server authentication hook:
//
//   - the calling service, from the peer certificate the mTLS handshake
//     verified (certs.ServiceFromPeer), goes into the context with
//     identity.WithService;
//   - an "authorization: Bearer <token>" entry of the incoming metadata is
//     verified with v, and the user (with Token set, for forwarding) goes
//     into the context with identity.WithUser; a token that does not verify,
//     a scheme other than Bearer or more than one authorization entry fails
//     the call with UNAUTHENTICATED (or UNAVAILABLE, see Verify);
//   - a call without an authorization entry goes on with no user: the
//     authorizer decides whether the method needs one.
//
// Identities come only from the certificate and the verified claims:
// anything else a caller sends, such as an x-user-id header, is ignored,
// and an identity already in the context is dropped. Nothing is logged.
func (v *Verifier) Authenticator() server.Authenticator {
	return func(ctx context.Context, _ server.Call) (context.Context, error) {
		if svc, ok := certs.ServiceFromPeer(ctx); ok {
			ctx = identity.WithService(ctx, svc)
		} else if identity.ServiceFrom(ctx) != nil {
			ctx = identity.WithService(ctx, nil)
		}
		if identity.UserFrom(ctx) != nil {
			ctx = identity.WithUser(ctx, nil)
		}
		token, present, err := bearerToken(ctx)
		if err != nil || !present {
			return ctx, err
		}
		user, err := v.Verify(ctx, token)
		if err != nil {
			return ctx, err
		}
		return identity.WithUser(ctx, user), nil
	}
}

// bearerToken returns the token of the call's "authorization: Bearer
// <token>" metadata, and whether there was an authorization entry.
func bearerToken(ctx context.Context) (string, bool, error) {
	// Only this key, without copying the whole metadata map.
	values := metadata.ValueFromIncomingContext(ctx, authorizationKey)
	switch len(values) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", true, errHeaderMalformed
	}
	const scheme = "bearer "
	v := values[0]
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", true, errHeaderMalformed
	}
	token := strings.TrimSpace(v[len(scheme):])
	if token == "" {
		return "", true, errHeaderMalformed
	}
	return token, true, nil
}
