package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/holdfast-mta/holdfast/cluster"
	"github.com/holdfast-mta/holdfast/control"
)

func init() {
	register("cluster", "cluster status: this node's state and the live members (cluster_etcd_endpoints)", runCluster)
}

// runCluster is `holdfast cluster status`.
func runCluster(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "status" {
		fmt.Fprintln(stderr, "usage: holdfast cluster status [-c FILE] [--json]")
		return exUsage
	}
	fs, cfg := commandFlags("holdfast cluster status", stderr)
	asJSON := fs.Bool("json", false, "one JSON object")
	if _, err := parseMixed(fs, args[1:]); err != nil {
		return exUsage
	}
	cl, _, code := clientFor(*cfg, "holdfast", stderr)
	if cl == nil {
		return code
	}
	var st cluster.Status
	if err := cl.ClusterStatus(context.Background(), &st); err != nil {
		return apiExit("holdfast", err, stderr)
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(st)
		return 0
	}
	writeClusterStatus(stdout, st, time.Now())
	return 0
}

func writeClusterStatus(w io.Writer, st cluster.Status, now time.Time) {
	state := "connected"
	if !st.Connected {
		state = "etcd unreachable, serving as a single host"
	}
	fmt.Fprintf(w, "cluster %s, node %s: %s since %s\n", st.Cluster, st.Node, state, st.Since.Format(time.RFC3339))
	if st.Error != "" {
		fmt.Fprintf(w, "last error: %s\n", st.Error)
	}
	fmt.Fprintf(w, "flush requests: published %d, applied %d, skipped %d, dropped %d; applied revision %d\n",
		st.Published, st.Applied, st.Skipped, st.Dropped, st.AppliedRevision)
	if len(st.Members) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSMTP\tSTARTED\tLAST SEEN\tVERSION")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\n", m.Node, m.SMTP, m.Started.Format(time.RFC3339),
			now.Sub(m.LastSeen).Round(time.Second), m.Version)
	}
	tw.Flush()
}

// printClusterSummaries asks the daemon for every node's
// per-destination counts and prints them as JSON or with write.
func printClusterSummaries(cl *control.Client, asJSON bool, stdout, stderr io.Writer, write func(io.Writer, []cluster.Summary)) int {
	var sums []cluster.Summary
	if err := cl.ClusterSummary(context.Background(), &sums); err != nil {
		return apiExit("holdfast", err, stderr)
	}
	if asJSON {
		json.NewEncoder(stdout).Encode(sums)
		return 0
	}
	write(stdout, sums)
	return 0
}

// writeClusterStats prints each node's share: `holdfast queue stats --cluster`.
func writeClusterStats(w io.Writer, sums []cluster.Summary, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "NODE\tDESTINATIONS\tMESSAGES\tAS OF\t")
	var total int
	for _, s := range sums {
		n := 0
		for _, c := range s.Dests {
			n += c
		}
		total += n
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s ago\t\n", s.Node, len(s.Dests), n, now.Sub(s.Time).Round(time.Second))
	}
	fmt.Fprintf(tw, "TOTAL\t\t%d\t\t\n", total)
	tw.Flush()
}

// writeClusterShape prints the fast-flush destinations by node, largest
// first: `holdfast queue shape --cluster`.
func writeClusterShape(w io.Writer, sums []cluster.Summary) {
	totals := map[string]int{}
	for _, s := range sums {
		for d, c := range s.Dests {
			totals[d] += c
		}
	}
	dests := make([]string, 0, len(totals))
	for d := range totals {
		dests = append(dests, d)
	}
	sort.Slice(dests, func(i, j int) bool {
		if totals[dests[i]] != totals[dests[j]] {
			return totals[dests[i]] > totals[dests[j]]
		}
		return dests[i] < dests[j]
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "DESTINATION\tT\t")
	for _, s := range sums {
		fmt.Fprintf(tw, "%s\t", s.Node)
	}
	fmt.Fprintln(tw)
	for _, d := range dests {
		fmt.Fprintf(tw, "%s\t%d\t", d, totals[d])
		for _, s := range sums {
			fmt.Fprintf(tw, "%d\t", s.Dests[d])
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
