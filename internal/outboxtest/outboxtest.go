// Package outboxtest reads what services wrote to their event outbox, for
// their tests.
package outboxtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
)

// Rows returns "<short type> <subject>" of every outbox row with a
// sequence above after, in order (the short type drops the
// "switchboard.events.v1." prefix), and the last sequence read, to pass
// as after next time.
func Rows(t *testing.T, db *sqldb.DB, after int64) ([]string, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SELECT seq, type, subject FROM events_outbox WHERE seq > $1 ORDER BY seq", after)
	if err != nil {
		t.Fatalf("read the outbox: %v", err)
	}
	defer func() { _ = rows.Close() }()
	var got []string
	last := after
	for rows.Next() {
		var typ, subject string
		if err := rows.Scan(&last, &typ, &subject); err != nil {
			t.Fatalf("read the outbox: %v", err)
		}
		got = append(got, strings.TrimPrefix(typ, "switchboard.events.v1.")+" "+subject)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read the outbox: %v", err)
	}
	return got, last
}
