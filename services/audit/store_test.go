package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/services/audit"
)

// TestCanonical checks the canonical encoding against the layout the
// package documents, built here byte by byte.
func TestCanonical(t *testing.T) {
	t.Parallel()
	r := &audit.Record{
		Seq: 258, EventID: "ev-1", EventType: "switchboard.events.v1.OrderPlaced", Source: "order", Subject: "o-1",
		EventTime:  time.UnixMicro(1_700_000_000_000_001),
		RecordTime: time.UnixMicro(1_700_000_000_000_002),
		Payload:    []byte{0, 1, 2, 0xff},
	}
	var want []byte
	want = append(want, "switchboard.audit.v1"...)
	want = append(want, 0, 0, 0, 0, 0, 0, 1, 2) // 258
	for _, s := range []string{"ev-1", "switchboard.events.v1.OrderPlaced", "order", "o-1"} {
		want = binary.BigEndian.AppendUint32(want, uint32(len(s)))
		want = append(want, s...)
	}
	want = binary.BigEndian.AppendUint64(want, 1_700_000_000_000_001)
	want = binary.BigEndian.AppendUint64(want, 1_700_000_000_000_002)
	want = append(want, 0, 0, 0, 4, 0, 1, 2, 0xff)
	if got := audit.Canonical(r); !bytes.Equal(got, want) {
		t.Errorf("Canonical = %x, want %x", got, want)
	}
	prev := bytes.Repeat([]byte{7}, audit.HashSize)
	sum := sha256.Sum256(append(slices.Clone(prev), want...))
	if got := audit.Hash(prev, r); !bytes.Equal(got, sum[:]) {
		t.Errorf("Hash = %x, want SHA-256(prev || canonical) = %x", got, sum)
	}

	// A zero event time is encoded as 0.
	noTime := *r
	noTime.EventTime = time.Time{}
	if got := audit.Canonical(&noTime)[len(audit.Canonical(&noTime))-24 : len(audit.Canonical(&noTime))-16]; !bytes.Equal(got, make([]byte, 8)) {
		t.Errorf("zero event time encodes as %x, want 8 zero bytes", got)
	}
}

// TestHashSeparatesFields: moving bytes between fields, or changing any
// one field, changes the hash.
func TestHashSeparatesFields(t *testing.T) {
	t.Parallel()
	base := audit.Record{Seq: 1, EventID: "a", EventType: "t", Source: "ab", Subject: "c", Payload: []byte("p"),
		RecordTime: time.UnixMicro(5)}
	changes := map[string]func(r *audit.Record){
		"shifted boundary":  func(r *audit.Record) { r.Source, r.Subject = "a", "bc" },
		"seq":               func(r *audit.Record) { r.Seq = 2 },
		"event id":          func(r *audit.Record) { r.EventID = "b" },
		"type":              func(r *audit.Record) { r.EventType = "u" },
		"payload":           func(r *audit.Record) { r.Payload = []byte("q") },
		"event time":        func(r *audit.Record) { r.EventTime = time.UnixMicro(1) },
		"record time":       func(r *audit.Record) { r.RecordTime = time.UnixMicro(6) },
		"payload into subj": func(r *audit.Record) { r.Subject, r.Payload = "cp", nil },
	}
	h0 := audit.Hash(audit.ZeroHash, &base)
	for name, change := range changes {
		r := base
		change(&r)
		if bytes.Equal(audit.Hash(audit.ZeroHash, &r), h0) {
			t.Errorf("%s: hash unchanged", name)
		}
	}
	if bytes.Equal(audit.Hash(bytes.Repeat([]byte{1}, audit.HashSize), &base), h0) {
		t.Error("another prev_hash gives the same hash")
	}
}

func entry(i int, typ, subject string) audit.Entry {
	return audit.Entry{
		EventID: fmt.Sprintf("ev-%d-%d", time.Now().UnixNano(), i), EventType: typ, Source: "test", Subject: subject,
		EventTime: time.UnixMicro(1_700_000_000_000_000 + int64(i)).UTC(), Payload: []byte(fmt.Sprintf("payload %d", i)),
	}
}

// appendEntry appends e in a transaction of its own.
func appendEntry(ctx context.Context, db *sqldb.DB, store audit.Store, e audit.Entry, now time.Time) (audit.Record, bool, error) {
	var (
		r  audit.Record
		ok bool
	)
	err := db.Tx(ctx, func(tx *sql.Tx) error {
		var err error
		r, ok, err = store.Append(ctx, tx, e, now)
		return err
	})
	return r, ok, err
}

func TestStore(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := t.Context()
		store := audit.NewStore(db)
		t0 := time.Now().Truncate(time.Microsecond).UTC()

		h, err := store.Head(ctx)
		if err != nil || h.Seq != 0 || !bytes.Equal(h.Hash, audit.ZeroHash) {
			t.Fatalf("Head of an empty log = %+v, %v, want 0 and 32 zero bytes", h, err)
		}

		// The chain links: 1..5, each prev_hash the hash before, each hash
		// Hash(prev, record).
		var appended []audit.Record
		types := []string{"A", "B", "A", "C", "A"}
		for i, typ := range types {
			r, ok, err := appendEntry(ctx, db, store, entry(i, typ, fmt.Sprintf("s%d", i%2)), t0.Add(time.Duration(i)*time.Second))
			if err != nil || !ok {
				t.Fatalf("Append %d = %v, %v", i, ok, err)
			}
			appended = append(appended, r)
		}
		prev := audit.ZeroHash
		for i, r := range appended {
			if r.Seq != int64(i+1) || !bytes.Equal(r.PrevHash, prev) || !bytes.Equal(r.Hash, audit.Hash(prev, &r)) {
				t.Errorf("record %d = seq %d prev %x hash %x, want seq %d linked to %x", i, r.Seq, r.PrevHash, r.Hash, i+1, prev)
			}
			prev = r.Hash
		}
		stored, err := store.Range(ctx, 1, 100, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(stored) != len(appended) {
			t.Fatalf("Range = %d records, want %d", len(stored), len(appended))
		}
		for i := range stored {
			a, s := appended[i], stored[i]
			if s.Seq != a.Seq || s.EventID != a.EventID || !s.EventTime.Equal(a.EventTime) || !s.RecordTime.Equal(a.RecordTime) ||
				!bytes.Equal(s.Payload, a.Payload) || !bytes.Equal(s.Hash, a.Hash) || !bytes.Equal(s.PrevHash, a.PrevHash) {
				t.Errorf("stored record %d = %+v, want %+v", i+1, s, a)
			}
		}
		h, err = store.Head(ctx)
		if err != nil || h.Seq != 5 || !bytes.Equal(h.Hash, appended[4].Hash) {
			t.Errorf("Head = %d %x, %v, want 5 %x", h.Seq, h.Hash, err, appended[4].Hash)
		}

		// The same event id again appends nothing.
		dup := entry(9, "A", "s0")
		dup.EventID = appended[2].EventID
		if r, ok, err := appendEntry(ctx, db, store, dup, t0); ok || err != nil {
			t.Errorf("Append of a recorded event id = %+v, %v, %v, want nothing", r, ok, err)
		}

		// A rolled-back append leaves no trace: the next one takes 6.
		boom := errors.New("rollback")
		err = db.Tx(ctx, func(tx *sql.Tx) error {
			if _, _, err := store.Append(ctx, tx, entry(10, "A", "s0"), t0); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Tx = %v, want the rollback", err)
		}
		r, ok, err := appendEntry(ctx, db, store, entry(11, "B", "s1"), t0)
		if err != nil || !ok || r.Seq != 6 || !bytes.Equal(r.PrevHash, appended[4].Hash) {
			t.Errorf("Append after a rollback = seq %d prev %x, %v, %v; want 6 linked to record 5", r.Seq, r.PrevHash, ok, err)
		}

		seqs := func(recs []audit.Record) []int64 {
			var out []int64
			for _, r := range recs {
				out = append(out, r.Seq)
			}
			return out
		}
		tests := []struct {
			name  string
			fetch func() ([]audit.Record, error)
			want  []int64
		}{
			{"Records all", func() ([]audit.Record, error) { return store.Records(ctx, 0, 6, nil, 100) }, []int64{1, 2, 3, 4, 5, 6}},
			{"Records after 2 up to 5", func() ([]audit.Record, error) { return store.Records(ctx, 2, 5, nil, 100) }, []int64{3, 4, 5}},
			{"Records of A and C", func() ([]audit.Record, error) { return store.Records(ctx, 0, 6, []string{"A", "C"}, 100) }, []int64{1, 3, 4, 5}},
			{"Records limit", func() ([]audit.Record, error) { return store.Records(ctx, 0, 6, nil, 2) }, []int64{1, 2}},
			{"Query type", func() ([]audit.Record, error) { return store.Query(ctx, audit.Filter{EventType: "A"}, 0, 100) }, []int64{1, 3, 5}},
			{"Query subject after", func() ([]audit.Record, error) { return store.Query(ctx, audit.Filter{Subject: "s0"}, 1, 100) }, []int64{3, 5}},
			{"Query time", func() ([]audit.Record, error) {
				return store.Query(ctx, audit.Filter{Start: appended[1].EventTime, End: appended[3].EventTime}, 0, 100)
			}, []int64{2, 3}},
			{"Range", func() ([]audit.Record, error) { return store.Range(ctx, 2, 3, 100) }, []int64{2, 3}},
		}
		for _, tc := range tests {
			recs, err := tc.fetch()
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			if got := seqs(recs); !slices.Equal(got, tc.want) {
				t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
			}
		}
	})
}

// TestConcurrentAppends: appends from many goroutines, on PostgreSQL with
// as many connections, number the log without gaps and keep it linked.
func TestConcurrentAppends(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := t.Context()
		store := audit.NewStore(db)
		const workers, each = 8, 15
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					if _, ok, err := appendEntry(ctx, db, store, entry(w*each+i, "A", fmt.Sprintf("w%d", w)), time.Now()); err != nil || !ok {
						errs <- fmt.Errorf("worker %d append %d: %v, %w", w, i, ok, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		recs, err := store.Range(ctx, 1, workers*each+10, workers*each+10)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != workers*each {
			t.Fatalf("%d records, want %d", len(recs), workers*each)
		}
		prev := audit.ZeroHash
		for i := range recs {
			r := &recs[i]
			if r.Seq != int64(i+1) || !bytes.Equal(r.PrevHash, prev) || !bytes.Equal(r.Hash, audit.Hash(prev, r)) {
				t.Fatalf("record %d (seq %d) breaks the chain", i+1, r.Seq)
			}
			prev = r.Hash
		}
		if h, err := store.Head(ctx); err != nil || h.Seq != workers*each || !bytes.Equal(h.Hash, prev) {
			t.Errorf("Head = %d %x, %v, want %d %x", h.Seq, h.Hash, err, workers*each, prev)
		}
	})
}
