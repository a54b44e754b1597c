package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// neededTools are the programs the configured run uses.
func neededTools(c *Config) []string {
	var need []string
	if c.Load == "smtp-source" {
		need = append(need, "smtp-source")
	}
	if c.Sink == "smtp-sink" {
		need = append(need, "smtp-sink")
	}
	if c.Postfix {
		need = append(need, "postfix")
	}
	return need
}

// Run runs the phases c asks for, prints the table and saves the
// results. Every process it starts is stopped before it returns, also on
// error and on cancellation.
func Run(ctx context.Context, c *Config) (*Results, error) {
	r := &Results{Started: time.Now(), Machine: machine(), Config: describe(c)}
	if c.Holdfast == "" && !c.Postfix {
		return nil, errors.New("nothing to measure: no holdfast binary and no -compare")
	}
	if err := ensureTools(c, neededTools(c)...); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(c.Work, "holdfast-bench-")
	if err != nil {
		return nil, err
	}
	// Postfix's daemons run as user postfix and must reach the queue.
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	if c.Keep {
		c.logf("work directory %s (kept)", work)
	} else {
		defer os.RemoveAll(work)
	}
	var cl cleanup
	defer cl.run(c)
	var failed error
	if !c.Skip["accept"] || !c.Skip["relay"] {
		failed = smtpPhase(ctx, c, r, work, &cl)
	}
	if failed == nil && !c.Skip["etrn"] && (len(c.Sizes) > 0 || (c.Postfix && len(c.PostfixSizes) > 0)) {
		failed = etrnPhase(ctx, c, r, work, &cl)
	}
	cl.run(c)
	if failed != nil {
		if len(r.Figures) > 0 {
			r.note("incomplete: %v", failed)
			r.Write(c.Table, c.Postfix)
		}
		return r, failed
	}
	r.Write(c.Table, c.Postfix)
	if c.Out != "" {
		path, err := r.save(c.Out)
		if err != nil {
			return r, err
		}
		c.logf("results saved to %s", path)
	}
	return r, nil
}

// cleanup stops what was started, in reverse order, once.
type cleanup []func() error

func (cl *cleanup) add(f func() error) { *cl = append(*cl, f) }

func (cl *cleanup) run(c *Config) {
	for i := len(*cl) - 1; i >= 0; i-- {
		if err := (*cl)[i](); err != nil {
			c.logf("cleanup: %v", err)
		}
	}
	*cl = nil
}

func describe(c *Config) string {
	load := "smtp-source -s SESSIONS -m N -l 1024 (one connection per message)"
	if c.Load == "go" {
		load = "built-in Go SMTP client (one connection per message, 1 KiB)"
	}
	return fmt.Sprintf("%d runs per figure, median (min–max). Load: %s; sink: %s. "+
		"Acceptance: %d messages per run to an ETRN-only domain. Relay: %d messages over %d sessions to a domain routed to the sink. "+
		"ETRN at scale: queue spread over %d ETRN-only domains; the flushed domain holds %d messages.",
		c.Runs, load, c.Sink, c.AcceptMsgs, c.RelayMsgs, c.RelaySessions, c.Domains, c.Batch)
}

// startSystems makes holdfast (unless Config.Holdfast is empty) and with
// -compare a Postfix instance, in sub-directories of work, each with its
// two sinks, and starts Postfix.
func startSystems(ctx context.Context, c *Config, work, tag string, cl *cleanup) (*holdfast, *postfix, error) {
	mk := func() (sink, sink, error) {
		a, err := newSink(c, work)
		if err != nil {
			return nil, nil, err
		}
		cl.add(a.Close)
		b, err := newSink(c, work)
		if err != nil {
			return nil, nil, err
		}
		cl.add(b.Close)
		return a, b, nil
	}
	var h *holdfast
	if c.Holdfast != "" {
		e, rl, err := mk()
		if err != nil {
			return nil, nil, err
		}
		if h, err = newHoldfast(c.Holdfast, filepath.Join(work, "holdfast-"+tag), e, rl); err != nil {
			return nil, nil, err
		}
		cl.add(h.Stop)
	}
	var p *postfix
	if c.Postfix {
		e, rl, err := mk()
		if err != nil {
			return nil, nil, err
		}
		if p, err = newPostfix(filepath.Join(work, "postfix-"+tag), e, rl); err != nil {
			return nil, nil, err
		}
		cl.add(p.Stop)
		if _, err := p.Start(ctx); err != nil {
			return nil, nil, err
		}
	}
	return h, p, nil
}

// order alternates which system goes first, run by run, so that drift
// of the machine hits both alike.
func order(run int, h *holdfast, p *postfix) []system {
	var out []system
	if h != nil {
		out = append(out, h)
	}
	if p != nil {
		out = append(out, p)
	}
	if run%2 == 1 && len(out) == 2 {
		out[0], out[1] = out[1], out[0]
	}
	return out
}

// smtpPhase: acceptance at each concurrency level, then relay.
func smtpPhase(ctx context.Context, c *Config, r *Results, work string, cl *cleanup) error {
	h, p, err := startSystems(ctx, c, work, "smtp", cl)
	if err != nil {
		return err
	}
	if h != nil {
		if _, err := h.Start(ctx); err != nil {
			return err
		}
	}
	if !c.Skip["accept"] {
		for _, s := range c.Sessions {
			for run := 0; run < c.Runs; run++ {
				for _, sys := range order(run, h, p) {
					if err := acceptRun(ctx, c, r, work, sys, s, h, p); err != nil {
						return err
					}
				}
			}
		}
	}
	if !c.Skip["relay"] {
		for run := 0; run < c.Runs; run++ {
			for _, sys := range order(run, h, p) {
				if err := relayRun(ctx, c, r, sys, h, p); err != nil {
					return err
				}
			}
		}
	}
	if h != nil {
		if err := h.Stop(); err != nil {
			return err
		}
	}
	if p != nil {
		return p.Stop()
	}
	return nil
}

func acceptRun(ctx context.Context, c *Config, r *Results, work string, sys system, sessions int, h *holdfast, p *postfix) error {
	if err := idle(ctx, h, p); err != nil {
		return err
	}
	fsync, err := fsyncRate(work, 300*time.Millisecond)
	if err != nil {
		return err
	}
	stop := profile(c, sys, fmt.Sprintf("accept-%d", sessions), sessions == last(c.Sessions))
	start := time.Now()
	err = load(ctx, c, sys.Addr(), "u@accept.etrn.test", sessions, c.AcceptMsgs)
	rate := float64(c.AcceptMsgs) / time.Since(start).Seconds()
	stop()
	if err != nil {
		return fmt.Errorf("%s acceptance, %d sessions: %w", sys.Name(), sessions, err)
	}
	r.add(fmt.Sprintf("accept/%d", sessions), "acceptance, "+plural(sessions, "session"), "msg/s", false, sys.Name(), rate)
	r.add("fsync", "disk fdatasync rate, measured before each acceptance run", "fsync/s", false, sys.Name(), fsync)
	r.add(fmt.Sprintf("perfsync/%d", sessions), "accepted msg/s ÷ disk fsync/s, "+plural(sessions, "session"), "msg/fsync", false, sys.Name(), rate/fsync)
	c.logf("%-8s acceptance %2d sessions: %6.0f msg/s (disk %5.0f fsync/s)", sys.Name(), sessions, rate, fsync)
	return nil
}

func relayRun(ctx context.Context, c *Config, r *Results, sys system, h *holdfast, p *postfix) error {
	if err := idle(ctx, h, p); err != nil {
		return err
	}
	base := sys.RelaySink().Count()
	stop := profile(c, sys, "relay", true)
	start := time.Now()
	if err := load(ctx, c, sys.Addr(), "u@relay.test", c.RelaySessions, c.RelayMsgs); err != nil {
		stop()
		return fmt.Errorf("%s relay: %w", sys.Name(), err)
	}
	done, err := waitCount(ctx, sys.RelaySink(), base+int64(c.RelayMsgs), 10*time.Minute)
	stop()
	if err != nil {
		return fmt.Errorf("%s relay: %w", sys.Name(), err)
	}
	rate := float64(c.RelayMsgs) / done.Sub(start).Seconds()
	r.add("relay", fmt.Sprintf("relay end to end, %d sessions", c.RelaySessions), "msg/s", false, sys.Name(), rate)
	c.logf("%-8s relay: %6.0f msg/s", sys.Name(), rate)
	return nil
}

// etrnRuns times c.Runs ETRN runs at one queue size of each system that
// takes part (hOn, pOn), alternating which goes first; a system's run
// starts at least c.ETRNGap after the end of its run before (ended:
// when each system last finished an ETRN run, kept across sizes).
func etrnRuns(ctx context.Context, c *Config, r *Results, h *holdfast, p *postfix, size int, hOn, pOn bool, ended map[string]time.Time) error {
	for run := 0; run < c.Runs; run++ {
		for _, sys := range order(run, h, p) {
			if (sys.Name() == "holdfast" && !hOn) || (sys.Name() == "postfix" && !pOn) {
				continue
			}
			if err := sleepUntil(ctx, ended[sys.Name()].Add(c.ETRNGap)); err != nil {
				return err
			}
			if err := etrnRun(ctx, c, r, sys, size, hotDomain(size, run), h, p); err != nil {
				return err
			}
			ended[sys.Name()] = time.Now()
		}
	}
	return nil
}

// sleepUntil waits until t (at once when t has passed) or ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// holdfastMemory records holdfast's memory after the ETRN runs at one
// queue size and stops it.
func holdfastMemory(r *Results, h *holdfast, size int) error {
	m, err := h.Memory()
	if err != nil {
		return err
	}
	r.add("rss/"+fmt.Sprint(size), fmt.Sprintf("RSS after the ETRN runs, %s queued", count(size)), "MiB", true, "holdfast", float64(m.RSS)/(1<<20))
	r.add("rssanon/"+fmt.Sprint(size), fmt.Sprintf("  of which anonymous (heap, stacks), %s queued", count(size)), "MiB", true, "holdfast", float64(m.Anon)/(1<<20))
	return h.Stop()
}

// etrnPhase fills the queues size by size (each size adds to the last)
// and times ETRN of one domain holding Batch messages.
func etrnPhase(ctx context.Context, c *Config, r *Results, work string, cl *cleanup) error {
	h, p, err := startSystems(ctx, c, work, "etrn", cl)
	if err != nil {
		return err
	}
	sizes := union(c.Sizes, c.PostfixSizes, c.Postfix)
	ended := map[string]time.Time{}
	var postfixQueued int
	for _, size := range sizes {
		hOn, pOn := h != nil && slices.Contains(c.Sizes, size), p != nil && slices.Contains(c.PostfixSizes, size)
		if hOn {
			if err := holdfastAtSize(ctx, c, r, h, size); err != nil {
				return err
			}
		}
		if pOn {
			fill := postfixFill
			if c.PostfixFill == "clone" {
				fill = postfixCloneFill
			}
			n, err := fill(ctx, c, r, p, size, postfixQueued)
			if err != nil {
				return err
			}
			postfixQueued = n
		}
		if err := etrnRuns(ctx, c, r, h, p, size, hOn, pOn, ended); err != nil {
			return err
		}
		if pOn {
			postfixQueued -= c.Runs * c.Batch
			if c.PostfixFill == "clone" {
				p.cloneProblems(c, r)
			}
		}
		if hOn {
			if err := holdfastMemory(r, h, size); err != nil {
				return err
			}
		}
	}
	if p != nil {
		return p.Stop()
	}
	return nil
}

// holdfastAtSize fills holdfast's queue to size (daemon stopped), then
// times StartupRuns start-ups and leaves the daemon running.
func holdfastAtSize(ctx context.Context, c *Config, r *Results, h *holdfast, size int) error {
	hot := hotDomains(c, size)
	start := time.Now()
	cached := cacheFile(c, size)
	total := size
	if cached != "" && copyFile(cached, h.DB()) == nil {
		// Opening it once with the daemon's policy applies any
		// migration and rebuilds a stale flush index now, not in the
		// timed start-up.
		n, added, err := fillStore(ctx, h.cfg, h.DB(), 0, nil)
		if err != nil || added != 0 {
			return fmt.Errorf("cached queue %s: %v", cached, err)
		}
		total = n
		c.logf("holdfast queue of %d taken from %s (%s)", total, cached, time.Since(start).Round(time.Millisecond))
	} else {
		var added int
		var err error
		total, added, err = fillStore(ctx, h.cfg, h.DB(), size, func(n int) []string {
			return fillPlan(n, hot, c.Batch, c.Domains, &h.next)
		})
		if err != nil {
			return fmt.Errorf("fill holdfast to %d: %w", size, err)
		}
		el := time.Since(start)
		c.logf("holdfast queue filled to %d (+%d in %s, %.0f msg/s through the store API)", total, added, el.Round(time.Millisecond), float64(added)/el.Seconds())
		if cached != "" {
			if err := os.MkdirAll(c.Cache, 0o755); err != nil {
				return err
			}
			if err := copyFile(h.DB(), cached); err != nil {
				return err
			}
		}
	}
	syncSetUp(c)
	disk, err := diskBytes(h.QueueDir())
	if err != nil {
		return err
	}
	r.add("disk/"+fmt.Sprint(size), fmt.Sprintf("disk per queued message, %s queued", count(size)), "KiB", true, "holdfast", float64(disk)/float64(total)/1024)
	for i := 0; i < c.StartupRuns; i++ {
		d, err := h.Start(ctx)
		if err != nil {
			return err
		}
		r.add("startup/"+fmt.Sprint(size), fmt.Sprintf("start-up until the port answers, %s queued", count(size)), "ms", true, "holdfast", float64(d.Microseconds())/1000)
		if i < c.StartupRuns-1 {
			if err := h.Stop(); err != nil {
				return err
			}
		}
	}
	f := r.get("startup/" + fmt.Sprint(size))
	c.logf("holdfast start-up with %d queued: median %.1f ms", total, median(f.Runs["holdfast"]))
	return nil
}

// syncSetUp writes what the set-up left dirty to disk: the copy or the
// fill (NoSync) of the queue file, whose writeback during the runs (2.4
// GB at a million queued) slowed the daemon's fdatasyncs and start-up.
// It is the harness's, not the daemon's: on disk before anything is
// timed, as Postfix's cloned queue (postfixCloneFill).
func syncSetUp(c *Config) {
	start := time.Now()
	unix.Sync()
	c.logf("holdfast: sync (%s)", time.Since(start).Round(time.Millisecond))
}

// cacheFile names the cached queue file for size: it depends on every
// size up to this one (the queue grows size by size), the domains, the
// batch and the runs. "" without a cache.
func cacheFile(c *Config, size int) string {
	if c.Cache == "" {
		return ""
	}
	var upTo []string
	for _, n := range c.Sizes {
		if n <= size {
			upTo = append(upTo, count(n))
		}
	}
	return filepath.Join(c.Cache, fmt.Sprintf("holdfast-queue-%s-d%d-b%d-r%d.db", strings.Join(upTo, "_"), c.Domains, c.Batch, c.Runs))
}

// copyFile copies src over dst through a temporary file.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(dst), ".copy-")
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(out.Name())
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(out.Name())
		return err
	}
	return os.Rename(out.Name(), dst)
}

// postfixFill brings Postfix's deferred queue from have to size messages
// the realistic way: over SMTP at full speed (50 sessions, 100 messages
// per connection), then waits until the queue manager has deferred them
// all.
func postfixFill(ctx context.Context, c *Config, r *Results, p *postfix, size, have int) (int, error) {
	_, plan := postfixPlan(c, size, have)
	start := time.Now()
	if err := goLoad(ctx, p.Addr(), 50, len(plan), func(i int) string { return "u@" + plan[i] }, 100); err != nil {
		return 0, fmt.Errorf("fill postfix: %w", err)
	}
	n, err := p.settle(ctx, size, time.Hour)
	if err != nil {
		return 0, err
	}
	el := time.Since(start)
	c.logf("postfix queue filled to %d deferred (+%d in %s, %.0f msg/s over SMTP)", n, len(plan), el.Round(time.Millisecond), float64(len(plan))/el.Seconds())
	disk, err := diskBytes(p.QueueDir())
	if err != nil {
		return 0, err
	}
	r.add("disk/"+fmt.Sprint(size), fmt.Sprintf("disk per queued message, %s queued", count(size)), "KiB", true, "postfix", float64(disk)/float64(n)/1024)
	return n, nil
}

func etrnRun(ctx context.Context, c *Config, r *Results, sys system, size int, domain string, h *holdfast, p *postfix) error {
	if err := idle(ctx, h, p); err != nil {
		return err
	}
	base := sys.ETRNSink().Count()
	stop := profile(c, sys, fmt.Sprintf("etrn-%d", size), size == last(c.Sizes))
	reply, start, lat, err := etrn(sys.Addr(), domain)
	if err != nil {
		stop()
		return fmt.Errorf("%s: %w", sys.Name(), err)
	}
	done, err := waitCount(ctx, sys.ETRNSink(), base+int64(c.Batch), 5*time.Minute)
	stop()
	if err != nil {
		return fmt.Errorf("%s ETRN %s (%q): %w", sys.Name(), domain, reply, err)
	}
	deliver := done.Sub(start)
	key := fmt.Sprint(size)
	r.add("etrn-reply/"+key, fmt.Sprintf("ETRN reply latency, %s queued", count(size)), "ms", true, sys.Name(), float64(lat.Microseconds())/1000)
	r.add("etrn-deliver/"+key, fmt.Sprintf("ETRN: all %d of the domain at the sink, %s queued", c.Batch, count(size)), "ms", true, sys.Name(), float64(deliver.Microseconds())/1000)
	c.logf("%-8s ETRN %s with %d queued: reply %.2f ms, %d delivered in %.1f ms", sys.Name(), domain, size, float64(lat.Microseconds())/1000, c.Batch, float64(deliver.Microseconds())/1000)
	return nil
}

// last is the last element of l, 0 when l is empty.
func last(l []int) int {
	if len(l) == 0 {
		return 0
	}
	return l[len(l)-1]
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func union(a, b []int, both bool) []int {
	out := append([]int(nil), a...)
	if both {
		for _, v := range b {
			if !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	sort.Ints(out)
	return out
}

// profile starts perf record on the holdfast daemon when Config.Perf is
// set, want holds and no profile of that name exists yet; the returned
// function stops it.
func profile(c *Config, sys system, name string, want bool) func() {
	h, ok := sys.(*holdfast)
	if c.Perf == "" || !want || !ok || h.cmd == nil {
		return func() {}
	}
	out := filepath.Join(c.Perf, name+".perf.data")
	if _, err := os.Stat(out); err == nil {
		return func() {}
	}
	if err := os.MkdirAll(c.Perf, 0o755); err != nil {
		c.logf("perf: %v", err)
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", out, "-p", strconv.Itoa(h.cmd.Process.Pid))
	if err := cmd.Start(); err != nil {
		c.logf("perf: %v", err)
		return func() {}
	}
	time.Sleep(300 * time.Millisecond) // perf attaches
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		c.logf("perf profile %s (perf report -i %s --no-children)", out, out)
	}
}

// idle waits until every running system (h, p: nil when not in the
// run) has finished the work a previous run left it, so that a run
// measures one system on a quiet machine: the two run side by side, and
// Postfix is still busy for about 200 ms after its run ends (its queue
// manager deferring the last messages), half of a holdfast acceptance
// run of 1,500 messages at 10 sessions. Postfix: no file in maildrop, incoming or active and
// its queue manager's CPU time still for 200 ms; holdfast: its CPU time
// still for 200 ms. A system that is not running (holdfast between its
// queue sizes) has nothing left to finish.
func idle(ctx context.Context, h *holdfast, p *postfix) error {
	if p != nil && p.running {
		if _, err := p.settle(ctx, 0, 10*time.Minute); err != nil {
			return err
		}
		// And the queue manager done with its last queue scan (a
		// deferred-queue scan stats every queued file).
		pid, err := p.qmgrPid()
		if err != nil {
			return err
		}
		if err := cpuQuiet(ctx, pid, 200*time.Millisecond, 10*time.Minute); err != nil {
			return err
		}
	}
	if h != nil && h.cmd != nil {
		return cpuQuiet(ctx, h.cmd.Process.Pid, 200*time.Millisecond, 10*time.Minute)
	}
	return nil
}

func cpuQuiet(ctx context.Context, pid int, window, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	prev, err := cpuTicks(pid)
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(window):
		}
		cur, err := cpuTicks(pid)
		if err != nil {
			return err
		}
		if cur-prev <= 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still busy after %s", pid, limit)
		}
		prev = cur
	}
}

// cpuTicks is utime+stime of a process from /proc/PID/stat.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st, nil
}

// fsyncRate measures the disk under dir the way bbolt commits: write a
// page, fdatasync, repeat, for at least d and 20 rounds.
func fsyncRate(dir string, d time.Duration) (float64, error) {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	start := time.Now()
	n := 0
	for ; n < 20 || time.Since(start) < d; n++ {
		buf[0] = byte(n)
		if _, err := f.WriteAt(buf, int64(n%16)*4096); err != nil {
			return 0, err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
