package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect is the database engine.
type Dialect string

// The engines.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is a database handle and its engine. It is safe for concurrent use;
// the caller closes it.
//
// On SQLite, DB holds two pools: the embedded one, of one connection,
// for transactions and writes (SQLite has one writer at a time, and one
// connection turns contention into queueing instead of SQLITE_BUSY), and
// Reader's, of up to SQLiteReaders read-only connections, on which reads
// outside a transaction run beside the writer (WAL lets them) instead of
// waiting for its transactions.
type DB struct {
	*sql.DB
	Dialect Dialect
	// read is the SQLite read pool; nil on PostgreSQL.
	read *sql.DB
	// group is the group commit of Tx on SQLite; nil on PostgreSQL.
	group *grouper
}

// SQLiteReaders bounds the read-only connections a SQLite DB opens.
const SQLiteReaders = 4

// Reader is the pool for reads outside a transaction: on SQLite, read-only
// connections that see what has committed; on PostgreSQL, the DB's own
// pool. A statement that writes fails on it on SQLite.
func (db *DB) Reader() *sql.DB {
	if db.read != nil {
		return db.read
	}
	return db.DB
}

// Close closes both pools.
func (db *DB) Close() error {
	err := db.DB.Close()
	if db.read != nil {
		err = errors.Join(err, db.read.Close())
	}
	return err
}

// MaxPostgresConns bounds the connections one DB holds to PostgreSQL.
const MaxPostgresConns = 10

// ConnMaxIdle is how long a PostgreSQL connection may stay unused in the
// pool before it is closed.
const ConnMaxIdle = 5 * time.Minute

// Open opens dsn: "postgres://..." or "postgresql://..." for PostgreSQL,
// anything else is a SQLite file path (created if missing).
func Open(ctx context.Context, dsn string) (*DB, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, err
		}
		// Ten connections per service: enough for its concurrency (writes
		// serialize on rows anyway), and a whole system of services stays
		// well under PostgreSQL's default max_connections of 100. All ten
		// may stay idle: a pool that keeps fewer closes connections after
		// every burst and opens them again in the next, each a new server
		// process that prepares every statement again. Connections idle
		// for ConnMaxIdle are closed.
		db.SetMaxOpenConns(MaxPostgresConns)
		db.SetMaxIdleConns(MaxPostgresConns)
		db.SetConnMaxIdleTime(ConnMaxIdle)
		db.SetConnMaxLifetime(30 * time.Minute)
		if err := db.PingContext(ctx); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("sqldb: connect to postgres: %w", err)
		}
		return &DB{DB: db, Dialect: Postgres}, nil
	}
	path := strings.TrimPrefix(dsn, "sqlite://")
	// The connector opens connections exactly as sql.Open("sqlite", ...)
	// would, from the same DSN; each connection caches its prepared
	// statements, so that a statement the services run again is not parsed
	// again.
	connector, err := sqlite.NewConnector(sqliteDSN(path))
	if err != nil {
		return nil, fmt.Errorf("sqldb: open sqlite %s: %w", path, err)
	}
	db := sql.OpenDB(newCachingConnector(connector, stmtCacheSize))
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqldb: open sqlite %s: %w", path, err)
	}
	// The writer made the file a WAL database; readers open it as it is.
	rconn, err := sqlite.NewConnector(sqliteReaderDSN(path))
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqldb: open sqlite %s: %w", path, err)
	}
	read := sql.OpenDB(newCachingConnector(rconn, stmtCacheSize))
	read.SetMaxOpenConns(SQLiteReaders)
	read.SetMaxIdleConns(SQLiteReaders)
	d := &DB{DB: db, Dialect: SQLite, read: read}
	d.group = &grouper{db: d}
	return d, nil
}

// sqliteDSN is the modernc.org/sqlite DSN of the database file at path: WAL
// journal, a busy timeout, foreign keys enforced, and transactions that
// take the write lock when they begin (BEGIN IMMEDIATE), so a transaction
// never fails to upgrade a read lock midway.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

// sqliteReaderDSN is the DSN of a read-only connection to the WAL
// database at path.
func sqliteReaderDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=query_only(1)"
}

// Migrate applies the goose migrations in dir of fsys that have not been
// applied yet.
func (db *DB) Migrate(ctx context.Context, fsys fs.FS, dir string) error {
	dialect := goose.DialectSQLite3
	if db.Dialect == Postgres {
		dialect = goose.DialectPostgres
	}
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(dialect, db.DB, sub)
	if err != nil {
		return fmt.Errorf("sqldb: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("sqldb: migrate: %w", err)
	}
	return nil
}

// MaxAttempts bounds how often Tx runs a transaction that keeps failing
// with a retryable error.
const MaxAttempts = 8

// Tx runs fn in a transaction and commits it, or rolls it back if fn
// fails. A transaction that fails with a serialization failure or a
// deadlock (PostgreSQL) or a busy database (SQLite) is run again, up to
// MaxAttempts times with jittered backoff, so fn must be safe to re-run:
// it may only touch the database.
//
// On SQLite, transactions of concurrent callers may share one SQLite
// transaction (a group commit, see grouper): fn may then see what the
// functions run before it in the group wrote, as it would had their
// transactions committed just before its own.
func (db *DB) Tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if db.group != nil {
		return db.group.run(ctx, fn)
	}
	return db.retrying(ctx, fn)
}

// retrying runs fn in a transaction of its own, again while it fails with
// a retryable error (see Tx).
func (db *DB) retrying(ctx context.Context, fn func(tx *sql.Tx) error) error {
	var err error
	for attempt := 1; attempt <= MaxAttempts; attempt++ {
		if err = db.tx(ctx, fn); err == nil || !Retryable(err) {
			return err
		}
		backoff := time.Duration(attempt*attempt) * time.Millisecond
		backoff += time.Duration(rand.Int64N(int64(backoff))) //nolint:gosec // jitter
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
	return err
}

func (db *DB) tx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// Retryable reports whether err is a transient conflict that running the
// transaction again may resolve.
func Retryable(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "40001" || pg.Code == "40P01" // serialization_failure, deadlock_detected
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) {
		switch lite.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
	}
	return false
}

// IsUniqueViolation reports whether err is a unique or primary key
// constraint violation.
func IsUniqueViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23505"
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) {
		return lite.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || lite.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// Micros stores a time as Unix microseconds, the portable timestamp.
func Micros(t time.Time) int64 { return t.UnixMicro() }

// Time reads a time stored by Micros.
func Time(us int64) time.Time { return time.UnixMicro(us).UTC() }
