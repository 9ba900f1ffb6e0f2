package order

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
)

// t0 is the base time of the store tests, on a whole microsecond as the
// database stores it.
var t0 = time.UnixMicro(1_700_000_000_000_000).UTC()

func storeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newStoreOrder returns a new PENDING order of user with key, created at
// t0+offset, with no lease.
func newStoreOrder(id, user, key string, offset time.Duration) *Order {
	lines := []Line{{ItemID: "apple", Quantity: 2}, {ItemID: "pear", Quantity: 1}}
	addr := Address{Recipient: "Ada", Line1: "1 Main St", City: "London", PostalCode: "N1", CountryCode: "GB"}
	return &Order{
		ID: id, UserID: user, IdempotencyKey: key, RequestHash: requestHash(lines, addr),
		Lines: lines, Address: addr,
		Status: orderv1.OrderStatus_ORDER_STATUS_PENDING, Phase: PhaseForward, Step: StepPrice,
		LeaseUntil: time.UnixMicro(0).UTC(), CreateTime: t0.Add(offset),
	}
}

// wantStored is o as the store returns it after CreateOrder.
func wantStored(o *Order) *Order {
	w := *o
	w.StatusSeq = 1
	w.UpdateTime = o.CreateTime
	w.NextRun = time.UnixMicro(0).UTC()
	return &w
}

// TestStoreContract runs every case of the Store's contract on both
// engines. The cases share one database per engine (creating PostgreSQL
// databases is slow), each seeing only its own orders through prefixed.
func TestStoreContract(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		run  func(t *testing.T, st Store)
	}{
		{"CreateOrder", caseCreateOrder},
		{"CreateOrderConcurrentDuplicates", caseCreateOrderConcurrentDuplicates},
		{"UpdateConditions", caseUpdateConditions},
		{"ConcurrentTransitionsOneWins", caseConcurrentTransitionsOneWins},
		{"ApplyMatchesUpdate", caseApplyMatchesUpdate},
		{"LeaseClaiming", caseLeaseClaiming},
		{"LeaseTwoReplicasOneWins", caseLeaseTwoReplicasOneWins},
		{"Claimable", caseClaimable},
		{"ListOrders", caseListOrders},
	}
	sqltest.Each(t, Migrations, "migrations", func(t *testing.T, db *sqldb.DB) {
		for i, c := range cases {
			p := fmt.Sprintf("c%d-", i)
			t.Run(c.name, func(t *testing.T) { c.run(t, &prefixed{st: NewStore(db, nil), p: p}) })
		}
	})
}

// prefixed is a Store that shows a case only its own orders: it adds p to
// the order and user ids a case uses and strips it from what it returns.
type prefixed struct {
	st Store
	p  string
}

func (s *prefixed) strip(o *Order) *Order {
	if o == nil {
		return nil
	}
	c := *o
	c.ID, c.UserID = strings.TrimPrefix(o.ID, s.p), strings.TrimPrefix(o.UserID, s.p)
	return &c
}

func (s *prefixed) CreateOrder(ctx context.Context, o *Order) (*Order, bool, error) {
	c := *o
	c.ID, c.UserID = s.p+o.ID, s.p+o.UserID
	got, created, err := s.st.CreateOrder(ctx, &c)
	return s.strip(got), created, err
}

func (s *prefixed) Order(ctx context.Context, orderID string) (*Order, error) {
	o, err := s.st.Order(ctx, s.p+orderID)
	return s.strip(o), err
}

func (s *prefixed) ListOrders(ctx context.Context, userID string, after *Cursor, limit int) ([]*Order, error) {
	if userID != "" {
		userID = s.p + userID
	}
	if after != nil {
		after = &Cursor{CreateTime: after.CreateTime, OrderID: s.p + after.OrderID}
	}
	orders, err := s.st.ListOrders(ctx, userID, after, limit)
	var out []*Order
	for _, o := range orders {
		if strings.HasPrefix(o.ID, s.p) {
			out = append(out, s.strip(o))
		}
	}
	return out, err
}

func (s *prefixed) Events(ctx context.Context, orderID string, afterSeq int64, limit int) ([]Event, error) {
	return s.st.Events(ctx, s.p+orderID, afterSeq, limit)
}

func (s *prefixed) Update(ctx context.Context, orderID string, when Cond, change Change, now time.Time) error {
	return s.st.Update(ctx, s.p+orderID, when, change, now)
}

func (s *prefixed) UpdateIn(ctx context.Context, tx *sql.Tx, orderID string, when Cond, change Change, now time.Time) error {
	return s.st.UpdateIn(ctx, tx, s.p+orderID, when, change, now)
}

func (s *prefixed) StatusIn(ctx context.Context, tx *sql.Tx, orderID string) (orderv1.OrderStatus, error) {
	return s.st.StatusIn(ctx, tx, s.p+orderID)
}

func (s *prefixed) Claim(ctx context.Context, orderID, owner string, now time.Time, ttl time.Duration) (bool, error) {
	return s.st.Claim(ctx, s.p+orderID, owner, now, ttl)
}

func (s *prefixed) ReleaseLease(ctx context.Context, orderID, owner string, nextRun time.Time) error {
	return s.st.ReleaseLease(ctx, s.p+orderID, owner, nextRun)
}

func (s *prefixed) Claimable(ctx context.Context, now time.Time, limit int) ([]string, error) {
	ids, err := s.st.Claimable(ctx, now, MaxListLimit)
	var out []string
	for _, id := range ids {
		if strings.HasPrefix(id, s.p) && len(out) < limit {
			out = append(out, strings.TrimPrefix(id, s.p))
		}
	}
	return out, err
}

func caseCreateOrder(t *testing.T, st Store) {
	{
		ctx := storeCtx(t)
		first := newStoreOrder("o-1", "alice", "k1", 0)
		got, created, err := st.CreateOrder(ctx, first)
		if err != nil || !created {
			t.Fatalf("CreateOrder(o-1) = created %v, %v; want created", created, err)
		}
		if diff := cmp.Diff(wantStored(first), got); diff != "" {
			t.Errorf("CreateOrder(o-1) returned (-want +got):\n%s", diff)
		}

		dup := newStoreOrder("o-2", "alice", "k1", time.Second)
		dup.Lines = []Line{{ItemID: "other", Quantity: 9}}
		got, created, err = st.CreateOrder(ctx, dup)
		if err != nil || created {
			t.Fatalf("CreateOrder(same user and key) = created %v, %v; want not created", created, err)
		}
		if diff := cmp.Diff(wantStored(first), got); diff != "" {
			t.Errorf("CreateOrder(same user and key) returned (-want the first order +got):\n%s", diff)
		}
		if _, err := st.Order(ctx, "o-2"); !errorAs[*NotFoundError](err) {
			t.Errorf("Order(o-2) error = %v, want NotFoundError: the duplicate must not be stored", err)
		}

		other := newStoreOrder("o-3", "bob", "k1", 2*time.Second)
		if _, created, err := st.CreateOrder(ctx, other); err != nil || !created {
			t.Errorf("CreateOrder(other user, same key) = created %v, %v; want created", created, err)
		}

		events, err := st.Events(ctx, "o-1", 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		want := []Event{{Seq: 1, Status: orderv1.OrderStatus_ORDER_STATUS_PENDING, Time: t0}}
		if diff := cmp.Diff(want, events); diff != "" {
			t.Errorf("Events(o-1) (-want +got):\n%s", diff)
		}
		if _, err := st.Order(ctx, "missing"); !errorAs[*NotFoundError](err) {
			t.Errorf("Order(missing) error = %v, want NotFoundError", err)
		}
	}
}

func caseCreateOrderConcurrentDuplicates(t *testing.T, st Store) {
	{
		ctx := storeCtx(t)
		const n = 20
		var wg sync.WaitGroup
		ids := make([]string, n)
		createdBy := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				o, created, err := st.CreateOrder(ctx, newStoreOrder(fmt.Sprintf("o-%d", i), "alice", "same", 0))
				errs[i], createdBy[i] = err, created
				if err == nil {
					ids[i] = o.ID
				}
			})
		}
		wg.Wait()
		creators := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("CreateOrder #%d: %v", i, errs[i])
			}
			if createdBy[i] {
				creators++
			}
			if ids[i] != ids[0] {
				t.Errorf("CreateOrder #%d returned order %s, #0 returned %s; want the same", i, ids[i], ids[0])
			}
		}
		if creators != 1 {
			t.Errorf("%d concurrent duplicates created %d orders, want 1", n, creators)
		}
	}
}

func caseUpdateConditions(t *testing.T, st Store) {
	{
		ctx := storeCtx(t)
		if _, _, err := st.CreateOrder(ctx, newStoreOrder("o-1", "alice", "k", 0)); err != nil {
			t.Fatal(err)
		}
		if ok, err := st.Claim(ctx, "o-1", "a", t0, time.Minute); err != nil || !ok {
			t.Fatalf("Claim = %v, %v; want true", ok, err)
		}
		stale := []struct {
			name string
			cond Cond
		}{
			{"another owner", Cond{Owner: "b"}},
			{"another phase", Cond{Owner: "a", Phase: PhaseCompensate}},
			{"another step", Cond{Owner: "a", Phase: PhaseForward, Step: StepReserve}},
			{"another status", Cond{Statuses: []orderv1.OrderStatus{orderv1.OrderStatus_ORDER_STATUS_CONFIRMED}}},
		}
		for _, tc := range stale {
			err := st.Update(ctx, "o-1", tc.cond, Change{Status: orderv1.OrderStatus_ORDER_STATUS_CANCELLED}, t0)
			if !errors.Is(err, ErrStale) {
				t.Errorf("Update(%s) error = %v, want ErrStale", tc.name, err)
			}
		}
		err := st.Update(ctx, "missing", Cond{}, Change{Status: orderv1.OrderStatus_ORDER_STATUS_CANCELLED}, t0)
		if !errorAs[*NotFoundError](err) {
			t.Errorf("Update(missing) error = %v, want NotFoundError", err)
		}

		// The saga prices the order, then reserves.
		cond := Cond{Owner: "a", Phase: PhaseForward, Step: StepPrice}
		price := Change{Step: StepReserve, SetStep: true, Prices: &Prices{Currency: "USD", Total: 450, Unit: []int64{100, 250}}}
		if err := st.Update(ctx, "o-1", cond, price, t0.Add(time.Second)); err != nil {
			t.Fatalf("Update(price) = %v", err)
		}
		if err := st.Update(ctx, "o-1", cond, price, t0.Add(time.Second)); !errors.Is(err, ErrStale) {
			t.Errorf("Update(price) again = %v, want ErrStale: the step moved on", err)
		}
		reserved := Change{Step: StepAuthorize, SetStep: true, Status: orderv1.OrderStatus_ORDER_STATUS_STOCK_RESERVED}
		cond.Step = StepReserve
		if err := st.Update(ctx, "o-1", cond, reserved, t0.Add(2*time.Second)); err != nil {
			t.Fatalf("Update(reserved) = %v", err)
		}
		cond.Step = StepAuthorize
		if err := st.Update(ctx, "o-1", cond, Change{AccountID: "acc-1"}, t0.Add(3*time.Second)); err != nil {
			t.Fatalf("Update(account) = %v", err)
		}
		got, err := st.Order(ctx, "o-1")
		if err != nil {
			t.Fatal(err)
		}
		want := wantStored(newStoreOrder("o-1", "alice", "k", 0))
		want.Lines[0].UnitPrice, want.Lines[1].UnitPrice = 100, 250
		want.Currency, want.Total = "USD", 450
		want.Status, want.StatusSeq, want.Step = orderv1.OrderStatus_ORDER_STATUS_STOCK_RESERVED, 2, StepAuthorize
		want.AccountID = "acc-1"
		want.LeaseOwner, want.LeaseUntil = "a", t0.Add(time.Minute)
		want.UpdateTime = t0.Add(2 * time.Second) // the account id is not shown
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Order after updates (-want +got):\n%s", diff)
		}
		events, err := st.Events(ctx, "o-1", 1, 10)
		if err != nil {
			t.Fatal(err)
		}
		wantEvents := []Event{{Seq: 2, Status: orderv1.OrderStatus_ORDER_STATUS_STOCK_RESERVED, Time: t0.Add(2 * time.Second)}}
		if diff := cmp.Diff(wantEvents, events); diff != "" {
			t.Errorf("Events(after 1) (-want +got):\n%s", diff)
		}
	}
}

// caseApplyMatchesUpdate checks that Order.apply, which the saga uses
// instead of reading the order again after its updates, leaves a copy of
// the order equal to what the store holds after each kind of change.
func caseApplyMatchesUpdate(t *testing.T, st Store) {
	ctx := storeCtx(t)
	if _, _, err := st.CreateOrder(ctx, newStoreOrder("o-1", "alice", "k", 0)); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.Claim(ctx, "o-1", "a", t0, time.Minute); err != nil || !ok {
		t.Fatalf("Claim = %v, %v; want true", ok, err)
	}
	mine, err := st.Order(ctx, "o-1")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		change Change
	}{
		{"lease renewed", Change{LeaseUntil: t0.Add(2 * time.Minute)}},
		{"priced", Change{Step: StepReserve, SetStep: true, Prices: &Prices{Currency: "EUR", Total: 700, Unit: []int64{200, 300}},
			LeaseUntil: t0.Add(3 * time.Minute)}},
		{"reserved", Change{Step: StepAuthorize, SetStep: true, Status: orderv1.OrderStatus_ORDER_STATUS_STOCK_RESERVED}},
		{"account learnt", Change{AccountID: "acc-1"}},
		{"authorized", Change{Step: StepShip, SetStep: true, Status: orderv1.OrderStatus_ORDER_STATUS_PAYMENT_AUTHORIZED,
			AccountID: "acc-1", AuthorizationID: "auth-1"}},
		{"shipping failed", Change{Phase: PhaseCompensate, Step: StepShip, SetStep: true,
			Status: orderv1.OrderStatus_ORDER_STATUS_CANCELLING, CancelReason: "shipping unavailable", ShipmentID: "ship-1"}},
		{"compensated to none", Change{Step: StepNone, SetStep: true}},
		{"done", Change{Phase: PhaseDone, Step: StepNone, SetStep: true, Status: orderv1.OrderStatus_ORDER_STATUS_CANCELLED,
			ReleaseLease: true}},
	}
	for i, step := range steps {
		at := t0.Add(time.Duration(i+1) * time.Second)
		if err := st.Update(ctx, "o-1", Cond{Owner: "a", Phase: mine.Phase, Step: mine.Step}, step.change, at); err != nil {
			t.Fatalf("%s: Update = %v", step.name, err)
		}
		mine.apply(step.change, at)
		stored, err := st.Order(ctx, "o-1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(stored, mine, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("%s: applied copy differs from the store (-store +copy):\n%s", step.name, diff)
		}
	}
	if mine.LeaseOwner != "" {
		t.Errorf("lease owner after the saga's last update = %q, want none", mine.LeaseOwner)
	}
}

func caseConcurrentTransitionsOneWins(t *testing.T, st Store) {
	{
		ctx := storeCtx(t)
		if _, _, err := st.CreateOrder(ctx, newStoreOrder("o-1", "alice", "k", 0)); err != nil {
			t.Fatal(err)
		}
		// A cancel and a saga step race for the same state: exactly one wins.
		const n = 10
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				errs[i] = st.Update(ctx, "o-1", Cond{Phase: PhaseForward},
					Change{Phase: PhaseCompensate, Status: orderv1.OrderStatus_ORDER_STATUS_CANCELLING,
						CancelReason: fmt.Sprint("reason ", i)}, t0)
			})
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, ErrStale):
				t.Fatalf("Update: %v", err)
			}
		}
		if wins != 1 {
			t.Errorf("%d concurrent transitions: %d won, want 1", n, wins)
		}
		events, err := st.Events(ctx, "o-1", 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != 2 {
			t.Errorf("Events = %d, want 2 (created, cancelling)", len(events))
		}
	}
}

func caseLeaseClaiming(t *testing.T, st Store) {
	{
		ctx := storeCtx(t)
		if _, _, err := st.CreateOrder(ctx, newStoreOrder("o-1", "alice", "k", 0)); err != nil {
			t.Fatal(err)
		}
		ttl := 10 * time.Second
		steps := []struct {
			name  string
			owner string
			now   time.Time
			want  bool
		}{
			{"free lease", "a", t0, true},
			{"held by another", "b", t0.Add(time.Second), false},
			{"renewed by its owner", "a", t0.Add(5 * time.Second), true},
			{"still held after the first ttl", "b", t0.Add(12 * time.Second), false},
			{"expired", "b", t0.Add(16 * time.Second), true},
			{"lost by the first owner", "a", t0.Add(17 * time.Second), false},
		}
		for _, s := range steps {
			if got, err := st.Claim(ctx, "o-1", s.owner, s.now, ttl); err != nil || got != s.want {
				t.Errorf("%s: Claim(%s) = %v, %v; want %v", s.name, s.owner, got, err, s.want)
			}
		}
		if err := st.ReleaseLease(ctx, "o-1", "a", time.Time{}); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Claim(ctx, "o-1", "a", t0.Add(18*time.Second), ttl); got {
			t.Errorf("Claim(a) after a non-owner released = true, want false")
		}
		if err := st.ReleaseLease(ctx, "o-1", "b", time.Time{}); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Claim(ctx, "o-1", "a", t0.Add(18*time.Second), ttl); !got {
			t.Errorf("Claim(a) after the owner released = false, want true")
		}
		if err := st.Update(ctx, "o-1", Cond{Owner: "a"}, Change{Phase: PhaseDone}, t0); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Claim(ctx, "o-1", "b", t0.Add(time.Hour), ttl); got {
			t.Errorf("Claim of a finished saga = true, want false")
		}
	}
}

func caseLeaseTwoReplicasOneWins(t *testing.T, st Store) {
	{
		ctx := storeCtx(t)
		const orders, perReplica = 5, 8
		for i := range orders {
			if _, _, err := st.CreateOrder(ctx, newStoreOrder(fmt.Sprint("o-", i), "alice", fmt.Sprint("k", i), 0)); err != nil {
				t.Fatal(err)
			}
		}
		var mu sync.Mutex
		winners := make(map[string]map[string]bool) // order -> owners that won
		var wg sync.WaitGroup
		for _, owner := range []string{"replica-a", "replica-b"} {
			for range perReplica {
				wg.Go(func() {
					for i := range orders {
						id := fmt.Sprint("o-", i)
						ok, err := st.Claim(ctx, id, owner, t0, time.Minute)
						if err != nil {
							t.Errorf("Claim(%s, %s): %v", id, owner, err)
							return
						}
						if ok {
							mu.Lock()
							if winners[id] == nil {
								winners[id] = make(map[string]bool)
							}
							winners[id][owner] = true
							mu.Unlock()
						}
					}
				})
			}
		}
		wg.Wait()
		for i := range orders {
			id := fmt.Sprint("o-", i)
			if got := len(winners[id]); got != 1 {
				t.Errorf("order %s: %d replicas won the lease (%v), want 1", id, got, winners[id])
			}
		}
	}
}

func caseClaimable(t *testing.T, st Store) {
	{
		ctx := storeCtx(t)
		for i, id := range []string{"free", "leased", "expired", "later", "done"} {
			if _, _, err := st.CreateOrder(ctx, newStoreOrder(id, "alice", id, time.Duration(i)*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		now := t0.Add(time.Hour)
		mustClaim := func(id string, at time.Time, ttl time.Duration) {
			if ok, err := st.Claim(ctx, id, "a", at, ttl); err != nil || !ok {
				t.Fatalf("Claim(%s) = %v, %v", id, ok, err)
			}
		}
		mustClaim("leased", now, time.Minute)
		mustClaim("expired", now.Add(-time.Minute), time.Second)
		mustClaim("later", now, time.Minute)
		if err := st.ReleaseLease(ctx, "later", "a", now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		mustClaim("done", now, time.Minute)
		if err := st.Update(ctx, "done", Cond{Owner: "a"}, Change{Phase: PhaseDone}, now); err != nil {
			t.Fatal(err)
		}
		if err := st.ReleaseLease(ctx, "done", "a", time.Time{}); err != nil {
			t.Fatal(err)
		}
		got, err := st.Claimable(ctx, now, 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"free", "expired"}, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
			t.Errorf("Claimable (-want +got):\n%s", diff)
		}
		got, err = st.Claimable(ctx, now.Add(2*time.Minute), 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"free", "leased", "expired", "later"}, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
			t.Errorf("Claimable later (-want +got):\n%s", diff)
		}
		if got, err := st.Claimable(ctx, now.Add(2*time.Minute), 1); err != nil || len(got) != 1 {
			t.Errorf("Claimable(limit 1) = %v, %v; want one id", got, err)
		}
	}
}

func caseListOrders(t *testing.T, st Store) {
	{
		ctx := storeCtx(t)
		// Two of alice's orders share a creation time: the id breaks the tie.
		for _, o := range []*Order{
			newStoreOrder("a1", "alice", "1", 1*time.Second),
			newStoreOrder("a2", "alice", "2", 2*time.Second),
			newStoreOrder("a3", "alice", "3", 3*time.Second),
			newStoreOrder("a4", "alice", "4", 3*time.Second),
			newStoreOrder("a5", "alice", "5", 5*time.Second),
			newStoreOrder("b1", "bob", "1", 4*time.Second),
		} {
			if _, _, err := st.CreateOrder(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		ids := func(orders []*Order) []string {
			var out []string
			for _, o := range orders {
				out = append(out, o.ID)
				if len(o.Lines) != 2 {
					t.Errorf("order %s has %d lines, want 2", o.ID, len(o.Lines))
				}
			}
			return out
		}
		var pages [][]string
		var after *Cursor
		for range 5 {
			got, err := st.ListOrders(ctx, "alice", after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 {
				break
			}
			pages = append(pages, ids(got))
			last := got[len(got)-1]
			after = &Cursor{CreateTime: last.CreateTime, OrderID: last.ID}
		}
		want := [][]string{{"a5", "a4"}, {"a3", "a2"}, {"a1"}}
		if diff := cmp.Diff(want, pages); diff != "" {
			t.Errorf("ListOrders(alice) pages (-want +got):\n%s", diff)
		}
		all, err := st.ListOrders(ctx, "", nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"a5", "b1", "a4", "a3", "a2", "a1"}, ids(all)); diff != "" {
			t.Errorf("ListOrders(all) (-want +got):\n%s", diff)
		}
	}
}

// TestMigrationMovesSagasToCaptureBeforeCommit checks that migration 00002
// renumbers the sagas stored when the commit (then step 5) ran before the
// capture (then step 6): a saga going forward at the old step 6 resumes at
// the capture, and every other saga keeps its step.
func TestMigrationMovesSagasToCaptureBeforeCommit(t *testing.T) {
	t.Parallel()
	entries, err := fs.ReadDir(Migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	before := fstest.MapFS{}
	for _, e := range entries {
		if e.Name() >= "00002" {
			continue
		}
		data, err := fs.ReadFile(Migrations, "migrations/"+e.Name())
		if err != nil {
			t.Fatal(err)
		}
		before["migrations/"+e.Name()] = &fstest.MapFile{Data: data}
	}
	tests := []struct {
		id       string
		phase    Phase
		old, new Step
	}{
		{"committed, capture next", PhaseForward, 6, StepCapture},
		{"commit next", PhaseForward, 5, StepCapture},
		{"shipment next", PhaseForward, 4, StepShip},
		{"release next", PhaseForward, 7, StepRelease},
		{"compensating from the capture", PhaseCompensate, 6, 6},
		{"compensating from the commit", PhaseCompensate, 5, 5},
		{"done", PhaseDone, StepDone, StepDone},
	}
	sqltest.Each(t, before, "migrations", func(t *testing.T, db *sqldb.DB) {
		ctx := storeCtx(t)
		st := NewStore(db, nil)
		for i, tc := range tests {
			o := newStoreOrder(tc.id, "alice", strconv.Itoa(i), time.Duration(i)*time.Second)
			o.Phase, o.Step = tc.phase, tc.old
			if _, _, err := st.CreateOrder(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Migrate(ctx, Migrations, "migrations"); err != nil {
			t.Fatal(err)
		}
		for _, tc := range tests {
			o, err := st.Order(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if o.Phase != tc.phase || o.Step != tc.new {
				t.Errorf("%s: after the migration %s %d, want %s %d", tc.id, o.Phase, o.Step, tc.phase, tc.new)
			}
		}
	})
}
