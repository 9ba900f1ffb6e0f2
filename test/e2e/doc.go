// Package e2e holds end-to-end tests of the reference shop: every service
// started in one process by the system runner, each on its own loopback
// port behind mutual TLS, driven over gRPC the way a client would, on
// SQLite and on PostgreSQL.
package e2e
