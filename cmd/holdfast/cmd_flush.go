package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/cluster"
	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/flush"
)

func init() {
	register("flush", "deliver a destination's mail now (postqueue -s), or all deferred mail (--all)", runFlush)
}

const flushUsage = "usage: holdfast flush [-c FILE] [--cluster] [--wait] [--timeout DUR] DOMAIN|@DOMAIN | --all | --id ID"

// runFlush is `holdfast flush DOMAIN` (postqueue -s), `--all`
// (postqueue -f), `--id ID` (postqueue -i). "@DOMAIN" also covers the
// sub-domains (RFC 1985). --wait follows the flushed recipients and
// reports how many were delivered, deferred again or bounced.
func runFlush(args []string, stdout, stderr io.Writer) int {
	fs, cfg := commandFlags("holdfast flush", stderr)
	all := fs.Bool("all", false, "flush all deferred mail (postqueue -f)")
	id := fs.String("id", "", "flush one message (postqueue -i)")
	wait := fs.Bool("wait", false, "follow the flushed mail until each recipient has an outcome")
	timeout := fs.Duration("timeout", 10*time.Minute, "with --wait, give up after `DUR`")
	inCluster := fs.Bool("cluster", false, "with --wait and DOMAIN, follow the flush on every node of the cluster")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return exUsage
	}
	req, ok := flushRequest(pos, *all, *id, stderr)
	if !ok {
		return exUsage
	}
	if *inCluster {
		if !*wait || req.Site == "" {
			// A plain flush already reaches every node of a cluster.
			fmt.Fprintln(stderr, "holdfast: --cluster goes with --wait and a DOMAIN")
			return exUsage
		}
		return runClusterFlush(*cfg, req, *timeout, stdout, stderr)
	}
	req.Wait, req.WaitFor = *wait, *timeout
	cl, _, code := clientFor(*cfg, "holdfast", stderr)
	if cl == nil {
		return code
	}
	ctx, cancel := interruptible()
	defer cancel()
	tty := isTerminal(stderr)
	drawn := false
	st, err := cl.Flush(ctx, req, func(s control.FlushStatus) {
		if tty && req.Wait && !s.End {
			fmt.Fprintf(stderr, "\r\033[Kwaiting: %d of %d recipients left (delivered %d, deferred %d, bounced %d)",
				s.Pending, s.Tracked, s.Delivered, s.Deferred, s.Bounced)
			drawn = true
		}
	})
	if drawn {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "holdfast: interrupted; the flush itself was done")
			return exTempFail
		}
		return apiExit("holdfast", err, stderr)
	}
	return flushReport(req, st, stdout, stderr)
}

// flushRequest checks the command line: exactly one of DOMAIN, --all and
// --id; "@DOMAIN" is the domain with its sub-domains.
func flushRequest(pos []string, all bool, id string, stderr io.Writer) (control.FlushRequest, bool) {
	req := control.FlushRequest{All: all, ID: id}
	n := len(pos)
	if all {
		n++
	}
	if id != "" {
		n++
	}
	if n != 1 {
		fmt.Fprintln(stderr, flushUsage)
		return req, false
	}
	if len(pos) == 1 {
		req.Site = pos[0]
		if strings.HasPrefix(req.Site, "@") {
			req.Site, req.Subtree = req.Site[1:], true
		}
		if !flush.ValidSite(req.Site) {
			fmt.Fprintf(stderr, "holdfast: invalid destination: %q\n", cutSite(req.Site))
			return req, false
		}
	}
	return req, true
}

// flushReport prints the flush result and, after --wait, the outcomes.
func flushReport(req control.FlushRequest, st control.FlushStatus, stdout, stderr io.Writer) int {
	fmt.Fprintf(stdout, "%s: %d %s queued for delivery", flushTarget(req), st.Messages, plural(st.Messages))
	if st.Active > 0 {
		fmt.Fprintf(stdout, " (%d in delivery, retried when that attempt ends)", st.Active)
	}
	fmt.Fprintln(stdout)
	if !req.Wait {
		return 0
	}
	fmt.Fprintf(stdout, "delivered: %d, deferred again: %d, bounced: %d", st.Delivered, st.Deferred, st.Bounced)
	if st.Done > 0 {
		fmt.Fprintf(stdout, ", finished (outcome not reported): %d", st.Done)
	}
	fmt.Fprintln(stdout)
	if st.TimedOut {
		fmt.Fprintf(stderr, "holdfast: %d recipients still pending after %s\n", st.Pending, req.WaitFor)
		return exTempFail
	}
	return 0
}

func flushTarget(r control.FlushRequest) string {
	switch {
	case r.All:
		return "all"
	case r.ID != "":
		return r.ID
	case r.Subtree:
		return "@" + r.Site
	}
	return r.Site
}

// runClusterFlush is `holdfast flush DOMAIN --cluster --wait`: the daemon
// flushes here and publishes the request with a name; each node follows
// its share and reports it in etcd, and this polls the reports until
// every live node has finished or the timeout passes.
func runClusterFlush(cfg string, req control.FlushRequest, timeout time.Duration, stdout, stderr io.Writer) int {
	cl, _, code := clientFor(cfg, "holdfast", stderr)
	if cl == nil {
		return code
	}
	ctx, cancel := interruptible()
	defer cancel()
	id, err := cl.ClusterFlush(ctx, control.ClusterFlushRequest{Site: req.Site, Subtree: req.Subtree, WaitFor: timeout})
	if err != nil {
		return apiExit("holdfast", err, stderr)
	}
	// The nodes stop following at the timeout and then write their last
	// report: a little grace to read it.
	deadline := time.Now().Add(timeout + 2*time.Second)
	var ws cluster.WaitStatus
	var lastErr error
	for {
		var cur cluster.WaitStatus
		lastErr = cl.ClusterFlushResults(ctx, id, &cur)
		if errors.Is(lastErr, context.Canceled) || ctx.Err() != nil {
			fmt.Fprintln(stderr, "holdfast: interrupted; the flush itself was done")
			return exTempFail
		}
		if lastErr == nil {
			ws = cur
		}
		if lastErr == nil && clusterFlushDone(ws) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	if lastErr != nil && len(ws.Results) == 0 {
		return apiExit("holdfast", lastErr, stderr)
	}
	return clusterFlushReport(flushTarget(req), ws, timeout, stdout, stderr)
}

// clusterFlushDone: every live member has reported its end.
func clusterFlushDone(ws cluster.WaitStatus) bool {
	ended := map[string]bool{}
	for _, p := range ws.Results {
		ended[p.Node] = p.End
	}
	for _, m := range ws.Members {
		if !ended[m] {
			return false
		}
	}
	return len(ws.Members) > 0
}

// clusterFlushReport prints one line per node and the total; a node
// still following, or one that did not report, makes it EX_TEMPFAIL as
// plain --wait after its timeout.
func clusterFlushReport(target string, ws cluster.WaitStatus, timeout time.Duration, stdout, stderr io.Writer) int {
	var total cluster.Progress
	rc := 0
	if len(ws.Results) == 0 {
		rc = exTempFail
	}
	seen := map[string]bool{}
	for _, p := range ws.Results {
		seen[p.Node] = true
		fmt.Fprintf(stdout, "%s: %s: %d %s queued, delivered: %d, deferred again: %d, bounced: %d",
			p.Node, target, p.Messages, plural(p.Messages), p.Delivered, p.Deferred, p.Bounced)
		if p.Done > 0 {
			fmt.Fprintf(stdout, ", finished (outcome not reported): %d", p.Done)
		}
		switch {
		case p.Error != "":
			fmt.Fprintf(stdout, ", error: %s", p.Error)
			rc = exTempFail
		case !p.End || p.TimedOut:
			fmt.Fprintf(stdout, ", still pending: %d", p.Pending)
			rc = exTempFail
		}
		fmt.Fprintln(stdout)
		total.Messages += p.Messages
		total.Delivered += p.Delivered
		total.Deferred += p.Deferred
		total.Bounced += p.Bounced
		total.Done += p.Done
		total.Pending += p.Pending
	}
	for _, m := range ws.Members {
		if !seen[m] {
			fmt.Fprintf(stdout, "%s: %s: no report\n", m, target)
			rc = exTempFail
		}
	}
	fmt.Fprintf(stdout, "total (%d %s): %d %s queued, delivered: %d, deferred again: %d, bounced: %d",
		len(ws.Results), nodesWord(len(ws.Results)), total.Messages, plural(total.Messages),
		total.Delivered, total.Deferred, total.Bounced)
	if total.Done > 0 {
		fmt.Fprintf(stdout, ", finished (outcome not reported): %d", total.Done)
	}
	fmt.Fprintln(stdout)
	if rc != 0 {
		fmt.Fprintf(stderr, "holdfast: %d recipients still pending or nodes not finished after %s\n", total.Pending, timeout)
	}
	return rc
}

func nodesWord(n int) string {
	if n == 1 {
		return "node"
	}
	return "nodes"
}
