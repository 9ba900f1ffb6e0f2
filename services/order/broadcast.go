package order

import "sync"

// broadcaster wakes the readers of an order (WatchOrder, and PlaceOrder and
// CancelOrder waiting for the saga) after a change to it has committed. It
// carries no data: woken readers re-read the database, so a wake-up can be
// coalesced with others but nothing is lost. It keeps one topic per order
// that has readers, so its size is bounded by the readers in flight. Safe
// for concurrent use.
type broadcaster struct {
	mu     sync.Mutex
	topics map[string]*topic
}

type topic struct {
	ch   chan struct{} // closed on the next change
	refs int
}

func newBroadcaster() *broadcaster {
	return &broadcaster{topics: make(map[string]*topic)}
}

// subscription is one reader's interest in one order.
type subscription struct {
	b  *broadcaster
	id string
}

// subscribe starts following orderID; the caller closes the subscription.
func (b *broadcaster) subscribe(orderID string) *subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[orderID]
	if t == nil {
		t = &topic{ch: make(chan struct{})}
		b.topics[orderID] = t
	}
	t.refs++
	return &subscription{b: b, id: orderID}
}

// changed returns a channel closed at the next change of the order. Take
// it before reading the database, so that a change committed after the
// read is never missed.
func (s *subscription) changed() <-chan struct{} {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return s.b.topics[s.id].ch
}

// close ends the subscription.
func (s *subscription) close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	t := s.b.topics[s.id]
	if t.refs--; t.refs == 0 {
		delete(s.b.topics, s.id)
	}
}

// notify wakes the readers of orderID. Call it after the change committed.
func (b *broadcaster) notify(orderID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.topics[orderID]; t != nil {
		close(t.ch)
		t.ch = make(chan struct{})
	}
}
