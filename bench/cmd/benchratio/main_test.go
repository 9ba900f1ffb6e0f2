package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sample is captured-style go test -bench output: a -count 3 package with
// a custom throughput metric, a package with ungrouped results, MB/s and
// a benchmark that printed between its name and its numbers, a -cpu 1,2
// package, and garbage that must be ignored.
const sample = `goos: linux
goarch: amd64
pkg: github.com/switchboard-rpc/switchboard/bench/unary
cpu: AMD EPYC 7B13
BenchmarkUnary/bare-2         	   50000	     41230 ns/op	     24254 calls/s	    6120 B/op	      98 allocs/op
BenchmarkUnary/bare-2         	   48000	     40000 ns/op	     25000 calls/s	    6100 B/op	      98 allocs/op
BenchmarkUnary/bare-2         	   52000	     45000 ns/op	     22222 calls/s	    6140 B/op	      98 allocs/op
BenchmarkUnary/kit-2          	   44000	     45310 ns/op	     22070 calls/s	    7012 B/op	     110 allocs/op
BenchmarkUnary/kit-2          	   43000	     47000 ns/op	     21277 calls/s	    7012 B/op	     110 allocs/op
BenchmarkUnary/kit-2          	   45000	     44000 ns/op	     22727 calls/s	    7012 B/op	     110 allocs/op
2026/03/01 12:00:00 INFO listening addr=127.0.0.1:40123
BenchmarkUnary/kit-security-2 	   38000	     52000 ns/op	     19230 calls/s	    8810 B/op	     131 allocs/op
BenchmarkUnary/kit-security-2 	   39000	     51000 ns/op	     19608 calls/s	    8810 B/op	     131 allocs/op
BenchmarkUnary/kit-security-2 	   37000	     53000 ns/op	     18868 calls/s	    8810 B/op	     131 allocs/op
PASS
ok  	github.com/switchboard-rpc/switchboard/bench/unary	42.123s
goos: linux
goarch: amd64
pkg: github.com/switchboard-rpc/switchboard/bench/codec
cpu: AMD EPYC 7B13
BenchmarkMarshal-2            	 1000000	      1052 ns/op	   312.50 MB/s	     480 B/op	       3 allocs/op
BenchmarkMarshal/small-2      	 5000000	       250.5 ns/op	      64 B/op	       1 allocs/op
BenchmarkCodec/bare-2         	 2000000	       500 ns/op	      64 B/op	       1 allocs/op
BenchmarkCodec/pooled-2       	 2000000	       400 ns/op	       0 B/op	       0 allocs/op
BenchmarkLogs/bare-2          	hello from inside the benchmark
    1000	      2000 ns/op	      10 B/op	       1 allocs/op
Benchmarks follow this line
Benchmarking is fun 3 4
BenchmarkBroken-2             	notanumber	 12 ns/op
BenchmarkOdd-2                	     100	 12 ns/op	 7
BenchmarkNaN-2                	     100	 NaN ns/op
--- FAIL: BenchmarkBroken-2
    b_test.go:12: boom
    1000	      9 ns/op
PASS
ok  	github.com/switchboard-rpc/switchboard/bench/codec	9.001s
pkg: example.com/procs
BenchmarkP/bare     	    1000	       100 ns/op
BenchmarkP/bare-2   	    1000	       100 ns/op
BenchmarkP/kit      	    1000	       200 ns/op
BenchmarkP/kit-2    	    1000	       125 ns/op
`

const (
	pkgUnary = "github.com/switchboard-rpc/switchboard/bench/unary"
	pkgCodec = "github.com/switchboard-rpc/switchboard/bench/codec"
	pkgProcs = "example.com/procs"
)

// res builds a result; units and values alternate: "ns/op", 1.0, ...
func res(pkg, name string, procs, runs int, iters int64, unitValues ...any) *result {
	r := &result{Pkg: pkg, Name: name, Procs: procs, Runs: runs, Iterations: iters, Values: map[string]float64{}}
	for i := 0; i < len(unitValues); i += 2 {
		u := unitValues[i].(string)
		r.Units = append(r.Units, u)
		r.Values[u] = unitValues[i+1].(float64)
	}
	return r
}

func sampleResults() []*result {
	return []*result{
		res(pkgUnary, "BenchmarkUnary/bare", 2, 3, 50000, "ns/op", 41230.0, "calls/s", 24254.0, "B/op", 6120.0, "allocs/op", 98.0),
		res(pkgUnary, "BenchmarkUnary/kit", 2, 3, 44000, "ns/op", 45310.0, "calls/s", 22070.0, "B/op", 7012.0, "allocs/op", 110.0),
		res(pkgUnary, "BenchmarkUnary/kit-security", 2, 3, 38000, "ns/op", 52000.0, "calls/s", 19230.0, "B/op", 8810.0, "allocs/op", 131.0),
		res(pkgCodec, "BenchmarkMarshal", 2, 1, 1000000, "ns/op", 1052.0, "MB/s", 312.5, "B/op", 480.0, "allocs/op", 3.0),
		res(pkgCodec, "BenchmarkMarshal/small", 2, 1, 5000000, "ns/op", 250.5, "B/op", 64.0, "allocs/op", 1.0),
		res(pkgCodec, "BenchmarkCodec/bare", 2, 1, 2000000, "ns/op", 500.0, "B/op", 64.0, "allocs/op", 1.0),
		res(pkgCodec, "BenchmarkCodec/pooled", 2, 1, 2000000, "ns/op", 400.0, "B/op", 0.0, "allocs/op", 0.0),
		res(pkgCodec, "BenchmarkLogs/bare", 2, 1, 1000, "ns/op", 2000.0, "B/op", 10.0, "allocs/op", 1.0),
		res(pkgProcs, "BenchmarkP/bare", 1, 1, 1000, "ns/op", 100.0),
		res(pkgProcs, "BenchmarkP/bare", 2, 1, 1000, "ns/op", 100.0),
		res(pkgProcs, "BenchmarkP/kit", 1, 1, 1000, "ns/op", 200.0),
		res(pkgProcs, "BenchmarkP/kit", 2, 1, 1000, "ns/op", 125.0),
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []*result
	}{
		{name: "sample", input: sample, want: sampleResults()},
		{name: "empty", input: "", want: []*result{}},
		{name: "garbage only", input: "PASS\nBenchmarks:\nok  \tx\t0.1s\n--- FAIL: BenchmarkX\n", want: []*result{}},
		{
			name:  "no pkg line and no trailing newline",
			input: "BenchmarkA-8\t10\t5 ns/op\t3.5 widgets/op",
			want:  []*result{res("", "BenchmarkA", 8, 1, 10, "ns/op", 5.0, "widgets/op", 3.5)},
		},
		{
			name:  "even count takes the mean of the middle two",
			input: "BenchmarkA 10 4 ns/op\nBenchmarkA 20 1 ns/op\nBenchmarkA 30 2 ns/op\nBenchmarkA 40 9 ns/op\n",
			want:  []*result{res("", "BenchmarkA", 1, 4, 25, "ns/op", 3.0)},
		},
		{
			name:  "CRLF line endings",
			input: "pkg: p\r\nBenchmarkA-4\t10\t5 ns/op\r\n",
			want:  []*result{res("p", "BenchmarkA", 4, 1, 10, "ns/op", 5.0)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(strings.NewReader(tt.input))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d results, want %d:\n%s", len(got), len(tt.want), dump(got))
			}
			for i := range got {
				g := *got[i]
				g.Samples = nil // TestParseSamples checks them
				if !reflect.DeepEqual(&g, tt.want[i]) {
					t.Errorf("result %d: got %+v, want %+v", i, g, *tt.want[i])
				}
			}
		})
	}
}

func TestParseSamples(t *testing.T) {
	input := "BenchmarkA 10 4 ns/op 7 x/s\nBenchmarkB 10 3 ns/op\nBenchmarkA 20 1 ns/op 8 x/s\nBenchmarkA 30 2 ns/op 9 x/s\n"
	got, err := parse(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]float64{"ns/op": {4, 1, 2}, "x/s": {7, 8, 9}}
	if len(got) != 2 || !reflect.DeepEqual(got[0].Samples, want) {
		t.Fatalf("got %d results, the first with samples %v, want 2 and %v", len(got), got[0].Samples, want)
	}
}

func dump(rs []*result) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.Pkg + " " + r.Name + "\n")
	}
	return b.String()
}

func TestSplitProcs(t *testing.T) {
	tests := []struct {
		in        string
		wantName  string
		wantProcs int
	}{
		{"BenchmarkUnary/kit-8", "BenchmarkUnary/kit", 8},
		{"BenchmarkUnary/kit-security-16", "BenchmarkUnary/kit-security", 16},
		{"BenchmarkUnary/kit-security", "BenchmarkUnary/kit-security", 1},
		{"BenchmarkUnary/kit", "BenchmarkUnary/kit", 1},
		{"BenchmarkX-", "BenchmarkX-", 1},
		{"BenchmarkX-0", "BenchmarkX-0", 1},
		{"BenchmarkX#01-2", "BenchmarkX#01", 2},
	}
	for _, tt := range tests {
		name, procs := splitProcs(tt.in)
		if name != tt.wantName || procs != tt.wantProcs {
			t.Errorf("splitProcs(%q): got %q, %d, want %q, %d", tt.in, name, procs, tt.wantName, tt.wantProcs)
		}
	}
}

func TestIsBenchmarkName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"Benchmark", true},
		{"BenchmarkX-8", true},
		{"Benchmark_x", true},
		{"Benchmark/sub", true},
		{"Benchmarks", false},
		{"Benchmarking", false},
		{"benchmarkX", false},
		{"TestX", false},
	}
	for _, tt := range tests {
		if got := isBenchmarkName(tt.in); got != tt.want {
			t.Errorf("isBenchmarkName(%q): got %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestPair(t *testing.T) {
	rows := pair(sampleResults())
	type pairing struct {
		name   string
		procs  int
		base   string // name of the baseline, "" for none
		isBase bool
	}
	want := []pairing{
		{"BenchmarkUnary/bare", 2, "", true},
		{"BenchmarkUnary/kit", 2, "BenchmarkUnary/bare", false},
		{"BenchmarkUnary/kit-security", 2, "BenchmarkUnary/bare", false},
		{"BenchmarkMarshal", 2, "", false},
		{"BenchmarkMarshal/small", 2, "", false},
		{"BenchmarkCodec/bare", 2, "", true},
		{"BenchmarkCodec/pooled", 2, "BenchmarkCodec/bare", false},
		{"BenchmarkLogs/bare", 2, "", true},
		{"BenchmarkP/bare", 1, "", true},
		{"BenchmarkP/bare", 2, "", true},
		{"BenchmarkP/kit", 1, "BenchmarkP/bare", false},
		{"BenchmarkP/kit", 2, "BenchmarkP/bare", false},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows, want %d", len(rows), len(want))
	}
	for i, r := range rows {
		got := pairing{name: r.Name, procs: r.Procs, isBase: r.IsBase}
		if r.Base != nil {
			got.base = r.Base.Name
			if r.Base.Procs != r.Procs || r.Base.Pkg != r.Pkg {
				t.Errorf("row %d: baseline from %s at %d procs, want %s at %d", i, r.Base.Pkg, r.Base.Procs, r.Pkg, r.Procs)
			}
		}
		if got != want[i] {
			t.Errorf("row %d: got %+v, want %+v", i, got, want[i])
		}
	}
}

func TestPairDoesNotCrossPackages(t *testing.T) {
	rows := pair([]*result{
		res("a", "BenchmarkX/bare", 1, 1, 1, "ns/op", 1.0),
		res("b", "BenchmarkX/kit", 1, 1, 1, "ns/op", 2.0),
	})
	if got := rows[1].Base; got != nil {
		t.Errorf("got baseline %s/%s, want none", got.Pkg, got.Name)
	}
}

func TestCompare(t *testing.T) {
	tests := []struct {
		name          string
		r, base       *result
		wantSpeed     float64
		wantSpeedUnit string
		wantHasSpeed  bool
		wantAllocs    float64
		wantHasAllocs bool
		wantRatios    map[string]float64
	}{
		{
			name:          "throughput metric wins over ns/op",
			r:             res("", "X/kit", 1, 1, 1, "ns/op", 50.0, "calls/s", 90.0, "allocs/op", 12.0),
			base:          res("", "X/bare", 1, 1, 1, "ns/op", 40.0, "calls/s", 100.0, "allocs/op", 0.0),
			wantSpeed:     0.9,
			wantSpeedUnit: "calls/s",
			wantHasSpeed:  true,
			wantAllocs:    12,
			wantHasAllocs: true,
			wantRatios:    map[string]float64{"ns/op": 1.25, "calls/s": 0.9},
		},
		{
			name:          "ns/op fallback is bare over result",
			r:             res("", "X/kit", 1, 1, 1, "ns/op", 400.0, "allocs/op", 0.0),
			base:          res("", "X/bare", 1, 1, 1, "ns/op", 500.0, "allocs/op", 1.0),
			wantSpeed:     1.25,
			wantSpeedUnit: "ns/op",
			wantHasSpeed:  true,
			wantAllocs:    -1,
			wantHasAllocs: true,
			wantRatios:    map[string]float64{"ns/op": 0.8, "allocs/op": 0},
		},
		{
			name:          "throughput only one side has falls back to ns/op",
			r:             res("", "X/kit", 1, 1, 1, "ns/op", 200.0, "MB/s", 5.0),
			base:          res("", "X/bare", 1, 1, 1, "ns/op", 100.0),
			wantSpeed:     0.5,
			wantSpeedUnit: "ns/op",
			wantHasSpeed:  true,
			wantRatios:    map[string]float64{"ns/op": 2},
		},
		{
			name: "rounds: median of the ratios of each round",
			r: withSamples(res("", "X/kit", 1, 3, 1, "ns/op", 50.0, "calls/s", 90.0),
				"calls/s", 90, 45, 95),
			base: withSamples(res("", "X/bare", 1, 3, 1, "ns/op", 40.0, "calls/s", 100.0),
				"calls/s", 100, 50, 200),
			// 0.9, 0.9, 0.475: the busy third round moves one side only
			// when the ratio of medians (0.9) is taken; here it is outvoted.
			wantSpeed:     0.9,
			wantSpeedUnit: "calls/s",
			wantHasSpeed:  true,
			wantRatios:    map[string]float64{"ns/op": 1.25, "calls/s": 0.9},
		},
		{
			name: "rounds: ns/op ratios are bare over result, round by round",
			r:    withSamples(res("", "X/kit", 1, 3, 1, "ns/op", 200.0), "ns/op", 200, 400, 100),
			base: withSamples(res("", "X/bare", 1, 3, 1, "ns/op", 150.0), "ns/op", 100, 300, 150),
			// 0.5, 0.75, 1.5
			wantSpeed:     0.75,
			wantSpeedUnit: "ns/op",
			wantHasSpeed:  true,
			wantRatios:    map[string]float64{"ns/op": 200.0 / 150.0},
		},
		{
			name:          "runs of different numbers fall back to the ratio of medians",
			r:             withSamples(res("", "X/kit", 1, 2, 1, "calls/s", 80.0), "calls/s", 70, 90),
			base:          withSamples(res("", "X/bare", 1, 3, 1, "calls/s", 100.0), "calls/s", 90, 100, 110),
			wantSpeed:     0.8,
			wantSpeedUnit: "calls/s",
			wantHasSpeed:  true,
			wantRatios:    map[string]float64{"calls/s": 0.8},
		},
		{
			name:       "zero ns/op gives no ratio",
			r:          res("", "X/kit", 1, 1, 1, "ns/op", 0.0),
			base:       res("", "X/bare", 1, 1, 1, "ns/op", 0.0),
			wantRatios: map[string]float64{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := compare(tt.r, tt.base)
			if c.HasSpeed != tt.wantHasSpeed || !near(c.Speed, tt.wantSpeed) || c.SpeedUnit != tt.wantSpeedUnit {
				t.Errorf("speed: got %v %g %q, want %v %g %q", c.HasSpeed, c.Speed, c.SpeedUnit, tt.wantHasSpeed, tt.wantSpeed, tt.wantSpeedUnit)
			}
			if c.HasAllocs != tt.wantHasAllocs || c.AllocsDelta != tt.wantAllocs {
				t.Errorf("allocs delta: got %v %g, want %v %g", c.HasAllocs, c.AllocsDelta, tt.wantHasAllocs, tt.wantAllocs)
			}
			if len(c.Ratios) != len(tt.wantRatios) {
				t.Fatalf("ratios: got %v, want %v", c.Ratios, tt.wantRatios)
			}
			for u, want := range tt.wantRatios {
				if got, ok := c.Ratios[u]; !ok || !near(got, want) {
					t.Errorf("ratio %s: got %g, want %g", u, got, want)
				}
			}
		})
	}
}

// withSamples sets r's samples of unit.
func withSamples(r *result, unit string, samples ...float64) *result {
	if r.Samples == nil {
		r.Samples = map[string][]float64{}
	}
	r.Samples[unit] = samples
	return r
}

func near(a, b float64) bool {
	d := a - b
	return d < 1e-9 && d > -1e-9
}

func TestFormat(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{formatRatio(22070.0 / 24254.0), "0.91x"},
		{formatRatio(1.25), "1.25x"},
		{formatDelta(12, "allocs"), "+12 allocs"},
		{formatDelta(0, "allocs"), "+0 allocs"},
		{formatDelta(-1, "allocs"), "-1 allocs"},
		{formatDelta(0.5, "allocs"), "+0.5 allocs"},
		{formatValue(41230), "41230"},
		{formatValue(1234.567), "1235"},
		{formatValue(250.5), "250.5"},
		{formatValue(3.14159), "3.14"},
		{formatValue(0.01234), "0.0123"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("case %d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

func TestRenderTable(t *testing.T) {
	var b strings.Builder
	if err := renderTable(&b, pair(sampleResults())); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	tests := []struct {
		name string
		re   string
	}{
		{"package header", `(?m)^pkg: ` + regexp.QuoteMeta(pkgUnary) + `$`},
		{"header with custom metric", `(?m)^benchmark\s+runs\s+ns/op\s+calls/s\s+allocs/op\s+B/op\s+vs bare\s+allocs vs bare$`},
		{"baseline row", `(?m)^BenchmarkUnary/bare\s+3\s+41230\s+24254\s+98\s+6120\s+base$`},
		{"kit ratio", `(?m)^BenchmarkUnary/kit\s+3\s+45310\s+22070\s+110\s+7012\s+0\.91x\s+\+12 allocs$`},
		{"kit-security ratio", `(?m)^BenchmarkUnary/kit-security\s.*\s0\.79x\s+\+33 allocs$`},
		{"ns/op fallback", `(?m)^BenchmarkCodec/pooled\s.*\s1\.25x\s+-1 allocs$`},
		{"MB/s column", `(?m)^benchmark\s+ns/op\s+MB/s\s+allocs/op\s+B/op\s+vs bare`},
		{"unpaired row", `(?m)^BenchmarkMarshal\s+1052\s+312\.5\s+3\s+480$`},
		{"unpaired missing metric", `(?m)^BenchmarkMarshal/small\s+250\.5\s+-\s+1\s+64$`},
		{"mixed procs are named", `(?m)^BenchmarkP/kit-1\s+200\s+0\.50x\s+-$`},
		{"mixed procs pair per procs", `(?m)^BenchmarkP/kit-2\s+125\s+0\.80x\s+-$`},
		{"legend", `(?m)^vs bare: `},
	}
	for _, tt := range tests {
		if !regexp.MustCompile(tt.re).MatchString(out) {
			t.Errorf("%s: got\n%s\nwant a match for %s", tt.name, out, tt.re)
		}
	}
	// The ratio column is right-aligned: the ratios of a table end at the
	// same column, whatever the name's length.
	ratio := regexp.MustCompile(`\d\.\d\dx`)
	var ends []int
	for _, line := range strings.Split(out, "\n") {
		if loc := ratio.FindStringIndex(line); loc != nil && strings.HasPrefix(line, "BenchmarkUnary/") {
			ends = append(ends, loc[1])
		}
	}
	if len(ends) != 2 || ends[0] != ends[1] {
		t.Errorf("got the BenchmarkUnary ratios ending at columns %v, want two equal columns", ends)
	}
}

// TestRenderTableCPU checks the cpu-ns/op column and its ratio to the
// baseline, taken round by round, in the table and in JSON.
func TestRenderTableCPU(t *testing.T) {
	input := `pkg: p
BenchmarkU/bare-2   100  1000 ns/op  1000 calls/s  4000 cpu-ns/op  10 allocs/op
BenchmarkU/kit-2    100  1200 ns/op   800 calls/s  5000 cpu-ns/op  12 allocs/op
BenchmarkU/bare-2   100  2000 ns/op   500 calls/s  4000 cpu-ns/op  10 allocs/op
BenchmarkU/kit-2    100  2000 ns/op   500 calls/s  4400 cpu-ns/op  12 allocs/op
BenchmarkU/bare-2   100  1000 ns/op  1000 calls/s  4200 cpu-ns/op  10 allocs/op
BenchmarkU/kit-2    100  1100 ns/op   900 calls/s  4200 cpu-ns/op  12 allocs/op
`
	results, err := parse(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	var table, js strings.Builder
	if err := renderTable(&table, pair(results)); err != nil {
		t.Fatal(err)
	}
	if err := renderJSON(&js, pair(results)); err != nil {
		t.Fatal(err)
	}
	// calls/s ratios 0.8, 1.0, 0.9; cpu ratios 0.8, 0.909, 1.0.
	for _, re := range []string{
		`(?m)^benchmark\s+runs\s+ns/op\s+calls/s\s+allocs/op\s+cpu-ns/op\s+vs bare\s+allocs vs bare\s+cpu vs bare$`,
		`(?m)^BenchmarkU/bare\s+3\s+1000\s+1000\s+10\s+4000\s+base$`,
		`(?m)^BenchmarkU/kit\s+3\s+1200\s+800\s+12\s+4400\s+0\.90x\s+\+2 allocs\s+0\.91x$`,
		`(?m)^cpu vs bare: `,
	} {
		if !regexp.MustCompile(re).MatchString(table.String()) {
			t.Errorf("got\n%s\nwant a match for %s", table.String(), re)
		}
	}
	if !strings.Contains(js.String(), `"cpu_ratio":0.909`) {
		t.Errorf("got JSON\n%s\nwant cpu_ratio 0.909...", js.String())
	}
}

func TestRenderTableWithoutPairs(t *testing.T) {
	var b strings.Builder
	if err := renderTable(&b, pair([]*result{res("p", "BenchmarkA", 1, 1, 1, "ns/op", 3.0)})); err != nil {
		t.Fatal(err)
	}
	got, want := b.String(), "pkg: p\nbenchmark   ns/op\nBenchmarkA      3\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRenderJSON(t *testing.T) {
	var b strings.Builder
	if err := renderJSON(&b, pair(sampleResults())); err != nil {
		t.Fatal(err)
	}
	var got []jsonResult
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var j jsonResult
		if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, j)
	}
	if len(got) != len(sampleResults()) {
		t.Fatalf("got %d lines, want %d", len(got), len(sampleResults()))
	}
	kit := got[1]
	if kit.Name != "BenchmarkUnary/kit" || kit.Baseline != "BenchmarkUnary/bare" || kit.Package != pkgUnary {
		t.Errorf("got %s (baseline %q) in %s, want BenchmarkUnary/kit (baseline BenchmarkUnary/bare) in %s", kit.Name, kit.Baseline, kit.Package, pkgUnary)
	}
	if kit.Speed == nil || !near(*kit.Speed, 22070.0/24254.0) || kit.SpeedUnit != "calls/s" {
		t.Errorf("got speed %v %q, want %g calls/s", kit.Speed, kit.SpeedUnit, 22070.0/24254.0)
	}
	if kit.AllocsDelta == nil || *kit.AllocsDelta != 12 || kit.BytesDelta == nil || *kit.BytesDelta != 892 {
		t.Errorf("got allocs delta %v, bytes delta %v, want 12 and 892", kit.AllocsDelta, kit.BytesDelta)
	}
	if kit.Runs != 3 || kit.Metrics["calls/s"] != 22070 {
		t.Errorf("got runs %d, calls/s %g, want 3 and 22070", kit.Runs, kit.Metrics["calls/s"])
	}
	if bare := got[0]; !bare.IsBaseline || bare.Speed != nil {
		t.Errorf("got is_baseline %v, speed %v for the baseline, want true and none", bare.IsBaseline, bare.Speed)
	}
	if alone := got[3]; alone.Baseline != "" || alone.Speed != nil || alone.IsBaseline {
		t.Errorf("got %+v for an unpaired result, want no baseline", alone)
	}
}

func TestGoTestArgs(t *testing.T) {
	cfg := config{pkg: "./bench/...", bench: "Unary", benchtime: "2s", count: 3, timeout: 20 * time.Minute}
	tests := []struct {
		name string
		cpu  string
		want string
	}{
		{"without cpu", "", "test -run ^$ -bench Unary -benchmem -benchtime 2s -count 3 -timeout 20m0s ./bench/..."},
		{"with cpu", "1,2", "test -run ^$ -bench Unary -benchmem -benchtime 2s -count 3 -cpu 1,2 -timeout 20m0s ./bench/..."},
	}
	for _, tt := range tests {
		cfg.cpu = tt.cpu
		if got := strings.Join(goTestArgs(cfg), " "); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestRunInput(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bench.txt")
	out := filepath.Join(t.TempDir(), "results.jsonl")
	if err := os.WriteFile(file, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantStdout string // a substring
		wantStderr string // a substring
	}{
		{name: "file", args: []string{"-in", file}, wantCode: 0, wantStdout: "0.91x"},
		{name: "stdin", args: []string{"-in", "-"}, stdin: sample, wantCode: 0, wantStdout: "+12 allocs"},
		{name: "json", args: []string{"-in", "-", "-json"}, stdin: sample, wantCode: 0, wantStdout: `"speed_ratio":`},
		{name: "table and a JSON file", args: []string{"-in", file, "-out", out}, wantCode: 0, wantStdout: "0.91x"},
		{name: "unwritable JSON file", args: []string{"-in", file, "-out", filepath.Join(out, "no", "dir")}, wantCode: 1, wantStderr: "benchratio:"},
		{name: "nothing parsed", args: []string{"-in", "-"}, stdin: "PASS\n", wantCode: 1, wantStderr: "no benchmark results"},
		{name: "missing file", args: []string{"-in", filepath.Join(t.TempDir(), "nope")}, wantCode: 1, wantStderr: "no such file"},
		{name: "help", args: []string{"-h"}, wantCode: 0, wantStderr: "Usage: benchratio"},
		{name: "bad flag", args: []string{"-nope"}, wantCode: 2, wantStderr: "-nope"},
		{name: "bad count", args: []string{"-count", "0"}, wantCode: 2, wantStderr: "-count must be at least 1"},
		{name: "bad rounds", args: []string{"-rounds", "0"}, wantCode: 2, wantStderr: "-rounds must be between 1 and 100"},
		{name: "positional", args: []string{"./..."}, wantCode: 2, wantStderr: "use -pkg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := run(context.Background(), tt.args, "", strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("got exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("got stdout\n%s\nwant it to contain %q", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("got stderr\n%s\nwant it to contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
	b, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(b), `"speed_ratio":`) {
		t.Errorf("-out wrote %q (%v), want JSON results", b, err)
	}
}

const e2eBenchmarks = `package b

import (
	"testing"
	"time"
)

func BenchmarkX(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		for range b.N {
			time.Sleep(100 * time.Microsecond)
		}
	})
	b.Run("kit", func(b *testing.B) {
		for range b.N {
			time.Sleep(200 * time.Microsecond)
		}
	})
}

func BenchmarkFail(b *testing.B) {
	b.Fatal("boom")
}
`

// TestRunEndToEnd runs the real go test on a tiny module.
func TestRunEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go test")
	}
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":    "module example.com/b\n\ngo 1.26\n",
		"b_test.go": e2eBenchmarks,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("GOWORK", "off")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // a regexp
		wantStderr string // a regexp
	}{
		{
			name:       "table",
			args:       []string{"-pkg", "./...", "-bench", "X", "-benchtime", "1x", "-rounds", "1"},
			wantStdout: `(?m)^pkg: example\.com/b\n(.*\n)*BenchmarkX/kit\s+\d+\s.*\s\d+\.\d\dx\s+[+-]\d+ allocs$`,
			wantStderr: `(?m)^BenchmarkX/bare`,
		},
		{
			name:       "json with medians",
			args:       []string{"-pkg", "./...", "-bench", "X", "-benchtime", "1x", "-count", "3", "-rounds", "1", "-json"},
			wantStdout: `"name":"BenchmarkX/kit","procs":\d+,"runs":3,.*"baseline":"BenchmarkX/bare","speed_ratio":[0-9.e+-]+,"speed_unit":"ns/op"`,
		},
		{
			name:       "rounds",
			args:       []string{"-pkg", "./...", "-bench", "X", "-benchtime", "1x", "-rounds", "2", "-json"},
			wantStdout: `"name":"BenchmarkX/kit","procs":\d+,"runs":2,.*"baseline":"BenchmarkX/bare","speed_ratio":[0-9.e+-]+`,
			wantStderr: `benchratio: round 1 of 2\n(.*\n)*BenchmarkX/kit(.*\n)*benchratio: round 2 of 2\n(.*\n)*BenchmarkX/bare`,
		},
		{
			name:       "failing benchmark",
			args:       []string{"-pkg", "./...", "-bench", "Fail", "-benchtime", "1x"}, // stops after the first round
			wantCode:   1,
			wantStderr: `boom(.*\n)*benchratio: go test: exit status 1\n`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var stdout, stderr strings.Builder
			code := run(ctx, tt.args, dir, strings.NewReader(""), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("got exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			if !regexp.MustCompile(tt.wantStdout).MatchString(stdout.String()) {
				t.Errorf("got stdout\n%s\nwant a match for %s", stdout.String(), tt.wantStdout)
			}
			if !regexp.MustCompile(tt.wantStderr).MatchString(stderr.String()) {
				t.Errorf("got stderr\n%s\nwant a match for %s", stderr.String(), tt.wantStderr)
			}
		})
	}
}
