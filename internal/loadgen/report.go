package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"text/tabwriter"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/status"
)

// Latencies are recorded in microseconds from 1 µs to 1 minute with three
// significant digits.
const (
	minLatency = 1
	maxLatency = int64(time.Minute / time.Microsecond)
	sigFigs    = 3
)

type outcome int

const (
	outcomeOK      outcome = iota
	outcomeRefused         // the shop answered, and said no (order cancelled)
)

// recorder is one worker's measurements; only that worker writes it.
type recorder struct {
	ops map[string]*opStats
}

type opStats struct {
	hist    *hdrhistogram.Histogram
	ok      int64
	refused int64
	errors  map[string]int64
}

func newRecorder() *recorder { return &recorder{ops: map[string]*opStats{}} }

func (r *recorder) stats(op string) *opStats {
	s := r.ops[op]
	if s == nil {
		s = &opStats{hist: hdrhistogram.New(minLatency, maxLatency, sigFigs), errors: map[string]int64{}}
		r.ops[op] = s
	}
	return s
}

func (r *recorder) record(op string, took time.Duration, o outcome, err error) {
	s := r.stats(op)
	if err != nil {
		s.errors[errorClass(err)]++
		return
	}
	us := max(took.Microseconds(), minLatency)
	_ = s.hist.RecordValue(min(us, maxLatency))
	if o == outcomeRefused {
		s.refused++
	} else {
		s.ok++
	}
}

// HTTPError is a gateway answer with an error status.
type HTTPError struct {
	Status int
	Body   string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, http.StatusText(e.Status), e.Body)
}

// errorClass names an error for the report: its gRPC code or HTTP status.
func errorClass(err error) string {
	var he *HTTPError
	if errors.As(err, &he) {
		return "HTTP " + strconv.Itoa(he.Status)
	}
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	return "transport"
}

// Report is the outcome of a run.
type Report struct {
	Via      string  `json:"via"`
	Scenario string  `json:"scenario"`
	Workers  int     `json:"workers"`
	Rate     float64 `json:"target_rate,omitempty"`
	Seconds  float64 `json:"seconds"`
	// Dropped counts open-loop calls that were due while every worker was
	// busy: the target rate was not reached.
	Dropped int64      `json:"dropped,omitempty"`
	Ops     []OpReport `json:"ops"`
}

// OpReport is one operation's figures. Latencies are of answered calls
// (confirmed or refused), in milliseconds.
type OpReport struct {
	Op        string           `json:"op"`
	Calls     int64            `json:"calls"`
	OK        int64            `json:"ok"`
	Refused   int64            `json:"refused,omitempty"`
	Errors    map[string]int64 `json:"errors,omitempty"`
	PerSecond float64          `json:"per_second"`
	P50       float64          `json:"p50_ms"`
	P90       float64          `json:"p90_ms"`
	P99       float64          `json:"p99_ms"`
	P999      float64          `json:"p99_9_ms"`
	Max       float64          `json:"max_ms"`
}

func newReport(cfg Config, elapsed time.Duration, dropped int64, workers []*recorder) *Report {
	rep := &Report{Via: cfg.Via, Scenario: cfg.Scenario, Workers: cfg.Workers, Rate: cfg.Rate, Seconds: elapsed.Seconds(), Dropped: dropped}
	merged := newRecorder()
	for _, w := range workers {
		for op, s := range w.ops {
			m := merged.stats(op)
			m.hist.Merge(s.hist)
			m.ok += s.ok
			m.refused += s.refused
			for k, v := range s.errors {
				m.errors[k] += v
			}
		}
	}
	ms := func(h *hdrhistogram.Histogram, q float64) float64 {
		return float64(h.ValueAtQuantile(q)) / 1000
	}
	for _, op := range ops(cfg.Scenario) {
		s := merged.stats(op)
		var errs int64
		for _, v := range s.errors {
			errs += v
		}
		o := OpReport{
			Op: op, OK: s.ok, Refused: s.refused, Calls: s.ok + s.refused + errs,
			PerSecond: float64(s.ok+s.refused) / max(elapsed.Seconds(), 1e-9),
			P50:       ms(s.hist, 50), P90: ms(s.hist, 90), P99: ms(s.hist, 99), P999: ms(s.hist, 99.9),
			Max: float64(s.hist.Max()) / 1000,
		}
		if len(s.errors) > 0 {
			o.Errors = s.errors
		}
		rep.Ops = append(rep.Ops, o)
	}
	return rep
}

// Errors counts the calls that failed.
func (r *Report) Errors() int64 {
	var n int64
	for _, o := range r.Ops {
		for _, v := range o.Errors {
			n += v
		}
	}
	return n
}

// WriteJSON writes r as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r as a table for people.
func (r *Report) WriteTable(w io.Writer) error {
	mode := "closed loop"
	if r.Rate > 0 {
		mode = fmt.Sprintf("open loop at %.0f/s", r.Rate)
	}
	if _, err := fmt.Fprintf(w, "%s via %s, %d workers, %s, %.1fs\n", r.Scenario, r.Via, r.Workers, mode, r.Seconds); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(tw, "op\tcalls\tok\trefused\terrors\tper s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\t")
	for _, o := range r.Ops {
		var errs int64
		for _, v := range o.Errors {
			errs += v
		}
		_, _ = fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n",
			o.Op, o.Calls, o.OK, o.Refused, errs, o.PerSecond, o.P50, o.P90, o.P99, o.P999, o.Max)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, o := range r.Ops {
		for _, k := range sortedKeys(o.Errors) {
			if _, err := fmt.Fprintf(w, "%s errors: %s × %d\n", o.Op, k, o.Errors[k]); err != nil {
				return err
			}
		}
	}
	if r.Dropped > 0 {
		if _, err := fmt.Fprintf(w, "%d calls not sent: every worker was busy (raise --workers or lower --rate)\n", r.Dropped); err != nil {
			return err
		}
	}
	return nil
}
