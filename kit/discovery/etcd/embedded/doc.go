// Package embedded runs a single-member etcd server inside the process,
// on loopback, for development ("switchboard dev") and tests. Production
// runs a real etcd cluster and only its client.
package embedded
