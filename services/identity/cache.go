package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"
)

// Defaults of the user cache.
const (
	// DefaultCacheSize is how many users the in-process cache holds.
	DefaultCacheSize = 10_000
	// DefaultCacheTTL is how long a cached user is served: the longest a
	// replica can serve a user another replica changed (the in-process
	// cache is invalidated only in the process that made the change).
	DefaultCacheTTL = time.Minute
	// MaxCacheTTL bounds the TTL of either cache.
	MaxCacheTTL = time.Hour
)

// UserCache caches users by id for GetUser. The service removes a user
// after every change to it. Implementations must be safe for concurrent
// use. A failing cache never fails a call: a Get error counts as a miss,
// an Add error is ignored, and a Remove error is logged (the entry then
// lives until its TTL).
type UserCache interface {
	// Get returns the cached user, and whether there was one.
	Get(ctx context.Context, userID string) (User, bool, error)
	// Add caches u.
	Add(ctx context.Context, u User) error
	// Remove drops the user, if cached.
	Remove(ctx context.Context, userID string) error
}

// LRUCache is the in-process UserCache: a fixed number of users, least
// recently used evicted first, each served for a fixed TTL. It starts no
// goroutine: expired entries are dropped when read or evicted. It is safe
// for concurrent use.
type LRUCache struct {
	ttl   time.Duration
	now   func() time.Time
	cache *lru.Cache[string, cachedUser]
}

type cachedUser struct {
	user  User
	until time.Time
}

var _ UserCache = (*LRUCache)(nil)

// NewLRUCache returns an LRUCache of size users (DefaultCacheSize when
// size <= 0) served for ttl (DefaultCacheTTL when ttl <= 0, at most
// MaxCacheTTL).
func NewLRUCache(size int, ttl time.Duration) *LRUCache {
	if size <= 0 {
		size = DefaultCacheSize
	}
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	c, _ := lru.New[string, cachedUser](size) // fails only for size <= 0
	return &LRUCache{ttl: min(ttl, MaxCacheTTL), now: time.Now, cache: c}
}

// Get implements UserCache. It never fails.
func (c *LRUCache) Get(_ context.Context, userID string) (User, bool, error) {
	e, ok := c.cache.Get(userID)
	if !ok {
		return User{}, false, nil
	}
	if !c.now().Before(e.until) {
		c.cache.Remove(userID)
		return User{}, false, nil
	}
	return cloneUser(e.user), true, nil
}

// Add implements UserCache. It never fails.
func (c *LRUCache) Add(_ context.Context, u User) error {
	c.cache.Add(u.ID, cachedUser{user: cloneUser(u), until: c.now().Add(c.ttl)})
	return nil
}

// Remove implements UserCache. It never fails.
func (c *LRUCache) Remove(_ context.Context, userID string) error {
	c.cache.Remove(userID)
	return nil
}

// Len returns the number of cached users, expired ones not yet dropped
// included.
func (c *LRUCache) Len() int { return c.cache.Len() }

func cloneUser(u User) User {
	u.Roles = slices.Clone(u.Roles)
	return u
}

// RedisCache is a UserCache in Redis, shared by every replica, so that a
// change made by one is seen at once by all. A user is the key
// <prefix>user:<id> holding JSON, set with a TTL. It is safe for concurrent
// use; the caller owns the client and closes it after the service.
type RedisCache struct {
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
}

var _ UserCache = (*RedisCache)(nil)

// NewRedisCache returns a RedisCache that keeps its keys under prefix (for
// example "switchboard:identity:") for ttl (DefaultCacheTTL when ttl <= 0,
// at most MaxCacheTTL).
func NewRedisCache(client redis.UniversalClient, prefix string, ttl time.Duration) *RedisCache {
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	return &RedisCache{client: client, prefix: prefix, ttl: min(ttl, MaxCacheTTL)}
}

func (c *RedisCache) key(userID string) string { return c.prefix + "user:" + userID }

// redisUser is the JSON form of a cached user.
type redisUser struct {
	ID          string    `json:"id"`
	Email       string    `json:"email"`
	DisplayName string    `json:"display_name"`
	Roles       []string  `json:"roles"`
	CreateTime  time.Time `json:"create_time"`
}

// Get implements UserCache with GET.
func (c *RedisCache) Get(ctx context.Context, userID string) (User, bool, error) {
	b, err := c.client.Get(ctx, c.key(userID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return User{}, false, nil
	}
	if err != nil {
		return User{}, false, fmt.Errorf("identity: redis cache get: %w", err)
	}
	var r redisUser
	if err := json.Unmarshal(b, &r); err != nil || r.ID != userID {
		return User{}, false, fmt.Errorf("identity: redis cache entry of %s is corrupt", userID)
	}
	return User(r), true, nil
}

// Add implements UserCache with SET ... PX.
func (c *RedisCache) Add(ctx context.Context, u User) error {
	b, err := json.Marshal(redisUser(u))
	if err != nil {
		return err
	}
	if err := c.client.Set(ctx, c.key(u.ID), b, c.ttl).Err(); err != nil {
		return fmt.Errorf("identity: redis cache set: %w", err)
	}
	return nil
}

// Remove implements UserCache with DEL.
func (c *RedisCache) Remove(ctx context.Context, userID string) error {
	if err := c.client.Del(ctx, c.key(userID)).Err(); err != nil {
		return fmt.Errorf("identity: redis cache delete: %w", err)
	}
	return nil
}
