package requestid

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/metadata"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

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

type otherKey struct{}

// TestContextIsAContext checks that the id's context behaves as a
// context.WithValue would: its id is seen through derived contexts, the
// innermost id wins, other values and cancellation pass through.
func TestContextIsAContext(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), otherKey{}, "v"))
	ctx := NewContext(parent, "outer")
	derived, stop := context.WithTimeout(context.WithValue(ctx, otherKey{}, "w"), time.Hour)
	defer stop()
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"direct", ctx, "outer"},
		{"derived", derived, "outer"},
		{"nested", NewContext(derived, "inner"), "inner"},
	}
	for _, tt := range tests {
		if got := FromContext(tt.ctx); got != tt.want {
			t.Errorf("%s: FromContext = %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := ctx.Value(otherKey{}); got != "v" {
		t.Errorf("Value(otherKey) = %v, want v", got)
	}
	if got := fmt.Sprint(ctx); !strings.Contains(got, "WithValue(requestid, outer)") {
		t.Errorf("String() = %q, want it to name the id", got)
	}
	boom := errors.New("boom")
	cancel(boom)
	select {
	case <-derived.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("cancelling the parent did not reach a context derived from the id's")
	}
	if got := context.Cause(derived); !errors.Is(got, boom) {
		t.Errorf("Cause = %v, want %v", got, boom)
	}
}
