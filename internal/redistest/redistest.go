// Package redistest gives a test a client of the machine's Redis
// (127.0.0.1:6379, or SWITCHBOARD_TEST_REDIS) and a key prefix of its own,
// whose keys are deleted when the test ends. When Redis cannot be reached
// the test is skipped, except under CI=true, where it fails.
package redistest

import (
	"context"
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
)

// Addr returns the address of the Redis tests use.
func Addr() string {
	if v := os.Getenv("SWITCHBOARD_TEST_REDIS"); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}

// New returns a client and a fresh key prefix starting with "test:<name>:".
// The keys under the prefix are deleted and the client closed at the end
// of the test.
func New(tb testing.TB, name string) (*redis.Client, string) {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: Addr(), DialTimeout: time.Second, MaxRetries: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		sqltest.Unavailable(tb, "Redis at "+Addr(), err)
	}
	prefix := "test:" + name + ":" + rand.Text() + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, err := c.Keys(ctx, prefix+"*").Result()
		if err == nil && len(keys) > 0 {
			err = c.Del(ctx, keys...).Err()
		}
		if err != nil {
			tb.Errorf("deleting the test's Redis keys: %v", err)
		}
		_ = c.Close()
	})
	return c, prefix
}
