package inventory

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// TestHubPublishNeverBlocks publishes far more than a subscriber that never
// reads can queue: every publish returns at once, the subscriber is marked
// behind once, and a subscriber that reads gets everything.
func TestHubPublishNeverBlocks(t *testing.T) {
	t.Parallel()
	h := newHub()
	stalled := newSubscriber(8)
	reader := newSubscriber(8)
	h.follow(stalled, []string{"a", "b"})
	h.follow(reader, []string{"a"})
	const n = 20_000
	got := make(chan int64, 1)
	go func() {
		var last int64
		for l := range reader.queue {
			last = l.Version
			if last == n {
				break
			}
		}
		got <- last
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for v := range int64(n) {
			h.publish([]Level{{ItemID: "a", Version: v + 1}, {ItemID: "other", Version: v + 1}})
			// Keep the reader's queue from overflowing: this test is about
			// the stalled one.
			for len(reader.queue) == cap(reader.queue) {
				time.Sleep(time.Microsecond)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("publish blocked on a subscriber that does not read")
	}
	if v := <-got; v != n {
		t.Errorf("the reading subscriber's last version = %d, want %d", v, n)
	}
	if reader.behind.Load() {
		t.Error("the reading subscriber was marked behind")
	}
	if !stalled.behind.Load() || len(stalled.queue) != cap(stalled.queue) {
		t.Errorf("stalled subscriber: behind %v, queued %d; want behind with a full queue", stalled.behind.Load(), len(stalled.queue))
	}
	if len(stalled.notify) != 1 || len(stalled.wake) != 1 {
		t.Errorf("stalled subscriber signals: notify %d, wake %d; want 1 each", len(stalled.notify), len(stalled.wake))
	}
	h.close(stalled)
	if h.follow(stalled, []string{"a"}) {
		t.Error("follow after close succeeded")
	}
	if got := h.followers("a"); got != 1 {
		t.Errorf("followers of a = %d, want 1", got)
	}
	if got := h.followers("b"); got != 0 {
		t.Errorf("followers of b = %d, want 0", got)
	}
	h.unfollow(reader, []string{"a"})
	if len(h.subs) != 0 {
		t.Errorf("hub still maps %d ids", len(h.subs))
	}
}

// gatedStream is a Subscribe server stream whose Send waits for a token,
// so that a test decides when the client "reads".
type gatedStream struct {
	grpc.ServerStream // nil: the pump only sends
	ctx               context.Context
	tokens            chan struct{}
	blocked           chan struct{}
	sent              chan *inventoryv1.SubscribeResponse
}

func (g *gatedStream) Send(m *inventoryv1.SubscribeResponse) error {
	select {
	case <-g.tokens:
	default:
		g.blocked <- struct{}{}
		select {
		case <-g.tokens:
		case <-g.ctx.Done():
			return g.ctx.Err()
		}
	}
	m = proto.Clone(m).(*inventoryv1.SubscribeResponse)
	m.UpdateTime = nil
	g.sent <- m
	return nil
}

func (g *gatedStream) Recv() (*inventoryv1.SubscribeRequest, error) { panic("not used") }

func (g *gatedStream) Context() context.Context { return g.ctx }

// TestPumpResync: a subscriber that falls behind is resynced with a fresh
// snapshot; falling behind again within the window ends it.
func TestPumpResync(t *testing.T) {
	t.Parallel()
	db := sqltest.New(t, sqldb.SQLite, Migrations, "migrations")
	st := newSQLStore(db, nil)
	cfg, err := Config{SubscriberBuffer: 4, ResyncWindow: time.Minute}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	svc := newService(st, cfg, slog.New(slog.DiscardHandler))
	mustCreate(t, st, map[string]int64{"a": 0})
	ctx, cancel := context.WithCancel(storeCtx(t))
	defer cancel()

	g := &gatedStream{
		ctx:     ctx,
		tokens:  make(chan struct{}, 100),
		blocked: make(chan struct{}, 1),
		sent:    make(chan *inventoryv1.SubscribeResponse, 100),
	}
	p := &pump{svc: svc, stream: g, sub: newSubscriber(cfg.SubscriberBuffer), last: make(map[string]int64)}
	defer svc.hub.close(p.sub)
	reqs := make(chan *inventoryv1.SubscribeRequest)
	errc := make(chan error, 1)
	go func() { errc <- p.run(ctx, reqs) }()

	version := int64(1)
	change := func() {
		t.Helper()
		version++
		_, levels, err := st.RecordItems(ctx, []ItemInput{{ID: "a", Quantity: version}}, t0)
		if err != nil {
			t.Fatal(err)
		}
		svc.hub.publish(levels)
	}
	level := func(v int64, snapshot bool) *inventoryv1.SubscribeResponse {
		return &inventoryv1.SubscribeResponse{ItemId: "a", OnHand: v, Available: v, Version: v, Snapshot: snapshot}
	}
	expect := func(what string, want ...*inventoryv1.SubscribeResponse) {
		t.Helper()
		var got []*inventoryv1.SubscribeResponse
		for range want {
			select {
			case m := <-g.sent:
				got = append(got, m)
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: timed out after %d messages", what, len(got))
			}
		}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Fatalf("%s (-want +got):\n%s", what, diff)
		}
	}
	// overflow blocks the pump in Send with one change, then fills its
	// queue and publishes one more.
	overflow := func() {
		t.Helper()
		change()
		<-g.blocked
		for range cap(p.sub.queue) + 1 {
			change()
		}
		if !p.sub.behind.Load() {
			t.Fatal("subscriber not behind after its queue overflowed")
		}
	}

	g.tokens <- struct{}{}
	reqs <- &inventoryv1.SubscribeRequest{SubscribeItemIds: []string{"a"}}
	// The snapshot reports on hand = 0 at version 1.
	expect("snapshot", &inventoryv1.SubscribeResponse{ItemId: "a", Version: 1, Snapshot: true})

	overflow() // versions 2 (in Send), 3-6 (queued), 7 (dropped)
	g.tokens <- struct{}{}
	g.tokens <- struct{}{}
	expect("resync", level(2, false), level(7, true))
	if p.sub.behind.Load() {
		t.Error("still behind after the resync")
	}

	overflow() // again, within the window
	g.tokens <- struct{}{}
	expect("before the end", level(8, false))
	select {
	case err := <-errc:
		if wantStatus(t, "pump", err, codes.ResourceExhausted, Domain, ReasonSubscriberTooSlow) {
			if d, ok := status.RetryDelay(err); !ok || d != time.Minute {
				t.Errorf("RetryInfo = %s, %v; want 1m", d, ok)
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the pump did not give up on a subscriber behind twice within the window")
	}
}
