package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/identity"
)

// TokenType is the token_type of Login and Refresh responses.
const TokenType = "Bearer"

// handlers implements identityv1.IdentityServiceServer on a Service. Every
// error leaves through the Service's status table.
type handlers struct {
	identityv1.UnimplementedIdentityServiceServer
	svc *Service
}

var _ identityv1.IdentityServiceServer = (*handlers)(nil)

// Register creates a user with DefaultRoles. A taken e-mail address fails
// with ALREADY_EXISTS, unless the request repeats the idempotency key of
// the Register that created the account, with the same display name and
// password: then it returns that user. The key is thus scoped to the
// e-mail address.
func (h *handlers) Register(ctx context.Context, req *identityv1.RegisterRequest) (*identityv1.RegisterResponse, error) {
	u, err := h.svc.register(ctx, req)
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	return &identityv1.RegisterResponse{User: userToProto(u)}, nil
}

func (s *Service) register(ctx context.Context, req *identityv1.RegisterRequest) (User, error) {
	email, key, _ := normaliseEmail(req.GetEmail())
	name := strings.TrimSpace(req.GetDisplayName())
	var hash string
	if err := s.withHashSlot(ctx, func() { hash = hashPassword(req.GetPassword(), s.cfg.Argon2) }); err != nil {
		return User{}, err
	}
	nu := NewUser{
		Account: Account{
			User: User{
				ID:          uuid.NewString(),
				Email:       email,
				DisplayName: name,
				Roles:       DefaultRoles,
				CreateTime:  s.now(),
			},
			PasswordHash:   hash,
			IdempotencyKey: req.GetIdempotencyKey(),
		},
		EmailKey: key,
	}
	var created User
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		var err error
		if created, err = s.store.CreateUser(ctx, tx, nu); err != nil {
			return err
		}
		if s.cfg.Outbox == nil {
			return nil
		}
		_, err = s.cfg.Outbox.Add(ctx, tx, created.ID, &eventsv1.UserRegistered{
			UserId: created.ID, Email: created.Email, DisplayName: created.DisplayName,
		})
		return err
	})
	if err == nil && s.cfg.Outbox != nil {
		s.cfg.Outbox.Wake()
	}
	if taken, ok := as[*EmailTakenError](err); ok {
		replay, rerr := s.isReplay(ctx, taken.existing, nu.IdempotencyKey, name, req.GetPassword())
		if rerr != nil {
			return User{}, rerr
		}
		if replay {
			return taken.existing.User, nil
		}
	}
	return created, err
}

// isReplay reports whether a Register of the account a holds repeats the
// one that created it: same non-empty idempotency key, display name and
// password.
func (s *Service) isReplay(ctx context.Context, a Account, key, name, password string) (bool, error) {
	if key == "" || a.IdempotencyKey != key || a.DisplayName != name {
		return false, nil
	}
	var (
		ok  bool
		err error
	)
	if serr := s.withHashSlot(ctx, func() { ok, _, err = verifyPassword(password, a.PasswordHash, s.cfg.Argon2) }); serr != nil {
		return false, serr
	}
	return ok && err == nil, nil
}

// Login checks the credentials and issues tokens. An unknown e-mail and a
// wrong password give the same error, after the same work (a hash is
// verified either way), and both count against the account's throttle.
func (h *handlers) Login(ctx context.Context, req *identityv1.LoginRequest) (*identityv1.LoginResponse, error) {
	resp, err := h.svc.login(ctx, req)
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	return resp, nil
}

func (s *Service) login(ctx context.Context, req *identityv1.LoginRequest) (*identityv1.LoginResponse, error) {
	key := emailKey(req.GetEmail())
	now := s.now()
	throttle := s.cfg.LoginThrottle
	ok, retryAt, err := s.store.ReserveLoginAttempt(ctx, key, now, throttle.Window, throttle.MaxAttempts)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &ThrottledError{RetryAfter: retryAt.Sub(now).Round(time.Second)}
	}
	account, err := s.store.AccountByEmail(ctx, key)
	known := err == nil
	if !known && !errors.Is(err, ErrUserNotFound) {
		return nil, err
	}
	hash := s.dummyHash
	if known {
		hash = account.PasswordHash
	}
	var match, stale bool
	var verr error
	if err := s.withHashSlot(ctx, func() { match, stale, verr = verifyPassword(req.GetPassword(), hash, s.cfg.Argon2) }); err != nil {
		return nil, err
	}
	if verr != nil {
		return nil, verr
	}
	if !known || !match {
		return nil, ErrInvalidCredentials
	}
	if err := s.store.ResetLoginAttempts(ctx, key); err != nil {
		return nil, err
	}
	if stale {
		s.rehash(ctx, account, req.GetPassword())
	}
	access, claims, err := s.issuer.Issue(ctx, account.ID, account.Roles, s.cfg.AccessTokenTTL)
	if err != nil {
		return nil, err
	}
	refresh, hashed := newRefreshToken()
	err = s.store.CreateRefreshToken(ctx, RefreshToken{
		Hash:       hashed,
		FamilyID:   uuid.NewString(),
		UserID:     account.ID,
		CreateTime: now,
		ExpireTime: now.Add(s.cfg.RefreshTokenTTL),
	})
	if err != nil {
		return nil, err
	}
	return &identityv1.LoginResponse{
		AccessToken:  access,
		RefreshToken: refresh,
		ExpiresIn:    expiresIn(claims),
		TokenType:    TokenType,
		User:         userToProto(account.User),
	}, nil
}

// rehash replaces a password hash made with other parameters than the
// current ones. It is best effort: a failure leaves the old hash, which
// still verifies.
func (s *Service) rehash(ctx context.Context, a Account, password string) {
	var hash string
	if err := s.withHashSlot(ctx, func() { hash = hashPassword(password, s.cfg.Argon2) }); err != nil {
		return
	}
	if _, err := s.store.ReplacePasswordHash(ctx, a.ID, a.PasswordHash, hash, s.now()); err != nil {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "password re-hash failed; the old hash stays",
			slog.String("user_id", a.ID), slog.String("error", err.Error()))
	}
}

// Refresh rotates a refresh token: the presented one is used up and a new
// one of the same family is returned with a new access token. A token
// presented a second time revokes its family, so a stolen token that both
// the thief and the user present stops working for both; that includes two
// concurrent refreshes by one client, of which only one succeeds.
func (h *handlers) Refresh(ctx context.Context, req *identityv1.RefreshRequest) (*identityv1.RefreshResponse, error) {
	resp, err := h.svc.refresh(ctx, req)
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	return resp, nil
}

func (s *Service) refresh(ctx context.Context, req *identityv1.RefreshRequest) (*identityv1.RefreshResponse, error) {
	presented, ok := refreshTokenHash(req.GetRefreshToken())
	if !ok {
		return nil, ErrRefreshTokenInvalid
	}
	now := s.now()
	next, hashed := newRefreshToken()
	u, err := s.store.RotateRefreshToken(ctx, presented, RefreshToken{
		Hash:       hashed,
		CreateTime: now,
		ExpireTime: now.Add(s.cfg.RefreshTokenTTL),
	}, now)
	if err != nil {
		return nil, err
	}
	access, claims, err := s.issuer.Issue(ctx, u.ID, u.Roles, s.cfg.AccessTokenTTL)
	if err != nil {
		return nil, err
	}
	return &identityv1.RefreshResponse{
		AccessToken:  access,
		RefreshToken: next,
		ExpiresIn:    expiresIn(claims),
		TokenType:    TokenType,
	}, nil
}

// RevokeToken revokes a refresh token's family, or an access token until
// it expires (its jti goes into Config.Revocations). Which kind a token is
// follows from its form (a refresh token is 43 base64url characters, an
// access token a JWT), so token_type_hint is accepted and not needed.
// Unknown, invalid and expired tokens succeed without effect (RFC 7009).
// Access tokens issued from a revoked refresh family stay valid until they
// expire unless they are revoked too.
func (h *handlers) RevokeToken(ctx context.Context, req *identityv1.RevokeTokenRequest) (*identityv1.RevokeTokenResponse, error) {
	if err := h.svc.revoke(ctx, req.GetToken()); err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	return &identityv1.RevokeTokenResponse{}, nil
}

func (s *Service) revoke(ctx context.Context, token string) error {
	if hash, ok := refreshTokenHash(token); ok {
		_, err := s.store.RevokeRefreshFamily(ctx, hash, s.now())
		return err
	}
	user, err := s.verifier.Verify(ctx, token)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return nil // not a live access token of this issuer: nothing to revoke
	}
	if err := s.cfg.Revocations.Revoke(ctx, user.TokenID, user.ExpiresAt); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.logger.LogAttrs(ctx, slog.LevelWarn, "access token revocation failed", slog.String("error", err.Error()))
		return ErrRevocationUnavailable
	}
	return nil
}

// GetUser returns a user, from the cache when it has it.
func (h *handlers) GetUser(ctx context.Context, req *identityv1.GetUserRequest) (*identityv1.GetUserResponse, error) {
	u, err := h.svc.getUser(ctx, req.GetUserId())
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	return &identityv1.GetUserResponse{User: userToProto(u)}, nil
}

func (s *Service) getUser(ctx context.Context, userID string) (User, error) {
	if caller := identity.UserFrom(ctx); caller != nil && caller.ID != userID {
		return User{}, ErrNotOwnUser
	}
	if u, ok, err := s.cfg.Cache.Get(ctx, userID); err == nil && ok {
		return u, nil
	}
	u, err := s.store.User(ctx, userID)
	if err != nil {
		return User{}, err
	}
	_ = s.cfg.Cache.Add(ctx, u) // a failing cache only costs a read
	return u, nil
}

// GetJwks returns the Issuer's published keys, newest first.
func (h *handlers) GetJwks(context.Context, *identityv1.GetJwksRequest) (*identityv1.GetJwksResponse, error) {
	keys := h.svc.issuer.JWKS()
	out := make([]*identityv1.Jwk, len(keys))
	for i, k := range keys {
		out[i] = &identityv1.Jwk{Kty: k.Kty, Crv: k.Crv, X: k.X, Kid: k.Kid, Alg: k.Alg, Use: k.Use}
	}
	return &identityv1.GetJwksResponse{Keys: out}, nil
}

// A refresh token is refreshTokenBytes random bytes in unpadded base64url:
// refreshTokenLen characters.
const (
	refreshTokenBytes = 32
	refreshTokenLen   = (refreshTokenBytes*8 + 5) / 6
)

// newRefreshToken returns a new refresh token (32 random bytes, unpadded
// base64url) and the hash stored for it.
func newRefreshToken() (token, hash string) {
	var b [refreshTokenBytes]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	sum := sha256.Sum256(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:]), hex.EncodeToString(sum[:])
}

// refreshTokenHash returns the stored hash of a refresh token: the hex
// SHA-256 of its 32 bytes. ok is false when token is not shaped like one.
func refreshTokenHash(token string) (hash string, ok bool) {
	if len(token) != refreshTokenLen {
		return "", false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(b) != refreshTokenBytes {
		return "", false
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), true
}

// expiresIn is the expires_in of a token with claims c, in seconds.
func expiresIn(c auth.Claims) int64 {
	return int64(c.ExpiresAt.Sub(c.IssuedAt) / time.Second)
}

func userToProto(u User) *identityv1.User {
	return &identityv1.User{
		UserId:      u.ID,
		Email:       u.Email,
		DisplayName: u.DisplayName,
		Roles:       append([]string{}, u.Roles...),
		CreateTime:  timestamppb.New(u.CreateTime),
	}
}
