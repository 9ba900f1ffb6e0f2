//go:build !race

package validate_test

import (
	"testing"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// TestCheckValidDoesNotAllocate checks that a valid message costs no
// allocation. (The race detector allocates: the test is built without it.)
func TestCheckValidDoesNotAllocate(t *testing.T) {
	s := validate.NewSet()
	validate.Rule(s, func(m *greeterv1.SayHelloRequest, v *validate.Violations) {
		v.Length("name", m.GetName(), 1, 100)
	})
	req := &greeterv1.SayHelloRequest{Name: "ann"}
	if got := testing.AllocsPerRun(100, func() {
		if err := s.Check(req); err != nil {
			t.Fatal(err)
		}
	}); got != 0 {
		t.Errorf("Check(valid): %v allocations, want 0", got)
	}
}
