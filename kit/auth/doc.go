// Package auth establishes end-user identity from Ed25519-signed JWT access
// tokens, and the service identity of the peer from its verified mTLS
// certificate.
//
// An [Issuer] (used by the identity service) holds the signing keys, issues
// tokens and publishes the public keys as a JSON Web Key Set. A [Verifier]
// (used by every service) checks tokens against that key set, which it gets
// from a [KeySource] and caches, consults [Revocations], and caches verified
// tokens by their SHA-256 hash until they expire, so that a repeated token
// costs one hash, one map lookup and one revocation check.
// [Verifier.Authenticator] plugs it into kit/server.
//
// # Tokens
//
// An access token is a JWS compact serialisation with the protected header
//
//	{"alg":"EdDSA","kid":"<RFC 7638 thumbprint of the key>","typ":"at+jwt"}
//
// and the claims
//
//	iss    the issuer, e.g. "spiffe://switchboard.local/identity"
//	sub    the user id
//	aud    the audience, e.g. "switchboard"
//	exp    expiry, NumericDate (seconds)
//	nbf    not before: the issue time
//	iat    issued at
//	jti    token id: 128 random bits, base64url; what revocation names
//	roles  the user's roles, a JSON array of strings (may be empty)
//
// A Verifier accepts only alg EdDSA with a key of its key set found by kid
// (never a key named inside the token), the typ "at+jwt" (RFC 9068), its own
// issuer and audience, and exp, nbf and iat within a small leeway; every
// claim above but roles must be present.
//
// # Errors
//
// Every verification failure is an UNAUTHENTICATED status with an ErrorInfo
// of domain kit.switchboard.dev and one of the Reason constants; no error
// message ever contains the token. A failure of the infrastructure behind
// verification (no key set can be fetched, the revocation store does not
// answer) is UNAVAILABLE: verification fails closed.
//
// # JWK
//
// [JWK] is the kit's own JSON Web Key struct rather than the generated
// switchboard.identity.v1.Jwk, so that kit does not depend on the service
// API; the fields have the same names, so the identity service and a gRPC
// [KeySource] copy them one for one.
package auth
