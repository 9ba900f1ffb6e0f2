package kafkabus

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

// Record headers that carry Message.ID and Message.Type. Message.Key is the
// record key, Message.Data the record value, and every Message.Header entry
// a record header of its own.
const (
	HeaderID   = "Switchboard-Id"
	HeaderType = "Switchboard-Type"
)

// maxErrorHeader bounds the handler error recorded on a dead letter.
const maxErrorHeader = 4 << 10

// newRecord builds the record for msg on topic. Entries of extra are added
// to, and override, msg.Header; ID and Type always come from msg.
func newRecord(topic string, msg events.Message, extra map[string]string) *kgo.Record {
	h := make(map[string]string, len(msg.Header)+len(extra))
	maps.Copy(h, msg.Header)
	maps.Copy(h, extra)
	delete(h, HeaderID)
	delete(h, HeaderType)

	headers := make([]kgo.RecordHeader, 0, len(h)+2)
	headers = append(headers,
		kgo.RecordHeader{Key: HeaderID, Value: []byte(msg.ID)},
		kgo.RecordHeader{Key: HeaderType, Value: []byte(msg.Type)},
	)
	for _, k := range slices.Sorted(maps.Keys(h)) {
		headers = append(headers, kgo.RecordHeader{Key: k, Value: []byte(h[k])})
	}

	rec := &kgo.Record{Topic: topic, Headers: headers, Value: msg.Data}
	if rec.Value == nil {
		// A nil value is a tombstone to a compacted topic; an event with
		// no data is not one.
		rec.Value = []byte{}
	}
	if msg.Key != "" {
		// Records with one key go to one partition, which keeps them in
		// order. Records without a key are spread over the partitions.
		rec.Key = []byte(msg.Key)
	}
	return rec
}

// message decodes a record newRecord built. A record from another producer
// without an id header gets its position as id, so that it can still be
// told apart.
func message(rec *kgo.Record) events.Message {
	m := events.Message{Key: string(rec.Key), Data: rec.Value}
	for _, h := range rec.Headers {
		switch h.Key {
		case HeaderID:
			m.ID = string(h.Value)
		case HeaderType:
			m.Type = string(h.Value)
		default:
			if m.Header == nil {
				m.Header = make(map[string]string, len(rec.Headers))
			}
			m.Header[h.Key] = string(h.Value)
		}
	}
	if m.ID == "" {
		m.ID = fmt.Sprintf("%s/%d/%d", rec.Topic, rec.Partition, rec.Offset)
	}
	return m
}

// deadLetter builds the dead-letter record for msg, which group failed to
// handle attempts times, the last time with err.
func deadLetter(topic string, msg events.Message, group string, attempts int, err error) *kgo.Record {
	return newRecord(topic, msg, map[string]string{
		events.HeaderError:    truncate(err.Error(), maxErrorHeader),
		events.HeaderAttempts: strconv.Itoa(attempts),
		events.HeaderGroup:    group,
	})
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
