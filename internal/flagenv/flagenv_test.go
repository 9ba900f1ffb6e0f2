package flagenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func newFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.Int("base-port", 7100, "")
	fs.String("data", "./var", "")
	fs.StringSlice("services", nil, "")
	return fs
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("base-port: 8000\ndata: /from/file\nservices: [a, b]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SWITCHBOARD_DATA": "/from/env"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	fs := newFlags()
	if err := fs.Parse([]string{"--base-port=9000"}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, file, lookup); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ flag, want string }{
		{"base-port", "9000"}, // command line wins
		{"data", "/from/env"}, // then the environment
		{"services", "[a,b]"}, // then the file
	}
	for _, tt := range tests {
		if got := fs.Lookup(tt.flag).Value.String(); got != tt.want {
			t.Errorf("%s = %q, want %q", tt.flag, got, tt.want)
		}
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	none := func(string) (string, bool) { return "", false }
	tests := []struct {
		name   string
		path   string
		lookup func(string) (string, bool)
		want   string
	}{
		{"unknown key", write("u.yaml", "bsae-port: 1\n"), none, "unknown settings bsae-port"},
		{"bad value in file", write("b.yaml", "base-port: many\n"), none, "key base-port"},
		{"bad value in env", "", func(k string) (string, bool) { return "x", k == "SWITCHBOARD_BASE_PORT" }, "SWITCHBOARD_BASE_PORT"},
		{"missing file", filepath.Join(dir, "nope.yaml"), none, "no such file"},
		{"nested", write("n.yaml", "data: {a: 1}\n"), none, "nested"},
		{"too large", write("l.yaml", "data: "+strings.Repeat("x", MaxFileSize)+"\n"), none, "larger than"},
	}
	for _, tt := range tests {
		err := Apply(newFlags(), tt.path, tt.lookup)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Apply = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("base-port"); got != "SWITCHBOARD_BASE_PORT" {
		t.Errorf("EnvName(base-port) = %q", got)
	}
}
