package identity

import (
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
)

// storeCase is one case of the Store contract, run on every engine.
type storeCase struct {
	name string
	fn   func(t *testing.T, db *sqldb.DB, s Store)
}

func TestStoreContract(t *testing.T) {
	cases := []storeCase{
		{"CreateUserAndRead", testCreateUserAndRead},
		{"CreateUserEmailTaken", testCreateUserEmailTaken},
		{"CreateUserConcurrent", testCreateUserConcurrent},
		{"CreateUserRollsBackWithTx", testCreateUserRollsBack},
		{"SetRoles", testSetRoles},
		{"ReplacePasswordHash", testReplacePasswordHash},
		{"LoginAttempts", testLoginAttempts},
		{"LoginAttemptsConcurrent", testLoginAttemptsConcurrent},
		{"RotateRefreshToken", testRotateRefreshToken},
		{"RefreshTokenReuseRevokesFamily", testRefreshReuse},
		{"RefreshTokenExpired", testRefreshExpired},
		{"RotateConcurrent", testRotateConcurrent},
		{"RevokeRefreshFamily", testRevokeRefreshFamily},
		{"OneLiveTokenPerFamily", testOneLiveTokenPerFamily},
		{"DeleteExpired", testDeleteExpired},
	}
	sqltest.Each(t, Migrations, MigrationsDir, func(t *testing.T, db *sqldb.DB) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) { c.fn(t, db, NewStore(db)) })
		}
	})
}

// newUser returns a NewUser with a fresh id and e-mail address.
func newUser(email string) NewUser {
	normalised, key, _ := normaliseEmail(email)
	return NewUser{
		Account: Account{
			User: User{
				ID:          uuid.NewString(),
				Email:       normalised,
				DisplayName: "Ann",
				Roles:       []string{"customer"},
				CreateTime:  t0,
			},
			PasswordHash:   "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
			IdempotencyKey: "key-" + email,
		},
		EmailKey: key,
	}
}

func createUser(t *testing.T, db *sqldb.DB, s Store, u NewUser) (User, error) {
	t.Helper()
	var got User
	err := db.Tx(t.Context(), func(tx *sql.Tx) error {
		var err error
		got, err = s.CreateUser(t.Context(), tx, u)
		return err
	})
	return got, err
}

func mustCreateUser(t *testing.T, db *sqldb.DB, s Store, email string) User {
	t.Helper()
	u, err := createUser(t, db, s, newUser(email))
	if err != nil {
		t.Fatalf("CreateUser(%q): %v", email, err)
	}
	return u
}

func testCreateUserAndRead(t *testing.T, db *sqldb.DB, s Store) {
	nu := newUser("Reader@Example.com")
	got, err := createUser(t, db, s, nu)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nu.User, got); diff != "" {
		t.Errorf("CreateUser returned (-want +got):\n%s", diff)
	}
	read, err := s.User(t.Context(), nu.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nu.User, read); diff != "" {
		t.Errorf("User(%s) (-want +got):\n%s", nu.ID, diff)
	}
	acc, err := s.AccountByEmail(t.Context(), "reader@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nu.Account, acc); diff != "" {
		t.Errorf("AccountByEmail (-want +got):\n%s", diff)
	}
	if _, err := s.User(t.Context(), uuid.NewString()); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("User(unknown) = %v, want ErrUserNotFound", err)
	}
	if _, err := s.AccountByEmail(t.Context(), "nobody@example.com"); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("AccountByEmail(unknown) = %v, want ErrUserNotFound", err)
	}
}

func testCreateUserEmailTaken(t *testing.T, db *sqldb.DB, s Store) {
	first := mustCreateUser(t, db, s, "taken@example.com")
	_, err := createUser(t, db, s, newUser("TAKEN@Example.COM"))
	taken, ok := as[*EmailTakenError](err)
	if !ok || !errors.Is(err, ErrEmailTaken) {
		t.Fatalf("CreateUser(same address, other case) = %v, want an *EmailTakenError", err)
	}
	if taken.Email != "taken@example.com" || taken.existing.ID != first.ID || taken.existing.IdempotencyKey != "key-taken@example.com" {
		t.Errorf("EmailTakenError = %+v, want the first account", taken)
	}
}

func testCreateUserConcurrent(t *testing.T, db *sqldb.DB, s Store) {
	const n = 10
	var (
		wg            sync.WaitGroup
		mu            sync.Mutex
		created, took int
		others        []error
	)
	for range n {
		wg.Go(func() {
			_, err := createUser(t, db, s, newUser("race@example.com"))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, ErrEmailTaken):
				took++
			default:
				others = append(others, err)
			}
		})
	}
	wg.Wait()
	if created != 1 || took != n-1 || len(others) > 0 {
		t.Errorf("%d concurrent CreateUser of one address: %d created, %d taken, errors %v; want 1 and %d", n, created, took, others, n-1)
	}
}

// testCreateUserRollsBack shows that CreateUser joins the caller's
// transaction: a later failure in it (an outbox write, say) undoes it.
func testCreateUserRollsBack(t *testing.T, db *sqldb.DB, s Store) {
	nu := newUser("rollback@example.com")
	errLater := errors.New("a later write of the transaction failed")
	err := db.Tx(t.Context(), func(tx *sql.Tx) error {
		if _, err := s.CreateUser(t.Context(), tx, nu); err != nil {
			return err
		}
		return errLater
	})
	if !errors.Is(err, errLater) {
		t.Fatalf("Tx = %v, want %v", err, errLater)
	}
	if _, err := s.User(t.Context(), nu.ID); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("User after rollback = %v, want ErrUserNotFound", err)
	}
}

func testSetRoles(t *testing.T, db *sqldb.DB, s Store) {
	u := mustCreateUser(t, db, s, "roles@example.com")
	got, err := s.SetRoles(t.Context(), u.ID, []string{"admin", "customer"}, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := u
	want.Roles = []string{"admin", "customer"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SetRoles (-want +got):\n%s", diff)
	}
	if got, err := s.SetRoles(t.Context(), u.ID, nil, t0); err != nil || len(got.Roles) != 0 || got.Roles == nil {
		t.Errorf("SetRoles(nil) = %+v, %v, want empty non-nil roles", got, err)
	}
	if _, err := s.SetRoles(t.Context(), uuid.NewString(), nil, t0); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("SetRoles(unknown) = %v, want ErrUserNotFound", err)
	}
}

func testReplacePasswordHash(t *testing.T, db *sqldb.DB, s Store) {
	nu := newUser("rehash@example.com")
	if _, err := createUser(t, db, s, nu); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		old, new string
		want     bool
	}{
		{"not the hash", "h1", false},
		{nu.PasswordHash, "h2", true},
		{nu.PasswordHash, "h3", false}, // no longer the hash
	} {
		got, err := s.ReplacePasswordHash(t.Context(), nu.ID, tc.old, tc.new, t0)
		if err != nil || got != tc.want {
			t.Errorf("ReplacePasswordHash(%q -> %q) = %v, %v, want %v", tc.old, tc.new, got, err, tc.want)
		}
	}
	acc, err := s.AccountByEmail(t.Context(), nu.EmailKey)
	if err != nil || acc.PasswordHash != "h2" {
		t.Errorf("hash after replacements = %q, %v, want h2", acc.PasswordHash, err)
	}
}

func testLoginAttempts(t *testing.T, _ *sqldb.DB, s Store) {
	ctx := t.Context()
	const limit, window = 3, 15 * time.Minute
	key := "throttle@example.com"
	reserve := func(at time.Time) (bool, time.Time) {
		t.Helper()
		ok, retryAt, err := s.ReserveLoginAttempt(ctx, key, at, window, limit)
		if err != nil {
			t.Fatal(err)
		}
		return ok, retryAt
	}
	for i := range limit {
		if ok, _ := reserve(t0.Add(time.Duration(i) * time.Minute)); !ok {
			t.Fatalf("attempt %d refused, want admitted", i+1)
		}
	}
	ok, retryAt := reserve(t0.Add(5 * time.Minute))
	if ok || !retryAt.Equal(t0.Add(window)) {
		t.Errorf("attempt %d = %v, retry at %v; want refused until %v", limit+1, ok, retryAt, t0.Add(window))
	}
	if ok, _, _ := s.ReserveLoginAttempt(ctx, "other@example.com", t0.Add(5*time.Minute), window, limit); !ok {
		t.Errorf("another account was refused, want admitted")
	}
	if ok, _ := reserve(t0.Add(window)); !ok {
		t.Errorf("attempt when the window ended refused, want a new window")
	}
	for range limit - 1 {
		reserve(t0.Add(window + time.Minute))
	}
	if ok, _ := reserve(t0.Add(window + 2*time.Minute)); ok {
		t.Errorf("attempt beyond the limit of the new window admitted")
	}
	if err := s.ResetLoginAttempts(ctx, key); err != nil {
		t.Fatal(err)
	}
	if ok, _ := reserve(t0.Add(window + 3*time.Minute)); !ok {
		t.Errorf("attempt after reset refused, want admitted")
	}
}

func testLoginAttemptsConcurrent(t *testing.T, _ *sqldb.DB, s Store) {
	const n, limit = 20, 5
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		admitted int
		errs     []error
	)
	for range n {
		wg.Go(func() {
			ok, _, err := s.ReserveLoginAttempt(t.Context(), "crowd@example.com", t0, 15*time.Minute, limit)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if ok {
				admitted++
			}
		})
	}
	wg.Wait()
	if admitted != limit || len(errs) > 0 {
		t.Errorf("%d concurrent attempts admitted %d (errors %v), want exactly %d", n, admitted, errs, limit)
	}
}

// login stores a new family's first token for u and returns its hash.
func storeLogin(t *testing.T, s Store, u User, now time.Time, ttl time.Duration) string {
	t.Helper()
	_, hash := newRefreshToken()
	err := s.CreateRefreshToken(t.Context(), RefreshToken{
		Hash: hash, FamilyID: uuid.NewString(), UserID: u.ID, CreateTime: now, ExpireTime: now.Add(ttl),
	})
	if err != nil {
		t.Fatal(err)
	}
	return hash
}

// rotate rotates presented into a new token and returns its hash.
func rotate(t *testing.T, s Store, presented string, now time.Time) (string, User, error) {
	t.Helper()
	_, next := newRefreshToken()
	u, err := s.RotateRefreshToken(t.Context(), presented, RefreshToken{
		Hash: next, CreateTime: now, ExpireTime: now.Add(24 * time.Hour),
	}, now)
	return next, u, err
}

func testRotateRefreshToken(t *testing.T, db *sqldb.DB, s Store) {
	u := mustCreateUser(t, db, s, "rotate@example.com")
	if _, err := s.SetRoles(t.Context(), u.ID, []string{"customer", "vip"}, t0); err != nil {
		t.Fatal(err)
	}
	h := storeLogin(t, s, u, t0, time.Hour)
	for i := range 3 {
		next, got, err := rotate(t, s, h, t0.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
		if got.ID != u.ID || !cmp.Equal(got.Roles, []string{"customer", "vip"}) {
			t.Errorf("rotation %d returned %+v, want user %s with current roles", i+1, got, u.ID)
		}
		h = next
	}
	if _, _, err := rotate(t, s, "0000", t0); !errors.Is(err, ErrRefreshTokenInvalid) {
		t.Errorf("rotate(unknown) = %v, want ErrRefreshTokenInvalid", err)
	}
}

func testRefreshReuse(t *testing.T, db *sqldb.DB, s Store) {
	u := mustCreateUser(t, db, s, "reuse@example.com")
	first := storeLogin(t, s, u, t0, time.Hour)
	second, _, err := rotate(t, s, first, t0)
	if err != nil {
		t.Fatal(err)
	}
	other := storeLogin(t, s, u, t0, time.Hour) // another session of the user
	if _, _, err := rotate(t, s, first, t0); !errors.Is(err, ErrRefreshTokenReused) {
		t.Fatalf("rotate(used) = %v, want ErrRefreshTokenReused", err)
	}
	if _, _, err := rotate(t, s, second, t0); !errors.Is(err, ErrRefreshTokenRevoked) {
		t.Errorf("rotate(newer token of the revoked family) = %v, want ErrRefreshTokenRevoked", err)
	}
	if _, _, err := rotate(t, s, first, t0); !errors.Is(err, ErrRefreshTokenRevoked) {
		t.Errorf("rotate(used token of the revoked family) = %v, want ErrRefreshTokenRevoked", err)
	}
	if _, _, err := rotate(t, s, other, t0); err != nil {
		t.Errorf("rotate(token of another family) = %v, want success", err)
	}
}

func testRefreshExpired(t *testing.T, db *sqldb.DB, s Store) {
	u := mustCreateUser(t, db, s, "expired@example.com")
	h := storeLogin(t, s, u, t0, time.Hour)
	if _, _, err := rotate(t, s, h, t0.Add(time.Hour)); !errors.Is(err, ErrRefreshTokenExpired) {
		t.Errorf("rotate at expiry = %v, want ErrRefreshTokenExpired", err)
	}
	if _, _, err := rotate(t, s, h, t0.Add(time.Hour-time.Microsecond)); err != nil {
		t.Errorf("rotate just before expiry = %v, want success", err)
	}
}

func testRotateConcurrent(t *testing.T, db *sqldb.DB, s Store) {
	u := mustCreateUser(t, db, s, "concurrent@example.com")
	h := storeLogin(t, s, u, t0, time.Hour)
	const n = 10
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		won     []string
		refused int
		errs    []error
	)
	for range n {
		wg.Go(func() {
			next, _, err := rotate(t, s, h, t0)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, next)
			case errors.Is(err, ErrRefreshTokenReused), errors.Is(err, ErrRefreshTokenRevoked):
				refused++
			default:
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if len(won) != 1 || refused != n-1 || len(errs) > 0 {
		t.Fatalf("%d concurrent rotations: %d won, %d refused, errors %v; want exactly 1 winner", n, len(won), refused, errs)
	}
	if _, _, err := rotate(t, s, won[0], t0); !errors.Is(err, ErrRefreshTokenRevoked) {
		t.Errorf("rotate(winner's token) = %v, want ErrRefreshTokenRevoked: the replays revoked the family", err)
	}
}

func testRevokeRefreshFamily(t *testing.T, db *sqldb.DB, s Store) {
	u := mustCreateUser(t, db, s, "revoke@example.com")
	first := storeLogin(t, s, u, t0, time.Hour)
	second, _, err := rotate(t, s, first, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{first, second} { // revoking by an old token revokes the family too
		found, err := s.RevokeRefreshFamily(t.Context(), h, t0)
		if err != nil || !found {
			t.Errorf("RevokeRefreshFamily = %v, %v, want true", found, err)
		}
	}
	if _, _, err := rotate(t, s, second, t0); !errors.Is(err, ErrRefreshTokenRevoked) {
		t.Errorf("rotate after revocation = %v, want ErrRefreshTokenRevoked", err)
	}
	if found, err := s.RevokeRefreshFamily(t.Context(), "unknown", t0); err != nil || found {
		t.Errorf("RevokeRefreshFamily(unknown) = %v, %v, want false, nil", found, err)
	}
}

// testOneLiveTokenPerFamily checks the partial unique index: a family
// cannot hold two unused tokens, whatever code tried.
func testOneLiveTokenPerFamily(t *testing.T, db *sqldb.DB, s Store) {
	u := mustCreateUser(t, db, s, "onelive@example.com")
	h := storeLogin(t, s, u, t0, time.Hour)
	var family string
	if err := db.QueryRowContext(t.Context(), `SELECT family_id FROM refresh_tokens WHERE token_hash = $1`, h).Scan(&family); err != nil {
		t.Fatal(err)
	}
	err := db.Tx(t.Context(), func(tx *sql.Tx) error {
		_, hash := newRefreshToken()
		return insertRefreshToken(t.Context(), tx, RefreshToken{Hash: hash, FamilyID: family, UserID: u.ID, CreateTime: t0, ExpireTime: t0.Add(time.Hour)})
	})
	if !sqldb.IsUniqueViolation(err) {
		t.Errorf("second unused token in a family: %v, want a unique violation", err)
	}
}

func testDeleteExpired(t *testing.T, db *sqldb.DB, s Store) {
	ctx := t.Context()
	// Start from a clean slate: earlier cases left rows behind.
	for _, table := range []string{"refresh_tokens", "refresh_families", "login_attempts"} {
		if _, err := db.ExecContext(ctx, "DELETE FROM "+table); err != nil {
			t.Fatal(err)
		}
	}
	u := mustCreateUser(t, db, s, "janitor@example.com")
	expired := storeLogin(t, s, u, t0, time.Hour)
	live := storeLogin(t, s, u, t0, 48*time.Hour)
	if _, _, err := s.ReserveLoginAttempt(ctx, "old@example.com", t0, time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReserveLoginAttempt(ctx, "new@example.com", t0.Add(2*time.Hour), time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(2 * time.Hour)
	n, err := s.DeleteExpired(ctx, now, now.Add(-time.Minute), 100)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 { // the expired token, its family, the ended window
		t.Errorf("DeleteExpired deleted %d rows, want 3", n)
	}
	if _, _, err := rotate(t, s, expired, now); !errors.Is(err, ErrRefreshTokenInvalid) {
		t.Errorf("rotate(deleted token) = %v, want ErrRefreshTokenInvalid", err)
	}
	if _, _, err := rotate(t, s, live, now); err != nil {
		t.Errorf("rotate(live token) = %v, want success", err)
	}
	count := func(q string) int {
		var c int
		if err := db.QueryRowContext(ctx, q).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if got := count(`SELECT COUNT(*) FROM login_attempts`); got != 1 {
		t.Errorf("login_attempts rows = %d, want 1 (the live window)", got)
	}
	// The limit bounds each statement.
	for i := range 5 {
		storeLogin(t, s, u, t0, time.Duration(i+1)*time.Minute)
	}
	if n, err := s.DeleteExpired(ctx, now, now.Add(-time.Minute), 2); err != nil || n != 2+2 {
		t.Errorf("DeleteExpired(limit 2) = %d, %v, want 4 (2 tokens, 2 families)", n, err)
	}
}
