package shipping

import (
	"context"
	"sync"
	"time"
)

// hub wakes the Track streams of a shipment when this process commits a
// change to it. It holds no events: a woken stream reads them from the
// database. notify never blocks, whatever the readers do.
type hub struct {
	mu     sync.Mutex
	topics map[string]*topic // by shipment id; only while someone watches
}

// topic is the watchers of one shipment: ch is closed, and replaced, at
// each change.
type topic struct {
	refs int
	ch   chan struct{}
}

// subscribe registers interest in a shipment until the returned function
// is called.
func (h *hub) subscribe(shipmentID string) (unsubscribe func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.topics[shipmentID]
	if t == nil {
		t = &topic{ch: make(chan struct{})}
		h.topics[shipmentID] = t
	}
	t.refs++
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if t.refs--; t.refs == 0 {
			delete(h.topics, shipmentID)
		}
	}
}

// changed returns a channel closed at the next change of a shipment the
// caller subscribed to.
func (h *hub) changed(shipmentID string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t := h.topics[shipmentID]; t != nil {
		return t.ch
	}
	return nil
}

// notify wakes the watchers of a shipment, if any.
func (h *hub) notify(shipmentID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t := h.topics[shipmentID]; t != nil {
		close(t.ch)
		t.ch = make(chan struct{})
	}
}

// track sends a shipment's events to send, oldest first: those so far,
// then each new one, until it sent the DELIVERED or CANCELLED event. It
// remembers the last sequence sent and, each time it wakes (a change in
// this process, or TrackResync elapsed), reads the events after it, so it
// neither loses nor repeats one. It fails with a *NotFoundError for an
// unknown shipment, ErrTooManyStreams beyond MaxTrackStreams, ErrClosed
// when the service closes, and ctx's error when ctx ends.
func (s *Service) track(ctx context.Context, shipmentID string, send func(Event) error) error {
	select {
	case <-s.done:
		return ErrClosed
	default:
	}
	if s.streams.Add(1) > int64(s.cfg.MaxTrackStreams) {
		s.streams.Add(-1)
		return ErrTooManyStreams
	}
	defer s.streams.Add(-1)
	unsubscribe := s.hub.subscribe(shipmentID)
	defer unsubscribe()
	resync := time.NewTimer(s.cfg.TrackResync)
	defer resync.Stop()
	var last int32
	for {
		// Take the channel before reading, so that a change committed
		// after the read still wakes us.
		changed := s.hub.changed(shipmentID)
		evs, err := s.store.Events(ctx, shipmentID, last, MaxEvents)
		if err != nil {
			return err
		}
		if last == 0 && len(evs) == 0 {
			// Every shipment has its CREATED event from the start.
			return &NotFoundError{ShipmentID: shipmentID}
		}
		for _, ev := range evs {
			if err := send(ev); err != nil {
				return err
			}
			last = ev.Sequence
			if Terminal(ev.Status) {
				return nil
			}
		}
		if len(evs) == MaxEvents {
			continue // there may be more already
		}
		resync.Reset(s.cfg.TrackResync)
		select {
		case <-changed:
		case <-resync.C:
		case <-s.done:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
