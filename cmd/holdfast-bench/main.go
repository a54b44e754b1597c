// Command holdfast-bench measures holdfast with the field's own SMTP load tools,
// Postfix's smtp-source and smtp-sink, and with -compare runs the same
// figures against a private Postfix instance on loopback, alternating the
// two run by run. See docs/benchmarks.md.
//
//	make bench            holdfast alone
//	make bench-compare    holdfast and Postfix side by side
//	make bench-postfix-1m ETRN at 1M queued, both, Postfix's queue cloned
//
// Everything runs in a temporary directory on 127.0.0.1; every process the
// harness starts (holdfast, Postfix, smtp-sink) is stopped before it exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config is one harness run. The flags fill it; the smoke test builds
// one with tiny sizes.
type Config struct {
	// Holdfast is the holdfast binary.
	Holdfast string
	// Postfix adds the Postfix side (bench-compare).
	Postfix bool
	// Load is "smtp-source" (Postfix's tool) or "go" (the built-in
	// client); Sink is "smtp-sink" or "go".
	Load, Sink string
	// Runs is the number of runs per figure; the table shows the median.
	Runs int
	// Sessions are the acceptance concurrency levels; AcceptMsgs the
	// messages per acceptance run.
	Sessions   []int
	AcceptMsgs int
	// RelayMsgs and RelaySessions shape the relay runs.
	RelayMsgs, RelaySessions int
	// Sizes are the queue sizes of the ETRN-at-scale figures for
	// holdfast, PostfixSizes those for Postfix (filled over SMTP, which
	// is slow). Domains is the number of ETRN-only domains the queue is
	// spread over; Batch the messages of the one domain that is flushed.
	Sizes, PostfixSizes []int
	Domains, Batch      int
	// PostfixFill is how Postfix's queue is filled: "smtp" (over SMTP,
	// 500-1,000 msg/s) or "clone" (a real deferred message per address
	// shape over SMTP, the rest written as copies of those queue files;
	// see postfixfill.go).
	PostfixFill string
	// StartupRuns is how many restarts time the start-up at each size.
	StartupRuns int
	// Skip names phases not to run: "accept", "relay", "etrn".
	Skip map[string]bool
	// Work is the parent of the temporary directory; Out is where the
	// results (JSON, chart data, chart) are written, "" for nowhere.
	Work, Out string
	// Keep leaves the temporary directory in place.
	Keep bool
	// Cache, when set, keeps a copy of holdfast's queue file after each
	// fill in this directory and reuses it in later runs with the same
	// sizes, domains, batch and runs, instead of filling again (filling
	// 1M messages takes minutes).
	Cache string
	// Perf, when set, records a perf(1) CPU profile of the holdfast
	// daemon into this directory during the first acceptance run at the
	// highest concurrency, the first relay run and the first ETRN run at
	// the largest size (profiling runs: their figures are perturbed).
	Perf string
	// ETRNGap is the least time between the end of a system's ETRN run
	// and the start of its next. Longer than
	// smtp_connection_cache_time_limit (2 s in both), it makes every
	// round dial its sessions to the sink anew, as a customer that has
	// just come on-line is reached; 0 runs them back to back, with the
	// sessions of the round before cached. With -compare the other
	// system's run takes part of the wait.
	ETRNGap time.Duration
	// Log receives progress lines; the table goes to Table.
	Log, Table io.Writer
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "chart" {
		os.Exit(chartMain(os.Args[2:]))
	}
	c, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if _, err := Run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*Config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	c := &Config{Log: os.Stderr, Table: os.Stdout}
	fs.StringVar(&c.Holdfast, "holdfast", "bin/holdfast", "holdfast `binary`")
	fs.BoolVar(&c.Postfix, "compare", false, "also measure a private Postfix instance, alternating run by run")
	fs.StringVar(&c.Load, "load", "smtp-source", "load generator: smtp-source or go")
	fs.StringVar(&c.Sink, "sink", "smtp-sink", "receiving MTA: smtp-sink or go")
	fs.IntVar(&c.Runs, "runs", envInt("BENCH_RUNS", 5), "runs per figure (median shown)")
	sessions := fs.String("sessions", envStr("BENCH_SESSIONS", "1,10,50"), "acceptance sessions")
	fs.IntVar(&c.AcceptMsgs, "accept-msgs", envInt("BENCH_ACCEPT_MSGS", 3000), "messages per acceptance run")
	fs.IntVar(&c.RelayMsgs, "relay-msgs", envInt("BENCH_RELAY_MSGS", 3000), "messages per relay run")
	fs.IntVar(&c.RelaySessions, "relay-sessions", envInt("BENCH_RELAY_SESSIONS", 10), "sessions per relay run")
	sizes := fs.String("sizes", envStr("BENCH_SIZES", "10000,100000,1000000"), "holdfast queue sizes for ETRN at scale")
	psizes := fs.String("postfix-sizes", envStr("BENCH_POSTFIX_SIZES", "10000,100000"), "Postfix queue sizes for ETRN at scale")
	fs.StringVar(&c.PostfixFill, "postfix-fill", envStr("BENCH_POSTFIX_FILL", "smtp"), "how Postfix's queue is filled: smtp or clone")
	fs.IntVar(&c.Domains, "domains", envInt("BENCH_DOMAINS", 10000), "ETRN-only domains the queue is spread over")
	fs.IntVar(&c.Batch, "batch", envInt("BENCH_BATCH", 100), "messages held by the flushed domain")
	fs.IntVar(&c.StartupRuns, "startup-runs", envInt("BENCH_STARTUP_RUNS", 5), "restarts timed at each queue size")
	skip := fs.String("skip", envStr("BENCH_SKIP", ""), "phases to skip: accept,relay,etrn")
	fs.StringVar(&c.Work, "work", envStr("BENCH_WORK", ""), "parent `dir` of the temporary directory (default $TMPDIR)")
	fs.StringVar(&c.Out, "out", envStr("BENCH_OUT", "docs/bench-out"), "results `dir` (JSON, chart data, chart); empty: none")
	fs.BoolVar(&c.Keep, "keep", false, "keep the temporary directory")
	fs.StringVar(&c.Cache, "cache", envStr("BENCH_CACHE", ""), "keep and reuse filled holdfast queue files in `dir`")
	fs.StringVar(&c.Perf, "perf", "", "record perf CPU profiles of holdfast into `dir` (perturbs the figures)")
	fs.DurationVar(&c.ETRNGap, "etrn-gap", 2500*time.Millisecond, "least time between a system's ETRN runs (2.5s: its sessions to the sink from the run before are closed; 0: back to back, sessions cached)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if c.Sessions, err = intList(*sessions); err != nil {
		return nil, fmt.Errorf("-sessions: %w", err)
	}
	if c.Sizes, err = intList(*sizes); err != nil {
		return nil, fmt.Errorf("-sizes: %w", err)
	}
	if c.PostfixSizes, err = intList(*psizes); err != nil {
		return nil, fmt.Errorf("-postfix-sizes: %w", err)
	}
	c.Skip = map[string]bool{}
	for _, s := range strings.FieldsFunc(*skip, func(r rune) bool { return r == ',' || r == ' ' }) {
		c.Skip[s] = true
	}
	return c, c.check()
}

func (c *Config) check() error {
	switch {
	case c.Load != "smtp-source" && c.Load != "go":
		return fmt.Errorf("-load %q: want smtp-source or go", c.Load)
	case c.Sink != "smtp-sink" && c.Sink != "go":
		return fmt.Errorf("-sink %q: want smtp-sink or go", c.Sink)
	case c.PostfixFill != "smtp" && c.PostfixFill != "clone":
		return fmt.Errorf("-postfix-fill %q: want smtp or clone", c.PostfixFill)
	case c.Runs < 1 || c.AcceptMsgs < 1 || c.RelayMsgs < 1 || c.RelaySessions < 1 || c.Batch < 1 || c.Domains < 1:
		return errors.New("runs, message counts, sessions, batch and domains must be positive")
	case c.StartupRuns < 1:
		return errors.New("-startup-runs must be positive")
	}
	for _, n := range append(append([]int{}, c.Sizes...), c.PostfixSizes...) {
		if n < c.Runs*c.Batch {
			return fmt.Errorf("queue size %d is below runs x batch = %d", n, c.Runs*c.Batch)
		}
	}
	if c.Holdfast != "" {
		abs, err := filepath.Abs(c.Holdfast)
		if err != nil {
			return err
		}
		c.Holdfast = abs
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("holdfast binary: %w (run make build)", err)
		}
	}
	return nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		mult := 1
		switch {
		case strings.HasSuffix(f, "k"):
			mult, f = 1000, strings.TrimSuffix(f, "k")
		case strings.HasSuffix(f, "M"):
			mult, f = 1000000, strings.TrimSuffix(f, "M")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

func envStr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// logf writes one progress line with the wall-clock time.
func (c *Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
}
