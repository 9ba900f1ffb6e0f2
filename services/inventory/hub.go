package inventory

import (
	"sync"
	"sync/atomic"
	"time"
)

// hub fans the stock levels this process commits out to the Subscribe
// streams that follow the items. Publishing never blocks: each subscriber
// has a bounded queue, and a subscriber whose queue is full is marked
// behind (its queue will be dropped and replaced by fresh snapshots) instead
// of being waited for. The hub's lock is held only for map lookups and
// non-blocking channel sends, never while anything is sent on a stream.
//
// A hub is safe for concurrent use.
type hub struct {
	mu   sync.RWMutex
	subs map[string]map[*subscriber]struct{} // item id → followers
}

func newHub() *hub {
	return &hub{subs: make(map[string]map[*subscriber]struct{})}
}

// subscriber is one Subscribe stream as the hub sees it.
type subscriber struct {
	// queue holds the levels published for the followed items, until the
	// stream's pump sends them.
	queue chan Level
	// behind is set by a publisher that found queue full, and cleared by
	// the pump when it resyncs; behindSince says when it was set, in Unix
	// nanoseconds.
	behind      atomic.Bool
	behindSince atomic.Int64
	// wake tells the pump, and notify the stream's watcher, that the
	// subscriber fell behind. Both have room for one signal and are sent to
	// without blocking.
	wake   chan struct{}
	notify chan struct{}

	// Guarded by hub.mu.
	ids    map[string]struct{}
	closed bool
}

func newSubscriber(buffer int) *subscriber {
	return &subscriber{
		queue:  make(chan Level, buffer),
		wake:   make(chan struct{}, 1),
		notify: make(chan struct{}, 1),
		ids:    make(map[string]struct{}),
	}
}

// offer queues l without blocking, or marks the subscriber behind when its
// queue is full. Once behind, it queues nothing until the pump resyncs.
func (s *subscriber) offer(l Level) {
	if s.behind.Load() {
		return
	}
	select {
	case s.queue <- l:
		return
	default:
	}
	if s.behind.CompareAndSwap(false, true) {
		s.behindSince.Store(time.Now().UnixNano())
		signal(s.wake)
		signal(s.notify)
	}
}

// signal sends on a channel with room for one signal, without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// publish offers every level to the subscribers following its item.
func (h *hub) publish(levels []Level) {
	if len(levels) == 0 {
		return
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, l := range levels {
		for s := range h.subs[l.ItemID] {
			s.offer(l)
		}
	}
}

// follow makes s follow ids. It returns false, and does nothing, once s
// has been closed.
func (h *hub) follow(s *subscriber, ids []string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed {
		return false
	}
	for _, id := range ids {
		set := h.subs[id]
		if set == nil {
			set = make(map[*subscriber]struct{})
			h.subs[id] = set
		}
		set[s] = struct{}{}
		s.ids[id] = struct{}{}
	}
	return true
}

// unfollow stops s following ids.
func (h *hub) unfollow(s *subscriber, ids []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		h.remove(s, id)
	}
}

// close stops s following anything, for good.
func (h *hub) close(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.closed = true
	for id := range s.ids {
		h.remove(s, id)
	}
}

// remove drops s from id's followers; h.mu is held.
func (h *hub) remove(s *subscriber, id string) {
	delete(s.ids, id)
	set := h.subs[id]
	delete(set, s)
	if len(set) == 0 {
		delete(h.subs, id)
	}
}

// followers returns how many subscribers follow id, for tests.
func (h *hub) followers(id string) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs[id])
}
