package revocation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-rpc/switchboard/kit/auth"
)

// Redis is a revocation store in Redis (7 or later), shared by every
// process that uses the same server and key prefix. An entry is the key
// <prefix>revoked:<jti> with value 1, set with PXAT to expire with the
// token, so Redis drops it by itself. It is safe for concurrent use; the caller owns the
// client and closes it after the last use.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

var _ auth.Revocations = (*Redis)(nil)

// NewRedis returns a store that keeps its keys under prefix (for example
// "switchboard:" in production, or a random prefix per test).
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

func (r *Redis) key(jti string) string { return r.prefix + "revoked:" + jti }

// Revoke implements auth.Revocations with, in one transaction,
// SET <prefix>revoked:<jti> 1 NX PXAT <until in ms> and PEXPIREAT ... GT,
// so that revoking a jti again keeps the later until (Redis 7 or later).
// An until already past records nothing.
func (r *Redis) Revoke(ctx context.Context, jti string, until time.Time) error {
	if jti == "" {
		return errEmptyID
	}
	if !time.Now().Before(until) {
		return nil
	}
	key, ms := r.key(jti), until.UnixMilli()
	var set, extend *redis.Cmd
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		set = p.Do(ctx, "SET", key, "1", "NX", "PXAT", ms)
		extend = p.Do(ctx, "PEXPIREAT", key, ms, "GT")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("revocation: redis set: %w", err)
	}
	for _, c := range []*redis.Cmd{set, extend} {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("revocation: redis set: %w", err)
		}
	}
	return nil
}

// IsRevoked implements auth.Revocations with EXISTS. Any failure to get an
// answer is an error, which a Verifier turns into a refusal.
func (r *Redis) IsRevoked(ctx context.Context, jti string) (bool, error) {
	n, err := r.client.Exists(ctx, r.key(jti)).Result()
	if err != nil {
		return false, fmt.Errorf("revocation: redis exists: %w", err)
	}
	return n > 0, nil
}
