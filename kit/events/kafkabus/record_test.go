package kafkabus

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

func TestRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   events.Message
		want events.Message
	}{
		{
			name: "all fields",
			in:   events.Message{ID: "1", Type: "T", Key: "k", Data: []byte("d"), Header: map[string]string{"A": "a", "B": ""}},
			want: events.Message{ID: "1", Type: "T", Key: "k", Data: []byte("d"), Header: map[string]string{"A": "a", "B": ""}},
		},
		{
			name: "no header, key or data",
			in:   events.Message{ID: "1", Type: "T"},
			want: events.Message{ID: "1", Type: "T", Data: []byte{}},
		},
		{
			name: "headers cannot override id and type",
			in:   events.Message{ID: "1", Type: "T", Header: map[string]string{HeaderID: "2", HeaderType: "U", "C": "c"}},
			want: events.Message{ID: "1", Type: "T", Data: []byte{}, Header: map[string]string{"C": "c"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecord("topic", tc.in, nil)
			if rec.Topic != "topic" {
				t.Errorf("Topic = %q, want topic", rec.Topic)
			}
			if rec.Value == nil {
				t.Error("Value = nil, a tombstone; want non-nil")
			}
			if (rec.Key == nil) != (tc.in.Key == "") {
				t.Errorf("Key = %q for message key %q", rec.Key, tc.in.Key)
			}
			if diff := cmp.Diff(tc.want, message(rec)); diff != "" {
				t.Errorf("message(newRecord(%+v)) mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestRecordHeadersSorted(t *testing.T) {
	rec := newRecord("t", events.Message{ID: "1", Type: "T", Header: map[string]string{"c": "", "a": "", "b": ""}}, map[string]string{"a": "x"})
	var got []string
	for _, h := range rec.Headers {
		got = append(got, h.Key+"="+string(h.Value))
	}
	want := []string{HeaderID + "=1", HeaderType + "=T", "a=x", "b=", "c="}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("headers mismatch (-want +got):\n%s", diff)
	}
}

func TestMessageWithoutID(t *testing.T) {
	got := message(&kgo.Record{Topic: "t", Partition: 3, Offset: 42, Value: []byte("v")})
	if want := "t/3/42"; got.ID != want {
		t.Errorf("ID = %q, want %q", got.ID, want)
	}
}

func TestDeadLetterRecord(t *testing.T) {
	msg := events.Message{ID: "1", Type: "T", Key: "k", Data: []byte("d"), Header: map[string]string{
		"A":                   "a",
		events.HeaderError:    "old",
		events.HeaderAttempts: "9",
	}}
	got := message(deadLetter("t.dlq", msg, "g", 3, errors.New("boom")))
	want := events.Message{ID: "1", Type: "T", Key: "k", Data: []byte("d"), Header: map[string]string{
		"A":                   "a",
		events.HeaderError:    "boom",
		events.HeaderAttempts: "3",
		events.HeaderGroup:    "g",
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dead letter mismatch (-want +got):\n%s", diff)
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exact", 5, "exact"},
		{"longer", 4, "long"},
		{"aé", 2, "a"}, // é is two bytes: not split
		{"aé", 3, "aé"},
		{"é", 1, ""},
	}
	for _, tc := range tests {
		if got := truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
