package ratelimit

import "time"

// WithClock makes the Limiter read the time since its start from f.
func WithClock(f func() time.Duration) Option { return func(o *options) { o.clock = f } }
