package events

import (
	"context"
	"database/sql"
	"fmt"
)

// Dialect is the SQL engine the outbox, relay and inbox tables live in.
// Its values match internal/sqldb's, so events.Dialect(db.Dialect)
// converts.
type Dialect string

// The engines.
const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// Table names. Migrate creates them; services leave them alone.
const (
	OutboxTable     = "events_outbox"
	InboxTable      = "events_inbox"
	RelayLeaseTable = "events_relay_lease"
)

// notifyChannel is the PostgreSQL channel relays listen on and pass
// Outbox.Wake on to.
const notifyChannel = "events_outbox"

// migrateLock is the PostgreSQL advisory lock Migrate holds so replicas
// starting together do not race on the catalog.
const migrateLock = 0x73776265766e74 // "swbevnt"

var schema = map[Dialect][]string{
	Postgres: {
		`CREATE TABLE IF NOT EXISTS events_outbox (
			seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			id         TEXT   NOT NULL,
			type       TEXT   NOT NULL,
			subject    TEXT   NOT NULL,
			data       BYTEA  NOT NULL,
			created_at BIGINT NOT NULL
		)`,
		`CREATE TABLE IF NOT EXISTS events_inbox (
			group_name TEXT   NOT NULL,
			event_id   TEXT   NOT NULL,
			handled_at BIGINT NOT NULL,
			PRIMARY KEY (group_name, event_id)
		)`,
		`CREATE INDEX IF NOT EXISTS events_inbox_handled_at ON events_inbox (group_name, handled_at)`,
		`CREATE TABLE IF NOT EXISTS events_relay_lease (
			name       TEXT   PRIMARY KEY,
			holder     TEXT   NOT NULL,
			expires_at BIGINT NOT NULL
		)`,
	},
	SQLite: {
		`CREATE TABLE IF NOT EXISTS events_outbox (
			seq        INTEGER PRIMARY KEY AUTOINCREMENT,
			id         TEXT    NOT NULL,
			type       TEXT    NOT NULL,
			subject    TEXT    NOT NULL,
			data       BLOB    NOT NULL,
			created_at BIGINT  NOT NULL
		)`,
		`CREATE TABLE IF NOT EXISTS events_inbox (
			group_name TEXT   NOT NULL,
			event_id   TEXT   NOT NULL,
			handled_at BIGINT NOT NULL,
			PRIMARY KEY (group_name, event_id)
		)`,
		`CREATE INDEX IF NOT EXISTS events_inbox_handled_at ON events_inbox (group_name, handled_at)`,
		`CREATE TABLE IF NOT EXISTS events_relay_lease (
			name       TEXT   PRIMARY KEY,
			holder     TEXT   NOT NULL,
			expires_at BIGINT NOT NULL
		)`,
	},
}

// Migrate creates the outbox, inbox and relay lease tables in db if they
// do not exist. It is idempotent and safe to run from several processes at
// once; a service runs it at start, next to its own migrations.
func Migrate(ctx context.Context, db *sql.DB, d Dialect) (err error) {
	stmts, ok := schema[d]
	if !ok {
		return fmt.Errorf("events: migrate: unknown dialect %q", d)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("events: migrate: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if d == Postgres {
		if _, err = tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
			return fmt.Errorf("events: migrate: lock: %w", err)
		}
	}
	for _, stmt := range stmts {
		if _, err = tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("events: migrate: %w", err)
		}
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("events: migrate: %w", err)
	}
	return nil
}
