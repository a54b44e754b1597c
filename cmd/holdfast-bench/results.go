package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// figure is one line of the table: samples per system.
type figure struct {
	Key   string               `json:"key"`
	Label string               `json:"label"`
	Unit  string               `json:"unit"`
	Lower bool                 `json:"lower_is_better"`
	Runs  map[string][]float64 `json:"runs"`
}

// Results is everything one harness run measured.
type Results struct {
	Started time.Time `json:"started"`
	Machine string    `json:"machine"`
	Config  string    `json:"config"`
	Figures []*figure `json:"figures"`
	Notes   []string  `json:"notes"`
}

func (r *Results) fig(key, label, unit string, lower bool) *figure {
	for _, f := range r.Figures {
		if f.Key == key {
			return f
		}
	}
	f := &figure{Key: key, Label: label, Unit: unit, Lower: lower, Runs: map[string][]float64{}}
	r.Figures = append(r.Figures, f)
	return f
}

func (r *Results) add(key, label, unit string, lower bool, system string, v float64) {
	f := r.fig(key, label, unit, lower)
	f.Runs[system] = append(f.Runs[system], v)
}

func (r *Results) get(key string) *figure {
	for _, f := range r.Figures {
		if f.Key == key {
			return f
		}
	}
	return nil
}

func (r *Results) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// median, min and max of samples; NaN when there are none.
func stats(v []float64) (med, lo, hi float64) {
	if len(v) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

func median(v []float64) float64 { m, _, _ := stats(v); return m }

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func cell(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	m, lo, hi := stats(v)
	if len(v) == 1 {
		return num(m)
	}
	return fmt.Sprintf("%s (%s–%s)", num(m), num(lo), num(hi))
}

// target is a goal from the benchmark issue, checked on the table.
type target struct {
	text  string
	check func(r *Results) (string, bool, bool) // value, ok, known
}

// ratio is holdfast's median over Postfix's.
func (r *Results) ratio(key string) float64 {
	f := r.get(key)
	if f == nil {
		return math.NaN()
	}
	return median(f.Runs["holdfast"]) / median(f.Runs["postfix"])
}

// Write prints the table (Markdown, so docs/benchmarks.md can take it
// as it is).
func (r *Results) Write(w io.Writer, compare bool) {
	fmt.Fprintf(w, "\n%s — %s\n%s\n\n", r.Machine, r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Config)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	if compare {
		fmt.Fprintln(tw, "| figure\t unit\t holdfast median (min–max)\t Postfix median (min–max)\t holdfast/Postfix\t")
		fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t")
	} else {
		fmt.Fprintln(tw, "| figure\t unit\t holdfast median (min–max)\t")
		fmt.Fprintln(tw, "|---\t---\t---\t")
	}
	for _, f := range r.Figures {
		if compare {
			ratio := "–"
			if q := r.ratio(f.Key); f.Key != "fsync" && !math.IsNaN(q) && !math.IsInf(q, 0) {
				ratio = fmt.Sprintf("%.2f", q)
			}
			fmt.Fprintf(tw, "| %s\t %s\t %s\t %s\t %s\t\n", f.Label, f.Unit, cell(f.Runs["holdfast"]), cell(f.Runs["postfix"]), ratio)
		} else {
			fmt.Fprintf(tw, "| %s\t %s\t %s\t\n", f.Label, f.Unit, cell(f.Runs["holdfast"]))
		}
	}
	tw.Flush()
	var lines []string
	for _, t := range targets(r) {
		v, ok, known := t.check(r)
		if !known {
			continue
		}
		mark := "met"
		if !ok {
			mark = "MISSED"
		}
		lines = append(lines, fmt.Sprintf("- %s: %s — %s", t.text, v, mark))
	}
	if len(lines) > 0 {
		fmt.Fprintf(w, "\nTargets:\n%s\n", strings.Join(lines, "\n"))
	}
	if len(r.Notes) > 0 {
		fmt.Fprintf(w, "\nNotes:\n- %s\n", strings.Join(r.Notes, "\n- "))
	}
}

// targets are the goals of the performance issue (issue 16): each ratio
// is holdfast's median over Postfix's, measured in the same run.
func targets(r *Results) []target {
	ts := []target{
		ratioTarget("acceptance at 1 session ≥ 1.5× Postfix", "accept/1", 1.5),
		ratioTarget("acceptance at 10 sessions ≥ 4× Postfix", "accept/10", 4),
		ratioTarget("acceptance at 50 sessions ≥ 4× Postfix", "accept/50", 4),
		ratioTarget("relay end to end ≥ 4× Postfix", "relay", 4),
	}
	sizes := r.sizes("etrn-deliver/")
	for _, n := range sizes {
		reply, deliver := "etrn-reply/"+fmt.Sprint(n), "etrn-deliver/"+fmt.Sprint(n)
		ts = append(ts, target{text: fmt.Sprintf("ETRN reply at %s queued ≤ ⅓ of Postfix's", count(n)), check: func(r *Results) (string, bool, bool) {
			q := r.ratio(reply)
			return fmt.Sprintf("%.2f× Postfix's", q), q <= 1.0/3, !math.IsNaN(q)
		}})
		ts = append(ts, limitTarget(fmt.Sprintf("ETRN reply at %s queued ≤ 0.5 ms", count(n)), reply, 0.5, "%.2f ms"))
		ts = append(ts, limitTarget(fmt.Sprintf("ETRN → 100 delivered at %s queued ≤ 10 ms", count(n)), deliver, 10, "%.1f ms"))
	}
	if len(sizes) >= 2 {
		lo, hi := sizes[0], sizes[len(sizes)-1]
		ts = append(ts, target{text: fmt.Sprintf("ETRN → 100 delivered flat: %s/%s ≤ 1.5", count(hi), count(lo)), check: func(r *Results) (string, bool, bool) {
			f, g := r.get("etrn-deliver/"+fmt.Sprint(hi)), r.get("etrn-deliver/"+fmt.Sprint(lo))
			q := median(f.Runs["holdfast"]) / median(g.Runs["holdfast"])
			return fmt.Sprintf("%.2f", q), q <= 1.5, !math.IsNaN(q)
		}})
	}
	if len(sizes) > 0 {
		big := sizes[len(sizes)-1]
		ts = append(ts, limitTarget(fmt.Sprintf("RSS at %s queued ≤ 64 MiB", count(big)), "rss/"+fmt.Sprint(big), 64, "%.0f MiB"))
		ts = append(ts, limitTarget(fmt.Sprintf("start-up at %s queued ≤ 1 s", count(big)), "startup/"+fmt.Sprint(big), 1000, "%.0f ms"))
	}
	return ts
}

// ratioTarget is met when holdfast's median over Postfix's for key is at
// least min.
func ratioTarget(text, key string, min float64) target {
	return target{text: text, check: func(r *Results) (string, bool, bool) {
		q := r.ratio(key)
		return fmt.Sprintf("%.2f×", q), q >= min, !math.IsNaN(q)
	}}
}

// limitTarget is met when holdfast's median for key is at most max.
func limitTarget(text, key string, max float64, format string) target {
	return target{text: text, check: func(r *Results) (string, bool, bool) {
		f := r.get(key)
		if f == nil {
			return "", false, false
		}
		v := median(f.Runs["holdfast"])
		return fmt.Sprintf(format, v), v <= max, !math.IsNaN(v)
	}}
}

// sizes lists the queue sizes that have a figure under prefix with
// holdfast samples, ascending.
func (r *Results) sizes(prefix string) []int { return r.sizesOf(prefix, "holdfast") }

// allSizes lists the queue sizes under prefix with samples of any system.
func (r *Results) allSizes(prefix string) []int { return r.sizesOf(prefix, "") }

func (r *Results) sizesOf(prefix, system string) []int {
	var out []int
	for _, f := range r.Figures {
		if n, ok := strings.CutPrefix(f.Key, prefix); ok && (system == "" || len(f.Runs[system]) > 0) {
			var v int
			fmt.Sscan(n, &v)
			out = append(out, v)
		}
	}
	sort.Ints(out)
	return out
}

// count writes a queue size the way the issue does: 10k, 100k, 1M.
func count(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// machine describes where the run happened.
func machine() string {
	var u unix.Utsname
	unix.Uname(&u)
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	var mem string
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(string(b))
		if len(f) > 1 {
			var kb int64
			fmt.Sscan(f[1], &kb)
			mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%d CPUs (%s)%s, Linux %s, %s", runtime.NumCPU(), model, mem,
		unix.ByteSliceToString(u.Release[:]), runtime.Version())
}

// save writes the results as JSON and the chart's data file into dir.
func (r *Results) save(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "results-"+r.Started.UTC().Format("20060102-150405")+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", err
	}
	return path, nil
}
