-- +goose Up

-- accounts holds every account of the chart: customer accounts (one per
-- owner and currency) and, per currency, the system accounts house, holds
-- and revenue. available is the sum of the account's ledger entries; held
-- is the part of a customer's money that sits in the holds account for its
-- open authorizations. last_seq is the sequence of the account's latest
-- ledger entry.
CREATE TABLE accounts (
    id            TEXT    PRIMARY KEY,
    kind          TEXT    NOT NULL,
    owner_id      TEXT    NOT NULL,
    currency_code TEXT    NOT NULL,
    available     BIGINT  NOT NULL DEFAULT 0,
    held          BIGINT  NOT NULL DEFAULT 0,
    last_seq      BIGINT  NOT NULL DEFAULT 0,
    created_us    BIGINT  NOT NULL,
    updated_us    BIGINT  NOT NULL,
    CONSTRAINT accounts_owner_currency UNIQUE (owner_id, currency_code),
    CONSTRAINT accounts_kind CHECK (kind IN ('customer', 'house', 'holds', 'revenue')),
    -- A customer's money never goes negative, whatever the interleaving.
    CONSTRAINT accounts_customer_available CHECK (kind <> 'customer' OR available >= 0),
    CONSTRAINT accounts_held CHECK (held >= 0),
    CONSTRAINT accounts_system_held CHECK (kind = 'customer' OR held = 0),
    CONSTRAINT accounts_last_seq CHECK (last_seq >= 0)
);

-- authorizations are holds and what became of them. The CHECKs are the
-- state machine's bounds: never more captured than authorized, never more
-- refunded than captured.
CREATE TABLE authorizations (
    id            TEXT    PRIMARY KEY,
    account_id    TEXT    NOT NULL REFERENCES accounts (id),
    order_id      TEXT    NOT NULL,
    currency_code TEXT    NOT NULL,
    amount        BIGINT  NOT NULL,
    captured      BIGINT  NOT NULL DEFAULT 0,
    refunded      BIGINT  NOT NULL DEFAULT 0,
    last_refund   BIGINT  NOT NULL DEFAULT 0,
    status        TEXT    NOT NULL,
    created_us    BIGINT  NOT NULL,
    updated_us    BIGINT  NOT NULL,
    CONSTRAINT authorizations_amount CHECK (amount > 0),
    CONSTRAINT authorizations_captured CHECK (captured >= 0 AND captured <= amount),
    CONSTRAINT authorizations_refunded CHECK (refunded >= 0 AND refunded <= captured),
    CONSTRAINT authorizations_status CHECK (status IN ('AUTHORIZED', 'CAPTURED', 'VOIDED', 'PARTIALLY_REFUNDED', 'REFUNDED'))
);

CREATE INDEX authorizations_account ON authorizations (account_id);

-- ledger_transactions groups the entries of one movement of money; their
-- amounts sum to zero.
CREATE TABLE ledger_transactions (
    id               TEXT    PRIMARY KEY,
    kind             TEXT    NOT NULL,
    authorization_id TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    created_us       BIGINT  NOT NULL
);

CREATE INDEX ledger_transactions_authorization ON ledger_transactions (authorization_id);

-- ledger_entries is append-only: rows are inserted, never updated or
-- deleted. (account_id, sequence) numbers each account's entries 1, 2, ...
-- and is the key ListLedgerEntries pages by.
CREATE TABLE ledger_entries (
    id               TEXT    PRIMARY KEY,
    transaction_id   TEXT    NOT NULL REFERENCES ledger_transactions (id),
    account_id       TEXT    NOT NULL REFERENCES accounts (id),
    sequence         BIGINT  NOT NULL,
    amount           BIGINT  NOT NULL,
    currency_code    TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    authorization_id TEXT    NOT NULL,
    created_us       BIGINT  NOT NULL,
    CONSTRAINT ledger_entries_account_sequence UNIQUE (account_id, sequence),
    CONSTRAINT ledger_entries_amount CHECK (amount <> 0),
    CONSTRAINT ledger_entries_sequence CHECK (sequence > 0)
);

CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id);

-- idempotency remembers, per method and key, the hash of the request and
-- the response of the call that used the key first. Its row commits in the
-- same transaction as the call's effect.
CREATE TABLE idempotency (
    method       TEXT    NOT NULL,
    idem_key     TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    response     TEXT    NOT NULL,
    created_us   BIGINT  NOT NULL,
    PRIMARY KEY (method, idem_key)
);

CREATE INDEX idempotency_created ON idempotency (created_us);

-- +goose Down
DROP TABLE idempotency;
DROP TABLE ledger_entries;
DROP TABLE ledger_transactions;
DROP TABLE authorizations;
DROP TABLE accounts;
