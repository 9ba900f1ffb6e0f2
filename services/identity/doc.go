// Package identity is the identity service (switchboard.identity.v1): it
// owns users and their passwords, logs them in, issues their Ed25519-signed
// JWT access tokens (with a kit/auth Issuer) and rotating refresh tokens,
// revokes both, and publishes the public keys (GetJwks) that every service
// verifies access tokens with; JWKSFromClient turns a client of it into the
// auth.KeySource of those Verifiers.
//
// # E-mail addresses
//
// An address is trimmed, must then be a plain addr-spec of at most 254
// bytes (no display name, comment or quoted local part), and its domain is
// lower-cased; the local part keeps its case, which is what User.email
// shows. Accounts are keyed by the whole address lower-cased, so
// "Ann@Example.com" and "ann@example.com" are one account: registering the
// second fails with ALREADY_EXISTS, and either logs in.
//
// # Passwords
//
// Passwords (12 to 128 characters; Login accepts 1 to 128 so that a rule
// change never locks anyone out) are stored only as argon2id hashes
// (golang.org/x/crypto/argon2.IDKey) in PHC string format,
//
//	$argon2id$v=19$m=65536,t=1,p=2$<salt>$<key>
//
// salt and key in unpadded standard base64. The defaults are one pass over
// 64 MiB with two lanes, a 16-byte random salt and a 32-byte key
// (DefaultArgon2Params). Each hash carries its parameters, so
// Config.Argon2 can change at any time: old hashes still verify, and a
// successful login re-hashes with the current parameters. Hashes are
// compared in constant time. At most Config.MaxConcurrentHashes hashes run
// at once (default 4, so 256 MiB), bounding memory under a login flood.
//
// # Login
//
// A wrong password and an unknown e-mail address give the same
// UNAUTHENTICATED error (reason INVALID_CREDENTIALS) after the same work:
// for an unknown address a dummy hash is verified. Logins are throttled per
// e-mail key, registered or not, in the database (table login_attempts),
// so the limit holds across replicas and restarts: at most 5 attempts
// (Config.LoginThrottle) in a 15-minute window that starts at the first
// attempt; then RESOURCE_EXHAUSTED (LOGIN_THROTTLED) with a RetryInfo until
// the window ends. Attempts are counted before the password is checked, so
// concurrent guesses cannot exceed the limit; a successful login resets
// the count.
//
// # Tokens
//
// Login returns an access token (the Issuer's, 15 minutes by default) and
// a refresh token: 32 random bytes in base64url, of which only the SHA-256
// is stored, with its family (one per login), user, expiry (30 days by
// default) and a used flag. Refresh uses a token up and returns a new one
// of the same family; presenting a used token revokes its family, tokens
// issued later included, and fails with REFRESH_TOKEN_REUSED. Two
// concurrent refreshes of one token are indistinguishable from a replay by
// a thief, so only one succeeds and the family is revoked. RevokeToken
// revokes a refresh token's family, or an access token's jti in
// Config.Revocations until the token expires; unknown tokens succeed
// (RFC 7009).
//
// # Invariants, and what enforces them
//
//   - One account per e-mail key: the UNIQUE constraint on
//     users.email_key, with INSERT ... ON CONFLICT DO NOTHING.
//   - A refresh token is used at most once: rotation is
//     UPDATE ... SET used = TRUE WHERE used = FALSE (and unexpired, in a
//     family not revoked) RETURNING, so of concurrent rotations exactly one
//     changes the row; a family holds at most one unused token (a partial
//     unique index).
//   - A revoked family stays dead: rotation requires revoked = FALSE in
//     the same statement, so tokens added after a revocation never work.
//   - At most LoginThrottle.MaxAttempts logins per account and window: the
//     count is an upsert whose DO UPDATE ... WHERE admits the attempt only
//     below the limit.
//
// # Users
//
// New users get the roles DefaultRoles (["customer"]); SetRoles changes
// them. GetUser serves users from a UserCache (an in-process LRU by
// default, or Redis) for a TTL and drops a user from it after every change.
// A verified user may only get their own record: any other id is refused
// with PERMISSION_DENIED (NOT_OWN_USER) before it is looked up, so the
// refusal does not reveal whether the user exists. Services listed in
// Policy, calling without a user, may read any user.
//
// # Events
//
// Register writes UserRegistered (user id, e-mail, display name; subject
// the user id) to Config.Outbox in the transaction that creates the user,
// so the event is published if and only if the user exists; payment opens
// the user's account and notify sends the welcome e-mail from it.
package identity
