package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// MaxGroupCommit bounds the transactions of DB.Tx that one SQLite
// transaction runs together.
const MaxGroupCommit = 32

// grouper is the group commit of DB.Tx on SQLite. SQLite has one writer
// at a time, so the transactions of concurrent callers run one after the
// other on the writer connection anyway; grouping runs those that queue
// while one is in progress in one transaction, with one BEGIN and one
// COMMIT, which writes the pages they share to the WAL once.
//
// One caller at a time leads: it runs its own function and those of the
// callers queued behind it (up to MaxGroupCommit) in one transaction, then
// hands the lead to the first caller that queued meanwhile, so that no
// caller waits for more than the transaction in progress and its own. If
// a function fails or panics in a group, the group rolls back: that caller
// gets its error (or its panic, in its own goroutine), and each of the
// others runs again in a transaction of its own, as Tx's contract allows.
// If the group fails to begin or commit, each caller runs again on its
// own.
type grouper struct {
	db *DB

	mu      sync.Mutex
	queue   []*groupJob
	leading bool
}

// groupJob is one Tx call waiting for the group commit.
type groupJob struct {
	ctx context.Context
	fn  func(tx *sql.Tx) error
	// wake says true when the job is to lead the next group itself, false
	// when another job's group has run it.
	wake  chan bool
	err   error
	panic any // what fn panicked with in another caller's group
}

// run runs fn as part of a group, and returns its outcome.
func (g *grouper) run(ctx context.Context, fn func(tx *sql.Tx) error) error {
	j := &groupJob{ctx: ctx, fn: fn, wake: make(chan bool, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, j)
	if g.leading {
		g.mu.Unlock()
		if lead := <-j.wake; !lead {
			if j.panic != nil {
				panic(j.panic)
			}
			return j.err
		}
		g.mu.Lock()
	}
	g.leading = true
	// j is first in the queue: it was alone in it, or was handed the lead
	// as its first.
	n := min(len(g.queue), MaxGroupCommit)
	batch := make([]*groupJob, n)
	copy(batch, g.queue)
	g.queue = append(g.queue[:0], g.queue[n:]...)
	g.mu.Unlock()
	g.lead(batch)
	if j.panic != nil {
		panic(j.panic)
	}
	return j.err
}

// lead runs batch, then hands the lead to the first queued job and wakes
// the rest of batch.
func (g *grouper) lead(batch []*groupJob) {
	defer func() {
		g.mu.Lock()
		if len(g.queue) > 0 {
			g.queue[0].wake <- true
		} else {
			g.leading = false
		}
		g.mu.Unlock()
		for _, j := range batch[1:] {
			j.wake <- false
		}
	}()
	for _, j := range batch {
		j.err = errGroupFailed
	}
	if len(batch) > 1 && g.together(batch) {
		return
	}
	for _, j := range batch {
		if j.err == errGroupFailed { //nolint:errorlint // the sentinel itself, never wrapped
			j.err = g.alone(j)
		}
	}
}

// errGroupFailed marks the jobs of a group that did not commit and are to
// run again on their own.
var errGroupFailed = errors.New("sqldb: group rolled back")

// together runs batch in one transaction and reports whether it committed.
// If not, each job has its own error, or errGroupFailed if it is to run
// again on its own.
func (g *grouper) together(batch []*groupJob) bool {
	// The transaction outlives any one caller's context: each function's
	// statements run on its own caller's context.
	tx, err := g.db.BeginTx(context.WithoutCancel(batch[0].ctx), nil)
	if err != nil {
		return false
	}
	for _, j := range batch {
		if err := j.ctx.Err(); err != nil {
			j.err = err // never ran: as if its transaction failed to begin
			continue
		}
		err := j.call(tx)
		if err == nil && j.ctx.Err() != nil {
			// A statement interrupted by the caller's context may have
			// rolled back the whole transaction (SQLite does for writes),
			// though fn went on: nothing more may run in it.
			err = j.ctx.Err()
		}
		if err == nil {
			j.err = nil
			continue
		}
		_ = tx.Rollback()
		for _, o := range batch {
			if o.err == nil {
				o.err = errGroupFailed
			}
		}
		j.err = err
		if Retryable(err) && j.panic == nil {
			j.err = errGroupFailed // a busy database: it runs again on its own
		}
		return false
	}
	if err := tx.Commit(); err != nil {
		for _, j := range batch {
			if j.err == nil {
				j.err = errGroupFailed
			}
		}
		return false
	}
	return true
}

// call runs j's function in tx, keeping a panic for j's caller.
func (j *groupJob) call(tx *sql.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			j.panic = p
			err = fmt.Errorf("sqldb: transaction function panicked: %v", p)
		}
	}()
	return j.fn(tx)
}

// alone runs j in a transaction of its own, with Tx's retries, keeping a
// panic for j's caller.
func (g *grouper) alone(j *groupJob) (err error) {
	defer func() {
		if p := recover(); p != nil {
			j.panic = p
			err = nil
		}
	}()
	return g.db.retrying(j.ctx, j.fn)
}
