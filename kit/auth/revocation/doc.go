// Package revocation stores revoked access tokens for kit/auth: Memory in
// the process, for a single replica and for tests, and Redis, shared by
// every replica of every service. Both implement auth.Revocations.
//
// An entry names a token by its jti and lasts until the token would have
// expired anyway; after that it is dropped.
package revocation
