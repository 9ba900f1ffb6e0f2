// Package servicetest is the harness the services' tests share: it serves
// a service on the kit's server over loopback, with the kit's validation
// and the service's real authorization policy, and returns a client
// connection to it.
//
// TEST ONLY. Identity comes from plain request headers (HeaderService,
// HeaderUser, HeaderRoles) that Authenticator trusts without any check, so
// that tests can call as any service or user without certificates or
// tokens. A real server never takes identity from a header: it takes the
// calling service from the mTLS certificate and the user from a verified
// access token. Never import this package outside _test.go files.
package servicetest
