package main

import (
	"bufio"
	"errors"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// metric is one value/unit pair of a benchmark line, such as 123 ns/op.
type metric struct {
	Unit  string
	Value float64
}

// result is one benchmark of one package at one GOMAXPROCS, every metric
// the median of its runs (one run per line; -count N gives N lines).
type result struct {
	Pkg        string
	Name       string // without the -N GOMAXPROCS suffix
	Procs      int    // 1 when the name had no suffix, as go test prints it
	Runs       int
	Iterations int64              // median b.N
	Units      []string           // in order of first appearance
	Values     map[string]float64 // median per unit
	// Samples are the runs' values per unit, in the order they ran: with
	// -rounds, the i-th sample of every result comes from round i.
	Samples map[string][]float64
}

// value returns the median of unit and whether the result has it.
func (r *result) value(unit string) (float64, bool) {
	v, ok := r.Values[unit]
	return v, ok
}

// resultKey identifies the lines that are runs of the same result.
type resultKey struct {
	pkg, name string
	procs     int
}

// accumulator collects the runs of one result until parse takes medians.
type accumulator struct {
	res    *result
	iters  []float64
	values map[string][]float64
}

// parser is the state of parse between lines.
type parser struct {
	pkg     string
	pending string // benchmark name whose numbers have not arrived yet
	order   []*accumulator
	byKey   map[resultKey]*accumulator
}

// parse reads `go test -bench` output and returns one result per package,
// benchmark and GOMAXPROCS, in order of first appearance. Lines that are
// not benchmark results (logs, PASS, ok, garbage) are ignored.
func parse(r io.Reader) ([]*result, error) {
	p := &parser{byKey: map[resultKey]*accumulator{}}
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			p.line(line)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return p.results(), nil
}

// line feeds one line of output to the parser.
func (p *parser) line(line string) {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return
	}
	switch fields[0] {
	case "pkg:":
		p.pkg = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "pkg:"))
		p.pending = ""
		return
	case "PASS", "FAIL", "ok", "---":
		p.pending = ""
		return
	}
	if isBenchmarkName(fields[0]) {
		if iters, metrics, ok := parseValues(fields[1:]); ok {
			p.add(fields[0], iters, metrics)
			p.pending = ""
			return
		}
		// The benchmark printed to stdout between its name and its numbers;
		// they follow on a later line.
		p.pending = fields[0]
		return
	}
	if p.pending != "" {
		if iters, metrics, ok := parseValues(fields); ok {
			p.add(p.pending, iters, metrics)
			p.pending = ""
		}
	}
}

// add records one run of the benchmark named name (with its suffix).
func (p *parser) add(name string, iters int64, metrics []metric) {
	base, procs := splitProcs(name)
	key := resultKey{pkg: p.pkg, name: base, procs: procs}
	acc := p.byKey[key]
	if acc == nil {
		acc = &accumulator{
			res:    &result{Pkg: p.pkg, Name: base, Procs: procs, Values: map[string]float64{}},
			values: map[string][]float64{},
		}
		p.byKey[key] = acc
		p.order = append(p.order, acc)
	}
	acc.iters = append(acc.iters, float64(iters))
	for _, m := range metrics {
		if _, seen := acc.values[m.Unit]; !seen {
			acc.res.Units = append(acc.res.Units, m.Unit)
		}
		acc.values[m.Unit] = append(acc.values[m.Unit], m.Value)
	}
}

// results takes the medians and returns the results in order.
func (p *parser) results() []*result {
	out := make([]*result, 0, len(p.order))
	for _, acc := range p.order {
		acc.res.Runs = len(acc.iters)
		acc.res.Iterations = int64(math.Round(median(acc.iters)))
		acc.res.Samples = acc.values
		for unit, vs := range acc.values {
			acc.res.Values[unit] = median(vs)
		}
		out = append(out, acc.res)
	}
	return out
}

// isBenchmarkName reports whether s names a benchmark the way go test
// does: "Benchmark" followed by nothing or by a rune that is not lower case.
func isBenchmarkName(s string) bool {
	rest, ok := strings.CutPrefix(s, "Benchmark")
	if !ok {
		return false
	}
	if rest == "" {
		return true
	}
	r, _ := utf8.DecodeRuneInString(rest)
	return !unicode.IsLower(r)
}

// parseValues parses "N v1 unit1 v2 unit2 ...": the iteration count and at
// least one value/unit pair, nothing else.
func parseValues(fields []string) (int64, []metric, bool) {
	if len(fields) < 3 || len(fields)%2 != 1 {
		return 0, nil, false
	}
	iters, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil || iters <= 0 {
		return 0, nil, false
	}
	metrics := make([]metric, 0, len(fields)/2)
	for i := 1; i < len(fields); i += 2 {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, nil, false
		}
		metrics = append(metrics, metric{Unit: fields[i+1], Value: v})
	}
	return iters, metrics, true
}

// splitProcs strips the -N GOMAXPROCS suffix go test appends to a benchmark
// name (it appends none when GOMAXPROCS is 1).
func splitProcs(name string) (string, int) {
	i := strings.LastIndexByte(name, '-')
	if i <= 0 || i == len(name)-1 {
		return name, 1
	}
	suffix := name[i+1:]
	for _, c := range suffix {
		if c < '0' || c > '9' {
			return name, 1
		}
	}
	procs, err := strconv.Atoi(suffix)
	if err != nil || procs <= 0 {
		return name, 1
	}
	return name[:i], procs
}

// median returns the median of vs (the mean of the middle two when their
// number is even); vs is not modified.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}
