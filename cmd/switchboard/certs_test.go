package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// runCerts runs "switchboard certs args..." in process and returns its
// output.
func runCerts(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := newCertsCommand()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func TestCertsCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	tests := []struct {
		args []string
		want []string // parts of the output, in order
	}{
		{[]string{"init", "--dir", dir, "--services", "order,greeter"}, []string{
			"ca", "created", "ca.pem",
			"order", "created", "order.pem", "days left",
			"greeter", "created",
			"operator", "created", "operator.pem",
		}},
		{[]string{"init", "--dir", dir, "--services", "order,greeter"}, []string{
			"ca", "reused", "order", "reused", "greeter", "reused", "operator", "reused",
		}},
		{[]string{"show", filepath.Join(dir, "order.pem")}, []string{
			"subject:", "CN=order", "issuer:", "CN=Switchboard development CA", "kind:", "leaf",
			"spiffe id:", "spiffe://switchboard.local/order",
			"dns sans:", "localhost, order", "ip sans:", "127.0.0.1, ::1",
			"not after:", "days left:", "7.0",
		}},
		{[]string{"show", filepath.Join(dir, "ca.pem")}, []string{"kind:", "CA", "spiffe id:", "none", "days left:"}},
		{[]string{"issue", "alice", "--dir", dir, "--dns", "alice.example", "--ip", "10.0.0.1", "--valid", "24h"}, []string{
			"issued spiffe://switchboard.local/alice", "alice.pem", "alice-key.pem", "1.0 days left",
		}},
		{[]string{"show", filepath.Join(dir, "alice.pem")}, []string{
			"spiffe://switchboard.local/alice", "localhost, alice, alice.example", "127.0.0.1, ::1, 10.0.0.1",
		}},
		{[]string{"--help"}, []string{
			"grpcurl -cacert var/certs/ca.pem -cert var/certs/operator.pem -key var/certs/operator-key.pem 127.0.0.1:7101 list",
		}},
	}
	for _, tt := range tests {
		out, err := runCerts(t, tt.args...)
		if err != nil {
			t.Fatalf("certs %v: %v\n%s", tt.args, err, out)
		}
		rest := out
		for _, w := range tt.want {
			i := strings.Index(rest, w)
			if i < 0 {
				t.Errorf("certs %v printed:\n%s\nwant %q (in order of %q)", tt.args, out, w, tt.want)
				break
			}
			rest = rest[i+len(w):]
		}
	}
}

func TestCertsCommandErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCerts(t, "init", "--dir", dir, "--services", "order"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"issue", "alice", "--dir", t.TempDir()}, "certs init"},
		{[]string{"issue", "Alice", "--dir", dir}, "invalid service name"},
		{[]string{"issue", "alice", "--dir", dir, "--ip", "not-an-ip"}, "not an IP address"},
		{[]string{"issue", "--dir", dir}, "accepts 1 arg"},
		{[]string{"init", "--dir", dir, "--services", "ca"}, "reserved"},
		{[]string{"show", filepath.Join(dir, "order-key.pem")}, "no certificate"},
		{[]string{"show", filepath.Join(dir, "missing.pem")}, "no such file"},
	}
	for _, tt := range tests {
		out, err := runCerts(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("certs %v = %v (%s), want an error with %q", tt.args, err, out, tt.wantErr)
		}
	}
}
