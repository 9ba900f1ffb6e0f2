package etcd

import (
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures a Registry, a Resolver or a PolicySource.
type Option func(*options)

type options struct {
	ttl        time.Duration
	prefix     string
	logger     *slog.Logger
	registerer prometheus.Registerer
	minBackoff time.Duration
	maxBackoff time.Duration
	opTimeout  time.Duration
	probe      time.Duration
}

func newOptions(opts []Option) options {
	o := options{
		ttl:        10 * time.Second,
		prefix:     DefaultPrefix,
		logger:     slog.New(slog.DiscardHandler),
		minBackoff: 200 * time.Millisecond,
		maxBackoff: 10 * time.Second,
		opTimeout:  5 * time.Second,
		probe:      5 * time.Second,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithTTL sets the registration lease's time to live (default 10s; etcd
// rounds it up to whole seconds and to its own minimum). A registry whose
// process dies disappears from resolvers at most this long after.
func WithTTL(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.ttl = d
		}
	}
}

// WithPrefix sets the key prefix (default DefaultPrefix). Registries and
// resolvers that should see each other must share it.
func WithPrefix(p string) Option {
	return func(o *options) {
		if p != "" {
			o.prefix = p
		}
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithRegisterer registers the component's Prometheus metrics with r
// (default: none).
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.registerer = r }
}

// WithBackoff bounds the randomized wait between attempts while etcd is
// unreachable (default 200ms growing to 10s).
func WithBackoff(minWait, maxWait time.Duration) Option {
	return func(o *options) {
		if minWait > 0 && maxWait >= minWait {
			o.minBackoff, o.maxBackoff = minWait, maxWait
		}
	}
}

// WithOpTimeout bounds each request to etcd (default 5s).
func WithOpTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.opTimeout = d
		}
	}
}

// WithProbeInterval sets how often a resolver checks that etcd still
// answers (default 5s): a watch alone cannot tell a quiet service from an
// unreachable etcd.
func WithProbeInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.probe = d
		}
	}
}

// backoff returns the wait before attempt n (from 0): exponential from
// min, capped at max, with jitter over its upper half.
func (o *options) backoff(n int) time.Duration {
	d := o.minBackoff
	for i := 0; i < n && d < o.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, o.maxBackoff)
	half := d / 2
	return half + rand.N(half+1) //nolint:gosec // jitter, not a secret
}

// sleep waits d or until done is closed; it reports whether d passed.
func sleep(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
