package revocation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-rpc/switchboard/kit/auth"
)

// DefaultMaxEntries bounds a Memory store unless NewMemory is told otherwise.
const DefaultMaxEntries = 100_000

// ErrFull is returned by Memory.Revoke when the store holds its maximum of
// live entries: the revocation is not recorded, and the caller must not
// report success.
var ErrFull = errors.New("revocation: store full")

var errEmptyID = errors.New("revocation: empty token id")

// Memory is an in-process revocation store holding at most a fixed number
// of entries; an entry is dropped once its until has passed. It is safe for
// concurrent use; IsRevoked takes no lock.
type Memory struct {
	max int
	now func() time.Time

	mu      sync.Mutex // serialises writers
	entries sync.Map   // jti -> time.Time (until)
	n       atomic.Int64
	swept   time.Time
}

var _ auth.Revocations = (*Memory)(nil)

// NewMemory returns an empty store of at most maxEntries live entries
// (DefaultMaxEntries when maxEntries <= 0).
func NewMemory(maxEntries int) *Memory {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	return &Memory{max: maxEntries, now: time.Now}
}

// sweepEvery is how often Revoke drops expired entries when the store is
// not full.
const sweepEvery = time.Minute

// Revoke implements auth.Revocations. Revoking a jti again keeps the later
// until; an until already past records nothing. When the store is full of
// live entries it returns ErrFull.
func (m *Memory) Revoke(ctx context.Context, jti string, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if jti == "" {
		return errEmptyID
	}
	now := m.now()
	if !now.Before(until) {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.entries.Load(jti); ok {
		if old.(time.Time).Before(until) {
			m.entries.Store(jti, until)
		}
		return nil
	}
	if int(m.n.Load()) >= m.max || now.Sub(m.swept) >= sweepEvery {
		m.sweep(now)
	}
	if int(m.n.Load()) >= m.max {
		return fmt.Errorf("%w (%d live entries)", ErrFull, m.max)
	}
	m.entries.Store(jti, until)
	m.n.Add(1)
	return nil
}

// sweep drops the entries whose until has passed. Callers hold mu.
func (m *Memory) sweep(now time.Time) {
	m.swept = now
	m.entries.Range(func(k, v any) bool {
		if !now.Before(v.(time.Time)) {
			m.entries.Delete(k)
			m.n.Add(-1)
		}
		return true
	})
}

// IsRevoked implements auth.Revocations. It never fails.
func (m *Memory) IsRevoked(_ context.Context, jti string) (bool, error) {
	if m.n.Load() == 0 {
		return false, nil
	}
	v, ok := m.entries.Load(jti)
	if !ok {
		return false, nil
	}
	return m.now().Before(v.(time.Time)), nil
}

// Len returns the number of entries held, expired ones not yet dropped
// included.
func (m *Memory) Len() int { return int(m.n.Load()) }
