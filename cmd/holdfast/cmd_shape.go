package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/holdfast-mta/holdfast/control"
)

// queueShape is `holdfast queue shape`, Postfix's qshape(1): the queue's
// recipient (or, with -s, sender) domains by message age. The queues are
// named as arguments (default: incoming, active and deferred; qshape's
// default is incoming and active, but here the deferred queue is where a
// customer's mail waits for its ETRN).
func queueShape(args []string, stdout, stderr io.Writer) int {
	fs, cfg := commandFlags("holdfast queue shape", stderr)
	var o control.ShapeOptions
	fs.BoolVar(&o.Sender, "s", false, "sender domains instead of recipient domains")
	fs.BoolVar(&o.Parents, "p", false, "add rows for parent domains")
	fs.IntVar(&o.MinSubdomains, "m", 5, "with -p, the sub-domains a parent row needs")
	fs.IntVar(&o.Buckets, "b", 10, "number of age buckets")
	fs.IntVar(&o.Tick, "t", 5, "the first bucket's age limit in minutes")
	fs.BoolVar(&o.Linear, "l", false, "linear age buckets instead of doubling ones")
	width := fs.Int("w", 80, "output width")
	asJSON := fs.Bool("json", false, "one JSON object")
	inCluster := fs.Bool("cluster", false, "the fast-flush destinations by node (cluster_etcd_endpoints)")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return exUsage
	}
	o.States = pos
	cl, _, code := clientFor(*cfg, "holdfast", stderr)
	if cl == nil {
		return code
	}
	if *inCluster {
		return printClusterSummaries(cl, *asJSON, stdout, stderr, writeClusterShape)
	}
	sh, err := cl.Shape(context.Background(), o)
	if err != nil {
		return apiExit("holdfast", err, stderr)
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(sh)
		return 0
	}
	writeShape(stdout, sh, *width)
	return 0
}

// writeShape prints a Shape as qshape does: right-justified columns
// sized to the TOTAL row, the domain column taking what is left of width
// (at least 18), and a domain too long for it cut to its tail after "+".
func writeShape(w io.Writer, sh *control.Shape, width int) {
	if len(sh.Rows) == 0 {
		return
	}
	total := sh.Rows[0].Counts
	cols := make([]int, len(sh.Heads))
	dw := max(width, 80)
	for i, h := range sh.Heads {
		l := max(len(strconv.FormatInt(total[i], 10)), len(h))
		if l > 2 {
			l++
		} else {
			l = 3
		}
		cols[i] = l
		dw -= l
	}
	dw = max(dw, 18)
	row := func(domain string, cells []string) {
		if len(domain) > dw {
			if strings.HasPrefix(domain, ".") {
				domain = ".+" + domain[len(domain)-dw+2:]
			} else {
				domain = "+" + domain[len(domain)-dw+1:]
			}
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%*s", dw, domain)
		for i, c := range cells {
			fmt.Fprintf(&b, "%*s", cols[i], c)
		}
		fmt.Fprintln(w, b.String())
	}
	row("", sh.Heads)
	for _, r := range sh.Rows {
		cells := make([]string, len(r.Counts))
		for i, n := range r.Counts {
			cells[i] = strconv.FormatInt(n, 10)
		}
		row(r.Domain, cells)
	}
}
