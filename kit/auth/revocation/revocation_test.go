package revocation_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/switchboard-rpc/switchboard/internal/redistest"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/auth/revocation"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// contract checks what every auth.Revocations must do. The store runs on
// real time; expiries are short.
func contract(t *testing.T, newStore func(t *testing.T) auth.Revocations) {
	t.Run("revoke then check", func(t *testing.T) {
		s := newStore(t)
		jti := rand.Text()
		if got, err := s.IsRevoked(t.Context(), jti); err != nil || got {
			t.Errorf("IsRevoked(new) = %v, %v; want false, nil", got, err)
		}
		if err := s.Revoke(t.Context(), jti, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if got, err := s.IsRevoked(t.Context(), jti); err != nil || !got {
			t.Errorf("IsRevoked(revoked) = %v, %v; want true, nil", got, err)
		}
		if got, err := s.IsRevoked(t.Context(), jti+"x"); err != nil || got {
			t.Errorf("IsRevoked(other) = %v, %v; want false, nil", got, err)
		}
		// Revoking again is fine, and a shorter until does not shorten it.
		if err := s.Revoke(t.Context(), jti, time.Now().Add(50*time.Millisecond)); err != nil {
			t.Errorf("second Revoke: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		if got, err := s.IsRevoked(t.Context(), jti); err != nil || !got {
			t.Errorf("IsRevoked after a shorter second Revoke = %v, %v; want true, nil", got, err)
		}
	})
	t.Run("entry ends at until", func(t *testing.T) {
		s := newStore(t)
		jti := rand.Text()
		if err := s.Revoke(t.Context(), jti, time.Now().Add(100*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if got, err := s.IsRevoked(t.Context(), jti); err != nil || !got {
			t.Errorf("IsRevoked before until = %v, %v; want true, nil", got, err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			got, err := s.IsRevoked(t.Context(), jti)
			if err != nil {
				t.Fatal(err)
			}
			if !got {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("entry still revoked 3s after its until")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("until in the past records nothing", func(t *testing.T) {
		s := newStore(t)
		jti := rand.Text()
		if err := s.Revoke(t.Context(), jti, time.Now().Add(-time.Second)); err != nil {
			t.Errorf("Revoke(past) = %v, want nil", err)
		}
		if got, err := s.IsRevoked(t.Context(), jti); err != nil || got {
			t.Errorf("IsRevoked after Revoke(past) = %v, %v; want false, nil", got, err)
		}
	})
	t.Run("empty jti", func(t *testing.T) {
		if err := newStore(t).Revoke(t.Context(), "", time.Now().Add(time.Minute)); err == nil {
			t.Error("Revoke(\"\") succeeded, want an error")
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		for n := range 16 {
			wg.Go(func() {
				for k := range 20 {
					jti := fmt.Sprintf("c-%d-%d", n, k)
					if err := s.Revoke(t.Context(), jti, time.Now().Add(time.Minute)); err != nil {
						t.Errorf("Revoke: %v", err)
						return
					}
					if got, err := s.IsRevoked(t.Context(), jti); err != nil || !got {
						t.Errorf("IsRevoked(%s) = %v, %v", jti, got, err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

func TestMemoryContract(t *testing.T) {
	contract(t, func(*testing.T) auth.Revocations { return revocation.NewMemory(0) })
}

func TestRedisContract(t *testing.T) {
	contract(t, func(t *testing.T) auth.Revocations {
		c, prefix := testRedis(t)
		return revocation.NewRedis(c, prefix)
	})
}

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestMemoryBound(t *testing.T) {
	c := &clock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	m := revocation.NewMemory(3)
	revocation.SetClock(m, c.now)
	ctx := t.Context()
	for i, d := range []time.Duration{time.Minute, 2 * time.Minute, time.Hour} {
		if err := m.Revoke(ctx, fmt.Sprint(i), c.now().Add(d)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Revoke(ctx, "3", c.now().Add(time.Hour)); !errors.Is(err, revocation.ErrFull) {
		t.Fatalf("Revoke into a full store = %v, want ErrFull", err)
	}
	if got, _ := m.IsRevoked(ctx, "3"); got {
		t.Error("a refused revocation is reported revoked")
	}
	if err := m.Revoke(ctx, "0", c.now().Add(2*time.Hour)); err != nil {
		t.Errorf("extending an entry of a full store: %v", err)
	}

	c.advance(3 * time.Minute) // "1" has expired; "0" was extended
	if got, _ := m.IsRevoked(ctx, "1"); got {
		t.Error("an entry is revoked after its until")
	}
	if got, _ := m.IsRevoked(ctx, "0"); !got {
		t.Error("an extended entry is no longer revoked")
	}
	if err := m.Revoke(ctx, "3", c.now().Add(time.Hour)); err != nil {
		t.Fatalf("Revoke once an entry expired: %v", err)
	}
	if got := m.Len(); got != 3 {
		t.Errorf("Len = %d, want 3 (the expired entry dropped)", got)
	}

	c.advance(3 * time.Hour) // everything expired; the next Revoke sweeps
	if err := m.Revoke(ctx, "4", c.now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := m.Len(); got != 1 {
		t.Errorf("Len after expiry = %d, want 1", got)
	}
}

func TestRedisKeyLayout(t *testing.T) {
	c, prefix := testRedis(t)
	s := revocation.NewRedis(c, prefix)
	until := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	if err := s.Revoke(t.Context(), "the-jti", until); err != nil {
		t.Fatal(err)
	}
	key := prefix + "revoked:the-jti"
	if v, err := c.Get(t.Context(), key).Result(); err != nil || v != "1" {
		t.Errorf("GET %s = %q, %v; want \"1\"", key, v, err)
	}
	at, err := c.Do(t.Context(), "PEXPIRETIME", key).Int64()
	if err != nil {
		t.Fatal(err)
	}
	if at != until.UnixMilli() {
		t.Errorf("PEXPIRETIME %s = %d, want %d", key, at, until.UnixMilli())
	}
}

func TestRedisDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	s := revocation.NewRedis(c, "test:down:")
	if got, err := s.IsRevoked(t.Context(), "jti"); err == nil {
		t.Errorf("IsRevoked with Redis down = %v, nil; want an error", got)
	}
	if err := s.Revoke(t.Context(), "jti", time.Now().Add(time.Minute)); err == nil {
		t.Error("Revoke with Redis down succeeded")
	}
}

// testRedis returns a client of the machine's Redis and a key prefix of the
// test's own (see internal/redistest).
func testRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	return redistest.New(t, "kit-auth-revocation")
}
