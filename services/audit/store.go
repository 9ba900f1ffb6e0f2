package audit

import (
	"context"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
)

// Migrations holds the goose migrations of the audit schema, in
// MigrationsDir.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// MigrationsDir is the directory of Migrations that holds them.
const MigrationsDir = "migrations"

// Entry is what Store.Append records: an event's attributes and the
// marshalled envelope.
type Entry struct {
	EventID   string
	EventType string
	Source    string
	Subject   string
	// EventTime is zero when the event carried no time.
	EventTime time.Time
	Payload   []byte
}

// Filter selects records for Store.Query; zero fields match everything.
type Filter struct {
	EventType string
	Subject   string
	// Start and End bound the event time: Start <= time < End.
	Start, End time.Time
}

// Head is the head of the chain: the newest record's sequence number and
// hash (0 and ZeroHash for an empty log).
type Head struct {
	Seq  int64
	Hash []byte
}

// Store keeps the audit log. Records are only appended. Every method is
// safe for concurrent use, also by several processes on one database, and
// times are stored with microsecond precision.
type Store interface {
	// Append appends e as the next record within tx, the transaction of
	// the caller, and returns it with appended true. It takes the head of
	// the chain with an UPDATE that holds its row lock until tx ends, so
	// concurrent appends serialize and the log stays gap-free and linked.
	// An event id already in the log appends nothing and returns false.
	// It touches the database only through tx and may be re-run after a
	// rollback.
	Append(ctx context.Context, tx *sql.Tx, e Entry, now time.Time) (Record, bool, error)
	// Head returns the head of the chain as committed.
	Head(ctx context.Context) (Head, error)
	// Records returns at most limit records with after < seq <= upTo, of
	// one of types when types is not empty, in sequence order.
	Records(ctx context.Context, after, upTo int64, types []string, limit int) ([]Record, error)
	// Query returns at most limit records matching f with seq above
	// after, in sequence order.
	Query(ctx context.Context, f Filter, after int64, limit int) ([]Record, error)
	// Range returns at most limit records with from <= seq <= to, in
	// sequence order, as stored (the verifier checks them).
	Range(ctx context.Context, from, to int64, limit int) ([]Record, error)
}

// NewStore returns the Store on db, whose schema Migrations must have
// created. It is safe for concurrent use; the caller closes db.
func NewStore(db *sqldb.DB) Store { return &sqlStore{db: db} }

// sqlStore is the Store on SQLite or PostgreSQL, in the portable dialect.
type sqlStore struct {
	db *sqldb.DB
}

var _ Store = (*sqlStore)(nil)

const selectRecord = `SELECT seq, event_id, event_type, source, subject, event_us, record_us, payload, prev_hash, hash FROM audit_log`

func (s *sqlStore) Append(ctx context.Context, tx *sql.Tx, e Entry, now time.Time) (Record, bool, error) {
	var seq int64
	err := tx.QueryRowContext(ctx, `SELECT seq FROM audit_log WHERE event_id = $1`, e.EventID).Scan(&seq)
	switch {
	case err == nil:
		return Record{}, false, nil
	case !errors.Is(err, sql.ErrNoRows):
		return Record{}, false, fmt.Errorf("append audit record: %w", err)
	}
	var prevHex string
	if err := tx.QueryRowContext(ctx, `UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash`).
		Scan(&seq, &prevHex); err != nil {
		return Record{}, false, fmt.Errorf("append audit record: take the chain head: %w", err)
	}
	prev, err := hex.DecodeString(prevHex)
	if err != nil || len(prev) != HashSize {
		return Record{}, false, fmt.Errorf("append audit record: chain head hash %q is not %d hex bytes", prevHex, HashSize)
	}
	r := Record{
		Seq: seq, EventID: e.EventID, EventType: e.EventType, Source: e.Source, Subject: e.Subject,
		EventTime: fromMicros(micros(e.EventTime)), RecordTime: sqldb.Time(sqldb.Micros(now)),
		Payload: e.Payload, PrevHash: prev,
	}
	r.Hash = Hash(prev, &r)
	h := hex.EncodeToString(r.Hash)
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_log (seq, event_id, event_type, source, subject, event_us,
		record_us, payload, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		r.Seq, r.EventID, r.EventType, r.Source, r.Subject, micros(r.EventTime), micros(r.RecordTime),
		r.Payload, prevHex, h); err != nil {
		return Record{}, false, fmt.Errorf("append audit record %d: %w", seq, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET hash = $2 WHERE id = 1 AND seq = $1`, seq, h); err != nil {
		return Record{}, false, fmt.Errorf("append audit record: advance the chain head: %w", err)
	}
	return r, true, nil
}

func (s *sqlStore) Head(ctx context.Context) (Head, error) {
	var (
		h       Head
		hashHex string
	)
	if err := s.db.Reader().QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&h.Seq, &hashHex); err != nil {
		return Head{}, fmt.Errorf("audit head: %w", err)
	}
	h.Hash = decodeHash(hashHex)
	return h, nil
}

func (s *sqlStore) Records(ctx context.Context, after, upTo int64, types []string, limit int) ([]Record, error) {
	var q strings.Builder
	q.WriteString(selectRecord + ` WHERE seq > $1 AND seq <= $2`)
	args := []any{after, upTo}
	if len(types) > 0 {
		q.WriteString(` AND event_type IN (`)
		for i, t := range types {
			if i > 0 {
				q.WriteString(", ")
			}
			args = append(args, t)
			fmt.Fprintf(&q, "$%d", len(args))
		}
		q.WriteString(`)`)
	}
	args = append(args, limit)
	fmt.Fprintf(&q, ` ORDER BY seq LIMIT $%d`, len(args))
	out, err := s.records(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("audit records: %w", err)
	}
	return out, nil
}

func (s *sqlStore) Query(ctx context.Context, f Filter, after int64, limit int) ([]Record, error) {
	var q strings.Builder
	q.WriteString(selectRecord + ` WHERE seq > $1`)
	args := []any{after}
	add := func(cond string, v any) {
		args = append(args, v)
		fmt.Fprintf(&q, " AND "+cond, len(args))
	}
	if f.EventType != "" {
		add("event_type = $%d", f.EventType)
	}
	if f.Subject != "" {
		add("subject = $%d", f.Subject)
	}
	if !f.Start.IsZero() {
		add("event_us >= $%d", sqldb.Micros(f.Start))
	}
	if !f.End.IsZero() {
		add("event_us < $%d", sqldb.Micros(f.End))
	}
	args = append(args, limit)
	fmt.Fprintf(&q, ` ORDER BY seq LIMIT $%d`, len(args))
	out, err := s.records(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("query audit log: %w", err)
	}
	return out, nil
}

func (s *sqlStore) Range(ctx context.Context, from, to int64, limit int) ([]Record, error) {
	out, err := s.records(ctx, selectRecord+` WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3`, from, to, limit)
	if err != nil {
		return nil, fmt.Errorf("audit range: %w", err)
	}
	return out, nil
}

// records runs a query selecting selectRecord's columns.
func (s *sqlStore) records(ctx context.Context, query string, args ...any) ([]Record, error) {
	rows, err := s.db.Reader().QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []Record
	for rows.Next() {
		var (
			r              Record
			eus, rus       int64
			prevHex, hashH string
		)
		if err := rows.Scan(&r.Seq, &r.EventID, &r.EventType, &r.Source, &r.Subject, &eus, &rus, &r.Payload, &prevHex, &hashH); err != nil {
			return nil, err
		}
		r.EventTime, r.RecordTime = fromMicros(eus), sqldb.Time(rus)
		r.PrevHash, r.Hash = decodeHash(prevHex), decodeHash(hashH)
		out = append(out, r)
	}
	return out, rows.Err()
}

// decodeHash decodes a stored hex hash. A value that is not hex (a
// tampered row) decodes to nil, which matches no hash: the verifier
// reports the record.
func decodeHash(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}
