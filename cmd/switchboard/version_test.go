package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	tests := []struct {
		args  []string
		check func(t *testing.T, out string)
	}{
		{[]string{"version"}, func(t *testing.T, out string) {
			if !strings.HasPrefix(out, "switchboard ") || !strings.Contains(out, " commit ") {
				t.Errorf("version printed %q, want \"switchboard <version> commit <sha> ...\"", out)
			}
		}},
		{[]string{"version", "--json"}, func(t *testing.T, out string) {
			var v map[string]any
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("version --json printed %q: %v", out, err)
			}
			for _, k := range []string{"version", "commit", "modified", "go_version"} {
				if _, ok := v[k]; !ok {
					t.Errorf("version --json lacks %q in %q", k, out)
				}
			}
		}},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		cmd := newRootCommand()
		cmd.SetOut(&out)
		cmd.SetArgs(tt.args)
		if err := cmd.ExecuteContext(t.Context()); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		tt.check(t, out.String())
	}
}

func TestUnknownCommandFails(t *testing.T) {
	cmd := newRootCommand()
	cmd.SetOut(new(bytes.Buffer))
	cmd.SetErr(new(bytes.Buffer))
	cmd.SetArgs([]string{"no-such-command"})
	if err := cmd.ExecuteContext(t.Context()); err == nil {
		t.Error("unknown command succeeded, want an error")
	}
}
