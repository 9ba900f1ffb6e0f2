package sqldb

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// stmtCacheSize bounds the prepared statements one SQLite connection keeps.
// The services issue a few dozen distinct statements each; the bound only
// matters for callers that build SQL text dynamically.
const stmtCacheSize = 256

// cachingConnector opens connections through inner and wraps each one in a
// cachingConn, so that database/sql's Exec and Query calls, which prepare
// their statement anew on every call, run a statement the connection
// prepared before instead.
type cachingConnector struct {
	inner driver.Connector
	size  int
}

// newCachingConnector returns a connector whose connections each cache up
// to size prepared statements.
func newCachingConnector(inner driver.Connector, size int) *cachingConnector {
	return &cachingConnector{inner: inner, size: size}
}

// Connect opens a connection and wraps it.
func (c *cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return wrapConn(conn, c.size), nil
}

// Driver returns the inner connector's driver.
func (c *cachingConnector) Driver() driver.Driver { return c.inner.Driver() }

// innerConn is what a connection must offer to be wrapped: every optional
// interface modernc.org/sqlite's connections implement. The wrapper
// implements the same set, so database/sql treats a wrapped connection
// exactly as it treats the bare one.
type innerConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// wrapConn wraps conn in a statement cache of the given size. A connection
// lacking one of innerConn's interfaces, or a size below one, is returned
// unchanged: a wrapper would change how database/sql drives it.
func wrapConn(conn driver.Conn, size int) driver.Conn {
	in, ok := conn.(innerConn)
	if !ok || size < 1 {
		return conn
	}
	c := &cachingConn{
		inner:   in,
		size:    size,
		lru:     list.New(),
		byQuery: make(map[string]*list.Element),
	}
	if nvc, ok := conn.(driver.NamedValueChecker); ok {
		return &checkingConn{cachingConn: c, nvc: nvc}
	}
	return c
}

// checkingConn is a cachingConn whose inner connection also checks and
// converts arguments itself.
type checkingConn struct {
	*cachingConn
	nvc driver.NamedValueChecker
}

// CheckNamedValue forwards to the inner connection.
func (c *checkingConn) CheckNamedValue(v *driver.NamedValue) error { return c.nvc.CheckNamedValue(v) }

// cachedStmt is a prepared statement of a cachingConn.
type cachedStmt struct {
	query string
	stmt  driver.Stmt
	exec  driver.StmtExecContext
	rows  driver.StmtQueryContext
	elem  *list.Element // its place in the LRU list; nil once it left the cache
	// busy is set while the statement runs or its Rows are open: SQLite
	// runs one execution of a statement at a time, so a second use of the
	// same text meanwhile goes to a fresh statement.
	busy bool
}

// cacheStats counts what a cachingConn did, for tests.
type cacheStats struct {
	hits     int // statements run from the cache
	misses   int // statements prepared and cached
	bypasses int // statements run without the cache: several statements, or the cached one busy
	closed   int // cached statements closed: evicted, failed, or with the connection
	size     int // statements in the cache now
}

// cachingConn is a driver connection that keeps a bounded LRU cache of
// prepared statements keyed by their SQL text and runs ExecContext and
// QueryContext calls on them. database/sql uses a connection from one
// goroutine at a time, but a Rows may be closed from another goroutine when
// its context ends, so the cache is guarded by mu; statements run outside
// it.
type cachingConn struct {
	inner innerConn
	size  int

	mu      sync.Mutex
	lru     *list.List // of *cachedStmt, most recently used first
	byQuery map[string]*list.Element
	closed  bool
	counts  cacheStats
}

// Unwrap returns the inner connection, through which sqlite.Limit and
// database/sql's Conn.Raw callers reach the driver's own methods.
func (c *cachingConn) Unwrap() driver.Conn { return c.inner }

// Prepare forwards to the inner connection: a statement the caller
// prepares is the caller's to close and is not cached.
func (c *cachingConn) Prepare(query string) (driver.Stmt, error) { return c.inner.Prepare(query) }

// PrepareContext forwards to the inner connection, see Prepare.
func (c *cachingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.inner.PrepareContext(ctx, query)
}

// Begin forwards to the inner connection; database/sql calls BeginTx.
func (c *cachingConn) Begin() (driver.Tx, error) { return c.inner.Begin() }

// BeginTx forwards to the inner connection. Cached statements stay valid
// across BEGIN, COMMIT and ROLLBACK.
func (c *cachingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.inner.BeginTx(ctx, opts)
}

// Ping forwards to the inner connection.
func (c *cachingConn) Ping(ctx context.Context) error { return c.inner.Ping(ctx) }

// ResetSession forwards to the inner connection.
func (c *cachingConn) ResetSession(ctx context.Context) error { return c.inner.ResetSession(ctx) }

// IsValid forwards to the inner connection.
func (c *cachingConn) IsValid() bool { return c.inner.IsValid() }

// Close closes the cached statements and then the inner connection. A
// statement whose Rows are still open is closed when they are.
func (c *cachingConn) Close() error {
	c.mu.Lock()
	c.closed = true
	var idle []driver.Stmt
	for el := c.lru.Front(); el != nil; el = el.Next() {
		cs := el.Value.(*cachedStmt)
		cs.elem = nil
		if !cs.busy {
			idle = append(idle, cs.stmt)
			c.counts.closed++
		}
	}
	c.lru.Init()
	clear(c.byQuery)
	c.mu.Unlock()
	errs := make([]error, 0, len(idle)+1)
	for _, s := range idle {
		errs = append(errs, s.Close())
	}
	errs = append(errs, c.inner.Close())
	return errors.Join(errs...)
}

// ExecContext runs query on its cached statement, preparing and caching it
// first if needed. Text that may hold several statements, and text whose
// cached statement is busy, runs on the inner connection as before.
func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.acquire(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.inner.ExecContext(ctx, query, args)
	}
	res, err := cs.exec.ExecContext(ctx, args)
	c.release(cs, err)
	return res, err
}

// QueryContext runs query on its cached statement like ExecContext. The
// statement stays busy until the returned Rows are closed.
func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.acquire(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.inner.QueryContext(ctx, query, args)
	}
	rows, err := cs.rows.QueryContext(ctx, args)
	if err != nil {
		c.release(cs, err)
		return nil, err
	}
	return &cachedRows{Rows: rows, conn: c, stmt: cs}, nil
}

// acquire returns query's cached statement marked busy, preparing and
// caching it on a miss. It returns nil, nil when query is to bypass the
// cache.
func (c *cachingConn) acquire(ctx context.Context, query string) (*cachedStmt, error) {
	if !singleStatement(query) {
		c.bypassed()
		return nil, nil
	}
	c.mu.Lock()
	if el, ok := c.byQuery[query]; ok {
		cs := el.Value.(*cachedStmt)
		if cs.busy {
			c.counts.bypasses++
			c.mu.Unlock()
			return nil, nil
		}
		cs.busy = true
		c.lru.MoveToFront(el)
		c.counts.hits++
		c.mu.Unlock()
		return cs, nil
	}
	c.mu.Unlock()

	st, err := c.inner.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	exec, okExec := st.(driver.StmtExecContext)
	rows, okQuery := st.(driver.StmtQueryContext)
	if !okExec || !okQuery {
		c.bypassed()
		_ = st.Close() // unused; the inner connection prepares its own
		return nil, nil
	}
	cs := &cachedStmt{query: query, stmt: st, exec: exec, rows: rows, busy: true}

	c.mu.Lock()
	c.counts.misses++
	if _, taken := c.byQuery[query]; taken || c.closed {
		// Not cached: closed when released.
		c.mu.Unlock()
		return cs, nil
	}
	cs.elem = c.lru.PushFront(cs)
	c.byQuery[query] = cs.elem
	var evicted []driver.Stmt
	for c.lru.Len() > c.size {
		old := c.lru.Back().Value.(*cachedStmt)
		c.removeLocked(old)
		if !old.busy { // a busy one is closed when released
			evicted = append(evicted, old.stmt)
			c.counts.closed++
		}
	}
	c.mu.Unlock()
	for _, s := range evicted {
		_ = s.Close() // finalizing reports only errors its last run already returned
	}
	return cs, nil
}

// release marks cs idle after a run that ended with err. It closes cs if cs
// has left the cache meanwhile, or if err may have left it unusable.
func (c *cachingConn) release(cs *cachedStmt, err error) {
	c.mu.Lock()
	cs.busy = false
	if err != nil && !keepAfter(err) && cs.elem != nil {
		c.removeLocked(cs)
	}
	drop := cs.elem == nil
	if drop {
		c.counts.closed++
	}
	c.mu.Unlock()
	if drop {
		_ = cs.stmt.Close() // the run's own error, if any, is what the caller sees
	}
}

// removeLocked takes cs out of the cache.
func (c *cachingConn) removeLocked(cs *cachedStmt) {
	c.lru.Remove(cs.elem)
	delete(c.byQuery, cs.query)
	cs.elem = nil
}

func (c *cachingConn) bypassed() {
	c.mu.Lock()
	c.counts.bypasses++
	c.mu.Unlock()
}

// stats returns the cache's counters.
func (c *cachingConn) stats() cacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.counts
	s.size = c.lru.Len()
	return s
}

// keepAfter reports whether a statement whose run failed with err can stay
// cached: only after the errors a healthy statement returns in normal use,
// a violated constraint and a lock held by another connection. Anything
// else (a schema change, an interrupt or ended context, a broken connection)
// drops it, and the next run prepares it again.
func keepAfter(err error) bool {
	var lite *sqlite.Error
	if !errors.As(err, &lite) {
		return false
	}
	switch lite.Code() & 0xff {
	case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return true
	}
	return false
}

// singleStatement reports whether query surely holds one SQL statement:
// it has no ';' followed by anything but white space. A ';' inside a string
// literal, a comment or a trigger body makes the answer false, which only
// costs the cache.
func singleStatement(query string) bool {
	i := strings.IndexByte(query, ';')
	return i < 0 || strings.TrimSpace(query[i+1:]) == ""
}

// cachedRows are the Rows of a cached statement; closing them releases the
// statement.
type cachedRows struct {
	driver.Rows
	conn     *cachingConn
	stmt     *cachedStmt
	err      error // the first error Next returned other than io.EOF
	released bool
}

// Next forwards to the inner Rows, remembering a failure.
func (r *cachedRows) Next(dest []driver.Value) error {
	err := r.Rows.Next(dest)
	if err != nil && !errors.Is(err, io.EOF) && r.err == nil {
		r.err = err
	}
	return err
}

// Close closes the inner Rows and releases the statement.
func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	if !r.released {
		r.released = true
		failure := r.err
		if failure == nil {
			failure = err
		}
		r.conn.release(r.stmt, failure)
	}
	return err
}

// HasNextResultSet forwards to the inner Rows if it has several result sets.
func (r *cachedRows) HasNextResultSet() bool {
	if n, ok := r.Rows.(driver.RowsNextResultSet); ok {
		return n.HasNextResultSet()
	}
	return false
}

// NextResultSet forwards to the inner Rows if it has several result sets.
func (r *cachedRows) NextResultSet() error {
	if n, ok := r.Rows.(driver.RowsNextResultSet); ok {
		return n.NextResultSet()
	}
	return io.EOF
}

// ColumnTypeScanType forwards to the inner Rows, or reports what
// database/sql assumes when the driver does not say.
func (r *cachedRows) ColumnTypeScanType(index int) reflect.Type {
	if p, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return p.ColumnTypeScanType(index)
	}
	return reflect.TypeFor[any]()
}

// ColumnTypeDatabaseTypeName forwards to the inner Rows.
func (r *cachedRows) ColumnTypeDatabaseTypeName(index int) string {
	if p, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return p.ColumnTypeDatabaseTypeName(index)
	}
	return ""
}

// ColumnTypeLength forwards to the inner Rows.
func (r *cachedRows) ColumnTypeLength(index int) (int64, bool) {
	if p, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return p.ColumnTypeLength(index)
	}
	return 0, false
}

// ColumnTypeNullable forwards to the inner Rows.
func (r *cachedRows) ColumnTypeNullable(index int) (nullable, ok bool) {
	if p, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return p.ColumnTypeNullable(index)
	}
	return false, false
}

// ColumnTypePrecisionScale forwards to the inner Rows.
func (r *cachedRows) ColumnTypePrecisionScale(index int) (precision, scale int64, ok bool) {
	if p, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return p.ColumnTypePrecisionScale(index)
	}
	return 0, 0, false
}
