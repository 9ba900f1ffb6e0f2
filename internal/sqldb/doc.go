// Package sqldb opens the SQL database a service keeps its state in, runs
// its migrations and runs transactions with the retries each engine needs.
// Services write one SQL dialect that both engines accept: $1-style
// parameters, standard types (BIGINT, TEXT, BOOLEAN, TIMESTAMP stored as
// Unix microseconds in BIGINT), INSERT ... ON CONFLICT, UPDATE ...
// RETURNING.
//
// Two engines: SQLite (modernc.org/sqlite, pure Go) as the embedded
// default, in WAL mode with a busy timeout and a single connection for
// transactions and writes, so writes are serialized and never fail with
// SQLITE_BUSY, beside a small pool of read-only connections (DB.Reader)
// for reads outside a transaction, which WAL lets run while the writer
// works; and PostgreSQL (pgx) for scale, where transactions that fail
// with a serialization failure or deadlock are retried.
//
// On SQLite each connection keeps a bounded cache of prepared statements
// keyed by their SQL text, so the statements a service runs again and again
// through DB and the *sql.Tx of Tx are parsed once per connection, not on
// every call. Services need not prepare anything themselves.
//
// On SQLite, DB.Tx commits in groups: the transactions that callers start
// while one is running on the writer connection run next, together, in one
// SQLite transaction with one COMMIT (up to MaxGroupCommit of them), so a
// busy service writes the pages they share to the WAL once. A function that
// fails rolls back only its caller's work: the others of its group run
// again, each on its own.
package sqldb
