package notify_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/services/notify"
)

var idSeq atomic.Int64

// newID returns an id no other test uses.
func newID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), idSeq.Add(1))
}

// inTx runs fn in a transaction of its own.
func inTx(t *testing.T, db *sqldb.DB, fn func(ctx context.Context, tx *sql.Tx) error) error {
	t.Helper()
	ctx := t.Context()
	return db.Tx(ctx, func(tx *sql.Tx) error { return fn(ctx, tx) })
}

func pending(userID string, at time.Time) *notify.Notification {
	return &notify.Notification{
		ID: uuid.NewString(), UserID: userID, EventID: newID("ev"), EventType: notify.TypeOrderConfirmed,
		Channel: notify.ChannelEmail, Recipient: "ada@example.com", RecipientName: "Ada", Subject: "Hello",
		Template: notify.TemplateOrderConfirmed, Body: "Body\n", Status: notify.StatusPending, NextAttempt: at, Created: at,
	}
}

func TestStore(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		store := notify.NewStore(db)
		t0 := time.Now().Truncate(time.Microsecond).UTC()

		t.Run("Users", func(t *testing.T) {
			id := newID("user")
			err := inTx(t, db, func(ctx context.Context, tx *sql.Tx) error {
				if _, err := store.User(ctx, tx, id); !errors.Is(err, notify.ErrUnknownRecipient) {
					t.Errorf("User of an unknown user = %v, want ErrUnknownRecipient", err)
				}
				if err := store.PutUser(ctx, tx, notify.User{ID: id, Email: "a@example.com", DisplayName: "A"}, t0); err != nil {
					return err
				}
				// A second registration replaces the address.
				if err := store.PutUser(ctx, tx, notify.User{ID: id, Email: "b@example.com", DisplayName: "B"}, t0); err != nil {
					return err
				}
				got, err := store.User(ctx, tx, id)
				if want := (notify.User{ID: id, Email: "b@example.com", DisplayName: "B"}); err != nil || got != want {
					t.Errorf("User = %+v, %v, want %+v", got, err, want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})

		t.Run("Orders", func(t *testing.T) {
			order := newID("order")
			err := inTx(t, db, func(ctx context.Context, tx *sql.Tx) error {
				var unknown *notify.UnknownOrderError
				if _, err := store.OrderUser(ctx, tx, order); !errors.As(err, &unknown) || unknown.OrderID != order {
					t.Errorf("OrderUser of an unknown order = %v, want UnknownOrderError", err)
				}
				if err := store.PutOrder(ctx, tx, order, "u1"); err != nil {
					return err
				}
				if err := store.PutOrder(ctx, tx, order, "u2"); err != nil {
					return err
				}
				if got, err := store.OrderUser(ctx, tx, order); err != nil || got != "u1" {
					t.Errorf("OrderUser = %q, %v, want the first user u1", got, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})

		t.Run("AddOncePerEvent", func(t *testing.T) {
			ctx := t.Context()
			n := pending(newID("user"), t0)
			for i, want := range []bool{true, false} {
				again := *n
				again.ID = uuid.NewString() // a re-run renders a new id
				var added bool
				if err := inTx(t, db, func(ctx context.Context, tx *sql.Tx) (err error) {
					added, err = store.Add(ctx, tx, &again)
					return err
				}); err != nil || added != want {
					t.Fatalf("Add %d = %v, %v, want %v", i, added, err, want)
				}
				if i == 0 {
					n = &again
				}
			}
			got, err := store.Get(ctx, n.ID)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(*n, got); diff != "" {
				t.Errorf("Get mismatch (-added +got):\n%s", diff)
			}
			if _, err := store.Get(ctx, uuid.NewString()); !errors.Is(err, notify.ErrNotFound) {
				t.Errorf("Get of an unknown id = %v, want ErrNotFound", err)
			}
		})

		t.Run("Attempts", func(t *testing.T) {
			ctx := t.Context()
			n := pending(newID("user"), t0)
			if err := inTx(t, db, func(ctx context.Context, tx *sql.Tx) error { _, err := store.Add(ctx, tx, n); return err }); err != nil {
				t.Fatal(err)
			}
			isDue := func(at time.Time) bool {
				ids, err := store.Due(ctx, at, notify.MaxBatchSize)
				if err != nil {
					t.Fatal(err)
				}
				return slices.Contains(ids, n.ID)
			}
			if isDue(t0.Add(-time.Microsecond)) || !isDue(t0) {
				t.Fatal("a new notification is not due exactly at its next attempt")
			}
			if _, ok, err := store.Claim(ctx, n.ID, t0.Add(-time.Microsecond), t0.Add(time.Hour)); ok || err != nil {
				t.Errorf("Claim before due = %v, %v, want not claimed", ok, err)
			}
			lease := t0.Add(time.Minute)
			got, ok, err := store.Claim(ctx, n.ID, t0, lease)
			if err != nil || !ok || got.Attempts != 1 || !got.NextAttempt.Equal(lease) {
				t.Fatalf("Claim = attempt %d next %v, %v, %v; want attempt 1 leased to %v", got.Attempts, got.NextAttempt, ok, err, lease)
			}
			if _, ok, err := store.Claim(ctx, n.ID, t0, lease); ok || err != nil {
				t.Errorf("second Claim within the lease = %v, %v, want not claimed", ok, err)
			}
			if isDue(lease.Add(-time.Microsecond)) || !isDue(lease) {
				t.Error("a claimed notification is not due exactly when its lease ends")
			}
			// The lease ran out: another sender takes attempt 2 over, and
			// the first sender's late outcome changes nothing.
			if got, ok, err := store.Claim(ctx, n.ID, lease, lease.Add(time.Minute)); err != nil || !ok || got.Attempts != 2 {
				t.Fatalf("Claim after the lease = attempt %d, %v, %v; want attempt 2", got.Attempts, ok, err)
			}
			if err := store.Sent(ctx, n.ID, 1, lease); err != nil {
				t.Fatal(err)
			}
			if got, _ := store.Get(ctx, n.ID); got.Status != notify.StatusPending {
				t.Errorf("after a stale Sent the status is %v, want PENDING", got.Status)
			}
			retryAt := lease.Add(time.Hour)
			if err := store.Retry(ctx, n.ID, 2, retryAt, "421 try later"); err != nil {
				t.Fatal(err)
			}
			if got, _ := store.Get(ctx, n.ID); got.Status != notify.StatusPending || got.Error != "421 try later" || !got.NextAttempt.Equal(retryAt) {
				t.Errorf("after Retry: %v %q next %v, want PENDING with the error, next %v", got.Status, got.Error, got.NextAttempt, retryAt)
			}
			if _, ok, _ := store.Claim(ctx, n.ID, retryAt, retryAt.Add(time.Minute)); !ok {
				t.Fatal("Claim of attempt 3 failed")
			}
			sentAt := retryAt.Add(time.Second)
			if err := store.Sent(ctx, n.ID, 3, sentAt); err != nil {
				t.Fatal(err)
			}
			got, err = store.Get(ctx, n.ID)
			if err != nil || got.Status != notify.StatusSent || got.Error != "" || !got.Finished.Equal(sentAt) || !got.NextAttempt.IsZero() {
				t.Errorf("after Sent: %+v, %v; want SENT at %v without error or next attempt", got, err, sentAt)
			}
			if isDue(sentAt.Add(time.Hour)) {
				t.Error("a sent notification is due")
			}
			if err := store.Fail(ctx, n.ID, 3, sentAt, "late"); err != nil {
				t.Fatal(err)
			}
			if got, _ := store.Get(ctx, n.ID); got.Status != notify.StatusSent {
				t.Errorf("Fail after Sent changed the status to %v", got.Status)
			}

			f := pending(newID("user"), t0)
			if err := inTx(t, db, func(ctx context.Context, tx *sql.Tx) error { _, err := store.Add(ctx, tx, f); return err }); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := store.Claim(ctx, f.ID, t0, lease); !ok {
				t.Fatal("Claim failed")
			}
			if err := store.Fail(ctx, f.ID, 1, t0, "550 no such user"); err != nil {
				t.Fatal(err)
			}
			if got, _ := store.Get(ctx, f.ID); got.Status != notify.StatusFailed || got.Error != "550 no such user" || !got.Finished.Equal(t0) {
				t.Errorf("after Fail: %+v, want FAILED with the error", got)
			}
		})

		t.Run("List", func(t *testing.T) {
			ctx := t.Context()
			alice, bob := newID("alice"), newID("bob")
			// Five of alice's and two of bob's, finished a second apart
			// (two of alice's in the same microsecond), one of alice's
			// still pending.
			var want []notify.Notification
			finish := func(userID string, at time.Time, fail bool) {
				n := pending(userID, t0)
				if err := inTx(t, db, func(ctx context.Context, tx *sql.Tx) error { _, err := store.Add(ctx, tx, n); return err }); err != nil {
					t.Fatal(err)
				}
				if _, ok, err := store.Claim(ctx, n.ID, t0, t0.Add(time.Minute)); !ok || err != nil {
					t.Fatalf("Claim = %v, %v", ok, err)
				}
				var err error
				if fail {
					err = store.Fail(ctx, n.ID, 1, at, "rejected")
				} else {
					err = store.Sent(ctx, n.ID, 1, at)
				}
				if err != nil {
					t.Fatal(err)
				}
				got, err := store.Get(ctx, n.ID)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, got)
			}
			for i := range 4 {
				finish(alice, t0.Add(time.Duration(i)*time.Second), i == 2)
			}
			finish(alice, t0.Add(3*time.Second), false)
			finish(bob, t0.Add(10*time.Second), false)
			finish(bob, t0.Add(-time.Second), true)
			if err := inTx(t, db, func(ctx context.Context, tx *sql.Tx) error {
				_, err := store.Add(ctx, tx, pending(alice, t0))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			newestFirst := func(userID string) []string {
				var out []notify.Notification
				for _, n := range want {
					if userID == "" || n.UserID == userID {
						out = append(out, n)
					}
				}
				slices.SortFunc(out, func(a, b notify.Notification) int {
					if c := b.Finished.Compare(a.Finished); c != 0 {
						return c
					}
					return strings.Compare(b.ID, a.ID)
				})
				return ids(out)
			}
			for _, tc := range []struct {
				user string
				page int
			}{{alice, 2}, {alice, 10}, {bob, 1}} {
				var got []string
				var after *notify.Cursor
				for range 10 {
					page, err := store.List(ctx, tc.user, after, tc.page)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, ids(page)...)
					if len(page) < tc.page {
						break
					}
					last := page[len(page)-1]
					after = &notify.Cursor{Finished: last.Finished, ID: last.ID}
				}
				if want := newestFirst(tc.user); !slices.Equal(got, want) {
					t.Errorf("List(%s) in pages of %d = %v, want %v", tc.user, tc.page, got, want)
				}
			}
			all, err := store.List(ctx, "", nil, notify.MaxBatchSize)
			if err != nil {
				t.Fatal(err)
			}
			var mine []string
			for _, n := range all {
				if n.UserID == alice || n.UserID == bob {
					mine = append(mine, n.ID)
				}
			}
			if want := newestFirst(""); !slices.Equal(mine, want) {
				t.Errorf("List of everyone, ours = %v, want %v", mine, want)
			}
		})

		t.Run("CancelledContext", func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if _, err := store.Due(ctx, t0, 1); !errors.Is(err, context.Canceled) {
				t.Errorf("Due with a cancelled context = %v, want context.Canceled", err)
			}
		})
	})
}

func ids(ns []notify.Notification) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}
