package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/switchboard-rpc/switchboard/internal/system"
)

// parseDev parses args with the dev command's flags.
func parseDev(t *testing.T, args ...string) devOptions {
	t.Helper()
	var o devOptions
	fs := pflag.NewFlagSet("dev", pflag.ContinueOnError)
	o.add(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("Parse(%q): %v", args, err)
	}
	return o
}

func TestDevFlags(t *testing.T) {
	o := parseDev(t, "--replicas", "inventory=3,order=2", "--data", "/tmp/sb-dev", "--etcd-port", "0")
	if diff := cmp.Diff(map[string]int{"inventory": 3, "order": 2}, o.replicas); diff != "" {
		t.Errorf("replicas mismatch (-want +got):\n%s", diff)
	}
	if o.data != "/tmp/sb-dev" || o.etcdPort != 0 || o.basePort != 7100 || o.metricsBase != 9100 {
		t.Errorf("options = %+v, want data /tmp/sb-dev, etcd port 0, base port 7100, metrics 9100", o)
	}
	if o.shutdownTimeout != 15*time.Second || o.startTimeout != 90*time.Second {
		t.Errorf("timeouts = %s, %s; want 15s, 1m30s", o.shutdownTimeout, o.startTimeout)
	}
}

func TestDevPlan(t *testing.T) {
	o := parseDev(t, "--replicas", "inventory=3,order=2", "--data", "/d", "--redis", "redis://127.0.0.1:6379/0")
	procs, err := devPlan(o, system.Services(), "http://127.0.0.1:2379", "nats://127.0.0.1:4222")
	if err != nil {
		t.Fatal(err)
	}
	wantCount := len(system.Services()) + 2 + 1
	if len(procs) != wantCount {
		t.Fatalf("plan has %d processes, want %d", len(procs), wantCount)
	}
	by := map[string]devProcess{}
	addrs := map[string]bool{}
	metrics := map[string]bool{}
	for i, p := range procs {
		by[p.Name] = p
		if addrs[p.Addr] || metrics[p.Metrics] {
			t.Errorf("process %s reuses address %s or metrics %s", p.Name, p.Addr, p.Metrics)
		}
		addrs[p.Addr], metrics[p.Metrics] = true, true
		if i > 0 && p.Wave < procs[i-1].Wave {
			t.Errorf("process %s of wave %d comes after one of wave %d", p.Name, p.Wave, procs[i-1].Wave)
		}
		if (p.Replica == 1) != (p.Wave == 0) {
			t.Errorf("process %s (replica %d) is in wave %d, want first replicas in wave 0 only", p.Name, p.Replica, p.Wave)
		}
	}
	tests := []struct {
		name, addr string
		basePort   string
	}{
		{"inventory-1", "127.0.0.1:7102", "7100"},
		{"inventory-2", "127.0.0.1:7112", "7110"},
		{"inventory-3", "127.0.0.1:7122", "7120"},
		{"order-2", "127.0.0.1:7114", "7110"},
		{"greeter-1", "127.0.0.1:7100", "7100"},
	}
	for _, tc := range tests {
		p, ok := by[tc.name]
		if !ok {
			t.Errorf("no process %s in the plan", tc.name)
			continue
		}
		if p.Addr != tc.addr {
			t.Errorf("%s address = %s, want %s", tc.name, p.Addr, tc.addr)
		}
		svc := strings.TrimSuffix(tc.name, tc.name[strings.LastIndexByte(tc.name, '-'):])
		wantArgs := []string{"serve", svc, "--data", "/d", "--host", "127.0.0.1", "--base-port", tc.basePort,
			"--metrics", p.Metrics, "--registry", "http://127.0.0.1:2379", "--broker", "nats://127.0.0.1:4222",
			"--log-level", "info", "--log-format", "text", "--shutdown-timeout", "15s", "--redis", "redis://127.0.0.1:6379/0"}
		if diff := cmp.Diff(wantArgs, p.Args); diff != "" {
			t.Errorf("%s args mismatch (-want +got):\n%s", tc.name, diff)
		}
	}
	if got, want := procs[0].Metrics, "127.0.0.1:9100"; got != want {
		t.Errorf("first process metrics = %s, want %s", got, want)
	}
}

func TestDevPlanErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--replicas", "nosuch=2"}, "nosuch"},
		{[]string{"--replicas", "inventory=0"}, "1 to 9"},
		{[]string{"--replicas", "inventory=10"}, "1 to 9"},
		{[]string{"--base-port", "65500", "--replicas", "order=9"}, "below 65536"},
		{[]string{"--base-port", "0"}, "base-port"},
		{[]string{"--metrics-base-port", "65534"}, "metrics-base-port"},
	}
	for _, tc := range tests {
		o := parseDev(t, tc.args...)
		_, err := devPlan(o, system.Services(), "http://127.0.0.1:2379", "nats://127.0.0.1:4222")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("devPlan(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	s := &supervisor{}
	w := &prefixWriter{prefix: "[a-1] ", out: &out, mu: &s.mu}
	for _, chunk := range []string{"one\ntw", "o\n", "three"} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	w.flush()
	if got, want := out.String(), "[a-1] one\n[a-1] two\n[a-1] three\n"; got != want {
		t.Errorf("forwarded %q, want %q", got, want)
	}
}

func TestDevHelpIsListed(t *testing.T) {
	var out bytes.Buffer
	root := newRootCommand()
	root.SetOut(&out)
	root.SetArgs([]string{"dev", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--replicas", "etcd:///<service>", "--data"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dev --help lacks %q", want)
		}
	}
}
