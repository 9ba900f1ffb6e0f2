package main

import "strings"

// baselineLeaf is the last name element that marks a baseline.
const baselineLeaf = "bare"

// Units of the standard -benchmem metrics.
const (
	unitNs     = "ns/op"
	unitAllocs = "allocs/op"
	unitBytes  = "B/op"
	// unitCPU is the process CPU time per operation that bench reports.
	unitCPU = "cpu-ns/op"
)

// row is a result with its baseline, if it has one.
type row struct {
	*result
	Base   *result // nil when the result has no bare sibling or is one
	IsBase bool    // the result is itself a baseline
}

// siblingKey identifies the results that share a parent.
type siblingKey struct {
	pkg, parent string
	procs       int
}

// splitParent splits "BenchmarkUnary/kit" into "BenchmarkUnary" and "kit";
// ok is false for a top-level benchmark, which has no siblings.
func splitParent(name string) (parent, leaf string, ok bool) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name, false
	}
	return name[:i], name[i+1:], true
}

// pair gives every result whose bare sibling (same package, parent name and
// GOMAXPROCS) was measured its baseline, keeping the order of results.
func pair(results []*result) []row {
	bases := map[siblingKey]*result{}
	for _, r := range results {
		if parent, leaf, ok := splitParent(r.Name); ok && leaf == baselineLeaf {
			bases[siblingKey{r.Pkg, parent, r.Procs}] = r
		}
	}
	rows := make([]row, 0, len(results))
	for _, r := range results {
		parent, leaf, ok := splitParent(r.Name)
		switch {
		case !ok:
			rows = append(rows, row{result: r})
		case leaf == baselineLeaf:
			rows = append(rows, row{result: r, IsBase: true})
		default:
			rows = append(rows, row{result: r, Base: bases[siblingKey{r.Pkg, parent, r.Procs}]})
		}
	}
	return rows
}

// comparison is a result measured against its baseline.
type comparison struct {
	// Speed is higher-is-better: result/baseline of the first throughput
	// metric (a unit ending in /s) both have, or else baseline ns/op over
	// result ns/op. SpeedUnit names the metric it came from. When both
	// have the same number of runs, it is the median of the ratios of
	// their runs taken pairwise (run i with run i: with -rounds, the two
	// measured in the same round), so that a round the machine was busier
	// in moves both sides of its ratio; otherwise the ratio of medians.
	Speed     float64
	SpeedUnit string
	HasSpeed  bool

	// CPU is higher-is-better too: baseline cpu-ns/op over result
	// cpu-ns/op, paired by run as Speed is. On a shared machine it moves
	// less than Speed: it is what an operation costs, not how much of the
	// machine the benchmark got.
	CPU    float64
	HasCPU bool

	AllocsDelta float64 // result allocs/op minus baseline allocs/op
	HasAllocs   bool
	BytesDelta  float64 // result B/op minus baseline B/op
	HasBytes    bool

	// Ratios is result/baseline for every metric both have and the
	// baseline's value is not zero.
	Ratios map[string]float64
}

// isThroughput reports whether unit is a rate, such as calls/s or MB/s.
func isThroughput(unit string) bool {
	return strings.HasSuffix(unit, "/s")
}

// compare measures r against base.
func compare(r, base *result) comparison {
	c := comparison{Ratios: map[string]float64{}}
	for _, u := range r.Units {
		v := r.Values[u]
		b, ok := base.value(u)
		if !ok {
			continue
		}
		if b != 0 {
			c.Ratios[u] = v / b
		}
		if !c.HasSpeed && isThroughput(u) && b > 0 {
			c.Speed, c.SpeedUnit, c.HasSpeed = pairedRatio(r, base, u, false), u, true
		}
	}
	if !c.HasSpeed {
		v, ok1 := r.value(unitNs)
		b, ok2 := base.value(unitNs)
		if ok1 && ok2 && v > 0 && b > 0 {
			c.Speed, c.SpeedUnit, c.HasSpeed = pairedRatio(r, base, unitNs, true), unitNs, true
		}
	}
	if v, ok1 := r.value(unitCPU); ok1 && v > 0 {
		if b, ok2 := base.value(unitCPU); ok2 && b > 0 {
			c.CPU, c.HasCPU = pairedRatio(r, base, unitCPU, true), true
		}
	}
	c.AllocsDelta, c.HasAllocs = delta(r, base, unitAllocs)
	c.BytesDelta, c.HasBytes = delta(r, base, unitBytes)
	return c
}

// delta returns r's unit minus base's unit, if both have it.
func delta(r, base *result, unit string) (float64, bool) {
	v, ok1 := r.value(unit)
	b, ok2 := base.value(unit)
	if !ok1 || !ok2 {
		return 0, false
	}
	return v - b, true
}

// pairedRatio is r/base of unit (base/r when inverse): the median of the
// ratios of their runs taken pairwise when both have the same number of
// runs, all of them positive, and more than one; otherwise the ratio of
// their medians. The medians must be positive.
func pairedRatio(r, base *result, unit string, inverse bool) float64 {
	ratio := func(v, b float64) float64 {
		if inverse {
			return b / v
		}
		return v / b
	}
	rs, bs := r.Samples[unit], base.Samples[unit]
	if len(rs) < 2 || len(rs) != len(bs) {
		return ratio(r.Values[unit], base.Values[unit])
	}
	ratios := make([]float64, len(rs))
	for i := range rs {
		if rs[i] <= 0 || bs[i] <= 0 {
			return ratio(r.Values[unit], base.Values[unit])
		}
		ratios[i] = ratio(rs[i], bs[i])
	}
	return median(ratios)
}
