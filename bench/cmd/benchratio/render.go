package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// group is the rows of one package.
type group struct {
	Pkg  string
	Rows []row
}

// groupByPackage splits rows per package, in order of first appearance.
func groupByPackage(rows []row) []group {
	var groups []group
	index := map[string]int{}
	for _, r := range rows {
		i, ok := index[r.Pkg]
		if !ok {
			i = len(groups)
			index[r.Pkg] = i
			groups = append(groups, group{Pkg: r.Pkg})
		}
		groups[i].Rows = append(groups[i].Rows, r)
	}
	return groups
}

// legend explains the ratio column under the tables.
const legend = "vs bare: result/bare throughput (first /s metric; bare ns/op / result ns/op if none); above 1.00x is faster.\n" +
	"cpu vs bare: bare cpu-ns/op / result cpu-ns/op, the process's CPU per operation; above 1.00x is cheaper."

// renderTable writes one aligned table per package.
func renderTable(w io.Writer, rows []row) error {
	var b strings.Builder
	paired := false
	for i, g := range groupByPackage(rows) {
		if i > 0 {
			b.WriteString("\n")
		}
		pkg := g.Pkg
		if pkg == "" {
			pkg = "(unknown)"
		}
		fmt.Fprintf(&b, "pkg: %s\n", pkg)
		writeAligned(&b, groupTable(g))
		for _, r := range g.Rows {
			paired = paired || r.Base != nil
		}
	}
	if paired {
		b.WriteString("\n" + legend + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// columns says which optional columns a group's table has.
type columns struct {
	runs, allocs, bytes, cpu, paired, procs bool
	throughput                              []string
}

// groupColumns picks the columns some row of g has a value for.
func groupColumns(g group) columns {
	var c columns
	seen := map[string]bool{}
	procs := map[int]bool{}
	for _, r := range g.Rows {
		c.runs = c.runs || r.Runs > 1
		c.paired = c.paired || r.Base != nil
		procs[r.Procs] = true
		for _, u := range r.Units {
			switch {
			case u == unitAllocs:
				c.allocs = true
			case u == unitBytes:
				c.bytes = true
			case u == unitCPU:
				c.cpu = true
			case isThroughput(u) && !seen[u]:
				seen[u] = true
				c.throughput = append(c.throughput, u)
			}
		}
	}
	c.procs = len(procs) > 1
	return c
}

// groupTable lays a group out as cells, the header first.
func groupTable(g group) [][]string {
	c := groupColumns(g)
	header := []string{"benchmark"}
	if c.runs {
		header = append(header, "runs")
	}
	header = append(header, unitNs)
	header = append(header, c.throughput...)
	if c.allocs {
		header = append(header, unitAllocs)
	}
	if c.bytes {
		header = append(header, unitBytes)
	}
	if c.cpu {
		header = append(header, unitCPU)
	}
	if c.paired {
		header = append(header, "vs bare", "allocs vs bare")
		if c.cpu {
			header = append(header, "cpu vs bare")
		}
	}
	table := [][]string{header}
	for _, r := range g.Rows {
		name := r.Name
		if c.procs {
			name += "-" + strconv.Itoa(r.Procs)
		}
		cells := []string{name}
		if c.runs {
			cells = append(cells, strconv.Itoa(r.Runs))
		}
		cells = append(cells, cell(r.result, unitNs))
		for _, u := range c.throughput {
			cells = append(cells, cell(r.result, u))
		}
		if c.allocs {
			cells = append(cells, cell(r.result, unitAllocs))
		}
		if c.bytes {
			cells = append(cells, cell(r.result, unitBytes))
		}
		if c.cpu {
			cells = append(cells, cell(r.result, unitCPU))
		}
		if c.paired {
			cells = append(cells, comparisonCells(r, c.cpu)...)
		}
		table = append(table, cells)
	}
	return table
}

// cell formats r's unit, or "-" when r does not have it.
func cell(r *result, unit string) string {
	v, ok := r.value(unit)
	if !ok {
		return "-"
	}
	return formatValue(v)
}

// comparisonCells are the ratio and allocs delta cells of a row, and the
// CPU ratio cell when withCPU.
func comparisonCells(r row, withCPU bool) []string {
	var cells []string
	switch {
	case r.IsBase:
		cells = []string{"base", "", ""}
	case r.Base == nil:
		cells = []string{"", "", ""}
	default:
		c := compare(r.result, r.Base)
		cells = []string{"-", "-", "-"}
		if c.HasSpeed {
			cells[0] = formatRatio(c.Speed)
		}
		if c.HasAllocs {
			cells[1] = formatDelta(c.AllocsDelta, "allocs")
		}
		if c.HasCPU {
			cells[2] = formatRatio(c.CPU)
		}
	}
	if !withCPU {
		cells = cells[:2]
	}
	return cells
}

// writeAligned writes table with the first column left-aligned and the
// others right-aligned, two spaces apart.
func writeAligned(b *strings.Builder, table [][]string) {
	var widths []int
	for _, cells := range table {
		for i, s := range cells {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len([]rune(s)))
		}
	}
	for _, cells := range table {
		var line strings.Builder
		for i, s := range cells {
			pad := strings.Repeat(" ", widths[i]-len([]rune(s)))
			if i == 0 {
				line.WriteString(s + pad)
				continue
			}
			line.WriteString("  " + pad + s)
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// formatValue formats a metric with about four significant digits and no
// exponent.
func formatValue(v float64) string {
	a := math.Abs(v)
	switch {
	case v == math.Trunc(v) || a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// formatRatio formats a ratio as 0.91x.
func formatRatio(r float64) string {
	return strconv.FormatFloat(r, 'f', 2, 64) + "x"
}

// formatDelta formats a difference with its sign, as +12 allocs.
func formatDelta(d float64, what string) string {
	s := strconv.FormatFloat(d, 'f', -1, 64)
	if d >= 0 {
		s = "+" + s
	}
	return s + " " + what
}

// jsonResult is one line of -json output.
type jsonResult struct {
	Package    string             `json:"package"`
	Name       string             `json:"name"`
	Procs      int                `json:"procs"`
	Runs       int                `json:"runs"`
	Iterations int64              `json:"iterations"`
	Metrics    map[string]float64 `json:"metrics"`
	IsBaseline bool               `json:"is_baseline,omitempty"`
	Baseline   string             `json:"baseline,omitempty"`
	// Speed is higher-is-better (see comparison.Speed).
	Speed       *float64           `json:"speed_ratio,omitempty"`
	SpeedUnit   string             `json:"speed_unit,omitempty"`
	CPU         *float64           `json:"cpu_ratio,omitempty"`
	AllocsDelta *float64           `json:"allocs_delta,omitempty"`
	BytesDelta  *float64           `json:"bytes_delta,omitempty"`
	Ratios      map[string]float64 `json:"ratios,omitempty"`
}

// toJSON converts a row to its -json form.
func toJSON(r row) jsonResult {
	j := jsonResult{
		Package:    r.Pkg,
		Name:       r.Name,
		Procs:      r.Procs,
		Runs:       r.Runs,
		Iterations: r.Iterations,
		Metrics:    r.Values,
		IsBaseline: r.IsBase,
	}
	if r.Base == nil {
		return j
	}
	c := compare(r.result, r.Base)
	j.Baseline = r.Base.Name
	j.Ratios = c.Ratios
	if c.HasSpeed {
		j.Speed, j.SpeedUnit = &c.Speed, c.SpeedUnit
	}
	if c.HasCPU {
		j.CPU = &c.CPU
	}
	if c.HasAllocs {
		j.AllocsDelta = &c.AllocsDelta
	}
	if c.HasBytes {
		j.BytesDelta = &c.BytesDelta
	}
	return j
}

// renderJSON writes one JSON object per result, one per line.
func renderJSON(w io.Writer, rows []row) error {
	enc := json.NewEncoder(w)
	for _, r := range rows {
		if err := enc.Encode(toJSON(r)); err != nil {
			return err
		}
	}
	return nil
}
