package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// countingTarget answers every call at once; every failEvery-th GetItem
// fails with UNAVAILABLE and every refuseEvery-th order is refused.
type countingTarget struct {
	items, orders          atomic.Int64
	failEvery, refuseEvery int64
	keys                   chan string
}

func (c *countingTarget) GetItem(context.Context, User, string) error {
	n := c.items.Add(1)
	if c.failEvery > 0 && n%c.failEvery == 0 {
		return status.Error(codes.Unavailable, "down")
	}
	return nil
}

func (c *countingTarget) PlaceOrder(_ context.Context, _ User, key, _ string) (bool, error) {
	n := c.orders.Add(1)
	if c.keys != nil {
		c.keys <- key
	}
	return c.refuseEvery == 0 || n%c.refuseEvery != 0, nil
}

var fixture = Fixture{Users: []User{{ID: "u1", Token: "t1"}, {ID: "u2", Token: "t2"}}, Items: []string{"a", "b"}, OrderItem: "o"}

func TestClosedLoopCountsEveryCall(t *testing.T) {
	target := &countingTarget{failEvery: 10, refuseEvery: 4}
	rep, err := Run(t.Context(), Config{Scenario: Mix, MixOrders: 50, Workers: 4, Requests: 400, Duration: time.Minute}, target, fixture)
	if err != nil {
		t.Fatal(err)
	}
	var calls, ok, refused int64
	for _, o := range rep.Ops {
		calls += o.Calls
		ok += o.OK
		refused += o.Refused
	}
	if calls != 400 {
		t.Errorf("calls reported = %d, want 400", calls)
	}
	if got, want := target.items.Load()+target.orders.Load(), int64(400); got != want {
		t.Errorf("calls made = %d, want %d", got, want)
	}
	if got, want := rep.Errors(), target.items.Load()/10; got != want {
		t.Errorf("Errors() = %d, want %d", got, want)
	}
	if got, want := refused, target.orders.Load()/4; got != want {
		t.Errorf("refused = %d, want %d", got, want)
	}
	if rep.Ops[0].Op != GetItem || rep.Ops[0].Errors["Unavailable"] != rep.Errors() {
		t.Errorf("get-item errors = %v, want all Unavailable", rep.Ops[0].Errors)
	}
	if target.orders.Load() < 100 || target.items.Load() < 100 {
		t.Errorf("mix of 50%%: %d orders, %d reads; want both near 200", target.orders.Load(), target.items.Load())
	}
}

func TestOrdersHaveUniqueKeys(t *testing.T) {
	target := &countingTarget{keys: make(chan string, 200)}
	if _, err := Run(t.Context(), Config{Scenario: PlaceOrder, Workers: 8, Requests: 200, Duration: time.Minute}, target, fixture); err != nil {
		t.Fatal(err)
	}
	close(target.keys)
	seen := map[string]bool{}
	for k := range target.keys {
		if seen[k] {
			t.Fatalf("idempotency key %q used twice", k)
		}
		seen[k] = true
	}
	if len(seen) != 200 {
		t.Errorf("%d keys, want 200", len(seen))
	}
}

func TestOpenLoopStopsAtRequests(t *testing.T) {
	target := &countingTarget{}
	var progress bytes.Buffer
	rep, err := Run(t.Context(), Config{Scenario: GetItem, Workers: 2, Rate: 1000, Requests: 50, Duration: time.Minute, Progress: &progress}, target, fixture)
	if err != nil {
		t.Fatal(err)
	}
	// Each of the 50 ticks is a call, or dropped when both workers were
	// still busy (a loaded machine can stall them).
	made := target.items.Load()
	if made+rep.Dropped != 50 || made == 0 {
		t.Errorf("open loop made %d calls and dropped %d, want 50 in all", made, rep.Dropped)
	}
	if rep.Ops[0].Calls != made || rep.Ops[0].OK != made {
		t.Errorf("report = %+v, want %d calls all ok", rep.Ops[0], made)
	}
	if want := fmt.Sprintf(" %d calls ", made); !strings.Contains(progress.String(), want) {
		t.Errorf("progress %q does not end with %q", progress.String(), want)
	}
}

func TestOpenLoopEndsWithDuration(t *testing.T) {
	target := &countingTarget{}
	rep, err := Run(t.Context(), Config{Scenario: GetItem, Workers: 2, Rate: 100, Duration: 300 * time.Millisecond}, target, fixture)
	if err != nil {
		t.Fatal(err)
	}
	// At 100/s for 0.3s the pacer allows about 30 calls; never more than
	// the schedule.
	if got := target.items.Load(); got == 0 || got > 31 {
		t.Errorf("open loop at 100/s for 300ms made %d calls, want 1 to 31", got)
	}
	if rep.Seconds <= 0 {
		t.Errorf("Seconds = %v", rep.Seconds)
	}
}

// deadlineTarget answers GetItem with DEADLINE_EXCEEDED when the call's
// deadline is earlier than its timeout allows, as a server does when a
// deadline it was sent runs out; every other call blocks until it is
// cancelled.
type deadlineTarget struct {
	timeout            time.Duration
	early, interrupted atomic.Int64
}

func (d *deadlineTarget) GetItem(ctx context.Context, _ User, _ string) error {
	dl, ok := ctx.Deadline()
	if !ok || time.Until(dl) < d.timeout-time.Second {
		d.early.Add(1)
		return status.Error(codes.DeadlineExceeded, "deadline from the run's end")
	}
	<-ctx.Done()
	d.interrupted.Add(1)
	return status.FromContextError(ctx.Err()).Err()
}

func (d *deadlineTarget) PlaceOrder(context.Context, User, string, string) (bool, error) {
	return false, errors.New("not used")
}

// A call the run's end interrupts is neither given the run's end as its
// deadline nor counted as a failure.
func TestRunEndCancelsCalls(t *testing.T) {
	target := &deadlineTarget{timeout: time.Minute}
	rep, err := Run(t.Context(), Config{Scenario: GetItem, Workers: 3, Duration: 200 * time.Millisecond, Timeout: time.Minute}, target, fixture)
	if err != nil {
		t.Fatal(err)
	}
	if n := target.early.Load(); n != 0 {
		t.Errorf("%d calls had the run's end as their deadline", n)
	}
	if n := target.interrupted.Load(); n != 3 {
		t.Errorf("%d calls were interrupted at the run's end, want 3", n)
	}
	if rep.Errors() != 0 {
		t.Errorf("Errors() = %d, want 0: %v", rep.Errors(), rep.Ops)
	}
}

func TestReportOutputs(t *testing.T) {
	rep, err := Run(t.Context(), Config{Scenario: Mix, Workers: 2, Requests: 100, Duration: time.Minute}, &countingTarget{failEvery: 7}, fixture)
	if err != nil {
		t.Fatal(err)
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON report does not parse: %v\n%s", err, js.String())
	}
	if len(back.Ops) != 2 || back.Ops[0].Op != GetItem || back.Ops[1].Op != PlaceOrder {
		t.Errorf("JSON ops = %+v, want get-item and place-order", back.Ops)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p99.9 ms", "get-item", "place-order", "get-item errors: Unavailable"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"via", Config{Via: "smoke"}},
		{"scenario", Config{Scenario: "browse"}},
		{"mix", Config{MixOrders: 101}},
		{"workers", Config{Workers: MaxWorkers + 1}},
		{"users", Config{Users: -1}},
		{"rate", Config{Rate: -1}},
		{"duration", Config{Duration: MaxDuration + 1}},
		{"requests", Config{Requests: -1}},
		{"timeout", Config{Timeout: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Run(t.Context(), tc.cfg, &countingTarget{}, fixture); err == nil {
				t.Errorf("Run(%+v) = nil error, want a bad config", tc.cfg)
			}
		})
	}
	if _, err := Run(t.Context(), Config{}, &countingTarget{}, Fixture{}); err == nil {
		t.Error("Run with an empty fixture = nil error")
	}
}

func TestErrorClass(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{status.Error(codes.ResourceExhausted, "slow down"), "ResourceExhausted"},
		{&HTTPError{Status: 429}, "HTTP 429"},
		{errors.New("connection reset"), "transport"},
	}
	for _, tc := range tests {
		if got := errorClass(tc.err); got != tc.want {
			t.Errorf("errorClass(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
