package canary_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/switchboard-rpc/switchboard/kit/discovery/canary"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, doc string
		want      canary.Policies
	}{
		{"empty", "", canary.Policies{}},
		{"yaml flow", "inventory: {v1: 80, v2: 20}", canary.Policies{"inventory": {"v1": 80, "v2": 20}}},
		{"json", `{"inventory": {"v1": 1}, "order": {"v1": 9, "v2": 1}}`,
			canary.Policies{"inventory": {"v1": 1}, "order": {"v1": 9, "v2": 1}}},
		{"zero weight kept", "inventory:\n  v1: 0\n  v2: 5\n", canary.Policies{"inventory": {"v1": 0, "v2": 5}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := canary.Parse([]byte(tc.doc))
			if err != nil {
				t.Fatalf("Parse(%q) error %v", tc.doc, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tc.doc, diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"not a map", "- v1", "policy"},
		{"weights zero", "inventory: {v1: 0}", "add up to 0"},
		{"negative", "inventory: {v1: -1, v2: 3}", "outside"},
		{"too heavy", "inventory: {v1: 1000001}", "outside"},
		{"bad service", "Inventory: {v1: 1}", "service name"},
		{"no versions", "inventory: {}", "versions"},
		{"too big", "x: {v1: 1}\n" + strings.Repeat("#", canary.MaxDocumentSize), "at most"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := canary.Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse(%.30q) = %v, want an error containing %q", tc.doc, err, tc.want)
			}
		})
	}
}
