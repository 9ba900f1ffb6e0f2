// Command benchratio runs Go benchmarks and prints each result next to its
// baseline measured in the same run, as a ratio.
//
// The benchmark machines are shared and noisy, so absolute numbers mean
// little; the ratio of two results measured seconds apart on the same
// machine means more. A result whose last name element is "bare" is the
// baseline of every sibling: BenchmarkUnary/bare is the baseline of
// BenchmarkUnary/kit and BenchmarkUnary/kit-security.
//
// Usage:
//
//	benchratio [-pkg ./bench/...] [-bench .] [-benchtime 2s] [-rounds 3] [-count 1] [-cpu list] [-timeout 20m] [-json]
//	benchratio -in FILE [-json]
//
// It runs go test -run '^$' -bench RE -benchmem once per round, streams its
// output to stderr and prints a table per package (or JSON lines with
// -json) to stdout: every metric is the median of its runs, and the ratio
// to the baseline the median of the ratios of the rounds, each measured
// against the baseline of its own round. Rounds interleave the results
// (bare, kit, bare, kit...) where go test's -count repeats each one before
// the next (bare, bare, kit, kit...), so that a build starting on the
// machine halfway through slows both sides of a ratio rather than one. It
// exits non-zero when go test fails or no result was found, never because
// of a ratio.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], "", os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // go test failed or nothing was parsed
	exitUsage = 2
)

// config is the parsed command line.
type config struct {
	pkg       string
	bench     string
	benchtime string
	count     int
	rounds    int
	cpu       string
	timeout   time.Duration
	json      bool
	out       string
	in        string
}

const usageHead = `Usage: benchratio [flags]

Runs go test -run '^$' -bench RE -benchmem on -pkg, streams its output to
stderr, and prints every result next to its baseline from the same run: a
result whose last name element is "bare" (BenchmarkUnary/bare) is the
baseline of its siblings (BenchmarkUnary/kit). "vs bare" is the result/bare
ratio of the first throughput metric (unit ending in /s), or bare ns/op over
result ns/op when there is none; above 1.00x is faster. go test runs once
per round, every benchmark in turn, so the rounds interleave the results;
every metric is the median of the runs, and "vs bare" the median of the
ratios of the runs taken round by round. When the benchmarks report
cpu-ns/op (the process's CPU time per operation, as bench's do), "cpu vs
bare" is bare cpu-ns/op over result cpu-ns/op, taken the same way: on a
shared machine it moves less than throughput does.

Flags:
`

// parseFlags parses args; the error is flag.ErrHelp for -h.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("benchratio", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.pkg, "pkg", "./bench/...", "package `pattern` to benchmark")
	fs.StringVar(&c.bench, "bench", ".", "run only the benchmarks matching `regexp`")
	fs.StringVar(&c.benchtime, "benchtime", "2s", "run each benchmark for `t` (a duration or Nx)")
	fs.IntVar(&c.count, "count", 1, "go test -count: run each benchmark `n` times in a row in each round")
	fs.IntVar(&c.rounds, "rounds", 3, "run go test `n` times, interleaving the benchmarks, and report the medians")
	fs.StringVar(&c.cpu, "cpu", "", "GOMAXPROCS `list` passed to go test -cpu")
	fs.DurationVar(&c.timeout, "timeout", 20*time.Minute, "go test -timeout for each test binary")
	fs.BoolVar(&c.json, "json", false, "print one JSON object per result instead of tables")
	fs.StringVar(&c.out, "out", "", "also write one JSON object per result to this `file`")
	fs.StringVar(&c.in, "in", "", "parse this go test -bench output `file` (- for stdin) instead of running go test")
	fs.Usage = func() {
		_, _ = io.WriteString(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var err error
	switch {
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected arguments %q (use -pkg)", fs.Args())
	case c.count < 1:
		err = fmt.Errorf("-count must be at least 1, got %d", c.count)
	case c.rounds < 1 || c.rounds > maxRounds:
		err = fmt.Errorf("-rounds must be between 1 and %d, got %d", maxRounds, c.rounds)
	case c.timeout <= 0:
		err = fmt.Errorf("-timeout must be positive, got %s", c.timeout)
	}
	if err != nil {
		warn(stderr, err)
		fs.Usage()
	}
	return c, err
}

// run is the whole command: it parses args, gets the results (running
// go test in dir, or reading -in) and prints them; it returns the exit
// status.
func run(ctx context.Context, args []string, dir string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	var results []*result
	var testErr error
	if cfg.in != "" {
		results, err = readInput(cfg.in, stdin)
	} else {
		results, testErr, err = runBenchmarks(ctx, cfg, dir, stderr)
	}
	if err != nil {
		warn(stderr, err)
		return exitFail
	}
	code := exitOK
	if testErr != nil {
		warn(stderr, "go test:", testErr)
		code = exitFail
	}
	if len(results) == 0 {
		warn(stderr, "no benchmark results found")
		return exitFail
	}
	rows := pair(results)
	if cfg.out != "" {
		if err := writeJSONFile(cfg.out, rows); err != nil {
			warn(stderr, err)
			return exitFail
		}
	}
	if cfg.json {
		err = renderJSON(stdout, rows)
	} else {
		err = renderTable(stdout, rows)
	}
	if err != nil {
		warn(stderr, err)
		return exitFail
	}
	return code
}

// writeJSONFile writes rows to the file name, one JSON object a line.
func writeJSONFile(name string, rows []row) error {
	var b bytes.Buffer
	if err := renderJSON(&b, rows); err != nil {
		return err
	}
	return os.WriteFile(filepath.Clean(name), b.Bytes(), 0o600)
}

// warn prints a message of the command to stderr.
func warn(stderr io.Writer, args ...any) {
	_, _ = fmt.Fprintln(stderr, append([]any{"benchratio:"}, args...)...)
}

// readInput parses the -in file, or stdin for "-".
func readInput(name string, stdin io.Reader) ([]*result, error) {
	if name == "-" {
		return parse(stdin)
	}
	f, err := os.Open(filepath.Clean(name))
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read-only: Close has nothing to report
	return parse(f)
}

// goTestArgs are the arguments of the go test command for cfg.
func goTestArgs(cfg config) []string {
	args := []string{
		"test", "-run", "^$",
		"-bench", cfg.bench,
		"-benchmem",
		"-benchtime", cfg.benchtime,
		"-count", fmt.Sprint(cfg.count),
	}
	if cfg.cpu != "" {
		args = append(args, "-cpu", cfg.cpu)
	}
	return append(args, "-timeout", cfg.timeout.String(), cfg.pkg)
}

// goBinary returns the go command of the toolchain benchratio was built
// with, or "go" (looked up in PATH) when that one is gone.
func goBinary() string {
	exe := "go"
	if runtime.GOOS == "windows" {
		exe += ".exe"
	}
	// benchratio is meant for go run (make bench), never copied to another
	// machine: the toolchain that built it is the one to benchmark with, and
	// the PATH fallback covers a GOROOT that is gone.
	if root := runtime.GOROOT(); root != "" { //nolint:staticcheck // SA1019: see above.
		p := filepath.Join(root, "bin", exe)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return "go"
}

// maxRounds bounds -rounds.
const maxRounds = 100

// runBenchmarks runs go test in dir once per round, copying its output to
// stderr as it comes, and parses what the rounds printed. It stops at the
// first round that fails. testErr is go test's failure; err is a failure
// to parse its output.
func runBenchmarks(ctx context.Context, cfg config, dir string, stderr io.Writer) (results []*result, testErr, err error) {
	var out bytes.Buffer
	progress := &lockedWriter{w: stderr}
	for round := 1; round <= cfg.rounds && testErr == nil; round++ {
		if cfg.rounds > 1 {
			warn(progress, fmt.Sprintf("round %d of %d", round, cfg.rounds))
		}
		// The arguments are the user's own flags for the go tool, run
		// without a shell: there is nothing to inject into.
		cmd := exec.CommandContext(ctx, goBinary(), goTestArgs(cfg)...) //nolint:gosec // G204: see above.
		cmd.Dir = dir
		// On Ctrl-C let go test stop its test binary and clean up before
		// it is killed.
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 10 * time.Second
		cmd.Stdout = io.MultiWriter(progress, &out)
		cmd.Stderr = progress
		testErr = cmd.Run()
	}
	results, err = parse(&out)
	return results, testErr, err
}

// lockedWriter serialises the writes of go test's stdout and stderr
// copiers, which run concurrently.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
