package audit

import (
	"context"
	"sync"
	"time"
)

// hub wakes the Tail streams of this process when records were committed.
// It holds no records: a woken stream reads them from the database. notify
// never blocks, whatever the readers do.
type hub struct {
	mu sync.Mutex
	ch chan struct{} // closed, and replaced, at each notify
}

// changed returns a channel closed at the next notify.
func (h *hub) changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ch
}

// notify wakes every stream waiting on changed.
func (h *hub) notify() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.ch)
	h.ch = make(chan struct{})
}

// tail sends the records after after (after 0: after the head as it is
// now) to send, in sequence order, of one of types when types is not
// empty, and then each record appended, until ctx ends (its error), the
// service closes (ErrClosed) or the stream falls behind (a *TooSlowError).
//
// It holds no records between reads: it remembers the position it has
// examined (pos) and, each time it wakes (Wake in this process, or
// TailResync elapsed), reads the head of the chain and then the records in
// (pos, head], at most TailBatch at a time. Records up to a committed head
// are all committed, since each append moves the head in its own
// transaction, so nothing is skipped; nothing is buffered, so a slow
// reader only slows its own stream. Once a read has reached the head the
// stream is live, and from then on it ends with a *TooSlowError when the
// head is more than MaxTailLag records beyond pos.
func (s *Service) tail(ctx context.Context, after int64, types []string, send func(*Record) error) error {
	select {
	case <-s.done:
		return ErrClosed
	default:
	}
	if s.streams.Add(1) > int64(s.cfg.MaxTailStreams) {
		s.streams.Add(-1)
		return ErrTooManyStreams
	}
	defer s.streams.Add(-1)
	pos := after
	if pos == 0 {
		h, err := s.store.Head(ctx)
		if err != nil {
			return err
		}
		pos = h.Seq
	}
	resync := time.NewTimer(s.cfg.TailResync)
	defer resync.Stop()
	live := false
	for {
		// Take the channel before reading, so that an append committed
		// after the read still wakes us.
		changed := s.hub.changed()
		head, err := s.store.Head(ctx)
		if err != nil {
			return err
		}
		if live && head.Seq-pos > int64(s.cfg.MaxTailLag) {
			return &TooSlowError{ResumeAfter: pos, Head: head.Seq, MaxLag: s.cfg.MaxTailLag}
		}
		recs, err := s.store.Records(ctx, pos, head.Seq, types, s.cfg.TailBatch)
		if err != nil {
			return err
		}
		for i := range recs {
			if err := send(&recs[i]); err != nil {
				return err
			}
			pos = recs[i].Seq
		}
		if len(recs) == s.cfg.TailBatch {
			continue // there may be more already
		}
		// Everything up to head was examined; records of other types
		// in between are passed over.
		pos = max(pos, head.Seq)
		live = true
		resync.Reset(s.cfg.TailResync)
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
