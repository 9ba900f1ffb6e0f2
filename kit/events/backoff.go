package events

import (
	"context"
	"math/rand/v2"
	"time"
)

// Bounds of the wait between attempts after a failure (a publish, a
// database query, the listen connection).
const (
	firstBackoff = 50 * time.Millisecond
	maxBackoff   = 5 * time.Second
)

// backoff doubles a wait from firstBackoff to maxBackoff, with jitter so
// instances that failed together do not retry together. Not safe for
// concurrent use.
type backoff struct{ failures int }

// next returns the wait before the next attempt and counts a failure.
func (b *backoff) next() time.Duration {
	d := firstBackoff
	for i := 0; i < b.failures && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	b.failures++
	// Equal jitter: between half and all of d.
	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter, not a secret
}

// reset forgets past failures.
func (b *backoff) reset() { b.failures = 0 }

// sleep waits d or until ctx ends, and reports whether it waited all of d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// signal wakes whoever waits on ch without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
