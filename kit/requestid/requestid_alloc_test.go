//go:build !race

package requestid

import (
	"context"
	"testing"
)

// sink keeps what the allocation test makes on the heap, as a real caller
// would.
var sink context.Context

// TestContextAllocations checks that carrying an id costs one allocation
// and reading it none. (The race detector allocates: the test is built
// without it.)
func TestContextAllocations(t *testing.T) {
	base := context.Background()
	if got := testing.AllocsPerRun(100, func() { sink = NewContext(base, "r1") }); got != 1 {
		t.Errorf("NewContext: %v allocations, want 1", got)
	}
	ctx := NewContext(base, "r1")
	if got := testing.AllocsPerRun(100, func() { _ = FromContext(ctx) }); got != 0 {
		t.Errorf("FromContext: %v allocations, want 0", got)
	}
}
