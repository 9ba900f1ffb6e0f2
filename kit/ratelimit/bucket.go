package ratelimit

import (
	"sync/atomic"
	"time"
)

// bucket is a token bucket kept as a single timestamp (the generic cell
// rate algorithm): tat, the theoretical arrival time, is when the bucket
// would be full again. A call at now takes a token when tat+interval,
// the new tat, is at most window (= burst tokens) ahead of now. Times are
// nanoseconds since the Limiter's epoch.
type bucket struct {
	tat      atomic.Int64
	interval int64 // nanoseconds per token
	window   int64 // burst × interval
}

func newBucket(interval, window int64) *bucket {
	return &bucket{interval: interval, window: window}
}

// take takes a token at now. When there is none, it returns false and how
// long until there is one.
func (b *bucket) take(now int64) (bool, time.Duration) {
	for {
		tat := b.tat.Load()
		next := max(tat, now) + b.interval
		if allowAt := next - b.window; allowAt > now {
			return false, time.Duration(allowAt - now)
		}
		if b.tat.CompareAndSwap(tat, next) {
			return true, 0
		}
	}
}

// refund gives back a token taken by take.
func (b *bucket) refund() { b.tat.Add(-b.interval) }
