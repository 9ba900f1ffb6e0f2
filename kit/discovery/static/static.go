package static

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/grpc/resolver"

	"github.com/switchboard-rpc/switchboard/kit/discovery"
)

// Scheme is the URL scheme of static targets.
const Scheme = "static"

// MaxAddrs bounds the addresses of one target.
const MaxAddrs = 256

func init() { resolver.Register(NewBuilder(nil)) }

// Builder builds static resolvers. It is safe for concurrent use.
type Builder struct {
	services map[string][]discovery.Endpoint
}

// NewBuilder returns a Builder that resolves static:///<service> to
// services[service] when the target gives no addrs. The map is copied.
func NewBuilder(services map[string][]discovery.Endpoint) *Builder {
	cp := make(map[string][]discovery.Endpoint, len(services))
	for k, v := range services {
		cp[k] = append([]discovery.Endpoint(nil), v...)
	}
	return &Builder{services: cp}
}

// FromAddrs returns a Builder for plain addresses by service.
func FromAddrs(addrs map[string][]string) *Builder {
	services := make(map[string][]discovery.Endpoint, len(addrs))
	for svc, list := range addrs {
		for _, a := range list {
			services[svc] = append(services[svc], discovery.Endpoint{Service: svc, Addr: a})
		}
	}
	return &Builder{services: services}
}

// Scheme returns "static".
func (b *Builder) Scheme() string { return Scheme }

// Build resolves t once and reports the result to cc.
func (b *Builder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	eps, err := b.resolve(t)
	if err != nil {
		return nil, err
	}
	if err := cc.UpdateState(discovery.ResolverState(eps)); err != nil {
		// The balancer rejected the list (for example, it is empty); grpc
		// already reported it on the channel, and calls will fail with it.
		cc.ReportError(err)
	}
	return nop{}, nil
}

// resolve returns the endpoints of t: its addrs query parameter, else the
// map's entry for its service.
func (b *Builder) resolve(t resolver.Target) ([]discovery.Endpoint, error) {
	svc := discovery.ServiceFromTarget(t)
	if raw := t.URL.Query().Get("addrs"); raw != "" {
		parts := strings.Split(raw, ",")
		if len(parts) > MaxAddrs {
			return nil, fmt.Errorf("static: %d addresses in %q, at most %d", len(parts), t.String(), MaxAddrs)
		}
		eps := make([]discovery.Endpoint, 0, len(parts))
		for _, p := range parts {
			e := discovery.Endpoint{Service: svc, Addr: strings.TrimSpace(p)}
			if err := e.Validate(); err != nil {
				return nil, fmt.Errorf("static: %w", err)
			}
			eps = append(eps, e)
		}
		return eps, nil
	}
	eps, ok := b.services[svc]
	if !ok || len(eps) == 0 {
		known := strings.Join(sortedKeys(b.services), ", ")
		return nil, fmt.Errorf("static: no addresses for %q: give ?addrs=host:port,... (known services: %s)", svc, known)
	}
	return eps, nil
}

func sortedKeys(m map[string][]discovery.Endpoint) []string {
	if len(m) == 0 {
		return []string{"none"}
	}
	return slices.Sorted(maps.Keys(m))
}

// nop is a resolver with nothing to refresh.
type nop struct{}

func (nop) ResolveNow(resolver.ResolveNowOptions) {}
func (nop) Close()                                {}
