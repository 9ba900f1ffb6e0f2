package canary

import (
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/serviceconfig"

	"github.com/switchboard-rpc/switchboard/kit/discovery"
)

// Name is the balancer's name in a service config's loadBalancingConfig.
const Name = "switchboard_canary"

func init() { balancer.Register(builder{}) }

// Config is the balancer's configuration in a service config.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`
	// Table names the published Table to read; "" is the default.
	Table string `json:"table,omitempty"`
	// Service names the service whose policy applies; "" takes it from
	// the target (discovery.ServiceFromTarget).
	Service string `json:"service,omitempty"`
}

// LoadBalancingConfig returns the JSON of a loadBalancingConfig entry
// selecting the balancer with table and service (either may be "").
func LoadBalancingConfig(table, service string) string {
	b, _ := json.Marshal(map[string]Config{Name: {Table: table, Service: service}})
	return string(b)
}

type builder struct{}

func (builder) Name() string { return Name }

func (builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	var c Config
	if err := json.Unmarshal(js, &c); err != nil {
		return nil, fmt.Errorf("canary: balancer config: %w", err)
	}
	if c.Service != "" {
		if err := discovery.ValidateService(c.Service); err != nil {
			return nil, fmt.Errorf("canary: balancer config: %w", err)
		}
	}
	return &c, nil
}

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &canaryBalancer{cc: cc, service: discovery.ServiceFromTarget(opts.Target)}
	b.Balancer = endpointsharding.NewBalancer(&wrappedCC{ClientConn: cc, b: b}, opts,
		balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return b
}

// canaryBalancer is endpointsharding over pick-first children, with its
// own picker over the READY children.
type canaryBalancer struct {
	balancer.Balancer
	cc      balancer.ClientConn
	service string
	// cfg is written by UpdateClientConnState and read when children
	// report state; endpointsharding serializes both under its own lock
	// only partly, so it is guarded here.
	cfg atomicConfig
}

func (b *canaryBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	c, _ := s.BalancerConfig.(*Config)
	if c == nil {
		c = &Config{}
	}
	b.cfg.store(c)
	return b.Balancer.UpdateClientConnState(balancer.ClientConnState{
		// Health checking and outlier detection in the pick-first
		// children, as round_robin does.
		ResolverState: pickfirst.EnableHealthListener(s.ResolverState),
	})
}

// wrappedCC turns endpointsharding's aggregated state into the canary
// picker.
type wrappedCC struct {
	balancer.ClientConn
	b *canaryBalancer
}

func (w *wrappedCC) UpdateState(s balancer.State) {
	if s.ConnectivityState != connectivity.Ready {
		w.ClientConn.UpdateState(s)
		return
	}
	cfg := w.b.cfg.load()
	service := cfg.Service
	if service == "" {
		service = w.b.service
	}
	p := newPicker(cfg.Table, service, endpointsharding.ChildStatesFromPicker(s.Picker))
	if len(p.all.members) == 0 {
		w.ClientConn.UpdateState(s)
		return
	}
	w.ClientConn.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: p})
}
