// Package sqltest gives tests a fresh database of each engine: a SQLite
// file in the test's temporary directory, and a PostgreSQL database of its
// own on the machine's server (127.0.0.1:5432, or SWITCHBOARD_TEST_POSTGRES)
// that is dropped when the test ends. Contract tests run the same cases on
// both with Each.
//
// When PostgreSQL cannot be reached the Postgres cases are skipped, except
// under CI=true, where they fail: CI must never pass by not testing.
package sqltest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
)

// AdminDSN returns the DSN of the PostgreSQL server tests create their
// databases on.
func AdminDSN() string {
	if v := os.Getenv("SWITCHBOARD_TEST_POSTGRES"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Unavailable skips the test, or fails it under CI=true.
func Unavailable(tb testing.TB, what string, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s is required under CI=true: %v", what, err)
	}
	tb.Skipf("%s unavailable: %v", what, err)
}

// New returns a fresh migrated database of the given engine, closed (and
// for PostgreSQL dropped) at the end of the test.
func New(tb testing.TB, d sqldb.Dialect, migrations fs.FS, dir string) *sqldb.DB {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var db *sqldb.DB
	var err error
	switch d {
	case sqldb.SQLite:
		db, err = sqldb.Open(ctx, filepath.Join(tb.TempDir(), "test.db"))
		if err != nil {
			tb.Fatal(err)
		}
	case sqldb.Postgres:
		db = newPostgres(ctx, tb)
	default:
		tb.Fatalf("unknown dialect %q", d)
	}
	tb.Cleanup(func() { _ = db.Close() })
	if migrations != nil {
		if err := db.Migrate(ctx, migrations, dir); err != nil {
			tb.Fatal(err)
		}
	}
	return db
}

func newPostgres(ctx context.Context, tb testing.TB) *sqldb.DB {
	tb.Helper()
	admin, err := sql.Open("pgx", AdminDSN())
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = admin.Close() }()
	if err := admin.PingContext(ctx); err != nil {
		Unavailable(tb, "PostgreSQL", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "sbtest_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a, err := sql.Open("pgx", AdminDSN())
		if err != nil {
			return
		}
		defer func() { _ = a.Close() }()
		_, _ = a.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	db, err := sqldb.Open(ctx, "postgres://postgres@127.0.0.1:5432/"+name+"?sslmode=disable")
	if os.Getenv("SWITCHBOARD_TEST_POSTGRES") != "" {
		db, err = sqldb.Open(ctx, replaceDB(AdminDSN(), name))
	}
	if err != nil {
		tb.Fatal(err)
	}
	return db
}

// replaceDB points a postgres DSN at another database.
func replaceDB(dsn, name string) string {
	base, query := dsn, ""
	for i := range dsn {
		if dsn[i] == '?' {
			base, query = dsn[:i], dsn[i:]
			break
		}
	}
	for i := len(base) - 1; i >= 0; i-- {
		if base[i] == '/' {
			return base[:i+1] + name + query
		}
	}
	return dsn
}

// Dialects are the engines contract tests run on.
var Dialects = []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres}

// Each runs fn as a subtest per engine, each with a fresh migrated
// database.
func Each(t *testing.T, migrations fs.FS, dir string, fn func(t *testing.T, db *sqldb.DB)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(string(d), func(t *testing.T) {
			fn(t, New(t, d, migrations, dir))
		})
	}
}
