package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// chartMain is `bench chart`: it draws ETRN time to deliver against queue
// size, holdfast and Postfix, from a results file, with gnuplot (Debian's
// gnuplot-nox, installed when missing).
//
//	go run ./cmd/holdfast-bench chart -results docs/benchmarks.json -png docs/benchmarks-etrn.png
func chartMain(args []string) int {
	fs := flag.NewFlagSet("chart", flag.ContinueOnError)
	results := fs.String("results", "docs/benchmarks.json", "results `file` written by a bench run")
	png := fs.String("png", "docs/benchmarks-etrn.png", "output `file`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := chart(*results, *png); err != nil {
		fmt.Fprintln(os.Stderr, "bench chart:", err)
		return 1
	}
	return 0
}

func chart(resultsPath, png string) error {
	b, err := os.ReadFile(resultsPath)
	if err != nil {
		return err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", resultsPath, err)
	}
	data, tics, batch := chartData(&r)
	if data == "" {
		return fmt.Errorf("%s has no ETRN figures", resultsPath)
	}
	c := &Config{Log: os.Stderr}
	if err := ensureTools(c, "gnuplot"); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-chart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dat := filepath.Join(dir, "etrn.dat")
	if err := os.WriteFile(dat, []byte(data), 0o644); err != nil {
		return err
	}
	script := fmt.Sprintf(`set terminal pngcairo size 900,560 font "DejaVu Sans,11"
set output %q
set title "ETRN: time until all %d messages of one domain reached the sink\n{/*0.8 %s}"
set xlabel "messages in the queue (deferred, over the ETRN-only domains)"
set ylabel "milliseconds (median of the runs; bars: min–max)"
set logscale x
set xtics (%s)
set xrange [*:*]
set offsets graph 0.08, graph 0.08, 0, 0
set yrange [0:*]
set grid
set key top right box opaque
set datafile missing "-"
plot %q using 1:2:3:4 with yerrorlines lw 2 pt 7 lc rgb "#1f77b4" title "holdfast", \
     %q using 1:5:6:7 with yerrorlines lw 2 pt 5 lc rgb "#d62728" title "Postfix"
`, png, batch, strings.ReplaceAll(r.Machine, `"`, ""), tics, dat, dat)
	cmd := exec.Command("gnuplot")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %w: %s", err, out)
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", png)
	return nil
}

// chartData turns the etrn-deliver figures into gnuplot rows: size,
// holdfast median/min/max, Postfix median/min/max ("-" when missing).
func chartData(r *Results) (data, tics string, batch int) {
	var rows, ts []string
	for _, n := range r.allSizes("etrn-deliver/") {
		f := r.get(fmt.Sprintf("etrn-deliver/%d", n))
		row := []string{fmt.Sprint(n)}
		for _, sys := range []string{"holdfast", "postfix"} {
			m, lo, hi := stats(f.Runs[sys])
			for _, v := range []float64{m, lo, hi} {
				if math.IsNaN(v) {
					row = append(row, "-")
				} else {
					row = append(row, fmt.Sprintf("%.3f", v))
				}
			}
		}
		rows = append(rows, strings.Join(row, " "))
		ts = append(ts, fmt.Sprintf("%q %d", count(n), n))
		if batch == 0 {
			fmt.Sscanf(f.Label, "ETRN: all %d", &batch)
		}
	}
	if len(rows) == 0 {
		return "", "", 0
	}
	return strings.Join(rows, "\n") + "\n", strings.Join(ts, ", "), batch
}
