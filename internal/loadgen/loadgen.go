package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Scenarios.
const (
	PlaceOrder = "place-order"
	GetItem    = "get-item"
	Mix        = "mix"
)

// Transports the measured calls go through.
const (
	ViaGRPC = "grpc"
	ViaHTTP = "http"
)

// Bounds of Config.
const (
	MaxWorkers  = 10_000
	MaxUsers    = 10_000
	MaxRate     = 1_000_000
	MaxDuration = 24 * time.Hour
)

// Config is one load run. Only cmd/ fills it in.
type Config struct {
	// Via is ViaGRPC (straight to the services) or ViaHTTP (through the
	// gateway at GatewayURL).
	Via string
	// Scenario is PlaceOrder, GetItem or Mix.
	Scenario string
	// MixOrders is the percentage of PlaceOrder calls in Mix (the rest are
	// GetItem). Default 20.
	MixOrders int
	// Workers is the number of callers. In a closed loop each sends its
	// next call when the last one returns; in an open loop (Rate > 0) it
	// bounds the calls in flight. Default 16.
	Workers int
	// Rate is the target calls per second of an open loop; 0 runs a closed
	// loop.
	Rate float64
	// Duration bounds the run. Default 10s.
	Duration time.Duration
	// Requests, when positive, ends the run after that many calls.
	Requests int64
	// Users is how many shop users the calls are spread over; each is
	// registered (or signed in again) before the run. Default 20.
	Users int
	// Timeout bounds each call. Default 5s.
	Timeout time.Duration
	// Progress receives a progress line twice a second; nil for none.
	Progress io.Writer
}

func (c Config) withDefaults() (Config, error) {
	if c.Via == "" {
		c.Via = ViaGRPC
	}
	if c.Scenario == "" {
		c.Scenario = Mix
	}
	if c.MixOrders == 0 {
		c.MixOrders = 20
	}
	if c.Workers == 0 {
		c.Workers = 16
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Users == 0 {
		c.Users = 20
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	switch {
	case c.Via != ViaGRPC && c.Via != ViaHTTP:
		return c, fmt.Errorf("loadgen: via %q: want %s or %s", c.Via, ViaGRPC, ViaHTTP)
	case c.Scenario != PlaceOrder && c.Scenario != GetItem && c.Scenario != Mix:
		return c, fmt.Errorf("loadgen: scenario %q: want %s, %s or %s", c.Scenario, PlaceOrder, GetItem, Mix)
	case c.MixOrders < 0 || c.MixOrders > 100:
		return c, fmt.Errorf("loadgen: mix of %d%% orders: want 0 to 100", c.MixOrders)
	case c.Workers < 1 || c.Workers > MaxWorkers:
		return c, fmt.Errorf("loadgen: %d workers: want 1 to %d", c.Workers, MaxWorkers)
	case c.Users < 1 || c.Users > MaxUsers:
		return c, fmt.Errorf("loadgen: %d users: want 1 to %d", c.Users, MaxUsers)
	case c.Rate < 0 || c.Rate > MaxRate:
		return c, fmt.Errorf("loadgen: rate %v: want 0 to %d", c.Rate, MaxRate)
	case c.Duration < 0 || c.Duration > MaxDuration:
		return c, fmt.Errorf("loadgen: duration %v: want up to %v", c.Duration, MaxDuration)
	case c.Requests < 0:
		return c, fmt.Errorf("loadgen: %d requests: want 0 or more", c.Requests)
	case c.Timeout < 0:
		return c, fmt.Errorf("loadgen: negative timeout %v", c.Timeout)
	}
	return c, nil
}

// User is a signed-in shop user the calls act as.
type User struct {
	ID    string
	Token string
}

// Target makes the measured calls. Implementations are safe for
// concurrent use.
type Target interface {
	// GetItem reads one item.
	GetItem(ctx context.Context, u User, itemID string) error
	// PlaceOrder places an order of one unit of itemID with an
	// idempotency key and reports whether it was confirmed (false: the
	// shop refused it, e.g. out of stock, and cancelled it).
	PlaceOrder(ctx context.Context, u User, key, itemID string) (confirmed bool, err error)
}

// Fixture is what a run needs from the shop: users and item ids.
type Fixture struct {
	Users []User
	// Items are read by GetItem; OrderItem is what PlaceOrder buys.
	Items     []string
	OrderItem string
}

// Run drives load at t until cfg's duration or request count is reached,
// or ctx ends, and returns the measurements.
func Run(ctx context.Context, cfg Config, t Target, fx Fixture) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(fx.Users) == 0 || len(fx.Items) == 0 || fx.OrderItem == "" {
		return nil, errors.New("loadgen: the fixture needs users, items and an item to order")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()

	r := &run{cfg: cfg, target: t, fx: fx, runID: uuid.NewString()[:8]}
	r.start = time.Now()
	workers := make([]*recorder, cfg.Workers)
	for i := range workers {
		workers[i] = newRecorder()
	}
	stopProgress := r.progress(ctx)
	if cfg.Rate > 0 {
		r.openLoop(ctx, workers)
	} else {
		r.closedLoop(ctx, workers)
	}
	elapsed := time.Since(r.start)
	stopProgress()
	return newReport(cfg, elapsed, r.dropped.Load(), workers), nil
}

type run struct {
	cfg     Config
	target  Target
	fx      Fixture
	runID   string
	start   time.Time
	seq     atomic.Int64 // calls started
	done    atomic.Int64 // calls finished
	failed  atomic.Int64
	dropped atomic.Int64 // open loop: ticks with every worker busy
}

// next claims the next call number, or reports that the run has made all
// it may.
func (r *run) next() (int64, bool) {
	n := r.seq.Add(1)
	if r.cfg.Requests > 0 && n > r.cfg.Requests {
		return 0, false
	}
	return n, true
}

func (r *run) closedLoop(ctx context.Context, workers []*recorder) {
	var wg sync.WaitGroup
	for _, rec := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) //nolint:gosec // load mix, not secrets
			for ctx.Err() == nil {
				n, ok := r.next()
				if !ok {
					return
				}
				r.call(ctx, rec, rng, n, time.Now())
			}
		})
	}
	wg.Wait()
}

// openLoop paces calls with vegeta's constant pacer. Latency is measured
// from when a call was due, not from when a worker got to it, so a
// saturated system shows its queueing (no coordinated omission). A tick
// that finds every worker busy and the queue full is dropped and counted.
func (r *run) openLoop(ctx context.Context, workers []*recorder) {
	ticks := make(chan time.Time, len(workers))
	var wg sync.WaitGroup
	for _, rec := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) //nolint:gosec // load mix, not secrets
			for due := range ticks {
				n, ok := r.next()
				if !ok {
					continue
				}
				r.call(ctx, rec, rng, n, due)
			}
		})
	}
	pacer := vegeta.ConstantPacer{Freq: int(r.cfg.Rate), Per: time.Second}
	if r.cfg.Rate < 1 {
		pacer = vegeta.ConstantPacer{Freq: 1, Per: time.Duration(float64(time.Second) / r.cfg.Rate)}
	}
	var hits uint64
	began := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
loop:
	for {
		wait, stop := pacer.Pace(time.Since(began), hits)
		if stop {
			break
		}
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				break loop
			case <-timer.C:
			}
			continue
		}
		if ctx.Err() != nil || (r.cfg.Requests > 0 && int64(hits) >= r.cfg.Requests) {
			break
		}
		hits++
		select {
		case ticks <- time.Now():
		default:
			r.dropped.Add(1)
		}
	}
	close(ticks)
	wg.Wait()
}

// call makes one call of the scenario and records it.
func (r *run) call(ctx context.Context, rec *recorder, rng *rand.Rand, n int64, due time.Time) {
	u := r.fx.Users[rng.IntN(len(r.fx.Users))]
	op := r.cfg.Scenario
	if op == Mix {
		op = GetItem
		if rng.IntN(100) < r.cfg.MixOrders {
			op = PlaceOrder
		}
	}
	// The call's deadline is its own timeout, not the run's end: a call
	// the run's end interrupts is cancelled, so no server answers it with
	// DEADLINE_EXCEEDED (which a client's circuit breaker counts) just
	// before the run's context reports its end here.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Timeout)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	var (
		err     error
		outcome = outcomeOK
	)
	switch op {
	case PlaceOrder:
		var confirmed bool
		confirmed, err = r.target.PlaceOrder(cctx, u, "load-"+r.runID+"-"+strconv.FormatInt(n, 10), r.fx.OrderItem)
		if err == nil && !confirmed {
			outcome = outcomeRefused
		}
	default:
		err = r.target.GetItem(cctx, u, r.fx.Items[rng.IntN(len(r.fx.Items))])
	}
	if err != nil && ctx.Err() != nil {
		// The run ended under this call: not the system's failure.
		r.done.Add(1)
		return
	}
	if err != nil {
		r.failed.Add(1)
	}
	rec.record(op, time.Since(due), outcome, err)
	r.done.Add(1)
}

// progress prints a line twice a second until the returned function is
// called.
func (r *run) progress(ctx context.Context) func() {
	if r.cfg.Progress == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				r.printProgress(true)
				return
			case <-ctx.Done():
			case <-t.C:
			}
			r.printProgress(false)
			if ctx.Err() != nil {
				<-stop
				r.printProgress(true)
				return
			}
		}
	}()
	return func() { close(stop); <-done }
}

func (r *run) printProgress(final bool) {
	const width = 30
	elapsed := time.Since(r.start)
	frac := min(float64(elapsed)/float64(r.cfg.Duration), 1)
	if r.cfg.Requests > 0 {
		frac = max(frac, min(float64(r.done.Load())/float64(r.cfg.Requests), 1))
	}
	if final {
		frac = 1
	}
	filled := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		switch {
		case i < filled:
			bar[i] = '='
		case i == filled:
			bar[i] = '>'
		default:
			bar[i] = ' '
		}
	}
	done := r.done.Load()
	rate := float64(done) / max(elapsed.Seconds(), 1e-9)
	end := "\r"
	if final {
		end = "\n"
	}
	_, _ = fmt.Fprintf(r.cfg.Progress, "[%s] %5.1fs  %d calls  %.0f/s  %d errors%s",
		bar, elapsed.Seconds(), done, rate, r.failed.Load(), end)
}

// ops lists the operations a scenario makes, in report order.
func ops(scenario string) []string {
	switch scenario {
	case Mix:
		return []string{GetItem, PlaceOrder}
	default:
		return []string{scenario}
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
