package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/switchboard-rpc/switchboard/kit/identity"
)

// Defaults of a Verifier.
const (
	// DefaultLeeway is the clock skew allowed on exp, nbf and iat.
	DefaultLeeway = 30 * time.Second
	// DefaultCacheSize is how many verified tokens are cached.
	DefaultCacheSize = 10_000
	// DefaultRefreshInterval is the least time between two calls of the
	// KeySource, whatever prompts them.
	DefaultRefreshInterval = 5 * time.Second
	// DefaultKeyMaxAge is how long a fetched key set is used before the
	// next verification that needs a key refreshes it.
	DefaultKeyMaxAge = 5 * time.Minute
	// MaxTokenLength bounds the tokens Verify reads; longer ones are
	// malformed.
	MaxTokenLength = 8 << 10
)

// fetchTimeout bounds one call of the KeySource.
const fetchTimeout = 5 * time.Second

// KeySource returns the current set of public keys that verify access
// tokens, such as an Issuer's JWKS or the identity service's GetJwks. A
// Verifier calls it at most once per refresh interval, from one goroutine
// at a time, with the context of the verification that needs it.
type KeySource interface {
	Keys(ctx context.Context) ([]JWK, error)
}

// KeySourceFunc adapts a function to KeySource.
type KeySourceFunc func(ctx context.Context) ([]JWK, error)

// Keys implements KeySource.
func (f KeySourceFunc) Keys(ctx context.Context) ([]JWK, error) { return f(ctx) }

// Revocations records revoked access tokens by their jti. Implementations
// are in kit/auth/revocation; they must be safe for concurrent use.
type Revocations interface {
	// Revoke marks jti revoked until until (the token's expiry, after
	// which it is invalid anyway and the entry may be dropped).
	Revoke(ctx context.Context, jti string, until time.Time) error
	// IsRevoked reports whether jti is revoked. An error means the answer
	// is unknown; the Verifier then refuses the token.
	IsRevoked(ctx context.Context, jti string) (bool, error)
}

// VerifierOption configures a Verifier.
type VerifierOption func(*verifierOptions)

type verifierOptions struct {
	leeway          time.Duration
	revocations     Revocations
	cacheSize       int
	refreshInterval time.Duration
	keyMaxAge       time.Duration
	logger          *slog.Logger
}

// WithLeeway sets the clock skew allowed on exp, nbf and iat (default 30s).
func WithLeeway(d time.Duration) VerifierOption {
	return func(o *verifierOptions) { o.leeway = d }
}

// WithRevocations makes the Verifier refuse revoked tokens, checking r on
// every Verify, cached or not. Without it tokens are valid until they
// expire.
func WithRevocations(r Revocations) VerifierOption {
	return func(o *verifierOptions) { o.revocations = r }
}

// WithCacheSize sets how many verified tokens are cached (default 10,000);
// 0 turns the cache off.
func WithCacheSize(n int) VerifierOption {
	return func(o *verifierOptions) { o.cacheSize = n }
}

// WithRefreshInterval sets the least time between two calls of the
// KeySource (default 5s), so that a flood of tokens naming unknown keys
// cannot hammer it.
func WithRefreshInterval(d time.Duration) VerifierOption {
	return func(o *verifierOptions) { o.refreshInterval = d }
}

// WithKeyMaxAge sets how long a fetched key set is used before it is
// refreshed (default 5 minutes), so that keys the issuer dropped stop being
// trusted. A failed refresh keeps the last good set.
func WithKeyMaxAge(d time.Duration) VerifierOption {
	return func(o *verifierOptions) { o.keyMaxAge = d }
}

// WithLogger sets the logger for key refresh failures (default discards).
// Tokens are never logged.
func WithLogger(l *slog.Logger) VerifierOption {
	return func(o *verifierOptions) { o.logger = l }
}

// keySet is a fetched set of verification keys.
type keySet struct {
	byKid   map[string]ed25519.PublicKey
	staleAt time.Time
}

// cached is a verified token in the cache.
type cached struct {
	user  *identity.User
	until time.Time // exp plus leeway
}

type tokenCache = lru.Cache[[sha256.Size]byte, cached]

// Verifier verifies access tokens. It is safe for concurrent use.
type Verifier struct {
	source   KeySource
	issuer   string
	audience string
	opts     verifierOptions
	parser   *jwt.Parser
	now      func() time.Time

	keys     atomic.Pointer[keySet]
	fetching chan struct{} // one slot, held while the KeySource is called
	limiter  *rate.Limiter // key refreshes: one per refresh interval

	shards    []*tokenCache // nil when caching is off
	shardMask byte
}

// NewVerifier returns a Verifier of tokens with the given iss and aud
// (typically DefaultIssuer and DefaultAudience) signed by keys of source.
// It fetches keys when the first token needs one.
func NewVerifier(source KeySource, issuer, audience string, opts ...VerifierOption) (*Verifier, error) {
	if source == nil {
		return nil, errors.New("auth: nil KeySource")
	}
	if issuer == "" || audience == "" {
		return nil, errors.New("auth: issuer and audience must not be empty")
	}
	o := verifierOptions{
		leeway:          DefaultLeeway,
		cacheSize:       DefaultCacheSize,
		refreshInterval: DefaultRefreshInterval,
		keyMaxAge:       DefaultKeyMaxAge,
		logger:          slog.New(slog.DiscardHandler),
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.leeway < 0 || o.cacheSize < 0 || o.refreshInterval < 0 || o.keyMaxAge <= 0 {
		return nil, errors.New("auth: negative leeway, cache size or refresh interval, or non-positive key max age")
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	v := &Verifier{
		source:   source,
		issuer:   issuer,
		audience: audience,
		opts:     o,
		// Claims are checked by verify itself, to map each failure to
		// its reason.
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{AlgorithmEdDSA}),
			jwt.WithStrictDecoding(),
			jwt.WithoutClaimsValidation(),
		),
		now:      time.Now,
		fetching: make(chan struct{}, 1),
		limiter:  rate.NewLimiter(rate.Every(o.refreshInterval), 1),
	}
	if o.cacheSize > 0 {
		shards := 1
		if o.cacheSize >= 1024 {
			shards = 16 // fewer callers contend for one shard's lock
		}
		v.shardMask = byte(shards - 1)
		for range shards {
			c, err := lru.New[[sha256.Size]byte, cached]((o.cacheSize + shards - 1) / shards)
			if err != nil {
				return nil, fmt.Errorf("auth: token cache: %w", err)
			}
			v.shards = append(v.shards, c)
		}
	}
	return v, nil
}

// Verify checks token and returns the user it names, with Token set to
// token for forwarding. The User may be shared with other calls of Verify
// for the same token and must not be modified.
//
// Every failure of the token is an UNAUTHENTICATED status whose reason is
// one of the Reason constants; when the key set or the revocation store
// cannot be reached, it is UNAVAILABLE, and a context error is CANCELLED or
// DEADLINE_EXCEEDED.
func (v *Verifier) Verify(ctx context.Context, token string) (*identity.User, error) {
	if token == "" {
		return nil, errTokenMissing
	}
	if len(token) > MaxTokenLength {
		return nil, errTokenMalformed
	}
	now := v.now()
	var (
		shard *tokenCache
		sum   [sha256.Size]byte
	)
	if v.shards != nil {
		sum = sha256.Sum256(bytesOf(token))
		shard = v.shards[sum[0]&v.shardMask]
		if c, ok := shard.Get(sum); ok {
			if !now.Before(c.until) {
				shard.Remove(sum)
				return nil, errTokenExpired
			}
			if err := v.checkRevoked(ctx, c.user.TokenID); err != nil {
				return nil, err
			}
			return c.user, nil
		}
	}
	user, until, err := v.verify(ctx, token, now)
	if err != nil {
		return nil, err
	}
	if shard != nil {
		shard.Add(sum, cached{user: user, until: until})
	}
	if err := v.checkRevoked(ctx, user.TokenID); err != nil {
		return nil, err
	}
	return user, nil
}

// bytesOf returns the bytes of s without copying them: tokens are hundreds
// of bytes, and the hot path should not allocate. The result must not be
// modified; sha256.Sum256 only reads it.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s)) //nolint:gosec // read-only view of an immutable string
}

func (v *Verifier) checkRevoked(ctx context.Context, jti string) error {
	if v.opts.revocations == nil {
		return nil
	}
	revoked, err := v.opts.revocations.IsRevoked(ctx, jti)
	if err != nil {
		return unavailable(err, errRevocationUnavail)
	}
	if revoked {
		return errTokenRevoked
	}
	return nil
}

// verify checks token's signature and claims, returning its user and the
// time until which it is valid.
func (v *Verifier) verify(ctx context.Context, token string, now time.Time) (*identity.User, time.Time, error) {
	var (
		claims tokenClaims
		keyErr error
	)
	tok, err := v.parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		kid, err := checkHeader(t)
		if err == nil {
			var key ed25519.PublicKey
			if key, err = v.key(ctx, kid, now); err == nil {
				return key, nil
			}
		}
		keyErr = err
		return nil, err
	})
	switch {
	case keyErr != nil:
		return nil, time.Time{}, keyErr
	case err == nil:
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, time.Time{}, errTokenMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable), tok != nil && tok.Method != jwt.SigningMethodEdDSA:
		// alg none, HS256, RS256...: refused before any key is looked up.
		return nil, time.Time{}, errWrongAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, time.Time{}, errInvalidSignature
	default:
		return nil, time.Time{}, errTokenMalformed
	}

	switch {
	case claims.Issuer != v.issuer:
		return nil, time.Time{}, errWrongIssuer
	case !claims.Audience.contains(v.audience):
		return nil, time.Time{}, errWrongAudience
	case claims.Subject == "" || claims.ID == "" || claims.ExpiresAt == nil || claims.NotBefore == nil || claims.IssuedAt == nil:
		return nil, time.Time{}, errClaimMissing
	}
	until := claims.ExpiresAt.Add(v.opts.leeway)
	switch {
	case !now.Before(until):
		return nil, time.Time{}, errTokenExpired
	case now.Before(claims.NotBefore.Add(-v.opts.leeway)), now.Before(claims.IssuedAt.Add(-v.opts.leeway)):
		return nil, time.Time{}, errTokenNotYetValid
	}
	return &identity.User{
		ID:        claims.Subject,
		Roles:     slices.Clip(claims.Roles),
		TokenID:   claims.ID,
		ExpiresAt: claims.ExpiresAt.Time,
		Token:     identity.Secret(token),
	}, until, nil
}

// checkHeader checks the protected header before any key is looked up,
// and returns its kid.
func checkHeader(t *jwt.Token) (string, error) {
	if t.Method != jwt.SigningMethodEdDSA {
		return "", errWrongAlgorithm // the parser has checked this already
	}
	if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, accessTokenType) && !strings.EqualFold(typ, "application/"+accessTokenType) {
		return "", errTokenType
	}
	if _, ok := t.Header["crit"]; ok {
		return "", errTokenMalformed // no extension is understood (RFC 7515 4.1.11)
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return "", errTokenMalformed
	}
	return kid, nil
}

// key returns the key named kid. It refreshes the key set when it is stale
// (without waiting for a refresh already running) or when kid is not in it
// (waiting for one already running, and refreshing only if that one did
// not change the set); refreshes are rate-limited.
func (v *Verifier) key(ctx context.Context, kid string, now time.Time) (ed25519.PublicKey, error) {
	set := v.keys.Load()
	if set != nil && !now.Before(set.staleAt) {
		select {
		case v.fetching <- struct{}{}:
			if v.keys.Load() == set {
				v.refresh(ctx, now)
			}
			<-v.fetching
			set = v.keys.Load()
		default:
		}
	}
	if set != nil {
		if k, ok := set.byKid[kid]; ok {
			return k, nil
		}
	}
	select {
	case v.fetching <- struct{}{}:
	case <-ctx.Done():
		return nil, unavailable(ctx.Err(), errKeysUnavailable)
	}
	defer func() { <-v.fetching }()
	if v.keys.Load() == set {
		v.refresh(ctx, now)
	}
	set = v.keys.Load()
	if set == nil {
		return nil, errKeysUnavailable
	}
	if k, ok := set.byKid[kid]; ok {
		return k, nil
	}
	return nil, errUnknownKey
}

// refresh fetches the key set, if the rate limit allows. On failure it
// keeps the set it has. When keys disappear, the token cache is emptied so
// that tokens they signed are verified again (and refused). Callers hold
// the fetching slot.
func (v *Verifier) refresh(ctx context.Context, now time.Time) {
	if !v.limiter.AllowN(now, 1) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	jwks, err := v.source.Keys(ctx)
	if err != nil {
		v.opts.logger.LogAttrs(ctx, slog.LevelWarn, "token key refresh failed; keeping the previous keys",
			slog.String("error", err.Error()))
		return
	}
	set := &keySet{byKid: make(map[string]ed25519.PublicKey, len(jwks)), staleAt: now.Add(v.opts.keyMaxAge)}
	for _, k := range jwks {
		pub, err := k.PublicKey()
		if err != nil {
			v.opts.logger.LogAttrs(ctx, slog.LevelWarn, "token key set has an unusable key; skipping it",
				slog.String("error", err.Error()))
			continue
		}
		set.byKid[k.Kid] = pub
	}
	if len(set.byKid) == 0 {
		v.opts.logger.LogAttrs(ctx, slog.LevelWarn, "token key set is empty; keeping the previous keys",
			slog.Int("keys", len(jwks)))
		return
	}
	old := v.keys.Swap(set)
	if old == nil {
		return
	}
	for kid, pub := range old.byKid {
		if cur, ok := set.byKid[kid]; !ok || !cur.Equal(pub) {
			for _, s := range v.shards {
				s.Purge()
			}
			return
		}
	}
}
