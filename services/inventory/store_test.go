package inventory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
)

// t0 is the clock of the store tests: times are passed in, never slept.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// eachStore runs fn on a fresh Store of every engine.
func eachStore(t *testing.T, fn func(t *testing.T, st Store)) {
	t.Helper()
	sqltest.Each(t, Migrations, "migrations", func(t *testing.T, db *sqldb.DB) {
		fn(t, newSQLStore(db, nil))
	})
}

func storeCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mustCreate creates items with the given stock.
func mustCreate(t *testing.T, st Store, stock map[string]int64) {
	t.Helper()
	var in []ItemInput
	for _, id := range slices.Sorted(func(yield func(string) bool) {
		for k := range stock {
			if !yield(k) {
				return
			}
		}
	}) {
		in = append(in, ItemInput{ID: id, Name: "Item " + id, HasPrice: true, PriceMinor: 100, Currency: "EUR", Quantity: stock[id]})
	}
	res, _, err := st.RecordItems(storeCtx(t), in, t0)
	if err != nil {
		t.Fatalf("RecordItems: %v", err)
	}
	for i, r := range res {
		if r.Outcome != Created {
			t.Fatalf("RecordItems(%q) = %+v, want created", in[i].ID, r)
		}
	}
}

type stock struct{ OnHand, Reserved int64 }

func stockOf(t *testing.T, st Store, id string) stock {
	t.Helper()
	it, err := st.Item(storeCtx(t), id)
	if err != nil {
		t.Fatalf("Item(%q): %v", id, err)
	}
	return stock{it.OnHand, it.Reserved}
}

func checkStock(t *testing.T, st Store, want map[string]stock) {
	t.Helper()
	for id, w := range want {
		if got := stockOf(t, st, id); got != w {
			t.Errorf("stock of %q = %+v, want %+v", id, got, w)
		}
	}
}

// TestStoreConcurrentReserve is the invariant under contention: 200
// reservations of one unit race for 50 units; exactly 50 win, and stock
// ends exactly at available 0.
func TestStoreConcurrentReserve(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st Store) {
		mustCreate(t, st, map[string]int64{"sku-hot": 50})
		ctx := storeCtx(t)
		const n = 200
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, _, errs[i] = st.Reserve(ctx, fmt.Sprintf("order-%03d", i), []Line{{"sku-hot", 1}}, t0, t0.Add(time.Hour))
			})
		}
		wg.Wait()
		ok := 0
		for i, err := range errs {
			var short *InsufficientStockError
			switch {
			case err == nil:
				ok++
			case errors.As(err, &short):
				want := []Shortage{{ItemID: "sku-hot", Requested: 1, Available: 0}}
				if diff := cmp.Diff(want, short.Shortages); diff != "" {
					t.Errorf("Reserve(order-%03d) shortages (-want +got):\n%s", i, diff)
				}
			default:
				t.Errorf("Reserve(order-%03d) = %v, want nil or *InsufficientStockError", i, err)
			}
		}
		if ok != 50 {
			t.Errorf("%d reservations succeeded, want 50", ok)
		}
		checkStock(t, st, map[string]stock{"sku-hot": {OnHand: 50, Reserved: 50}})
	})
}

func TestStoreReserveIdempotent(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st Store) {
		mustCreate(t, st, map[string]int64{"a": 10, "b": 10})
		ctx := storeCtx(t)
		lines := []Line{{"b", 2}, {"a", 3}}
		first, levels, err := st.Reserve(ctx, "o1", lines, t0, t0.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		want := Reservation{OrderID: "o1", Lines: lines, Status: StatusHeld, Created: t0, Expires: t0.Add(time.Minute)}
		if diff := cmp.Diff(want, first); diff != "" {
			t.Errorf("Reserve (-want +got):\n%s", diff)
		}
		if got := len(levels); got != 2 {
			t.Errorf("Reserve returned %d levels, want 2", got)
		}
		// Again, later, lines in another order: the same reservation, no
		// change.
		again, levels, err := st.Reserve(ctx, "o1", []Line{{"a", 3}, {"b", 2}}, t0.Add(time.Second), t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(first, again); diff != "" {
			t.Errorf("repeated Reserve (-first +again):\n%s", diff)
		}
		if len(levels) != 0 {
			t.Errorf("repeated Reserve returned levels %v, want none", levels)
		}
		checkStock(t, st, map[string]stock{"a": {10, 3}, "b": {10, 2}})

		// Other lines under the same order id are a conflict.
		_, _, err = st.Reserve(ctx, "o1", []Line{{"a", 4}}, t0, t0.Add(time.Hour))
		var mismatch *ReservationMismatchError
		if !errors.As(err, &mismatch) || mismatch.OrderID != "o1" {
			t.Errorf("Reserve with other lines = %v, want *ReservationMismatchError", err)
		}

		// Twenty concurrent repeats of a new order take the stock once.
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if _, _, err := st.Reserve(ctx, "o2", []Line{{"a", 1}}, t0, t0.Add(time.Hour)); err != nil {
					t.Errorf("concurrent Reserve(o2) = %v", err)
				}
			})
		}
		wg.Wait()
		checkStock(t, st, map[string]stock{"a": {10, 4}})
	})
}

func TestStoreReserveAllOrNothing(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st Store) {
		mustCreate(t, st, map[string]int64{"a": 5, "b": 1, "c": 0})
		ctx := storeCtx(t)
		_, levels, err := st.Reserve(ctx, "o1", []Line{{"a", 5}, {"c", 1}, {"b", 2}}, t0, t0.Add(time.Hour))
		var short *InsufficientStockError
		if !errors.As(err, &short) {
			t.Fatalf("Reserve = %v, want *InsufficientStockError", err)
		}
		want := []Shortage{{"b", 2, 1}, {"c", 1, 0}}
		if diff := cmp.Diff(want, short.Shortages); diff != "" {
			t.Errorf("shortages (-want +got):\n%s", diff)
		}
		if len(levels) != 0 {
			t.Errorf("failed Reserve returned levels %v", levels)
		}
		checkStock(t, st, map[string]stock{"a": {5, 0}, "b": {1, 0}, "c": {0, 0}})

		_, _, err = st.Reserve(ctx, "o2", []Line{{"a", 1}, {"nope", 1}}, t0, t0.Add(time.Hour))
		var nf *ItemNotFoundError
		if !errors.As(err, &nf) || nf.ItemID != "nope" {
			t.Errorf("Reserve of an unknown item = %v, want *ItemNotFoundError", err)
		}
		checkStock(t, st, map[string]stock{"a": {5, 0}})

		// The failed order ids were not claimed.
		if _, _, err := st.Reserve(ctx, "o1", []Line{{"a", 5}}, t0, t0.Add(time.Hour)); err != nil {
			t.Errorf("Reserve after a failed one = %v", err)
		}
		checkStock(t, st, map[string]stock{"a": {5, 5}})
	})
}

// TestStoreStateMachine walks every (status, operation) pair.
func TestStoreStateMachine(t *testing.T) {
	t.Parallel()
	type op int
	const (
		release op = iota
		commit
	)
	tests := []struct {
		name       string
		setup      Status
		op         op
		wantStatus Status // of the returned reservation
		wantErr    Status // status in *ReservationStateError; "" for none
		want       stock
	}{
		{"release held", StatusHeld, release, StatusReleased, "", stock{10, 0}},
		{"commit held", StatusHeld, commit, StatusCommitted, "", stock{7, 0}},
		{"release released", StatusReleased, release, StatusReleased, "", stock{10, 0}},
		{"commit released", StatusReleased, commit, "", StatusReleased, stock{10, 0}},
		{"release committed", StatusCommitted, release, "", StatusCommitted, stock{7, 0}},
		{"commit committed", StatusCommitted, commit, StatusCommitted, "", stock{7, 0}},
		{"release expired", StatusExpired, release, StatusExpired, "", stock{10, 0}},
		{"commit expired", StatusExpired, commit, "", StatusExpired, stock{10, 0}},
	}
	eachStore(t, func(t *testing.T, st Store) {
		ctx := storeCtx(t)
		for i, tt := range tests {
			item, order := fmt.Sprintf("item-%d", i), fmt.Sprintf("order-%d", i)
			mustCreate(t, st, map[string]int64{item: 10})
			if _, _, err := st.Reserve(ctx, order, []Line{{item, 3}}, t0, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			var err error
			switch tt.setup {
			case StatusReleased:
				_, _, err = st.Release(ctx, order, "setup", t0)
			case StatusCommitted:
				_, _, err = st.Commit(ctx, order, t0)
			case StatusExpired:
				_, _, err = st.ExpireDue(ctx, t0.Add(time.Minute), 10)
			}
			if err != nil {
				t.Fatalf("%s: setup: %v", tt.name, err)
			}
			var res Reservation
			switch tt.op {
			case release:
				res, _, err = st.Release(ctx, order, "test", t0.Add(time.Second))
			case commit:
				res, _, err = st.Commit(ctx, order, t0.Add(time.Second))
			}
			var se *ReservationStateError
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("%s: error %v, want none", tt.name, err)
			case tt.wantErr == "" && res.Status != tt.wantStatus:
				t.Errorf("%s: status %s, want %s", tt.name, res.Status, tt.wantStatus)
			case tt.wantErr != "" && (!errors.As(err, &se) || se.Status != tt.wantErr || se.OrderID != order):
				t.Errorf("%s: error %v, want *ReservationStateError with status %s", tt.name, err, tt.wantErr)
			}
			if got := stockOf(t, st, item); got != tt.want {
				t.Errorf("%s: stock %+v, want %+v", tt.name, got, tt.want)
			}
		}

		var nf *ReservationNotFoundError
		if _, _, err := st.Release(ctx, "ghost", "", t0); !errors.As(err, &nf) {
			t.Errorf("Release(ghost) = %v, want *ReservationNotFoundError", err)
		}
		if _, _, err := st.Commit(ctx, "ghost", t0); !errors.As(err, &nf) {
			t.Errorf("Commit(ghost) = %v, want *ReservationNotFoundError", err)
		}
	})
}

// TestStoreLeaveHeldOnce races release, commit and expiry on the same
// reservations: exactly one wins each, and the stock matches the winner.
func TestStoreLeaveHeldOnce(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st Store) {
		ctx := storeCtx(t)
		const n = 20
		mustCreate(t, st, map[string]int64{"x": 2 * n})
		for i := range n {
			if _, _, err := st.Reserve(ctx, fmt.Sprint("o", i), []Line{{"x", 2}}, t0, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		later := t0.Add(30 * time.Second) // before the expiry: commit can win
		expireAt := t0.Add(time.Minute)
		var wg sync.WaitGroup
		for i := range n {
			order := fmt.Sprint("o", i)
			wg.Go(func() { _, _, _ = st.Release(ctx, order, "race", later) })
			wg.Go(func() { _, _, _ = st.Commit(ctx, order, later) })
		}
		wg.Go(func() { _, _, _ = st.ExpireDue(ctx, expireAt, n) })
		wg.Wait()
		var committed int64
		for i := range n {
			res, _, err := st.Release(ctx, fmt.Sprint("o", i), "", later)
			var se *ReservationStateError
			switch {
			case errors.As(err, &se) && se.Status == StatusCommitted:
				committed++
			case err != nil:
				t.Errorf("Release(o%d) = %v", i, err)
			case res.Status != StatusReleased && res.Status != StatusExpired:
				t.Errorf("o%d is %s, want a final status", i, res.Status)
			}
		}
		checkStock(t, st, map[string]stock{"x": {OnHand: 2*n - 2*committed, Reserved: 0}})
	})
}

func TestStoreExpireDue(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st Store) {
		ctx := storeCtx(t)
		mustCreate(t, st, map[string]int64{"a": 10, "b": 10})
		for i := range 5 {
			if _, _, err := st.Reserve(ctx, fmt.Sprint("due-", i), []Line{{"a", 1}, {"b", 1}}, t0, t0.Add(time.Duration(i+1)*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := st.Reserve(ctx, "later", []Line{{"a", 1}}, t0, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		now := t0.Add(time.Minute)
		for _, want := range []int{2, 2, 1, 0} {
			n, levels, err := st.ExpireDue(ctx, now, 2)
			if err != nil {
				t.Fatal(err)
			}
			if n != want {
				t.Errorf("ExpireDue = %d, want %d", n, want)
			}
			if n > 0 && len(levels) != 2 {
				t.Errorf("ExpireDue returned %d levels, want 2 (a and b)", len(levels))
			}
		}
		checkStock(t, st, map[string]stock{"a": {10, 1}, "b": {10, 0}})
		res, _, err := st.Release(ctx, "due-0", "", now)
		if err != nil || res.Status != StatusExpired {
			t.Errorf("Release(due-0) = %v, %v; want it EXPIRED", res.Status, err)
		}
	})
}

// TestStoreCommitPastExpiry: a held reservation past its expiry cannot be
// sold even before the loop reaches it.
func TestStoreCommitPastExpiry(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st Store) {
		ctx := storeCtx(t)
		mustCreate(t, st, map[string]int64{"a": 10})
		if _, _, err := st.Reserve(ctx, "o", []Line{{"a", 4}}, t0, t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		_, levels, err := st.Commit(ctx, "o", t0.Add(time.Second))
		var se *ReservationStateError
		if !errors.As(err, &se) || se.Status != StatusExpired {
			t.Fatalf("Commit past expiry = %v, want *ReservationStateError EXPIRED", err)
		}
		if len(levels) != 1 || levels[0].Reserved != 0 {
			t.Errorf("Commit past expiry levels = %+v, want a with 0 reserved", levels)
		}
		checkStock(t, st, map[string]stock{"a": {10, 0}})
		if n, _, err := st.ExpireDue(ctx, t0.Add(time.Hour), 10); err != nil || n != 0 {
			t.Errorf("ExpireDue after = %d, %v; want 0", n, err)
		}
	})
}

func TestStoreItemsPaging(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st Store) {
		ctx := storeCtx(t)
		stockByID := map[string]int64{}
		var want []string
		for i := range 250 {
			id := fmt.Sprintf("SKU-%04d", i)
			stockByID[id] = int64(i)
			want = append(want, id)
		}
		mustCreate(t, st, stockByID)
		var got []string
		after := ""
		pages := 0
		for {
			items, err := st.Items(ctx, after, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(items) == 0 {
				break
			}
			pages++
			for _, it := range items {
				got = append(got, it.ID)
			}
			after = items[len(items)-1].ID
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("paged ids (-want +got):\n%s", diff)
		}
		if pages != 3 {
			t.Errorf("%d pages, want 3", pages)
		}
	})
}

func TestStoreRecordItems(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st Store) {
		ctx := storeCtx(t)
		mustCreate(t, st, map[string]int64{"held": 10, "keep": 5})
		if _, _, err := st.Reserve(ctx, "o", []Line{{"held", 6}}, t0, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		t1 := t0.Add(time.Second)
		in := []ItemInput{
			{ID: "new", Name: "New", Description: "d", HasPrice: true, PriceMinor: 250, Currency: "USD", Quantity: 7},
			{ID: "keep", Quantity: 9},               // keeps name, description and price
			{ID: "held", Quantity: 5},               // below the 6 reserved
			{ID: "held", Name: "Held", Quantity: 6}, // exactly the reserved: allowed
			{ID: "noname", HasPrice: true, PriceMinor: 1, Currency: "EUR", Quantity: 1},
			{ID: "noprice", Name: "No price", Quantity: 1},
		}
		res, levels, err := st.RecordItems(ctx, in, t1)
		if err != nil {
			t.Fatal(err)
		}
		want := []RecordResult{
			{Outcome: Created},
			{Outcome: Updated},
			{Outcome: Rejected, Field: "quantity", Reason: ReasonBelowReserved, Description: "quantity 5 is below the 6 units reserved"},
			{Outcome: Updated},
			{Outcome: Rejected, Field: "name", Reason: ReasonNameRequired, Description: "a new item needs a name"},
			{Outcome: Rejected, Field: "price", Reason: ReasonPriceRequired, Description: "a new item needs a price"},
		}
		if diff := cmp.Diff(want, res); diff != "" {
			t.Errorf("RecordItems results (-want +got):\n%s", diff)
		}
		var ids []string
		for _, l := range levels {
			ids = append(ids, l.ItemID)
		}
		if diff := cmp.Diff([]string{"held", "keep", "new"}, ids); diff != "" {
			t.Errorf("levels (-want +got):\n%s", diff)
		}
		keep, err := st.Item(ctx, "keep")
		if err != nil {
			t.Fatal(err)
		}
		wantKeep := Item{ID: "keep", Name: "Item keep", PriceMinor: 100, Currency: "EUR", OnHand: 9, Version: 2, Updated: t1}
		if diff := cmp.Diff(wantKeep, keep); diff != "" {
			t.Errorf("Item(keep) (-want +got):\n%s", diff)
		}
		held, err := st.Item(ctx, "held")
		if err != nil {
			t.Fatal(err)
		}
		if held.Name != "Held" || held.OnHand != 6 || held.Reserved != 6 {
			t.Errorf("Item(held) = %+v, want name Held, 6 on hand, 6 reserved", held)
		}
		if _, err := st.Item(ctx, "noname"); !errors.As(err, new(*ItemNotFoundError)) {
			t.Errorf("Item(noname) = %v, want *ItemNotFoundError", err)
		}
	})
}

func TestStoreCreateMissingAndLevels(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st Store) {
		ctx := storeCtx(t)
		mustCreate(t, st, map[string]int64{"old": 3})
		var in []ItemInput
		var ids []string
		for i := range 150 {
			id := fmt.Sprintf("seed-%03d", i)
			ids = append(ids, id)
			in = append(in, ItemInput{ID: id, Name: id, HasPrice: true, Currency: "EUR", Quantity: 1})
		}
		in = append(in, ItemInput{ID: "old", Name: "Renamed", HasPrice: true, Currency: "EUR", Quantity: 99})
		for round, want := range []int{150, 0} {
			n, levels, err := st.CreateMissing(ctx, in, t0)
			if err != nil {
				t.Fatal(err)
			}
			if n != want || len(levels) != want {
				t.Errorf("round %d: CreateMissing = %d, %d levels; want %d", round, n, len(levels), want)
			}
		}
		checkStock(t, st, map[string]stock{"old": {3, 0}})
		levels, err := st.Levels(ctx, append(ids, "old", "ghost"))
		if err != nil {
			t.Fatal(err)
		}
		if len(levels) != 151 {
			t.Errorf("Levels returned %d levels, want 151 (ghost has none)", len(levels))
		}
		if _, _, err := st.CreateMissing(ctx, []ItemInput{{ID: "bare", Quantity: 1}}, t0); err == nil {
			t.Error("CreateMissing of an item without name and price succeeded")
		}
	})
}
