package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

//go:embed testdata/scripts/*.sql
var scripts embed.FS

// openCached opens a fresh SQLite file through a caching connector of the
// given size, with up to conns connections.
func openCached(tb testing.TB, size, conns int) *sql.DB {
	tb.Helper()
	connector, err := sqlite.NewConnector(sqliteDSN(filepath.Join(tb.TempDir(), "cache.db")))
	if err != nil {
		tb.Fatal(err)
	}
	db := sql.OpenDB(newCachingConnector(connector, size))
	db.SetMaxOpenConns(conns)
	tb.Cleanup(func() { _ = db.Close() })
	mustExec(tb, db, `CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, stock BIGINT NOT NULL)`)
	return db
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func mustExec(tb testing.TB, db execer, query string, args ...any) {
	tb.Helper()
	if _, err := db.ExecContext(context.Background(), query, args...); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
}

// connStats returns the cache counters of the connection under conn.
func connStats(tb testing.TB, conn *sql.Conn) cacheStats {
	tb.Helper()
	var s cacheStats
	err := conn.Raw(func(dc any) error {
		c, ok := dc.(interface{ stats() cacheStats })
		if !ok {
			return fmt.Errorf("connection %T has no statement cache", dc)
		}
		s = c.stats()
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// dbStats returns the cache counters of a single-connection db.
func dbStats(tb testing.TB, db *sql.DB) cacheStats {
	tb.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	return connStats(tb, conn)
}

func diffStats(before, after cacheStats) cacheStats {
	return cacheStats{
		hits:     after.hits - before.hits,
		misses:   after.misses - before.misses,
		bypasses: after.bypasses - before.bypasses,
		closed:   after.closed - before.closed,
		size:     after.size - before.size,
	}
}

var allowStats = cmp.AllowUnexported(cacheStats{})

func countItems(tb testing.TB, db *sql.DB) int64 {
	tb.Helper()
	var n int64
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM items`).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

func TestStatementCacheIsUsed(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, db *sql.DB)
		want cacheStats // change of the counters over run
	}{{
		name: "repeated exec",
		run: func(t *testing.T, db *sql.DB) {
			for i := range 10 {
				mustExec(t, db, `INSERT INTO items (id, name, stock) VALUES ($1, $2, $3)`, i, fmt.Sprint("item", i), i*10)
			}
		},
		want: cacheStats{misses: 1, hits: 9, size: 1},
	}, {
		name: "repeated query",
		run: func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `INSERT INTO items (id, name, stock) VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)`)
			for i := range 9 {
				id := int64(i%3 + 1)
				var name string
				var stock int64
				err := db.QueryRowContext(t.Context(), `SELECT name, stock FROM items WHERE id = $1`, id).Scan(&name, &stock)
				if err != nil {
					t.Fatal(err)
				}
				if want := string(rune('a' + id - 1)); name != want || stock != id*10 {
					t.Errorf("item %d = %q, %d, want %q, %d", id, name, stock, want, id*10)
				}
			}
		},
		want: cacheStats{misses: 2, hits: 8, size: 2},
	}, {
		name: "query with no rows",
		run: func(t *testing.T, db *sql.DB) {
			for range 3 {
				var name string
				err := db.QueryRowContext(t.Context(), `SELECT name FROM items WHERE id = $1`, 99).Scan(&name)
				if !errors.Is(err, sql.ErrNoRows) {
					t.Errorf("missing item = %v, want %v", err, sql.ErrNoRows)
				}
			}
		},
		want: cacheStats{misses: 1, hits: 2, size: 1},
	}, {
		name: "transactions",
		run: func(t *testing.T, db *sql.DB) {
			for round := range 3 {
				tx, err := db.BeginTx(t.Context(), nil)
				if err != nil {
					t.Fatal(err)
				}
				mustExec(t, tx, `INSERT INTO items (id, name, stock) VALUES ($1, 'x', 1)`, round)
				mustExec(t, tx, `UPDATE items SET stock = stock + 1 WHERE id = $1`, round)
				if round == 1 {
					if err := tx.Rollback(); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			var sum int64
			if err := db.QueryRowContext(t.Context(), `SELECT coalesce(sum(stock), 0) FROM items`).Scan(&sum); err != nil {
				t.Fatal(err)
			}
			if sum != 4 {
				t.Errorf("stock after two committed rounds = %d, want 4", sum)
			}
		},
		want: cacheStats{misses: 3, hits: 4, size: 3},
	}, {
		name: "constraint violation keeps the statement",
		run: func(t *testing.T, db *sql.DB) {
			const insert = `INSERT INTO items (id, name, stock) VALUES ($1, 'x', 1)`
			mustExec(t, db, insert, 1)
			if _, err := db.ExecContext(t.Context(), insert, 1); !IsUniqueViolation(err) {
				t.Errorf("duplicate insert = %v, want a unique violation", err)
			}
			mustExec(t, db, insert, 2)
			if got := countItems(t, db); got != 2 {
				t.Errorf("items = %d, want 2", got)
			}
		},
		want: cacheStats{misses: 2, hits: 2, size: 2},
	}, {
		name: "statement that does not prepare",
		run: func(t *testing.T, db *sql.DB) {
			for range 2 {
				if _, err := db.ExecContext(t.Context(), `SELECT nope FROM missing`); err == nil {
					t.Error("query of a missing table succeeded")
				}
			}
		},
		want: cacheStats{},
	}, {
		name: "several statements bypass the cache",
		run: func(t *testing.T, db *sql.DB) {
			for i := range 2 {
				mustExec(t, db, `INSERT INTO items (id, name, stock) VALUES ($1, 'x', 1); INSERT INTO items (id, name, stock) VALUES ($1 + 100, 'y', 2)`, i)
			}
			if got := countItems(t, db); got != 4 {
				t.Errorf("items = %d, want 4", got)
			}
		},
		want: cacheStats{bypasses: 2, misses: 1, size: 1},
	}, {
		name: "trailing semicolon is one statement",
		run: func(t *testing.T, db *sql.DB) {
			for i := range 3 {
				mustExec(t, db, "INSERT INTO items (id, name, stock) VALUES ($1, 'x', 1);\n", i)
			}
		},
		want: cacheStats{misses: 1, hits: 2, size: 1},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openCached(t, stmtCacheSize, 1)
			before := dbStats(t, db)
			tt.run(t, db)
			after := dbStats(t, db)
			if diff := cmp.Diff(tt.want, diffStats(before, after), allowStats); diff != "" {
				t.Errorf("cache counters (-want +got):\n%s", diff)
			}
		})
	}
}

func TestColumnTypesMatchUncached(t *testing.T) {
	cached := openCached(t, stmtCacheSize, 1)
	plain, err := sql.Open("sqlite", sqliteDSN(filepath.Join(t.TempDir(), "plain.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = plain.Close() }()
	mustExec(t, plain, `CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, stock BIGINT NOT NULL)`)
	const query = `SELECT id, name, stock FROM items`
	types := func(db *sql.DB) []string {
		rows, err := db.QueryContext(t.Context(), query)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rows.Close() }()
		cts, err := rows.ColumnTypes()
		if err != nil {
			t.Fatal(err)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ct := range cts {
			nullable, hasNullable := ct.Nullable()
			length, hasLength := ct.Length()
			out = append(out, fmt.Sprint(ct.Name(), ct.DatabaseTypeName(), ct.ScanType(), nullable, hasNullable, length, hasLength))
		}
		return out
	}
	want := types(plain)
	for range 2 { // a miss, then a hit
		if diff := cmp.Diff(want, types(cached)); diff != "" {
			t.Errorf("column types (-plain +cached):\n%s", diff)
		}
	}
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// sumStock sums the second column, stock, of the rows of query.
func sumStock(ctx context.Context, q querier, query string, args ...any) (int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	defer func() { _ = rows.Close() }()
	var sum int64
	for rows.Next() {
		var id, stock int64
		if err := rows.Scan(&id, &stock); err != nil {
			return 0, err
		}
		sum += stock
	}
	return sum, errors.Join(rows.Err(), rows.Close())
}

func TestNestedQueryWithSameText(t *testing.T) {
	const list = `SELECT id, stock FROM items WHERE stock >= $1 ORDER BY id`
	// nested lists, for every item, the items with at least its stock, and
	// sums their stock.
	nested := func(t *testing.T, q querier) int64 {
		ctx := t.Context()
		outer, err := q.QueryContext(ctx, list, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = outer.Close() }()
		var total int64
		for outer.Next() {
			var id, stock int64
			if err := outer.Scan(&id, &stock); err != nil {
				t.Fatal(err)
			}
			sum, err := sumStock(ctx, q, list, stock)
			if err != nil {
				t.Fatal(err)
			}
			total += sum
			var again int64
			if err := q.QueryRowContext(ctx, `SELECT stock FROM items WHERE id = $1`, id).Scan(&again); err != nil || again != stock {
				t.Fatalf("item %d stock = %d, %v, want %d", id, again, err, stock)
			}
		}
		if err := errors.Join(outer.Err(), outer.Close()); err != nil {
			t.Fatal(err)
		}
		return total
	}
	// Stocks 10, 20, 30, 40: item k sees items k..4.
	const want = (10 + 20 + 30 + 40) + (20 + 30 + 40) + (30 + 40) + 40

	tests := []struct {
		name string
		run  func(t *testing.T, conn *sql.Conn) int64
	}{{
		name: "connection",
		run:  func(t *testing.T, conn *sql.Conn) int64 { return nested(t, conn) },
	}, {
		name: "transaction",
		run: func(t *testing.T, conn *sql.Conn) int64 {
			tx, err := conn.BeginTx(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			got := nested(t, tx)
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			return got
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openCached(t, stmtCacheSize, 1)
			mustExec(t, db, `INSERT INTO items (id, name, stock) VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30), (4, 'd', 40)`)
			conn, err := db.Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			before := connStats(t, conn)
			if got := tt.run(t, conn); got != want {
				t.Errorf("nested total = %d, want %d", got, want)
			}
			// Outer: one miss; inner: four runs while the outer Rows are
			// open, so not from the cache; the point query: one miss,
			// three hits.
			wantStats := cacheStats{misses: 2, hits: 3, bypasses: 4, size: 2}
			if diff := cmp.Diff(wantStats, diffStats(before, connStats(t, conn)), allowStats); diff != "" {
				t.Errorf("cache counters (-want +got):\n%s", diff)
			}
			// With the outer Rows closed the cached statement is free again.
			if got := nested(t, conn); got != want {
				t.Errorf("second nested total = %d, want %d", got, want)
			}
			wantStats = cacheStats{misses: 2, hits: 8, bypasses: 8, size: 2}
			if diff := cmp.Diff(wantStats, diffStats(before, connStats(t, conn)), allowStats); diff != "" {
				t.Errorf("cache counters after a second run (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEvictionClosesStatements(t *testing.T) {
	const size = 4
	db := openCached(t, size, 1)
	ctx := t.Context()
	mustExec(t, db, `INSERT INTO items (id, name, stock) VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)`)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	query := func(i int) string { return fmt.Sprintf(`SELECT stock + %d FROM items WHERE id = $1`, i) }
	check := func(i int) {
		t.Helper()
		var got int64
		if err := conn.QueryRowContext(ctx, query(i), 2).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want := int64(20 + i); got != want {
			t.Errorf("query %d = %d, want %d", i, got, want)
		}
	}
	start := connStats(t, conn)
	step := func(name string, want cacheStats) {
		t.Helper()
		got := diffStats(start, connStats(t, conn))
		got.size = connStats(t, conn).size
		want.closed += start.size // the statements cached before start are evicted too
		if diff := cmp.Diff(want, got, allowStats); diff != "" {
			t.Errorf("%s: cache counters (-want +got):\n%s", name, diff)
		}
	}

	for i := range 10 {
		check(i)
	}
	step("ten distinct statements", cacheStats{misses: 10, closed: 10 - size, size: size})
	for i := 6; i < 10; i++ {
		check(i)
	}
	step("the four most recent again", cacheStats{misses: 10, hits: 4, closed: 10 - size, size: size})
	check(0)
	step("an evicted one again", cacheStats{misses: 11, hits: 4, closed: 11 - size, size: size})

	// A statement evicted while its Rows are open is closed only when they
	// are: reading them to the end proves it was not closed under them.
	const scan = `SELECT id FROM items ORDER BY id`
	rows, err := conn.QueryContext(ctx, scan)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var ids []int64
	if !rows.Next() {
		t.Fatalf("no rows: %v", rows.Err())
	}
	var id int64
	if err := rows.Scan(&id); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, id)
	// Evict it: the connection runs other statements while rows are open.
	for i := 100; i < 100+size; i++ {
		check(i)
	}
	step("busy statement evicted", cacheStats{misses: 12 + size, hits: 4, closed: 12 + size - size - 1, size: size})
	for rows.Next() {
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int64{1, 2, 3}, ids); diff != "" {
		t.Errorf("ids read across the eviction (-want +got):\n%s", diff)
	}
	step("evicted statement's Rows closed", cacheStats{misses: 12 + size, hits: 4, closed: 12 + size - size, size: size})
}

func TestMigrationScripts(t *testing.T) {
	ctx := t.Context()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "migrate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if err := db.Migrate(ctx, scripts, "testdata/scripts"); err != nil {
		t.Fatal(err)
	}
	// A script run directly: several statements, one with a ';' in a
	// string literal.
	mustExec(t, db, `UPDATE items SET stock = stock + 1 WHERE id = 2; INSERT INTO items (id, name, stock) VALUES (4, 'a;b', 40);
		UPDATE items SET stock = stock * 2 WHERE id = 4`)

	tests := []struct {
		query string
		want  string
	}{
		{`SELECT group_concat(id || ':' || name || ':' || stock, ' ') FROM (SELECT * FROM items ORDER BY id)`, "1:bolt;:11 2:nut;:21 3:washer:30 4:a;b;:80"},
		{`SELECT group_concat(item_id || ':' || stock, ' ') FROM (SELECT * FROM item_log ORDER BY rowid)`, "1:11 2:21 4:80"},
		{`SELECT count(*) FROM goose_db_version WHERE version_id > 0`, "2"},
	}
	for _, tt := range tests {
		for range 2 {
			var got string
			if err := db.QueryRowContext(ctx, tt.query).Scan(&got); err != nil {
				t.Fatalf("%s: %v", tt.query, err)
			}
			if got != tt.want {
				t.Errorf("%s = %q, want %q", tt.query, got, tt.want)
			}
		}
	}
	if s := dbStats(t, db.DB); s.bypasses == 0 || s.hits == 0 {
		t.Errorf("counters after migrations = %+v, want some bypasses and some hits", s)
	}
}

func TestSchemaChangeBetweenRuns(t *testing.T) {
	const (
		selectAll = `SELECT * FROM items WHERE id = $1`
		insert    = `INSERT INTO items (id, name, stock) VALUES ($1, $2, $3)`
	)
	// row reads the item with id 1 as text columns through selectAll.
	row := func(t *testing.T, db *sql.DB) ([]string, error) {
		rows, err := db.QueryContext(t.Context(), selectAll, 1)
		if err != nil {
			return nil, err
		}
		defer func() { _ = rows.Close() }()
		cols, err := rows.Columns()
		if err != nil {
			return nil, err
		}
		if !rows.Next() {
			return nil, errors.Join(errors.New("no row"), rows.Err())
		}
		vals := make([]sql.NullString, len(cols))
		dest := make([]any, len(cols))
		for i := range vals {
			dest[i] = &vals[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		out := make([]string, len(cols))
		for i, v := range vals {
			out[i] = cols[i] + "=" + v.String
		}
		return out, rows.Close()
	}
	tests := []struct {
		name   string
		change []string // run between the two reads
		// failing is run between change and the second read, and must fail.
		failing string
		after   []string // run after failing, before the second read
		want    []string
	}{{
		name:   "add column",
		change: []string{`ALTER TABLE items ADD COLUMN price BIGINT NOT NULL DEFAULT 7`},
		want:   []string{"id=1", "name=a", "stock=10", "price=7"},
	}, {
		name:   "rename column",
		change: []string{`ALTER TABLE items RENAME COLUMN stock TO quantity`},
		want:   []string{"id=1", "name=a", "quantity=10"},
	}, {
		name: "drop and create",
		change: []string{
			`DROP TABLE items`,
			`CREATE TABLE items (id BIGINT PRIMARY KEY, label TEXT NOT NULL, name TEXT NOT NULL, stock BIGINT NOT NULL)`,
			`INSERT INTO items (id, label, name, stock) VALUES (1, 'new', 'b', 5)`,
		},
		want: []string{"id=1", "label=new", "name=b", "stock=5"},
	}, {
		name:    "dropped, used, then created again",
		change:  []string{`DROP TABLE items`},
		failing: selectAll,
		after: []string{
			`CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, stock BIGINT NOT NULL, note TEXT)`,
			`INSERT INTO items (id, name, stock, note) VALUES (1, 'c', 3, 'n')`,
		},
		want: []string{"id=1", "name=c", "stock=3", "note=n"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openCached(t, stmtCacheSize, 1)
			mustExec(t, db, insert, 1, "a", 10)
			got, err := row(t, db)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"id=1", "name=a", "stock=10"}, got); diff != "" {
				t.Fatalf("before the change (-want +got):\n%s", diff)
			}
			for _, q := range tt.change {
				mustExec(t, db, q)
			}
			before := dbStats(t, db)
			if tt.failing != "" {
				if _, err := db.ExecContext(t.Context(), tt.failing, 1); err == nil {
					t.Fatalf("%s succeeded on a dropped table", tt.failing)
				}
				if s := diffStats(before, dbStats(t, db)); s.closed != 1 || s.size != -1 {
					t.Errorf("counters after the failure = %+v, want the failed statement closed and dropped", s)
				}
			}
			for _, q := range tt.after {
				mustExec(t, db, q)
			}
			got, err = row(t, db)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("after the change (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	tests := []struct {
		name  string
		conns int
	}{
		{"one connection", 1},
		{"four connections", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openCached(t, 8, tt.conns) // small: evictions under load too
			ctx := t.Context()
			const workers, each = 8, 30
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					errs <- concurrentWorker(ctx, db, w, each)
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			var n, sum int64
			if err := db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(stock), 0) FROM items`).Scan(&n, &sum); err != nil {
				t.Fatal(err)
			}
			if n != workers*each || sum != 2*workers*each {
				t.Errorf("items, stock = %d, %d, want %d, %d", n, sum, workers*each, 2*workers*each)
			}
		})
	}
}

// concurrentWorker inserts each items, each in a transaction that reads
// back what it wrote with nested queries, then checks them outside it.
func concurrentWorker(ctx context.Context, db *sql.DB, w, each int) error {
	for i := range each {
		id := int64(w*1000 + i)
		err := retryBusy(func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback() }()
			if _, err := tx.ExecContext(ctx, `INSERT INTO items (id, name, stock) VALUES ($1, $2, 1)`, id, fmt.Sprint("w", w)); err != nil {
				return err
			}
			rows, err := tx.QueryContext(ctx, `SELECT id FROM items WHERE name = $1 ORDER BY id`, fmt.Sprint("w", w))
			if err != nil {
				return err
			}
			defer func() { _ = rows.Close() }()
			var seen int
			for rows.Next() {
				var got int64
				if err := rows.Scan(&got); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `UPDATE items SET stock = 2 WHERE id = $1 AND stock = 1`, got); err != nil {
					return err
				}
				seen++
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return err
			}
			if seen != i+1 {
				return fmt.Errorf("worker %d saw %d of its items, want %d", w, seen, i+1)
			}
			return tx.Commit()
		})
		if err != nil {
			return err
		}
		var stock int64
		if err := db.QueryRowContext(ctx, `SELECT stock FROM items WHERE id = $1`, id).Scan(&stock); err != nil {
			return err
		}
		if stock != 2 {
			return fmt.Errorf("item %d stock = %d, want 2", id, stock)
		}
	}
	return nil
}

// retryBusy runs fn again while it fails with a busy database, as DB.Tx
// does, for the connections that compete for the write lock.
func retryBusy(fn func() error) error {
	var err error
	for range MaxAttempts {
		if err = fn(); err == nil || !Retryable(err) {
			return err
		}
	}
	return err
}

func TestOpenKeepsConnectionSettings(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "settings.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if got := db.Stats().MaxOpenConnections; got != 1 {
		t.Errorf("max open connections = %d, want 1", got)
	}
	pragmas := []struct {
		name, want string
	}{
		{"journal_mode", "wal"},
		{"busy_timeout", "10000"},
		{"foreign_keys", "1"},
		{"synchronous", "1"},
	}
	for _, p := range pragmas {
		var got string
		if err := db.QueryRowContext(ctx, "PRAGMA "+p.name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != p.want {
			t.Errorf("PRAGMA %s = %q, want %q", p.name, got, p.want)
		}
	}
	mustExec(t, db, `CREATE TABLE t (v BIGINT)`)

	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := sqlite.Limit(conn, sqlite3.SQLITE_LIMIT_LENGTH, -1); err != nil {
		t.Errorf("sqlite.Limit through the cache = %v, want the driver reached", err)
	}
	_ = connStats(t, conn) // the connection is the caching one

	// _txlock=immediate: an empty transaction already holds the write
	// lock, so another connection that will not wait cannot write.
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	_, err = other.ExecContext(ctx, `INSERT INTO t (v) VALUES (1)`)
	if !Retryable(err) {
		t.Errorf("write beside an open transaction = %v, want SQLITE_BUSY", err)
	}
}

// The rest tests the cache's bookkeeping over a fake driver connection,
// which can fail in ways SQLite cannot be made to on demand.

type fakeConn struct {
	failWith error // what the next statement run returns, then cleared
	prepared []*fakeStmt
	closed   int
	forwards int // ExecContext and QueryContext calls that reached the inner connection
}

type fakeStmt struct {
	conn   *fakeConn
	query  string
	closed int
}

func (c *fakeConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *fakeConn) PrepareContext(_ context.Context, query string) (driver.Stmt, error) {
	s := &fakeStmt{conn: c, query: query}
	c.prepared = append(c.prepared, s)
	return s, nil
}

func (c *fakeConn) Close() error                                                 { c.closed++; return nil }
func (c *fakeConn) Begin() (driver.Tx, error)                                    { return nil, errors.New("no transactions") }
func (c *fakeConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) { return c.Begin() }
func (c *fakeConn) Ping(context.Context) error                                   { return nil }
func (c *fakeConn) ResetSession(context.Context) error                           { return nil }
func (c *fakeConn) IsValid() bool                                                { return true }

func (c *fakeConn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	c.forwards++
	return driver.RowsAffected(1), nil
}

func (c *fakeConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	c.forwards++
	return &fakeRows{}, nil
}

func (c *fakeConn) takeFailure() error {
	err := c.failWith
	c.failWith = nil
	return err
}

func (s *fakeStmt) Close() error  { s.closed++; return nil }
func (s *fakeStmt) NumInput() int { return -1 }
func (s *fakeStmt) Exec([]driver.Value) (driver.Result, error) {
	return nil, errors.New("deprecated Exec called")
}
func (s *fakeStmt) Query([]driver.Value) (driver.Rows, error) {
	return nil, errors.New("deprecated Query called")
}

func (s *fakeStmt) ExecContext(context.Context, []driver.NamedValue) (driver.Result, error) {
	if err := s.conn.takeFailure(); err != nil {
		return nil, err
	}
	return driver.RowsAffected(1), nil
}

func (s *fakeStmt) QueryContext(context.Context, []driver.NamedValue) (driver.Rows, error) {
	if err := s.conn.takeFailure(); err != nil {
		return nil, err
	}
	return &fakeRows{}, nil
}

type fakeRows struct{ done bool }

func (r *fakeRows) Columns() []string { return []string{"v"} }
func (r *fakeRows) Close() error      { return nil }
func (r *fakeRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = int64(1)
	return nil
}

type checkingFakeConn struct {
	fakeConn
	checked int
}

func (c *checkingFakeConn) CheckNamedValue(*driver.NamedValue) error {
	c.checked++
	return driver.ErrSkip
}

func TestCacheBookkeeping(t *testing.T) {
	ctx := context.Background()
	exec := func(t *testing.T, c driver.Conn, query string) error {
		t.Helper()
		_, err := c.(driver.ExecerContext).ExecContext(ctx, query, nil)
		return err
	}
	closes := func(f *fakeConn) map[string]int {
		out := make(map[string]int)
		for _, s := range f.prepared {
			out[s.query] += s.closed
		}
		return out
	}
	tests := []struct {
		name string
		run  func(t *testing.T, f *fakeConn, c driver.Conn)
		// wantCloses maps each prepared statement's text to how often
		// statements of that text were closed, after run and the
		// connection's Close.
		wantCloses map[string]int
	}{{
		name: "broken connection drops the statement and propagates",
		run: func(t *testing.T, f *fakeConn, c driver.Conn) {
			if err := exec(t, c, "a"); err != nil {
				t.Fatal(err)
			}
			f.failWith = driver.ErrBadConn
			if err := exec(t, c, "a"); !errors.Is(err, driver.ErrBadConn) {
				t.Errorf("exec on a broken connection = %v, want %v", err, driver.ErrBadConn)
			}
			if got := closes(f)["a"]; got != 1 {
				t.Errorf("closes after the failure = %d, want 1", got)
			}
			if err := exec(t, c, "a"); err != nil { // prepared again
				t.Fatal(err)
			}
		},
		wantCloses: map[string]int{"a": 2},
	}, {
		name: "failed query drops the statement",
		run: func(t *testing.T, f *fakeConn, c driver.Conn) {
			f.failWith = errors.New("database schema has changed")
			if _, err := c.(driver.QueryerContext).QueryContext(ctx, "q", nil); err == nil {
				t.Error("query succeeded, want the injected failure")
			}
			if got := closes(f)["q"]; got != 1 {
				t.Errorf("closes after the failure = %d, want 1", got)
			}
		},
		wantCloses: map[string]int{"q": 1},
	}, {
		name: "eviction and close close each statement once",
		run: func(t *testing.T, f *fakeConn, c driver.Conn) {
			for _, q := range []string{"a", "b", "a", "b", "c"} { // c evicts a
				if err := exec(t, c, q); err != nil {
					t.Fatal(err)
				}
			}
			if len(f.prepared) != 3 {
				t.Errorf("prepared %d statements, want 3", len(f.prepared))
			}
			if got := closes(f); got["a"] != 1 || got["b"]+got["c"] != 0 {
				t.Errorf("closes before Close = %v, want only a's", got)
			}
		},
		wantCloses: map[string]int{"a": 1, "b": 1, "c": 1},
	}, {
		name: "open rows at close close their statement later",
		run: func(t *testing.T, f *fakeConn, c driver.Conn) {
			rows, err := c.(driver.QueryerContext).QueryContext(ctx, "q", nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if got := closes(f)["q"]; got != 0 {
				t.Errorf("statement closed under its open rows %d times", got)
			}
			if err := rows.Close(); err != nil {
				t.Fatal(err)
			}
			if err := rows.Close(); err != nil { // a second Close releases nothing
				t.Fatal(err)
			}
		},
		wantCloses: map[string]int{"q": 1},
	}, {
		name: "busy statement: the inner connection runs the query",
		run: func(t *testing.T, f *fakeConn, c driver.Conn) {
			rows, err := c.(driver.QueryerContext).QueryContext(ctx, "q", nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := exec(t, c, "q"); err != nil {
				t.Fatal(err)
			}
			if f.forwards != 1 || len(f.prepared) != 1 {
				t.Errorf("forwards, prepared = %d, %d, want 1, 1", f.forwards, len(f.prepared))
			}
			if err := rows.Close(); err != nil {
				t.Fatal(err)
			}
		},
		wantCloses: map[string]int{"q": 1},
	}, {
		name: "several statements: the inner connection runs them",
		run: func(t *testing.T, f *fakeConn, c driver.Conn) {
			if err := exec(t, c, "a; b"); err != nil {
				t.Fatal(err)
			}
			if f.forwards != 1 || len(f.prepared) != 0 {
				t.Errorf("forwards, prepared = %d, %d, want 1, 0", f.forwards, len(f.prepared))
			}
		},
		wantCloses: map[string]int{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeConn{}
			c := wrapConn(f, 2)
			tt.run(t, f, c)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantCloses, closes(f)); diff != "" {
				t.Errorf("statement closes (-want +got):\n%s", diff)
			}
			if f.closed < 1 {
				t.Error("inner connection not closed")
			}
		})
	}
}

func TestWrapConnForwardsOrStepsAside(t *testing.T) {
	checking := &checkingFakeConn{}
	c := wrapConn(checking, 2)
	nvc, ok := c.(driver.NamedValueChecker)
	if !ok {
		t.Fatalf("wrapped %T does not check named values", c)
	}
	if err := nvc.CheckNamedValue(&driver.NamedValue{}); !errors.Is(err, driver.ErrSkip) || checking.checked != 1 {
		t.Errorf("CheckNamedValue = %v after %d calls, want %v after 1", err, checking.checked, driver.ErrSkip)
	}
	if u, ok := c.(interface{ Unwrap() driver.Conn }); !ok || u.Unwrap() != driver.Conn(checking) {
		t.Error("wrapped connection does not unwrap to the inner one")
	}
	if _, ok := wrapConn(&fakeConn{}, 2).(driver.NamedValueChecker); ok {
		t.Error("wrapper checks named values the inner connection does not")
	}
	type bare struct{ driver.Conn }
	b := bare{Conn: &fakeConn{}}
	if got := wrapConn(b, 2); got != driver.Conn(b) {
		t.Errorf("connection lacking the optional interfaces wrapped as %T", got)
	}
	if got, ok := wrapConn(&fakeConn{}, 0).(*fakeConn); !ok {
		t.Errorf("size 0 wrapped the connection as %T", got)
	}
}

func BenchmarkSQLiteCachedVsUncached(b *testing.B) {
	open := map[string]func(tb testing.TB, path string) *sql.DB{
		"uncached": func(tb testing.TB, path string) *sql.DB {
			db, err := sql.Open("sqlite", sqliteDSN(path))
			if err != nil {
				tb.Fatal(err)
			}
			db.SetMaxOpenConns(1)
			return db
		},
		"cached": func(tb testing.TB, path string) *sql.DB {
			db, err := Open(context.Background(), path)
			if err != nil {
				tb.Fatal(err)
			}
			return db.DB
		},
	}
	for _, name := range []string{"uncached", "cached"} {
		b.Run(name, func(b *testing.B) {
			db := open[name](b, filepath.Join(b.TempDir(), "bench.db"))
			defer func() { _ = db.Close() }()
			ctx := context.Background()
			mustExec(b, db, `CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, total BIGINT NOT NULL, created_us BIGINT NOT NULL)`)
			b.ReportAllocs()
			var id int64
			for b.Loop() {
				id++
				if _, err := db.ExecContext(ctx, `INSERT INTO orders (id, customer, total, created_us) VALUES ($1, $2, $3, $4)`, id, "customer-7", id*3, id); err != nil {
					b.Fatal(err)
				}
				var customer string
				var total int64
				if err := db.QueryRowContext(ctx, `SELECT customer, total FROM orders WHERE id = $1`, id).Scan(&customer, &total); err != nil {
					b.Fatal(err)
				}
				if _, err := db.ExecContext(ctx, `UPDATE orders SET total = total + $1 WHERE id = $2 AND total >= 0`, 1, id); err != nil {
					b.Fatal(err)
				}
				var n int64
				if err := db.QueryRowContext(ctx, `SELECT count(*) FROM orders WHERE id BETWEEN $1 AND $2 AND customer = $3`, id-10, id, customer).Scan(&n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
