package identity

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"

	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/auth/revocation"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Defaults and bounds of Config.
const (
	// DefaultRefreshTokenTTL is how long a refresh token works.
	DefaultRefreshTokenTTL = 30 * 24 * time.Hour
	// MaxRefreshTokenTTL bounds Config.RefreshTokenTTL.
	MaxRefreshTokenTTL = 365 * 24 * time.Hour
	// DefaultLoginAttempts is how many logins of one account a throttle
	// window admits.
	DefaultLoginAttempts = 5
	// MaxLoginAttempts bounds Config.LoginThrottle.MaxAttempts.
	MaxLoginAttempts = 1000
	// DefaultLoginWindow is the length of a throttle window.
	DefaultLoginWindow = 15 * time.Minute
	// MaxLoginWindow bounds Config.LoginThrottle.Window.
	MaxLoginWindow = 24 * time.Hour
	// DefaultMaxConcurrentHashes bounds the argon2id computations running
	// at once: with the default parameters, 4 × 64 MiB of memory.
	DefaultMaxConcurrentHashes = 4
	// MaxConcurrentHashes bounds Config.MaxConcurrentHashes.
	MaxConcurrentHashes = 256
	// DefaultCleanupInterval is how often expired refresh tokens and ended
	// throttle windows are deleted.
	DefaultCleanupInterval = 10 * time.Minute
	// MinCleanupInterval bounds Config.CleanupInterval from below.
	MinCleanupInterval = 10 * time.Millisecond
	// CleanupBatch bounds the rows of each table one cleanup statement
	// deletes; a cleanup runs at most maxCleanupBatches of them.
	CleanupBatch      = 1000
	maxCleanupBatches = 10
)

// DefaultRoles are the roles of a new user.
var DefaultRoles = []string{"customer"}

// LoginThrottle bounds the logins of one account (one e-mail key, whether
// or not it is registered). Attempts are counted in the database, so the
// limit holds across replicas and restarts: a window starts at the first
// attempt and lasts Window; once MaxAttempts were made in it, further
// logins fail with RESOURCE_EXHAUSTED and a RetryInfo saying when it ends.
// A successful login resets the count.
type LoginThrottle struct {
	// MaxAttempts per window. Default 5, at most 1000.
	MaxAttempts int
	// Window is the length of a window. Default 15 minutes, at most 24
	// hours.
	Window time.Duration
}

// Config configures the service. Only cmd/ fills it in; the zero value
// gives the documented defaults. Negative values are errors.
type Config struct {
	// Issuer signs access tokens and supplies GetJwks. When nil, Open
	// makes one with iss auth.DefaultIssuer and aud auth.DefaultAudience
	// whose keys live in KeyFile, or only in memory when KeyFile is empty
	// (tokens then die with the process). Give one or the other.
	Issuer *auth.Issuer
	// KeyFile is the PEM file of the signing keys (auth.WithKeyFile),
	// created when missing. Used only when Issuer is nil.
	KeyFile string
	// Revocations records revoked access tokens. It must be the store
	// every service's Verifier consults (revocation.Redis when there is
	// more than one process). Default: an in-process revocation.Memory.
	Revocations auth.Revocations
	// AccessTokenTTL is the lifetime of access tokens. Default 0: the
	// Issuer's own (15 minutes for one Open makes); it must not exceed the
	// Issuer's maximum.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL is the lifetime of each refresh token; a rotation
	// issues a new one with a full lifetime. Default 30 days, at most 365.
	RefreshTokenTTL time.Duration
	// Cache caches users for GetUser. Default: NewLRUCache(0, 0), an
	// in-process cache of 10,000 users for a minute. Use a RedisCache
	// shared by the replicas when there is more than one.
	Cache UserCache
	// LoginThrottle bounds logins per account.
	LoginThrottle LoginThrottle
	// Argon2 are the password hashing parameters. Default
	// DefaultArgon2Params; at least MinArgon2MemoryKiB of memory.
	Argon2 Argon2Params
	// InsecureTestHashing lifts the minimum memory of Argon2 and, when
	// Argon2 is zero, uses 64 KiB, so that tests hash fast. Never set it
	// in production: such hashes are cheap to crack.
	InsecureTestHashing bool
	// MaxConcurrentHashes bounds the password hashes computed at once;
	// more wait, within their deadline. Default 4, at most 256.
	MaxConcurrentHashes int
	// CleanupInterval is how often expired refresh tokens and ended
	// throttle windows are deleted. Default 10 minutes, at least 10ms.
	CleanupInterval time.Duration
	// Outbox receives UserRegistered in the transaction that creates the
	// user; Open creates its tables. Nil: the service emits no events.
	Outbox *events.Outbox

	// now is the clock; nil means time.Now. Tests set it.
	now func() time.Time
}

// withDefaults returns c with zero values replaced by defaults, or an
// error when a value is out of range.
func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Issuer != nil && c.KeyFile != "":
		return c, errors.New("identity: Config.Issuer and Config.KeyFile are exclusive")
	case c.AccessTokenTTL < 0, c.RefreshTokenTTL < 0, c.LoginThrottle.Window < 0, c.CleanupInterval < 0:
		return c, errors.New("identity: negative duration in Config")
	case c.LoginThrottle.MaxAttempts < 0 || c.LoginThrottle.MaxAttempts > MaxLoginAttempts:
		return c, fmt.Errorf("identity: Config.LoginThrottle.MaxAttempts %d not between 0 and %d", c.LoginThrottle.MaxAttempts, MaxLoginAttempts)
	case c.MaxConcurrentHashes < 0 || c.MaxConcurrentHashes > MaxConcurrentHashes:
		return c, fmt.Errorf("identity: Config.MaxConcurrentHashes %d not between 0 and %d", c.MaxConcurrentHashes, MaxConcurrentHashes)
	case c.RefreshTokenTTL > MaxRefreshTokenTTL:
		return c, fmt.Errorf("identity: Config.RefreshTokenTTL %v above %v", c.RefreshTokenTTL, MaxRefreshTokenTTL)
	case c.LoginThrottle.Window > MaxLoginWindow:
		return c, fmt.Errorf("identity: Config.LoginThrottle.Window %v above %v", c.LoginThrottle.Window, MaxLoginWindow)
	}
	if c.RefreshTokenTTL == 0 {
		c.RefreshTokenTTL = DefaultRefreshTokenTTL
	}
	if c.LoginThrottle.MaxAttempts == 0 {
		c.LoginThrottle.MaxAttempts = DefaultLoginAttempts
	}
	if c.LoginThrottle.Window == 0 {
		c.LoginThrottle.Window = DefaultLoginWindow
	}
	if c.MaxConcurrentHashes == 0 {
		c.MaxConcurrentHashes = DefaultMaxConcurrentHashes
	}
	if c.CleanupInterval == 0 {
		c.CleanupInterval = DefaultCleanupInterval
	}
	c.CleanupInterval = max(c.CleanupInterval, MinCleanupInterval)
	minMemory := uint32(MinArgon2MemoryKiB)
	if c.InsecureTestHashing {
		minMemory = 0
	}
	switch {
	case c.InsecureTestHashing && c.Argon2 == (Argon2Params{}):
		c.Argon2 = testArgon2Params
	case c.Argon2 == (Argon2Params{}):
		c.Argon2 = DefaultArgon2Params
	}
	if err := c.Argon2.check(minMemory); err != nil {
		return c, fmt.Errorf("identity: Config.Argon2: %w", err)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.Revocations == nil {
		c.Revocations = revocation.NewMemory(0)
	}
	if c.Cache == nil {
		c.Cache = NewLRUCache(0, 0)
	}
	return c, nil
}

// Service is the identity service: the gRPC API, SetRoles for operators,
// and a cleanup loop that Open starts and Close stops. It is safe for
// concurrent use.
type Service struct {
	db       *sqldb.DB
	store    Store
	cfg      Config
	logger   *slog.Logger
	table    *status.Table
	issuer   *auth.Issuer
	verifier *auth.Verifier // the Issuer's own tokens, for RevokeToken
	now      func() time.Time

	hashSlots chan struct{} // one per argon2id computation running
	dummyHash string        // verified against for unknown e-mails

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Open runs the identity migrations on db and returns the service with its
// cleanup loop running. The caller must Close it, then close db. A nil
// logger discards. Open computes one password hash (the one unknown
// e-mails are checked against), so it takes as long as a login.
func Open(ctx context.Context, db *sqldb.DB, cfg Config, logger *slog.Logger) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := db.Migrate(ctx, Migrations, MigrationsDir); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if cfg.Outbox != nil {
		if err := events.Migrate(ctx, db.DB, events.Dialect(db.Dialect)); err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
	}
	issuer := cfg.Issuer
	if issuer == nil {
		var opts []auth.IssuerOption
		if cfg.KeyFile != "" {
			opts = append(opts, auth.WithKeyFile(cfg.KeyFile))
		}
		if issuer, err = auth.NewIssuer(auth.DefaultIssuer, auth.DefaultAudience, opts...); err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
	}
	// A token issued now checks that the Issuer accepts AccessTokenTTL,
	// and tells the iss and aud the Verifier of RevokeToken must expect.
	_, probe, err := issuer.Issue(ctx, "identity-startup-check", nil, cfg.AccessTokenTTL)
	if err != nil {
		return nil, fmt.Errorf("identity: Config.AccessTokenTTL: %w", err)
	}
	verifier, err := auth.NewVerifier(issuer, probe.Issuer, probe.Audience,
		auth.WithCacheSize(0), auth.WithRefreshInterval(0), auth.WithKeyMaxAge(time.Second), auth.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Service{
		db:        db,
		store:     NewStore(db),
		cfg:       cfg,
		logger:    logger,
		table:     newTable(logger),
		issuer:    issuer,
		verifier:  verifier,
		now:       cfg.now,
		hashSlots: make(chan struct{}, cfg.MaxConcurrentHashes),
		dummyHash: hashPassword(rand.Text(), cfg.Argon2),
		cancel:    cancel,
	}
	s.wg.Add(1)
	go s.runCleanup(loopCtx)
	return s, nil
}

// Close stops the cleanup loop, waiting for a cleanup in progress (its
// database calls are cancelled). It is idempotent and returns nil; it
// closes neither the database nor the Config's Issuer, Revocations or
// Cache.
func (s *Service) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

// Register registers the gRPC implementation on r and adds the validation
// rules of every request message to rules.
func (s *Service) Register(r grpc.ServiceRegistrar, rules *validate.Set) {
	addRules(rules)
	identityv1.RegisterIdentityServiceServer(r, &handlers{svc: s})
}

// Policy is the identity service's authorization policy:
//
//   - Register, Login, Refresh and RevokeToken: the gateway (through which
//     end users reach them anonymously) and the operator;
//   - GetUser: the order, notify, payment and gateway services and the
//     operator, and any verified user, who may only read their own
//     record: the handler refuses other ids with PERMISSION_DENIED
//     (reason NOT_OWN_USER) before looking them up, so the answer says
//     nothing about whether the user exists. A call without a user comes
//     from a listed service, which may read any user;
//   - GetJwks: any caller with a verified service certificate.
func Policy() authz.Policy {
	edge := authz.Rule{Services: []string{"gateway", authz.Operator}}
	return authz.Policy{
		Service: identityv1.IdentityService_ServiceDesc.ServiceName,
		Methods: map[string]authz.Rule{
			"Register":    edge,
			"Login":       edge,
			"Refresh":     edge,
			"RevokeToken": edge,
			"GetUser": {
				Services: []string{"order", "notify", "payment", "gateway", authz.Operator},
				Roles:    []string{authz.AnyUser},
			},
			"GetJwks": {Public: true},
		},
	}
}

// Issuer returns the Issuer that signs the service's access tokens, so
// that a Verifier in the same process can use it as its KeySource.
func (s *Service) Issuer() *auth.Issuer { return s.issuer }

// SetRoles replaces the roles of a user, for operator tooling (for example
// to make the first admin): at most MaxRoles roles of 1 to MaxRoleLen
// characters. The cached user is dropped; the user's access tokens keep
// their roles until they expire, and the next Refresh carries the new
// ones.
func (s *Service) SetRoles(ctx context.Context, userID string, roles []string) (User, error) {
	var v validate.Violations
	checkUserID(&v, "user_id", userID)
	v.MaxItems("roles", len(roles), MaxRoles)
	for i, r := range roles {
		v.Length(fmt.Sprintf("roles[%d]", i), r, 1, MaxRoleLen)
	}
	if err := v.Err(); err != nil {
		return User{}, err
	}
	u, err := s.store.SetRoles(ctx, userID, roles, s.now())
	if err != nil {
		return User{}, err
	}
	s.invalidate(ctx, userID)
	return u, nil
}

// invalidate drops a changed user from the cache. A failure is logged: the
// stale entry then lives until its TTL.
func (s *Service) invalidate(ctx context.Context, userID string) {
	if err := s.cfg.Cache.Remove(ctx, userID); err != nil {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "user cache invalidation failed; the entry expires with its TTL",
			slog.String("user_id", userID), slog.String("error", err.Error()))
	}
}

// withHashSlot runs fn, an argon2id computation, once fewer than
// Config.MaxConcurrentHashes are running, or returns ctx's error.
func (s *Service) withHashSlot(ctx context.Context, fn func()) error {
	select {
	case s.hashSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.hashSlots }()
	fn()
	return nil
}

// runCleanup deletes expired rows every CleanupInterval until ctx ends.
func (s *Service) runCleanup(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.CleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.cleanup(ctx)
		}
	}
}

// cleanup deletes expired refresh tokens, their empty families and ended
// throttle windows, in at most maxCleanupBatches batches.
func (s *Service) cleanup(ctx context.Context) {
	for range maxCleanupBatches {
		now := s.now()
		n, err := s.store.DeleteExpired(ctx, now, now.Add(-s.cfg.LoginThrottle.Window), CleanupBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.logger.LogAttrs(ctx, slog.LevelWarn, "identity cleanup failed", slog.String("error", err.Error()))
			}
			return
		}
		if n < CleanupBatch {
			return
		}
	}
}
