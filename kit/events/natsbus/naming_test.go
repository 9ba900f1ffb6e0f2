package natsbus

import (
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

func TestConsumerName(t *testing.T) {
	long := strings.Repeat("g", 60)
	tests := []struct {
		group, want string
	}{
		{"orders", "orders"},
		{"order-projection_2", "order-projection_2"},
		{"a.b", "a_b_" + hash("a.b")},
		{"a b", "a_b_" + hash("a b")},
		{"a*>", "a___" + hash("a*>")},
		{"ü", "__" + hash("ü")},
		{long, long[:maxConsumerLen] + "_" + hash(long)},
	}
	for _, tc := range tests {
		got, err := consumerName(tc.group)
		if err != nil || got != tc.want {
			t.Errorf("consumerName(%q) = %q, %v, want %q, nil", tc.group, got, err, tc.want)
		}
		if err := checkStreamName(got); err != nil {
			t.Errorf("consumerName(%q) = %q, not a valid name: %v", tc.group, got, err)
		}
	}
	// Groups that differ only in replaced characters get different names.
	seen := map[string]string{}
	for _, g := range []string{"a.b", "a_b", "a b", "a/b", "a-b"} {
		name, _ := consumerName(g)
		if other, ok := seen[name]; ok {
			t.Errorf("consumerName(%q) = consumerName(%q) = %q", g, other, name)
		}
		seen[name] = g
	}
	if _, err := consumerName(""); err == nil {
		t.Error("consumerName(\"\") = nil error, want ErrInvalid")
	}
}

// hash is the suffix consumerName appends: FNV-1a of the group in hex.
func hash(s string) string { return strconv.FormatUint(uint64(fnv32(s)), 16) }

func TestFNV32(t *testing.T) {
	// Published FNV-1a test vectors.
	for in, want := range map[string]uint32{"": 0x811c9dc5, "a": 0xe40c292c, "foobar": 0xbf9cf968} {
		if got := fnv32(in); got != want {
			t.Errorf("fnv32(%q) = %#x, want %#x", in, got, want)
		}
	}
}

func TestTypeSubject(t *testing.T) {
	tests := []struct {
		typ, want string
	}{
		{"switchboard.events.v1.OrderPlaced", "p.switchboard.events.v1.OrderPlaced"},
		{"A", "p.A"},
		{"v1.Ünïcode-ok_1", "p.v1.Ünïcode-ok_1"},
	}
	for _, tc := range tests {
		got, err := typeSubject("p", tc.typ)
		if err != nil || got != tc.want {
			t.Errorf("typeSubject(p, %q) = %q, %v, want %q, nil", tc.typ, got, err, tc.want)
		}
		if back := trimBase(got, "p"); back != tc.typ {
			t.Errorf("trimBase(%q, p) = %q, want %q", got, back, tc.typ)
		}
	}
}

func TestServerAtLeast(t *testing.T) {
	tests := []struct {
		version string
		want    bool
	}{
		{"2.10.0", true},
		{"2.9.10", false},
		{"2.11.3", true},
		{"3.0.0", true},
		{"v2.10.22", true},
		{"2.10-beta.1", true},
		{"1.99.0", false},
		{"", false},
		{"garbage", false},
	}
	for _, tc := range tests {
		if got := serverAtLeast(tc.version, 2, 10); got != tc.want {
			t.Errorf("serverAtLeast(%q, 2, 10) = %v, want %v", tc.version, got, tc.want)
		}
	}
}

func TestHeaderValue(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"plain error", "plain error"},
		{"line one\nline two\r\n", "line one line two  "},
		{"tab\there", "tab here"},
	}
	for _, tc := range tests {
		if got := headerValue(tc.in); got != tc.want {
			t.Errorf("headerValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := strings.Repeat("é", maxErrorHeaderLen) // two bytes each
	got := headerValue(long)
	if len(got) > maxErrorHeaderLen || !utf8.ValidString(got) || len(got) < maxErrorHeaderLen-1 {
		t.Errorf("headerValue(%d bytes) = %d bytes, valid UTF-8 %v, want at most %d bytes, valid", len(long), len(got), utf8.ValidString(got), maxErrorHeaderLen)
	}
}

func TestBrokerRedelivery(t *testing.T) {
	tests := []struct {
		name           string
		sub            events.Subscription
		wantMaxDeliver int
		wantBackoff    []time.Duration
	}{
		{
			name:           "defaults",
			sub:            events.Subscription{Group: "g"},
			wantMaxDeliver: events.DefaultMaxDeliver + unhandledGrace + 4,
			wantBackoff: []time.Duration{
				events.DefaultAckWait + 100*time.Millisecond,
				events.DefaultAckWait + 500*time.Millisecond,
				events.DefaultAckWait + 2*time.Second,
				events.DefaultAckWait + 5*time.Second,
			},
		},
		{
			name:           "own backoff",
			sub:            events.Subscription{Group: "g", MaxDeliver: 2, AckWait: time.Second, Backoff: []time.Duration{time.Millisecond}},
			wantMaxDeliver: 2 + unhandledGrace + 4,
			wantBackoff:    []time.Duration{time.Second + time.Millisecond},
		},
		{
			name:           "backoff longer than the broker allows",
			sub:            events.Subscription{Group: "g", MaxDeliver: 1, AckWait: time.Second, Backoff: make([]time.Duration, 40)},
			wantMaxDeliver: 1 + unhandledGrace + 4,
			wantBackoff:    repeat(time.Second, unhandledGrace+4),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			md := brokerMaxDeliver(tc.sub)
			if md != tc.wantMaxDeliver {
				t.Errorf("brokerMaxDeliver = %d, want %d", md, tc.wantMaxDeliver)
			}
			if diff := cmp.Diff(tc.wantBackoff, brokerBackoff(tc.sub, md)); diff != "" {
				t.Errorf("brokerBackoff (-want +got):\n%s", diff)
			}
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}
