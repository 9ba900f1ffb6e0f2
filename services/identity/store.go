package identity

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
)

// Migrations holds the goose migrations of the identity schema, in
// MigrationsDir.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// MigrationsDir is the directory of Migrations that holds them.
const MigrationsDir = "migrations"

// User is a registered account holder, without the password.
type User struct {
	// ID is the server-assigned UUID.
	ID string
	// Email is the normalised e-mail address (see Register).
	Email string
	// DisplayName is the name shown to people.
	DisplayName string
	// Roles are the roles granted, e.g. "customer".
	Roles []string
	// CreateTime is when the user registered.
	CreateTime time.Time
}

// Account is a user with what Login and Register need to check.
type Account struct {
	User
	// PasswordHash is the argon2id hash in PHC string format.
	PasswordHash string
	// IdempotencyKey is the key of the Register that created the user,
	// "" when it had none.
	IdempotencyKey string
}

// NewUser is a user to insert.
type NewUser struct {
	Account
	// EmailKey is the account key of the e-mail address: unique.
	EmailKey string
}

// RefreshToken is a refresh token to store: only its hash.
type RefreshToken struct {
	// Hash is the hex SHA-256 of the token.
	Hash string
	// FamilyID is the family the token belongs to.
	FamilyID string
	// UserID is the user the token was issued to.
	UserID string
	// CreateTime is when it was issued.
	CreateTime time.Time
	// ExpireTime is when it stops working.
	ExpireTime time.Time
}

// Store keeps users, refresh tokens and login attempts. Every method keeps
// the invariants of the package documentation in the database itself
// (unique constraints and conditional statements, never read-check-write)
// and is safe for concurrent use, also by several processes on one
// database. Times are stored with microsecond precision.
type Store interface {
	// CreateUser inserts u inside tx, which the caller runs (with
	// sqldb.DB.Tx) so that later writes, such as an outbox event, commit
	// with it. When u's EmailKey is taken it inserts nothing and returns an
	// *EmailTakenError that carries the account holding it.
	CreateUser(ctx context.Context, tx *sql.Tx, u NewUser) (User, error)
	// User returns a user by id, or a *NotFoundError.
	User(ctx context.Context, userID string) (User, error)
	// AccountByEmail returns the account with an e-mail key, or a
	// *NotFoundError (with an empty UserID).
	AccountByEmail(ctx context.Context, emailKey string) (Account, error)
	// SetRoles replaces a user's roles and returns the user, or a
	// *NotFoundError.
	SetRoles(ctx context.Context, userID string, roles []string, now time.Time) (User, error)
	// ReplacePasswordHash sets a user's password hash to newHash if it is
	// still oldHash, and reports whether it did.
	ReplacePasswordHash(ctx context.Context, userID, oldHash, newHash string, now time.Time) (bool, error)

	// ReserveLoginAttempt counts a login attempt of emailKey in its
	// throttle window (which ends window after its first attempt) if
	// fewer than limit were made in it, and reports whether it did; when
	// it did not, retryAt is when the window ends.
	ReserveLoginAttempt(ctx context.Context, emailKey string, now time.Time, window time.Duration, limit int) (ok bool, retryAt time.Time, err error)
	// ResetLoginAttempts forgets the attempts of emailKey.
	ResetLoginAttempts(ctx context.Context, emailKey string) error

	// CreateRefreshToken stores t as the first token of the new family
	// t.FamilyID.
	CreateRefreshToken(ctx context.Context, t RefreshToken) error
	// RotateRefreshToken marks the token whose hash is presented used,
	// if it is unused, unexpired at now and its family is not revoked,
	// and stores next (whose FamilyID and UserID it sets) in its family;
	// it returns the user, with current roles. Otherwise it fails with
	// ErrRefreshTokenInvalid (unknown), ErrRefreshTokenRevoked,
	// ErrRefreshTokenExpired, or ErrRefreshTokenReused after revoking
	// the family of the used token it was given. Of concurrent calls with
	// one token, at most one succeeds.
	RotateRefreshToken(ctx context.Context, presented string, next RefreshToken, now time.Time) (User, error)
	// RevokeRefreshFamily revokes the family of the token whose hash is
	// given, and reports whether such a token exists.
	RevokeRefreshFamily(ctx context.Context, tokenHash string, now time.Time) (bool, error)

	// DeleteExpired deletes at most limit refresh tokens expired at now,
	// families left without tokens, and login attempt windows ended at
	// windowEnd, and returns how many rows it deleted.
	DeleteExpired(ctx context.Context, now, windowEnd time.Time, limit int) (int, error)
}

// NewStore returns the Store on db, whose schema Migrations must have
// created. It is safe for concurrent use; the caller closes db.
func NewStore(db *sqldb.DB) Store { return &sqlStore{db: db} }

// sqlStore is the Store on SQLite or PostgreSQL, in the portable dialect.
type sqlStore struct {
	db *sqldb.DB
}

var _ Store = (*sqlStore)(nil)

// querier is a *sql.DB or a *sql.Tx. Inside a transaction, reads must go
// through the *sql.Tx: SQLite has a single connection, which the
// transaction holds.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

const userColumns = `user_id, email, display_name, roles, create_time`

const accountColumns = userColumns + `, password_hash, idempotency_key`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

func scanUser(r scanner, extra ...any) (User, error) {
	var (
		u       User
		roles   string
		created int64
	)
	if err := r.Scan(append([]any{&u.ID, &u.Email, &u.DisplayName, &roles, &created}, extra...)...); err != nil {
		return User{}, err
	}
	if err := json.Unmarshal([]byte(roles), &u.Roles); err != nil {
		return User{}, fmt.Errorf("roles of user %s: %w", u.ID, err)
	}
	u.CreateTime = sqldb.Time(created)
	return u, nil
}

func scanAccount(r scanner) (Account, error) {
	var a Account
	u, err := scanUser(r, &a.PasswordHash, &a.IdempotencyKey)
	a.User = u
	return a, err
}

func encodeRoles(roles []string) (string, error) {
	if roles == nil {
		roles = []string{}
	}
	b, err := json.Marshal(roles)
	return string(b), err
}

func (s *sqlStore) CreateUser(ctx context.Context, tx *sql.Tx, u NewUser) (User, error) {
	roles, err := encodeRoles(u.Roles)
	if err != nil {
		return User{}, err
	}
	now := sqldb.Micros(u.CreateTime)
	var id string
	err = tx.QueryRowContext(ctx, `
		INSERT INTO users (user_id, email, email_key, display_name, password_hash, roles, idempotency_key, create_time, update_time)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
		ON CONFLICT (email_key) DO NOTHING
		RETURNING user_id`,
		u.ID, u.Email, u.EmailKey, u.DisplayName, u.PasswordHash, roles, u.IdempotencyKey, now).Scan(&id)
	switch {
	case err == nil:
		created := u.User
		created.Roles = append([]string{}, u.Roles...)
		created.CreateTime = sqldb.Time(now)
		return created, nil
	case !errors.Is(err, sql.ErrNoRows):
		return User{}, fmt.Errorf("insert user: %w", err)
	}
	existing, err := accountByEmail(ctx, tx, u.EmailKey)
	if err != nil {
		return User{}, fmt.Errorf("read the user holding the e-mail address: %w", err)
	}
	return User{}, &EmailTakenError{Email: existing.Email, existing: existing}
}

func (s *sqlStore) User(ctx context.Context, userID string) (User, error) {
	u, err := scanUser(s.db.Reader().QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE user_id = $1`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, &NotFoundError{UserID: userID}
	}
	return u, err
}

func (s *sqlStore) AccountByEmail(ctx context.Context, emailKey string) (Account, error) {
	return accountByEmail(ctx, s.db, emailKey)
}

func accountByEmail(ctx context.Context, q querier, emailKey string) (Account, error) {
	a, err := scanAccount(q.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM users WHERE email_key = $1`, emailKey))
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, &NotFoundError{}
	}
	return a, err
}

func (s *sqlStore) SetRoles(ctx context.Context, userID string, roles []string, now time.Time) (User, error) {
	enc, err := encodeRoles(roles)
	if err != nil {
		return User{}, err
	}
	u, err := scanUser(s.db.QueryRowContext(ctx, `
		UPDATE users SET roles = $2, update_time = $3 WHERE user_id = $1
		RETURNING `+userColumns, userID, enc, sqldb.Micros(now)))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, &NotFoundError{UserID: userID}
	}
	return u, err
}

func (s *sqlStore) ReplacePasswordHash(ctx context.Context, userID, oldHash, newHash string, now time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, `
		UPDATE users SET password_hash = $3, update_time = $4 WHERE user_id = $1 AND password_hash = $2`,
		userID, oldHash, newHash, sqldb.Micros(now))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (s *sqlStore) ReserveLoginAttempt(ctx context.Context, emailKey string, now time.Time, window time.Duration, limit int) (bool, time.Time, error) {
	var (
		ok      bool
		retryAt time.Time
	)
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		ok, retryAt = false, time.Time{}
		// A window has ended when it started at or before cutoff; the
		// attempt then opens a new one. Otherwise the attempt counts only
		// while fewer than limit were made: the DO UPDATE's WHERE makes
		// the check and the increment one statement.
		var attempts int64
		err := tx.QueryRowContext(ctx, `
			INSERT INTO login_attempts (email_key, attempts, window_start) VALUES ($1, 1, $2)
			ON CONFLICT (email_key) DO UPDATE SET
				attempts = CASE WHEN login_attempts.window_start <= $3 THEN 1 ELSE login_attempts.attempts + 1 END,
				window_start = CASE WHEN login_attempts.window_start <= $3 THEN $2 ELSE login_attempts.window_start END
			WHERE login_attempts.window_start <= $3 OR login_attempts.attempts < $4
			RETURNING attempts`,
			emailKey, sqldb.Micros(now), sqldb.Micros(now.Add(-window)), int64(limit)).Scan(&attempts)
		switch {
		case err == nil:
			ok = true
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		var start int64
		err = tx.QueryRowContext(ctx, `SELECT window_start FROM login_attempts WHERE email_key = $1`, emailKey).Scan(&start)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			retryAt = now
		case err != nil:
			return err
		default:
			retryAt = sqldb.Time(start).Add(window)
		}
		return nil
	})
	if err != nil {
		return false, time.Time{}, fmt.Errorf("reserve login attempt: %w", err)
	}
	return ok, retryAt, nil
}

func (s *sqlStore) ResetLoginAttempts(ctx context.Context, emailKey string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM login_attempts WHERE email_key = $1`, emailKey)
	return err
}

func (s *sqlStore) CreateRefreshToken(ctx context.Context, t RefreshToken) error {
	return s.db.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO refresh_families (family_id, user_id, create_time) VALUES ($1, $2, $3)`,
			t.FamilyID, t.UserID, sqldb.Micros(t.CreateTime)); err != nil {
			return fmt.Errorf("insert refresh family: %w", err)
		}
		return insertRefreshToken(ctx, tx, t)
	})
}

func insertRefreshToken(ctx context.Context, tx *sql.Tx, t RefreshToken) error {
	_, err := tx.ExecContext(ctx, `
		INSERT INTO refresh_tokens (token_hash, family_id, user_id, create_time, expire_time) VALUES ($1, $2, $3, $4, $5)`,
		t.Hash, t.FamilyID, t.UserID, sqldb.Micros(t.CreateTime), sqldb.Micros(t.ExpireTime))
	if err != nil {
		return fmt.Errorf("insert refresh token: %w", err)
	}
	return nil
}

func (s *sqlStore) RotateRefreshToken(ctx context.Context, presented string, next RefreshToken, now time.Time) (User, error) {
	var (
		user User
		fail error // the outcome when the transaction commits without a rotation
	)
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		user, fail = User{}, nil
		var familyID, userID string
		// The one statement that decides: of concurrent rotations of one
		// token, only the first to update the row sees used = FALSE.
		err := tx.QueryRowContext(ctx, `
			UPDATE refresh_tokens SET used = TRUE, use_time = $2
			WHERE token_hash = $1 AND used = FALSE AND expire_time > $2
				AND family_id IN (SELECT family_id FROM refresh_families WHERE revoked = FALSE)
			RETURNING family_id, user_id`,
			presented, sqldb.Micros(now)).Scan(&familyID, &userID)
		switch {
		case err == nil:
			next.FamilyID, next.UserID = familyID, userID
			if err := insertRefreshToken(ctx, tx, next); err != nil {
				return err
			}
			u, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE user_id = $1`, userID))
			if err != nil {
				return fmt.Errorf("read user %s: %w", userID, err)
			}
			user = u
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("use refresh token: %w", err)
		}
		fail, err = classifyUnusable(ctx, tx, presented, now)
		return err
	})
	if err != nil {
		return User{}, err
	}
	if fail != nil {
		return User{}, fail
	}
	return user, nil
}

// classifyUnusable says why the token whose hash is presented could not be
// rotated, revoking its family when it was used before.
func classifyUnusable(ctx context.Context, tx *sql.Tx, presented string, now time.Time) (outcome, err error) {
	var (
		familyID      string
		used, revoked bool
		expires       int64
	)
	err = tx.QueryRowContext(ctx, `
		SELECT t.family_id, t.used, t.expire_time, f.revoked
		FROM refresh_tokens t JOIN refresh_families f ON f.family_id = t.family_id
		WHERE t.token_hash = $1`, presented).Scan(&familyID, &used, &expires, &revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ErrRefreshTokenInvalid, nil
	case err != nil:
		return nil, fmt.Errorf("read refresh token: %w", err)
	case revoked:
		return ErrRefreshTokenRevoked, nil
	case used:
		if _, err := tx.ExecContext(ctx, `
			UPDATE refresh_families SET revoked = TRUE, revoke_time = $2 WHERE family_id = $1 AND revoked = FALSE`,
			familyID, sqldb.Micros(now)); err != nil {
			return nil, fmt.Errorf("revoke refresh family: %w", err)
		}
		return ErrRefreshTokenReused, nil
	case sqldb.Time(expires).Compare(now) <= 0:
		return ErrRefreshTokenExpired, nil
	}
	// Unused, unexpired, in a live family: the row changed between the
	// two statements (a concurrent revocation or rotation); refuse.
	return ErrRefreshTokenRevoked, nil
}

func (s *sqlStore) RevokeRefreshFamily(ctx context.Context, tokenHash string, now time.Time) (bool, error) {
	var found bool
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		var familyID string
		err := tx.QueryRowContext(ctx, `SELECT family_id FROM refresh_tokens WHERE token_hash = $1`, tokenHash).Scan(&familyID)
		if errors.Is(err, sql.ErrNoRows) {
			found = false
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		_, err = tx.ExecContext(ctx, `
			UPDATE refresh_families SET revoked = TRUE, revoke_time = $2 WHERE family_id = $1 AND revoked = FALSE`,
			familyID, sqldb.Micros(now))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("revoke refresh family: %w", err)
	}
	return found, nil
}

func (s *sqlStore) DeleteExpired(ctx context.Context, now, windowEnd time.Time, limit int) (int, error) {
	total := 0
	err := s.db.Tx(ctx, func(tx *sql.Tx) error {
		total = 0
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`DELETE FROM refresh_tokens WHERE token_hash IN (
				SELECT token_hash FROM refresh_tokens WHERE expire_time <= $1 LIMIT $2)`,
				[]any{sqldb.Micros(now), int64(limit)}},
			{`DELETE FROM refresh_families WHERE family_id IN (
				SELECT f.family_id FROM refresh_families f
				WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.family_id) LIMIT $1)`,
				[]any{int64(limit)}},
			{`DELETE FROM login_attempts WHERE email_key IN (
				SELECT email_key FROM login_attempts WHERE window_start <= $1 LIMIT $2)`,
				[]any{sqldb.Micros(windowEnd), int64(limit)}},
		} {
			res, err := tx.ExecContext(ctx, q.sql, q.args...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			total += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete expired: %w", err)
	}
	return total, nil
}
