package requestid

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestValid(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"abc-123_x.y:z", true},
		{"", false},
		{strings.Repeat("a", MaxLen), true},
		{strings.Repeat("a", MaxLen+1), false},
		{"has space", false},
		{"new\nline", false},
		{"ünïcode", false},
	}
	for _, tt := range tests {
		if got := Valid(tt.id); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestFromIncoming(t *testing.T) {
	tests := []struct {
		name   string
		md     metadata.MD
		keepIt bool
	}{
		{"well formed is kept", metadata.Pairs(Header, "req-1"), true},
		{"malformed is replaced", metadata.Pairs(Header, "bad id\n"), false},
		{"absent is made", metadata.MD{}, false},
	}
	for _, tt := range tests {
		ctx := metadata.NewIncomingContext(context.Background(), tt.md)
		got := FromIncoming(ctx)
		if tt.keepIt && got != tt.md.Get(Header)[0] {
			t.Errorf("%s: FromIncoming = %q, want %q", tt.name, got, tt.md.Get(Header)[0])
		}
		if !tt.keepIt && (len(got) != 32 || !Valid(got)) {
			t.Errorf("%s: FromIncoming = %q, want a fresh 32-character id", tt.name, got)
		}
	}
}

func TestContextRoundTrip(t *testing.T) {
	if got := FromContext(context.Background()); got != "" {
		t.Errorf("FromContext(empty) = %q, want \"\"", got)
	}
	ctx := NewContext(context.Background(), "r1")
	if got := FromContext(ctx); got != "r1" {
		t.Errorf("FromContext = %q, want r1", got)
	}
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := New()
		if seen[id] || len(id) != 32 || !Valid(id) {
			t.Fatalf("New() = %q: repeated or malformed", id)
		}
		seen[id] = true
	}
}
