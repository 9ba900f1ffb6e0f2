package sqldb_test

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
)

//go:embed testdata/migrations/*.sql
var migrations embed.FS

func TestPortableDialect(t *testing.T) {
	sqltest.Each(t, migrations, "testdata/migrations", func(t *testing.T, db *sqldb.DB) {
		ctx := t.Context()
		now := time.Now().Truncate(time.Microsecond)
		if _, err := db.ExecContext(ctx, `INSERT INTO counters (name, value, updated_us) VALUES ($1, $2, $3)`, "a", 1, sqldb.Micros(now)); err != nil {
			t.Fatal(err)
		}
		_, err := db.ExecContext(ctx, `INSERT INTO counters (name, value, updated_us) VALUES ($1, $2, $3)`, "a", 1, 0)
		if !sqldb.IsUniqueViolation(err) {
			t.Errorf("duplicate insert = %v, want a unique violation", err)
		}
		var value, us int64
		err = db.QueryRowContext(ctx, `UPDATE counters SET value = value + $1 WHERE name = $2 AND value + $1 >= 0 RETURNING value, updated_us`, 5, "a").Scan(&value, &us)
		if err != nil || value != 6 || !sqldb.Time(us).Equal(now) {
			t.Errorf("conditional UPDATE ... RETURNING = %d, %v, %v", value, sqldb.Time(us), err)
		}
		// The condition refuses to go negative: no row.
		err = db.QueryRowContext(ctx, `UPDATE counters SET value = value + $1 WHERE name = $2 AND value + $1 >= 0 RETURNING value`, -7, "a").Scan(&value)
		if !errors.Is(err, sql.ErrNoRows) {
			t.Errorf("UPDATE below zero = %v, want no rows", err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO counters (name, value, updated_us) VALUES ($1, 0, 0) ON CONFLICT (name) DO NOTHING`, "a"); err != nil {
			t.Errorf("ON CONFLICT DO NOTHING = %v", err)
		}
	})
}

func TestConcurrentTransactionsAreSerializedOrRetried(t *testing.T) {
	sqltest.Each(t, migrations, "testdata/migrations", func(t *testing.T, db *sqldb.DB) {
		ctx := t.Context()
		if _, err := db.ExecContext(ctx, `INSERT INTO counters (name, value, updated_us) VALUES ('c', 0, 0)`); err != nil {
			t.Fatal(err)
		}
		const workers, each = 16, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					err := db.Tx(ctx, func(tx *sql.Tx) error {
						var v int64
						if err := tx.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'c'`).Scan(&v); err != nil {
							return err
						}
						_, err := tx.ExecContext(ctx, `UPDATE counters SET value = $1 WHERE name = 'c' AND value = $2`, v+1, v)
						return err
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// Lost updates are possible with a plain read-then-write at READ
		// COMMITTED; the conditional UPDATE makes them visible as a count
		// below the total, never above it.
		var v int64
		if err := db.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'c'`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v < 1 || v > workers*each {
			t.Errorf("counter = %d, want 1..%d", v, workers*each)
		}
		// SQLite runs the transactions one after the other, or together
		// in a group commit, so each one sees the writes of those before
		// it: none is lost or applied twice.
		if db.Dialect == sqldb.SQLite && v != workers*each {
			t.Errorf("counter on SQLite = %d, want %d", v, workers*each)
		}
	})
}

func TestRetryableAndContext(t *testing.T) {
	db := sqltest.New(t, sqldb.SQLite, migrations, "testdata/migrations")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := db.Tx(ctx, func(*sql.Tx) error { return nil }); err == nil {
		t.Error("Tx with a cancelled context succeeded")
	}
	if sqldb.Retryable(errors.New("plain")) {
		t.Error("a plain error is retryable")
	}
}

// Reads on Reader run beside an open write transaction, without waiting
// for it, and see what has committed.
func TestReaderReadsBesideTheWriter(t *testing.T) {
	sqltest.Each(t, migrations, "testdata/migrations", func(t *testing.T, db *sqldb.DB) {
		ctx := t.Context()
		if _, err := db.ExecContext(ctx, `INSERT INTO counters (name, value, updated_us) VALUES ('r', 1, 0)`); err != nil {
			t.Fatal(err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(ctx, `UPDATE counters SET value = 2 WHERE name = 'r'`); err != nil {
			t.Fatal(err)
		}
		read := func() int64 {
			t.Helper()
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var v int64
			if err := db.Reader().QueryRowContext(rctx, `SELECT value FROM counters WHERE name = 'r'`).Scan(&v); err != nil {
				t.Fatalf("read beside an open transaction: %v", err)
			}
			return v
		}
		if v := read(); v != 1 {
			t.Errorf("read during the transaction = %d, want the committed 1", v)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if v := read(); v != 2 {
			t.Errorf("read after commit = %d, want 2", v)
		}
		if db.Dialect == sqldb.SQLite {
			if _, err := db.Reader().ExecContext(ctx, `UPDATE counters SET value = 3 WHERE name = 'r'`); err == nil {
				t.Error("a write on SQLite's read pool succeeded, want it refused")
			}
			if got := db.Reader().Stats().MaxOpenConnections; got != sqldb.SQLiteReaders {
				t.Errorf("read pool max open = %d, want %d", got, sqldb.SQLiteReaders)
			}
		}
	})
}

// A burst that uses every PostgreSQL connection leaves them all open for
// the next one: no connection is closed and opened again between bursts.
func TestPostgresPoolKeepsItsConnectionsBetweenBursts(t *testing.T) {
	db := sqltest.New(t, sqldb.Postgres, migrations, "testdata/migrations")
	pids := make(map[int64]bool)
	for burst := 0; burst < 3; burst++ {
		var (
			mu      sync.Mutex
			wg      sync.WaitGroup
			started sync.WaitGroup
			release = make(chan struct{})
		)
		started.Add(sqldb.MaxPostgresConns)
		for range sqldb.MaxPostgresConns {
			wg.Go(func() {
				// A transaction that fails before it holds its connection
				// still counts as started, so that the burst ends.
				var once sync.Once
				defer once.Do(started.Done)
				err := db.Tx(t.Context(), func(tx *sql.Tx) error {
					var pid int64
					if err := tx.QueryRowContext(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
						return err
					}
					mu.Lock()
					pids[pid] = true
					mu.Unlock()
					once.Do(started.Done)
					<-release
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		started.Wait()
		close(release)
		wg.Wait()
	}
	if len(pids) != sqldb.MaxPostgresConns {
		t.Errorf("3 bursts of %d transactions ran on %d server processes, want %d", sqldb.MaxPostgresConns, len(pids), sqldb.MaxPostgresConns)
	}
	if s := db.Stats(); s.MaxIdleClosed != 0 || s.Idle != sqldb.MaxPostgresConns {
		t.Errorf("pool after the bursts: %d idle, %d closed for the idle limit; want %d idle, none closed", s.Idle, s.MaxIdleClosed, sqldb.MaxPostgresConns)
	}
}
