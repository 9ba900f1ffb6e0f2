package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMergeFlag(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
	}{
		{"kit=bench/results-kit.jsonl", false},
		{"kit=", true},
		{"=file", true},
		{"nofile", true},
	}
	for _, tt := range tests {
		var m mergeFlag
		if err := m.Set(tt.in); (err != nil) != tt.wantErr {
			t.Errorf("Set(%q) = %v, want error %v", tt.in, err, tt.wantErr)
		}
	}
}

func TestReadJSONLines(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(good, []byte("{\"a\":1}\n\n{\"b\":2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("{\"a\":1}\nnot json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lines, err := readJSONLines(good)
	if err != nil || len(lines) != 2 {
		t.Errorf("readJSONLines(good) = %d lines, %v; want 2, nil", len(lines), err)
	}
	if _, err := readJSONLines(bad); err == nil {
		t.Error("readJSONLines(bad) = nil error")
	}
	if _, err := readJSONLines(filepath.Join(dir, "missing")); err == nil {
		t.Error("readJSONLines(missing) = nil error")
	}
}

func TestPrintTable(t *testing.T) {
	var b strings.Builder
	printTable(&b, []Result{
		{Name: "GetItem direct gRPC", Value: 1000, Unit: "calls/s"},
		{Name: "GetItem via gateway", Value: 600, Unit: "calls/s", Baseline: "GetItem direct gRPC", BaseVal: 1000, Ratio: 0.6, Goal: ">= 0.5"},
	}, 32, 0)
	for _, want := range []string{"0.60x", "1000 calls/s (GetItem direct gRPC)", ">= 0.5"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestStartProfile(t *testing.T) {
	stop, err := startProfile("", 1, "get-item")
	if err != nil {
		t.Fatalf("startProfile without a prefix = %v", err)
	}
	stop()

	prefix := filepath.Join(t.TempDir(), "cpu")
	stop, err = startProfile(prefix, 2, "place-order")
	if err != nil {
		t.Fatal(err)
	}
	stop()
	b, err := os.ReadFile(prefix + "-2-place-order.prof")
	if err != nil {
		t.Fatal(err)
	}
	// A pprof profile is gzip-compressed protobuf.
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("profile is not gzip: % x", b[:min(len(b), 8)])
	}
	if _, err := startProfile(filepath.Join(t.TempDir(), "missing", "cpu"), 3, "mix"); err == nil {
		t.Error("startProfile into a missing directory succeeded")
	}
}
