package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// HashSize is the size of a record's hash and prev_hash: SHA-256.
const HashSize = sha256.Size

// canonicalTag starts every canonical encoding; a later encoding would
// change it.
const canonicalTag = "switchboard.audit.v1"

// Record is one event in the audit log.
type Record struct {
	// Seq is the record's position in the log: 1, 2, 3... without gaps.
	Seq       int64
	EventID   string
	EventType string
	Source    string
	Subject   string
	// EventTime is when the event happened; zero when the event carried
	// no time.
	EventTime time.Time
	// RecordTime is when the log recorded it.
	RecordTime time.Time
	// Payload is the marshalled switchboard.events.v1.Envelope.
	Payload []byte
	// PrevHash is the hash of record Seq-1, or 32 zero bytes for the
	// first record.
	PrevHash []byte
	// Hash is Hash(PrevHash, r).
	Hash []byte
}

// ZeroHash is the prev_hash of the first record: 32 zero bytes.
var ZeroHash = make([]byte, HashSize)

// Hash returns the hash of r linked to prev, the hash of the record before
// it:
//
//	SHA-256(prev || Canonical(r))
//
// r.PrevHash and r.Hash do not enter it (prev does).
func Hash(prev []byte, r *Record) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(Canonical(r))
	return h.Sum(nil)
}

// Canonical returns the canonical encoding of r's content, the bytes its
// hash covers. It is, in order, with integers in big-endian byte order:
//
//	the 20 ASCII bytes "switchboard.audit.v1"
//	Seq                          8 bytes, two's complement
//	EventID, EventType, Source,  each a 4-byte length then
//	Subject                      its UTF-8 bytes
//	EventTime                    8 bytes: Unix microseconds, 0 when zero
//	RecordTime                   8 bytes: Unix microseconds
//	Payload                      a 4-byte length then the bytes
//
// Length prefixes make the encoding unambiguous: no two different records
// have the same encoding. Times have microsecond precision, as stored.
func Canonical(r *Record) []byte {
	n := len(canonicalTag) + 8 + 4*5 + len(r.EventID) + len(r.EventType) + len(r.Source) + len(r.Subject) + 16 + len(r.Payload)
	b := make([]byte, 0, n)
	b = append(b, canonicalTag...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Seq)) //nolint:gosec // two's complement by definition
	for _, s := range []string{r.EventID, r.EventType, r.Source, r.Subject} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s))) //nolint:gosec // bounded by MaxFieldLen
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(micros(r.EventTime)))  //nolint:gosec // two's complement by definition
	b = binary.BigEndian.AppendUint64(b, uint64(micros(r.RecordTime))) //nolint:gosec // two's complement by definition
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Payload)))       //nolint:gosec // bounded by MaxEnvelopeBytes
	return append(b, r.Payload...)
}

// micros is t in Unix microseconds, 0 for the zero time.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicros reads a time stored by micros.
func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}
