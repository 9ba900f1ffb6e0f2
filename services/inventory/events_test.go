package inventory

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/switchboard-rpc/switchboard/internal/outboxtest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

func TestStoreEmitsEventsInItsTransactions(t *testing.T) {
	sqltest.Each(t, Migrations, "migrations", func(t *testing.T, db *sqldb.DB) {
		ctx := storeCtx(t)
		if err := events.Migrate(ctx, db.DB, events.Dialect(db.Dialect)); err != nil {
			t.Fatal(err)
		}
		st := newSQLStore(db, events.NewOutbox("inventory", events.Dialect(db.Dialect)))
		steps := []struct {
			name string
			do   func() error
			want []string
		}{
			{"import", func() error {
				_, _, err := st.RecordItems(ctx, []ItemInput{
					{ID: "a", Name: "A", HasPrice: true, PriceMinor: 1, Currency: "EUR", Quantity: 5},
					{ID: "b", Name: "B", HasPrice: true, PriceMinor: 1, Currency: "EUR", Quantity: 1},
				}, t0)
				return err
			}, []string{"StockChanged a", "StockChanged b"}},
			{"reserve", func() error {
				_, _, err := st.Reserve(ctx, "o1", []Line{{ItemID: "a", Quantity: 2}}, t0, t0.Add(time.Hour))
				return err
			}, []string{"StockReserved o1", "StockChanged a"}},
			{"replayed reserve emits nothing", func() error {
				_, _, err := st.Reserve(ctx, "o1", []Line{{ItemID: "a", Quantity: 2}}, t0, t0.Add(time.Hour))
				return err
			}, nil},
			{"refused reserve emits nothing", func() error {
				_, _, err := st.Reserve(ctx, "o2", []Line{{ItemID: "b", Quantity: 9}}, t0, t0.Add(time.Hour))
				if err == nil {
					t.Error("Reserve of 9 with 1 in stock succeeded")
				}
				return nil
			}, nil},
			{"commit", func() error {
				_, _, err := st.Commit(ctx, "o1", t0)
				return err
			}, []string{"ReservationCommitted o1", "StockChanged a"}},
			{"release", func() error {
				if _, _, err := st.Reserve(ctx, "o3", []Line{{ItemID: "b", Quantity: 1}}, t0, t0.Add(time.Hour)); err != nil {
					return err
				}
				_, _, err := st.Release(ctx, "o3", "cancelled", t0)
				return err
			}, []string{"StockReserved o3", "StockChanged b", "StockReleased o3", "StockChanged b"}},
			{"expiry", func() error {
				if _, _, err := st.Reserve(ctx, "o4", []Line{{ItemID: "a", Quantity: 1}}, t0, t0.Add(time.Minute)); err != nil {
					return err
				}
				_, _, err := st.ExpireDue(ctx, t0.Add(time.Hour), 10)
				return err
			}, []string{"StockReserved o4", "StockChanged a", "StockReleased o4", "StockChanged a"}},
		}
		var seq int64
		for _, step := range steps {
			if err := step.do(); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			var got []string
			got, seq = outboxtest.Rows(t, db, seq)
			if diff := cmp.Diff(step.want, got); diff != "" {
				t.Errorf("%s: outbox rows (-want +got):\n%s", step.name, diff)
			}
		}
	})
}
