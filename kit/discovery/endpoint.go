package discovery

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
)

// Bounds on what an Endpoint may carry, so that one registration cannot
// bloat every watcher of its service.
const (
	// MaxWeight is the largest weight an endpoint may have.
	MaxWeight = 100
	// MaxMetadata is the most metadata entries an endpoint may carry.
	MaxMetadata = 16
	// MaxFieldLen bounds every string of an endpoint (service, address,
	// version, zone, metadata keys and values).
	MaxFieldLen = 256
)

// Endpoint is one replica of a service: where it listens and the labels
// balancers route by. It is a value; copy it freely.
type Endpoint struct {
	// Service is the service's name, e.g. "inventory".
	Service string `json:"-"`
	// Addr is the host:port clients dial.
	Addr string `json:"-"`
	// Version labels the replica's release, e.g. "v1"; the canary
	// balancer splits traffic by it.
	Version string `json:"version,omitempty"`
	// Zone is where the replica runs, e.g. "eu-west-1a".
	Zone string `json:"zone,omitempty"`
	// Weight is the replica's share relative to the others of its
	// version, 1 to MaxWeight; 0 means 1.
	Weight uint32 `json:"weight,omitempty"`
	// Metadata holds free-form labels, at most MaxMetadata.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Validate reports what is wrong with e, if anything.
func (e Endpoint) Validate() error {
	var errs []error
	if err := ValidateService(e.Service); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := net.SplitHostPort(e.Addr); err != nil || len(e.Addr) > MaxFieldLen {
		errs = append(errs, fmt.Errorf("address %q is not host:port", e.Addr))
	}
	for name, v := range map[string]string{"version": e.Version, "zone": e.Zone} {
		if len(v) > MaxFieldLen || strings.ContainsAny(v, "/\n") {
			errs = append(errs, fmt.Errorf("%s %q is longer than %d bytes or has a slash or newline", name, v, MaxFieldLen))
		}
	}
	if e.Weight > MaxWeight {
		errs = append(errs, fmt.Errorf("weight %d is above %d", e.Weight, MaxWeight))
	}
	if len(e.Metadata) > MaxMetadata {
		errs = append(errs, fmt.Errorf("%d metadata entries, at most %d", len(e.Metadata), MaxMetadata))
	}
	for k, v := range e.Metadata {
		if k == "" || len(k) > MaxFieldLen || len(v) > MaxFieldLen {
			errs = append(errs, fmt.Errorf("metadata %q: key empty or key or value longer than %d bytes", k, MaxFieldLen))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("discovery: endpoint %s/%s: %w", e.Service, e.Addr, errors.Join(errs...))
	}
	return nil
}

// ValidateService checks a service name: 1 to 63 lowercase letters, digits
// and dashes, as a DNS label, so it works in etcd keys and DNS names alike.
func ValidateService(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("service name %q must be 1 to 63 characters", name)
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return fmt.Errorf("service name %q may hold only a-z, 0-9 and '-'", name)
		}
	}
	return nil
}

// EffectiveWeight is Weight with 0 read as 1.
func (e Endpoint) EffectiveWeight() uint32 {
	if e.Weight == 0 {
		return 1
	}
	return e.Weight
}

// Equal reports whether e and o describe the same replica with the same
// labels.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Service == o.Service && e.Addr == o.Addr && e.Version == o.Version &&
		e.Zone == o.Zone && e.EffectiveWeight() == o.EffectiveWeight() && maps.Equal(e.Metadata, o.Metadata)
}

// attrKey keys the Endpoint in grpc attributes.
type attrKey struct{}

// attrValue wraps an Endpoint so grpc can compare attributes (an Endpoint
// holds a map and is not comparable with ==).
type attrValue struct{ e Endpoint }

// Equal lets grpc compare two attribute values.
func (v attrValue) Equal(o any) bool {
	ov, ok := o.(attrValue)
	return ok && v.e.Equal(ov.e)
}

// WithEndpoint returns attrs with e attached.
func WithEndpoint(attrs *attributes.Attributes, e Endpoint) *attributes.Attributes {
	return attrs.WithValue(attrKey{}, attrValue{e: e})
}

// FromAttributes returns the Endpoint a resolver of the kit attached, if
// any.
func FromAttributes(attrs *attributes.Attributes) (Endpoint, bool) {
	v, ok := attrs.Value(attrKey{}).(attrValue)
	return v.e, ok
}

// ResolverState turns endpoints into grpc's resolver state: one
// resolver.Endpoint per replica with the Endpoint in its attributes (read
// back with FromAttributes). Every balancer grpc ships reads Endpoints.
func ResolverState(eps []Endpoint) resolver.State {
	st := resolver.State{Endpoints: make([]resolver.Endpoint, 0, len(eps))}
	for _, e := range eps {
		attrs := WithEndpoint(nil, e)
		st.Endpoints = append(st.Endpoints, resolver.Endpoint{
			Addresses:  []resolver.Address{{Addr: e.Addr}},
			Attributes: attrs,
		})
	}
	return st
}

// ServiceFromTarget returns the service a grpc target names: the path of
// "etcd:///inventory" or "static:///inventory?addrs=...", and the first DNS
// label of "dns:///inventory.shop.svc.cluster.local:7102".
func ServiceFromTarget(t resolver.Target) string {
	name := t.Endpoint()
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	if host, _, err := net.SplitHostPort(name); err == nil {
		name = host
	}
	if i := strings.IndexByte(name, '.'); i > 0 && net.ParseIP(name) == nil {
		name = name[:i]
	}
	return name
}
