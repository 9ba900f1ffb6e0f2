package inventory

import (
	"context"
	"errors"
	"io"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
)

// Subscribe streams live stock levels of the items the client follows.
//
// Three goroutines serve a stream: a receiver reads the client's requests,
// a pump (the only one that sends) applies them, sends a snapshot of every
// id added and then each change the hub queues, and this one, the watcher,
// ends the stream when either fails or the subscriber stays behind.
//
// A subscriber whose queue overflows is resynced: the pump drops the queue
// and sends fresh snapshots (snapshot=true) of every id it follows. If it
// overflows again within Config.ResyncWindow of the resync, or stays
// behind for ResyncWindow without the pump managing to resync (the client
// does not read at all, so the pump is stuck in Send), the stream ends with
// RESOURCE_EXHAUSTED (SUBSCRIBER_TOO_SLOW) and a RetryInfo. Publishers are
// never slowed down by it.
//
// Within one request, unsubscribe_item_ids apply before
// subscribe_item_ids. An id that is already followed gets a new snapshot.
// An id of an item that does not exist is followed all the same (an import
// may create it): its snapshot has version 0 and zero levels. Changes are
// sent in version order per item; a change older than what the client has
// already seen is skipped. Following more than MaxSubscriptions ids ends the
// stream with INVALID_ARGUMENT (TOO_MANY_SUBSCRIPTIONS). When the client
// closes its side, the stream goes on with the ids it follows, or ends with
// OK if it follows none.
func (s *Service) Subscribe(stream inventoryv1.InventoryService_SubscribeServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	sub := newSubscriber(s.cfg.SubscriberBuffer)
	defer s.hub.close(sub)

	reqs := make(chan *inventoryv1.SubscribeRequest)
	recvErr := make(chan error, 1)
	go receive(ctx, stream, reqs, recvErr)
	p := &pump{svc: s, stream: stream, sub: sub, last: make(map[string]int64)}
	pumpErr := make(chan error, 1)
	go func() { pumpErr <- p.run(ctx, reqs) }()

	// Returning ends the stream: grpc then unblocks the receiver and the
	// pump, which exit on their own.
	var behindTimer *time.Timer
	var behindC <-chan time.Time
	defer func() {
		if behindTimer != nil {
			behindTimer.Stop()
		}
	}()
	window := s.cfg.ResyncWindow
	for {
		select {
		case err := <-pumpErr:
			return s.table.Map(ctx, err)
		case err := <-recvErr:
			return s.table.Map(ctx, err)
		case <-ctx.Done():
			return s.table.Map(ctx, ctx.Err())
		case <-sub.notify:
			if behindC == nil {
				behindTimer = time.NewTimer(window)
				behindC = behindTimer.C
			}
		case <-behindC:
			behindC = nil
			if !sub.behind.Load() {
				continue
			}
			since := time.Since(time.Unix(0, sub.behindSince.Load()))
			if since >= window {
				return errTooSlow(window)
			}
			behindTimer.Reset(window - since)
			behindC = behindTimer.C
		}
	}
}

// receive forwards the client's requests to reqs, and closes it when the
// client closes its side. Any other error goes to errc.
func receive(ctx context.Context, stream inventoryv1.InventoryService_SubscribeServer,
	reqs chan<- *inventoryv1.SubscribeRequest, errc chan<- error) {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			close(reqs)
			return
		}
		if err != nil {
			errc <- err
			return
		}
		select {
		case reqs <- req:
		case <-ctx.Done():
			return
		}
	}
}

// pump is the sending side of one Subscribe stream. Only its goroutine
// uses it.
type pump struct {
	svc    *Service
	stream inventoryv1.InventoryService_SubscribeServer
	sub    *subscriber
	// last maps each followed id to the last version sent for it.
	last map[string]int64
	// lastResync is when the queue was last dropped; zero if never.
	lastResync time.Time
	resp       inventoryv1.SubscribeResponse
}

func (p *pump) run(ctx context.Context, reqs <-chan *inventoryv1.SubscribeRequest) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case req, ok := <-reqs:
			if !ok {
				if len(p.last) == 0 {
					return nil
				}
				reqs = nil
				continue
			}
			if err := p.apply(ctx, req); err != nil {
				return err
			}
		case l := <-p.sub.queue:
			if p.sub.behind.Load() {
				if err := p.resync(ctx); err != nil {
					return err
				}
				continue
			}
			if err := p.deliver(l); err != nil {
				return err
			}
		case <-p.sub.wake:
			if p.sub.behind.Load() {
				if err := p.resync(ctx); err != nil {
					return err
				}
			}
		}
	}
}

// apply changes which ids the stream follows and snapshots the new ones.
func (p *pump) apply(ctx context.Context, req *inventoryv1.SubscribeRequest) error {
	if drop := req.GetUnsubscribeItemIds(); len(drop) > 0 {
		p.svc.hub.unfollow(p.sub, drop)
		for _, id := range drop {
			delete(p.last, id)
		}
	}
	ids := req.GetSubscribeItemIds()
	if len(ids) == 0 {
		return nil
	}
	ids = dedupe(ids)
	added := 0
	for _, id := range ids {
		if _, ok := p.last[id]; !ok {
			added++
		}
	}
	if len(p.last)+added > MaxSubscriptions {
		return errTooManySubscriptions
	}
	// Follow before reading the snapshot, so that no change committed after
	// the read can be missed; changes it already contains are skipped by
	// version.
	if !p.svc.hub.follow(p.sub, ids) {
		return ctx.Err()
	}
	return p.snapshot(ctx, ids)
}

// resync drops the queue of a subscriber that fell behind and sends fresh
// snapshots of every id it follows, or gives up on it if it fell behind
// again too soon after the last resync.
func (p *pump) resync(ctx context.Context) error {
	window := p.svc.cfg.ResyncWindow
	now := time.Now()
	if !p.lastResync.IsZero() && now.Sub(p.lastResync) < window {
		return errTooSlow(window)
	}
	p.lastResync = now
	// Clear the mark before draining: what is published from here on is
	// queued, and anything dropped is covered by the snapshots read after.
	p.sub.behind.Store(false)
drain:
	for range cap(p.sub.queue) {
		select {
		case <-p.sub.queue:
		default:
			break drain
		}
	}
	return p.snapshot(ctx, slices.Sorted(maps.Keys(p.last)))
}

// snapshot sends the current level of each id, marked as a snapshot.
func (p *pump) snapshot(ctx context.Context, ids []string) error {
	levels, err := p.svc.store.Levels(ctx, ids)
	if err != nil {
		return err
	}
	byID := make(map[string]Level, len(levels))
	for _, l := range levels {
		byID[l.ItemID] = l
	}
	for _, id := range ids {
		l, ok := byID[id]
		if !ok {
			l = Level{ItemID: id}
		}
		if err := p.send(l, true); err != nil {
			return err
		}
		p.last[id] = l.Version
	}
	return nil
}

// deliver sends a change, unless its item is not followed any more or the
// client has already seen this version.
func (p *pump) deliver(l Level) error {
	v, ok := p.last[l.ItemID]
	if !ok || l.Version <= v {
		return nil
	}
	if err := p.send(l, false); err != nil {
		return err
	}
	p.last[l.ItemID] = l.Version
	return nil
}

func (p *pump) send(l Level, snapshot bool) error {
	r := &p.resp
	r.ItemId, r.OnHand, r.Reserved, r.Available, r.Version, r.Snapshot = l.ItemID, l.OnHand, l.Reserved, l.Available(), l.Version, snapshot
	r.UpdateTime = nil
	if l.Version > 0 {
		r.UpdateTime = timestamppb.New(l.Updated)
	}
	return p.stream.Send(r)
}

func dedupe(ids []string) []string {
	seen := make(map[string]struct{}, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}
