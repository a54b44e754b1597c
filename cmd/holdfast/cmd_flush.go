package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/flush"
)

func init() {
	register("flush", "deliver a destination's mail now (postqueue -s), or all deferred mail (--all)", runFlush)
}

const flushUsage = "usage: holdfast flush [-c FILE] [--wait] [--timeout DUR] DOMAIN|@DOMAIN | --all | --id ID"

// runFlush is `holdfast flush DOMAIN` (postqueue -s), `--all`
// (postqueue -f), `--id ID` (postqueue -i). "@DOMAIN" also covers the
// sub-domains (RFC 1985). --wait follows the flushed recipients and
// reports how many were delivered, deferred again or bounced.
func runFlush(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("holdfast flush", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("c", defaultConfigPath, "configuration `file`")
	all := fs.Bool("all", false, "flush all deferred mail (postqueue -f)")
	id := fs.String("id", "", "flush one message (postqueue -i)")
	wait := fs.Bool("wait", false, "follow the flushed mail until each recipient has an outcome")
	timeout := fs.Duration("timeout", 10*time.Minute, "with --wait, give up after `DUR`")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return exUsage
	}
	req, ok := flushRequest(pos, *all, *id, stderr)
	if !ok {
		return exUsage
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
