// Package certs gives every hop mTLS: a development CA and the service
// certificates it issues, TLS configurations and gRPC credentials that
// verify Switchboard's SPIFFE identities, certificate files that are
// reloaded when they change on disk, and the calling service read from a
// verified peer certificate.
//
// # Identities
//
// A service named "order" is spiffe://switchboard.local/order: the one URI
// SAN of its certificate (identity.TrustDomain). Names are lowercase DNS
// labels, [a-z0-9-] of 1 to 63 characters that start and end with a letter
// or digit; "ca" is reserved for the CA's files. The "operator"
// certificate is for people and their tools (grpcurl, grpc-health-probe).
//
// # Development PKI
//
// EnsureDevPKI keeps a directory like this one current, and is what
// "switchboard up" calls on every start:
//
//	var/certs/
//		ca.pem              the CA certificate (the trust bundle: the current CA, then the previous one while it is valid)
//		ca-key.pem          the CA's private key, mode 0600
//		<service>.pem       a service certificate, signed by the CA
//		<service>-key.pem   its private key, mode 0600
//		operator.pem        the operator certificate
//		operator-key.pem
//
// The CA lives DefaultCALifetime (one year), every other certificate
// DefaultLifetime (seven days). Keys are ECDSA P-256. Service and operator
// certificates carry the SPIFFE ID, DNS SANs "localhost" and the name, IP
// SANs 127.0.0.1 and ::1, and may be used as server and as client. A
// certificate is reissued once less than a third of its lifetime is left,
// so a process that runs longer than that should call EnsureDevPKI again
// from time to time (hourly, say); the Sources reading the files pick the
// new certificates up by themselves.
//
// # Connections
//
//	src, err := certs.NewSource(certs.FilesIn("var/certs", "order"), certs.WithLogger(logger))
//	srv, err := server.New(server.WithCredentials(certs.ServerCredentials(src)))
//	conn, err := client.Dial("dns:///127.0.0.1:7102",
//		client.WithCredentials(certs.ClientCredentials(src, "inventory")))
//
// Both sides speak TLS 1.3 only. A server requires a client certificate
// that chains to its CA bundle and carries a Switchboard SPIFFE ID; the
// handler (or an authenticator) reads it with ServiceFromPeer. A client
// checks that the server's certificate chains to its CA bundle and that its
// SPIFFE ID names the service it meant to call. It does not check host
// names: services are reached at loopback addresses, pod IPs and names
// that no certificate lists, and the SPIFFE ID is what identifies them.
//
// # Reloading
//
// A Source re-reads its files when they change, without a restart: new
// handshakes use the new material, connections already open keep theirs.
// It starts no goroutine and needs no Close. Instead, a handshake or a
// metrics scrape that finds ReloadInterval passed since the last check
// stats the files (one stat per file, at most once per interval) and
// reloads them if they changed. A reload that fails (a file half written,
// a key that does not match the certificate, a certificate that does not
// chain to the CA) keeps the material in use, logs the error once and
// counts it; the files are tried again when they change again. Write new
// files next to the old ones and rename them into place (as this package
// does), key first, certificate last.
package certs
