package auth_test

import (
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"

	"github.com/switchboard-rpc/switchboard/internal/redistest"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/auth/revocation"
)

// downRedis returns a Redis store whose server is not listening.
func downRedis(t *testing.T) *revocation.Redis {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return revocation.NewRedis(c, "test:down:")
}

func TestVerifyRevokedInRedis(t *testing.T) {
	c, prefix := testRedis(t)
	clk := newClock()
	clk.Set(time.Now()) // Redis expires keys on real time
	store := revocation.NewRedis(c, prefix)
	testRevocation(t, clk, store)

	keys, err := c.Keys(t.Context(), prefix+"revoked:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Errorf("Redis keys = %v, want one %srevoked:<jti> per revoked token", keys, prefix)
	}
	for _, k := range keys {
		ttl, err := c.PTTL(t.Context(), k).Result()
		if err != nil || ttl <= 0 || ttl > auth.DefaultTTL+auth.DefaultLeeway {
			t.Errorf("PTTL %s = %v, %v; want it to expire with the token", k, ttl, err)
		}
	}
}

func TestRedisDownFailsClosed(t *testing.T) {
	f := newFixture(t, auth.WithRevocations(downRedis(t)))
	tok := issueTok(t, f.issuer)
	for range 2 { // uncached, then cached
		u, err := f.verifier.Verify(t.Context(), tok)
		if u != nil {
			t.Errorf("Verify returned %+v with Redis down", u)
		}
		checkStatus(t, "Verify with Redis down", err, codes.Unavailable, auth.ReasonRevocationUnavailable, tok)
	}
}

// testRedis returns a client of the machine's Redis and a key prefix of the
// test's own (see internal/redistest).
func testRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	return redistest.New(t, "kit-auth")
}
