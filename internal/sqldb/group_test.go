package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// queued returns how many Tx calls wait for the group commit.
func (g *grouper) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// outcome is what one Tx call of a group saw and returned.
type outcome struct {
	tx    *sql.Tx // the transaction of its last run
	runs  int
	err   error
	panic any
}

// TestGroupCommit queues Tx calls behind one that holds the writer, so that
// they run as one group, and checks what each call returns, which rows
// committed, and that a call that fails or panics in the group costs the
// others only a run of their own.
func TestGroupCommit(t *testing.T) {
	errRefused := errors.New("refused")
	const n = 6
	tests := []struct {
		name string
		// job says what call i does after inserting its row: nil, an
		// error, or a panic ("panic").
		job func(i int) any
		// cancel cancels call i's context before the group runs.
		cancel int
		// wantTogether: every call committed in the group's transaction.
		wantTogether bool
		wantErr      map[int]error
		wantPanic    map[int]bool
	}{
		{name: "all commit together", job: func(int) any { return nil }, cancel: -1, wantTogether: true},
		{
			name: "a failing call fails alone",
			job: func(i int) any {
				if i == 3 {
					return errRefused
				}
				return nil
			},
			cancel:  -1,
			wantErr: map[int]error{3: errRefused},
		},
		{
			name: "a panicking call panics in its own goroutine",
			job: func(i int) any {
				if i == 2 {
					return "panic"
				}
				return nil
			},
			cancel:    -1,
			wantPanic: map[int]bool{2: true},
		},
		{
			name:         "a call cancelled while queued does not run",
			job:          func(int) any { return nil },
			cancel:       4,
			wantTogether: true,
			wantErr:      map[int]error{4: context.Canceled},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			db, err := Open(ctx, filepath.Join(t.TempDir(), "group.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close() })
			if _, err := db.ExecContext(ctx, `CREATE TABLE rows (id BIGINT PRIMARY KEY)`); err != nil {
				t.Fatal(err)
			}
			// A call that holds the lead until the others have queued.
			hold, held := make(chan struct{}), make(chan struct{})
			first := make(chan error, 1)
			go func() {
				first <- db.Tx(ctx, func(*sql.Tx) error {
					close(held)
					<-hold
					return nil
				})
			}()
			<-held
			var mu sync.Mutex
			outcomes := make([]outcome, n)
			var wg sync.WaitGroup
			for i := range n {
				cctx, cancel := context.WithCancel(ctx)
				defer cancel()
				wg.Go(func() {
					defer func() {
						if p := recover(); p != nil {
							mu.Lock()
							outcomes[i].panic = p
							mu.Unlock()
						}
					}()
					err := db.Tx(cctx, func(tx *sql.Tx) error {
						mu.Lock()
						outcomes[i].tx = tx
						outcomes[i].runs++
						mu.Unlock()
						if _, err := tx.ExecContext(cctx, `INSERT INTO rows (id) VALUES ($1)`, i); err != nil {
							return err
						}
						switch v := tc.job(i).(type) {
						case error:
							return v
						case string:
							panic(fmt.Sprintf("call %d panics", i))
						}
						return nil
					})
					mu.Lock()
					outcomes[i].err = err
					mu.Unlock()
				})
				waitFor(t, func() bool { return db.group.queued() == i+1 })
				if i == tc.cancel {
					cancel()
				}
			}
			close(hold)
			wg.Wait()
			if err := <-first; err != nil {
				t.Fatalf("holding call: %v", err)
			}

			var committed []int
			rows, err := db.QueryContext(ctx, `SELECT id FROM rows ORDER BY id`)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = rows.Close() }()
			for rows.Next() {
				var id int
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				committed = append(committed, id)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			var want []int
			for i := range n {
				o := outcomes[i]
				switch {
				case tc.wantPanic[i]:
					if o.panic == nil {
						t.Errorf("call %d did not panic in its goroutine", i)
					}
				case tc.wantErr[i] != nil:
					if !errors.Is(o.err, tc.wantErr[i]) {
						t.Errorf("call %d = %v, want %v", i, o.err, tc.wantErr[i])
					}
				default:
					if o.err != nil || o.panic != nil {
						t.Errorf("call %d = %v, panic %v; want success", i, o.err, o.panic)
					}
					want = append(want, i)
				}
				if i == tc.cancel && o.runs != 0 {
					t.Errorf("call %d, cancelled while queued, ran %d times", i, o.runs)
				}
				if o.runs > 2 {
					t.Errorf("call %d ran %d times, want at most 2 (in the group, then alone)", i, o.runs)
				}
			}
			if !slices.Equal(committed, want) {
				t.Errorf("committed rows %v, want %v", committed, want)
			}
			if tc.wantTogether {
				var tx *sql.Tx
				for i, o := range outcomes {
					if o.runs == 0 {
						continue
					}
					if tx == nil {
						tx = o.tx
					}
					if o.tx != tx || o.runs != 1 {
						t.Errorf("call %d ran %d times, in another transaction than the first: want one run in one transaction", i, o.runs)
					}
				}
			}
			if q := db.group.queued(); q != 0 {
				t.Errorf("%d calls left queued", q)
			}
		})
	}
}

// waitFor polls cond until it holds, failing the test after ten seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
