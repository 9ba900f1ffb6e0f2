package auth_test

import (
	"context"
	"crypto/rand"
	"net"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"

	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/auth/revocation"
)

const redisAddr = "127.0.0.1:6379"

// testRedis returns a client of the machine's Redis and a key prefix of
// the test's own; the keys under it are deleted and the client closed at
// the end of the test. Without Redis the test is skipped, or fails when
// CI=true.
func testRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redisAddr, DialTimeout: time.Second, MaxRetries: -1})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("Redis at %s is unreachable (%v); CI=true requires it", redisAddr, err)
		}
		t.Skipf("Redis at %s is unreachable (%v); start it to run this test (with CI=true this fails)", redisAddr, err)
	}
	prefix := "test:kit-auth:" + rand.Text() + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, err := c.Keys(ctx, prefix+"*").Result()
		if err == nil && len(keys) > 0 {
			err = c.Del(ctx, keys...).Err()
		}
		if err != nil {
			t.Errorf("deleting the test's Redis keys: %v", err)
		}
		_ = c.Close()
	})
	return c, prefix
}

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
