package audit

import (
	"bytes"
	"context"
	"fmt"
)

// verification is the outcome of verify.
type verification struct {
	// OK is true when every record checked matches its hash and links to
	// the one before it.
	OK bool
	// Checked counts the records checked, the bad one included.
	Checked int64
	// FirstBad is the first record that does not match, when !OK.
	FirstBad int64
	// Reason says why it does not match, when !OK.
	Reason string
	// HeadHash is the stored hash of the last record checked (nil when
	// none was).
	HeadHash []byte
}

// verify recomputes the chain over the records from..to (from 0 means 1;
// to 0 means the head), VerifyBatch records at a time, and reports the
// first record that is missing, does not link to the record before it, or
// whose hash does not match its content. A range that reaches the head
// also checks the head against the last record, so that a deleted last
// record is found. The chain is append-only, so records appended while
// it runs do not disturb it: it checks up to the head as it was at the
// start.
func (s *Service) verify(ctx context.Context, from, to int64) (verification, error) {
	head, err := s.store.Head(ctx)
	if err != nil {
		return verification{}, err
	}
	from = max(from, 1)
	if to == 0 || to > head.Seq {
		to = head.Seq
	}
	var v verification
	bad := func(seq int64, format string, args ...any) (verification, error) {
		v.OK, v.FirstBad, v.Reason = false, seq, fmt.Sprintf(format, args...)
		return v, nil
	}
	// prev is the hash the next record must link to.
	prev := ZeroHash
	if from > 1 && from <= to {
		before, err := s.store.Range(ctx, from-1, from-1, 1)
		if err != nil {
			return verification{}, err
		}
		if len(before) == 0 {
			return bad(from-1, "record %d, before the range, is missing", from-1)
		}
		prev = before[0].Hash
	}
	next := from
	for next <= to {
		recs, err := s.store.Range(ctx, next, to, s.cfg.VerifyBatch)
		if err != nil {
			return verification{}, err
		}
		if len(recs) == 0 {
			return bad(next, "record %d is missing", next)
		}
		for i := range recs {
			r := &recs[i]
			if r.Seq != next {
				return bad(next, "record %d is missing", next)
			}
			v.Checked++
			switch {
			case !bytes.Equal(r.PrevHash, prev):
				return bad(r.Seq, "record %d does not link to the record before it: its prev_hash is not that record's hash", r.Seq)
			case !bytes.Equal(r.Hash, Hash(prev, r)):
				return bad(r.Seq, "record %d does not match its hash: its content or hash was changed", r.Seq)
			}
			prev, v.HeadHash = r.Hash, r.Hash
			next++
		}
	}
	if to == head.Seq && to >= from && !bytes.Equal(head.Hash, prev) {
		return bad(to, "the chain head does not hold the hash of record %d", to)
	}
	v.OK = true
	return v, nil
}
