package identity

import (
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
)

var cachedAnn = User{
	ID:          "0b6f3c1e-8a51-4d7e-9a8f-3f1f5f2b6c11",
	Email:       "Ann@example.com",
	DisplayName: "Ann",
	Roles:       []string{"customer"},
	CreateTime:  t0,
}

// testCacheContract runs the behaviour every UserCache shares.
func testCacheContract(t *testing.T, c UserCache) {
	t.Helper()
	ctx := t.Context()
	if _, ok, err := c.Get(ctx, cachedAnn.ID); ok || err != nil {
		t.Fatalf("Get(empty cache) = %v, %v, want a miss", ok, err)
	}
	if err := c.Add(ctx, cachedAnn); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Get(ctx, cachedAnn.ID)
	if !ok || err != nil {
		t.Fatalf("Get after Add = %v, %v, want a hit", ok, err)
	}
	if diff := cmp.Diff(cachedAnn, got); diff != "" {
		t.Errorf("Get (-want +got):\n%s", diff)
	}
	got.Roles[0] = "changed" // the caller's copy is its own
	if again, _, _ := c.Get(ctx, cachedAnn.ID); again.Roles[0] != "customer" {
		t.Errorf("changing a returned user changed the cache: roles %v", again.Roles)
	}
	if err := c.Remove(ctx, cachedAnn.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Get(ctx, cachedAnn.ID); ok || err != nil {
		t.Errorf("Get after Remove = %v, %v, want a miss", ok, err)
	}
	if err := c.Remove(ctx, "never-cached"); err != nil {
		t.Errorf("Remove(absent) = %v, want nil", err)
	}
}

func TestLRUCache(t *testing.T) {
	testCacheContract(t, NewLRUCache(10, time.Minute))

	t.Run("ttl", func(t *testing.T) {
		clk := newClock()
		c := NewLRUCache(10, time.Minute)
		c.now = clk.Now
		_ = c.Add(t.Context(), cachedAnn)
		clk.Advance(time.Minute - time.Nanosecond)
		if _, ok, _ := c.Get(t.Context(), cachedAnn.ID); !ok {
			t.Errorf("Get just before the TTL: miss, want a hit")
		}
		clk.Advance(time.Nanosecond)
		if _, ok, _ := c.Get(t.Context(), cachedAnn.ID); ok {
			t.Errorf("Get at the TTL: hit, want a miss")
		}
		if c.Len() != 0 {
			t.Errorf("Len after expiry = %d, want 0", c.Len())
		}
	})

	t.Run("size", func(t *testing.T) {
		c := NewLRUCache(2, time.Minute)
		for _, id := range []string{"a", "b", "c"} {
			_ = c.Add(t.Context(), User{ID: id})
		}
		if _, ok, _ := c.Get(t.Context(), "a"); ok || c.Len() != 2 {
			t.Errorf("after 3 adds to a cache of 2: a cached %v, len %d; want evicted, 2", ok, c.Len())
		}
	})

	t.Run("defaults", func(t *testing.T) {
		c := NewLRUCache(0, 0)
		if c.ttl != DefaultCacheTTL {
			t.Errorf("ttl = %v, want %v", c.ttl, DefaultCacheTTL)
		}
		if c := NewLRUCache(1, 10*MaxCacheTTL); c.ttl != MaxCacheTTL {
			t.Errorf("ttl = %v, want it capped at %v", c.ttl, MaxCacheTTL)
		}
	})
}

func TestRedisCache(t *testing.T) {
	client, prefix := testRedis(t)
	c := NewRedisCache(client, prefix, time.Minute)
	testCacheContract(t, c)

	_ = c.Add(t.Context(), cachedAnn)
	key := prefix + "user:" + cachedAnn.ID
	ttl, err := client.PTTL(t.Context(), key).Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Errorf("PTTL(%s) = %v, %v, want within a minute", key, ttl, err)
	}
	if err := client.Set(t.Context(), key, "{not json", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Get(t.Context(), cachedAnn.ID); ok || err == nil {
		t.Errorf("Get(corrupt entry) = %v, %v, want a miss with an error", ok, err)
	}
}

// TestGetUserWithCacheDown: a cache that fails costs reads, never calls.
func TestGetUserWithCacheDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	down := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = down.Close() })

	e := newEnv(t, newDB(t), func(c *Config) { c.Cache = NewRedisCache(down, "test:down:", 0) })
	u := e.register(t, "nocache@example.com", password)
	resp, err := e.client.GetUser(caller(t, "order", ""), &identityv1.GetUserRequest{UserId: u.GetUserId()})
	if err != nil {
		t.Fatalf("GetUser with Redis down = %v, want the user from the database", err)
	}
	if diff := protoDiff(u, resp.GetUser()); diff != "" {
		t.Errorf("GetUser (-want +got):\n%s", diff)
	}
	if _, err := e.svc.SetRoles(t.Context(), u.GetUserId(), []string{"customer"}); err != nil {
		t.Errorf("SetRoles with Redis down = %v, want success (the failed invalidation is logged)", err)
	}
}
