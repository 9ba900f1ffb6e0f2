-- +goose Up

-- users holds the accounts. email_key, the e-mail address lower-cased as a
-- whole, is the identity of an account: its UNIQUE constraint is what makes
-- two registrations of one address (in any case) impossible, whatever the
-- timing. roles is a JSON array of strings.
CREATE TABLE users (
    user_id         TEXT   PRIMARY KEY,
    email           TEXT   NOT NULL,
    email_key       TEXT   NOT NULL UNIQUE CHECK (email_key <> ''),
    display_name    TEXT   NOT NULL,
    password_hash   TEXT   NOT NULL CHECK (password_hash <> ''),
    roles           TEXT   NOT NULL,
    idempotency_key TEXT   NOT NULL DEFAULT '',
    create_time     BIGINT NOT NULL,
    update_time     BIGINT NOT NULL
);

-- refresh_families groups the refresh tokens that descend from one login.
-- Revoking a family (revoked = TRUE) makes every token of it unusable, those
-- issued later included, because a rotation only succeeds in a family that
-- is not revoked.
CREATE TABLE refresh_families (
    family_id   TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (user_id),
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    create_time BIGINT  NOT NULL,
    revoke_time BIGINT
);

CREATE INDEX refresh_families_user ON refresh_families (user_id);

-- refresh_tokens holds the SHA-256 (hex) of each refresh token, never the
-- token. A token is used at most once: rotation is a conditional UPDATE ...
-- WHERE used = FALSE. The partial unique index keeps at most one unused
-- token per family, so a family is one chain, never a tree.
CREATE TABLE refresh_tokens (
    token_hash  TEXT    PRIMARY KEY,
    family_id   TEXT    NOT NULL REFERENCES refresh_families (family_id),
    user_id     TEXT    NOT NULL REFERENCES users (user_id),
    used        BOOLEAN NOT NULL DEFAULT FALSE,
    create_time BIGINT  NOT NULL,
    expire_time BIGINT  NOT NULL,
    use_time    BIGINT
);

CREATE UNIQUE INDEX refresh_tokens_one_live_per_family ON refresh_tokens (family_id) WHERE used = FALSE;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expire ON refresh_tokens (expire_time);

-- login_attempts counts the logins of one e-mail key in its current
-- throttle window (a fixed window that starts at the first attempt).
-- Attempts are counted before the password is checked, with a conditional
-- upsert, so concurrent attempts cannot exceed the limit; a successful
-- login deletes the row.
CREATE TABLE login_attempts (
    email_key    TEXT   PRIMARY KEY,
    attempts     BIGINT NOT NULL CHECK (attempts >= 0),
    window_start BIGINT NOT NULL
);

CREATE INDEX login_attempts_window ON login_attempts (window_start);

-- +goose Down
DROP TABLE login_attempts;
DROP TABLE refresh_tokens;
DROP TABLE refresh_families;
DROP TABLE users;
