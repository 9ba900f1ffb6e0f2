package etcd

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/switchboard-rpc/switchboard/kit/discovery"
)

// DefaultPrefix starts every key the registry writes and the resolver
// watches: <prefix><service>/<addr>.
const DefaultPrefix = "switchboard/services/"

// record is the value stored under an endpoint's key. It is the JSON
// format of etcd's own naming/endpoints package (Op, Addr, Metadata), so
// etcd's stock grpc resolver reads the same keys; Metadata carries the
// endpoint's labels.
type record struct {
	Op       uint8              `json:"Op"`
	Addr     string             `json:"Addr"`
	Metadata discovery.Endpoint `json:"Metadata"`
}

// key is where e is registered.
func key(prefix string, e discovery.Endpoint) string {
	return prefix + e.Service + "/" + e.Addr
}

// servicePrefix is the prefix of every key of service.
func servicePrefix(prefix, service string) string { return prefix + service + "/" }

func encode(e discovery.Endpoint) (string, error) {
	b, err := json.Marshal(record{Addr: e.Addr, Metadata: e})
	if err != nil {
		return "", fmt.Errorf("etcd: encoding %s: %w", e.Addr, err)
	}
	return string(b), nil
}

// decode reads the endpoint stored under k for service.
func decode(prefix, service, k string, v []byte) (discovery.Endpoint, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return discovery.Endpoint{}, fmt.Errorf("etcd: key %s: %w", k, err)
	}
	e := r.Metadata
	e.Service = service
	e.Addr = r.Addr
	if e.Addr == "" {
		e.Addr = strings.TrimPrefix(k, servicePrefix(prefix, service))
	}
	if err := e.Validate(); err != nil {
		return discovery.Endpoint{}, fmt.Errorf("etcd: key %s: %w", k, err)
	}
	return e, nil
}
