package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast-mta/holdfast/cluster"
	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/control"
)

func init() {
	register("queue", "list, show, delete, hold, release or requeue queued mail (mailq, postsuper)", runQueue)
}

// queueUsage is printed for `holdfast queue` without a valid verb.
const queueUsage = `usage: holdfast queue list [-c FILE] [--json] [--state S] [--domain D] [--sender S] [--recipient R] [--older-than AGE]
       holdfast queue show [-c FILE] ID
       holdfast queue stats [-c FILE] [--json]
       holdfast queue shape [-c FILE] [-s] [-p] [-m N] [-b N] [-t MIN] [-l] [-w WIDTH] [--json] [QUEUE...]
       holdfast queue delete|hold|release|requeue [-c FILE] ID...|ALL [--state S] [--domain D] [--sender S] [--recipient R] [--older-than AGE]`

func runQueue(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, queueUsage)
		return exUsage
	}
	switch verb := args[0]; verb {
	case "list":
		return queueList(args[1:], stdout, stderr)
	case "show":
		return queueShow(args[1:], stdout, stderr)
	case "stats":
		return queueStats(args[1:], stdout, stderr)
	case "shape":
		return queueShape(args[1:], stdout, stderr)
	case "delete", "hold", "release", "requeue":
		return queueOp(verb, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, queueUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "holdfast queue: unknown operation %q\n%s\n", verb, queueUsage)
		return exUsage
	}
}

// commandFlags is a command's flag set, with its errors and usage going
// to stderr, and the -c FILE (the configuration file) every command
// takes.
func commandFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, fs.String("c", defaultConfigPath, "configuration `file`")
}

// parseNoArgs is parseMixed for a command that takes flags only: a
// positional argument is an error, said on stderr. It reports whether
// the command may go on.
func parseNoArgs(fs *flag.FlagSet, args []string, stderr io.Writer) bool {
	pos, err := parseMixed(fs, args)
	if err != nil {
		return false
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), pos[0])
		return false
	}
	return true
}

// parseMixed parses flags that may come before, between or after the
// positional arguments, which it returns.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// multi is a repeatable flag; commas also separate values.
type multi []string

func (m *multi) String() string { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*m = append(*m, s)
		}
	}
	return nil
}

// filterFlags adds the selection flags shared by list and the bulk
// operations.
func filterFlags(fs *flag.FlagSet, f *control.Filter, withAge bool) *multi {
	states := &multi{}
	fs.Var(states, "state", "only messages in queue `S` (incoming, active, deferred, hold); repeatable")
	fs.StringVar(&f.Domain, "domain", "", "only messages with a recipient at `DOMAIN`")
	fs.StringVar(&f.Sender, "sender", "", "only messages from `ADDRESS`")
	fs.StringVar(&f.Recipient, "recipient", "", "only messages to `ADDRESS`")
	if withAge {
		fs.StringVar(&f.OlderThan, "older-than", "", "only messages that arrived more than `AGE` ago (90m, 12h, 3d)")
	}
	return states
}

// clientFor loads the configuration and returns a client for its control
// socket; code is non-zero (after a message) when that fails.
func clientFor(cfgPath, prog string, stderr io.Writer) (*control.Client, *config.Config, int) {
	c, code := loadConfig(cfgPath, stderr)
	if c == nil {
		return nil, nil, code
	}
	sock := c.String("control_socket")
	if sock == "" {
		fmt.Fprintf(stderr, "%s: control_socket is not set in %s\n", prog, cfgPath)
		return nil, nil, exConfig
	}
	return control.NewClient(sock), c, 0
}

// apiExit prints a failed request's message and returns the holdfast
// subcommand exit status for it.
func apiExit(prog string, err error, stderr io.Writer) int {
	fmt.Fprintf(stderr, "%s: %v\n", prog, err)
	var de *control.DownError
	var ae *control.Error
	switch {
	case errors.As(err, &de):
		return exUnavailable
	case errors.As(err, &ae):
		switch ae.Code {
		case control.CodeForbidden:
			return exNoPerm
		case control.CodeNotFound:
			return exNoInput
		case control.CodeBadRequest, control.CodeInvalidSite:
			return exUsage
		case control.CodeNotEligible:
			return exUnavailable
		case control.CodeTooBig:
			return exDataErr
		case control.CodeNoSpace:
			return exTempFail
		}
		return exSoftware
	case errors.Is(err, context.Canceled):
		return exTempFail
	}
	return exIOErr
}

// interruptible returns a context cancelled by SIGINT/SIGTERM, so that an
// interrupted bulk operation stops between chunks.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func queueList(args []string, stdout, stderr io.Writer) int {
	fs, cfg := commandFlags("holdfast queue list", stderr)
	asJSON := fs.Bool("json", false, "one JSON object per message (postqueue -j)")
	var f control.Filter
	states := filterFlags(fs, &f, true)
	if !parseNoArgs(fs, args, stderr) {
		return exUsage
	}
	f.States = *states
	cl, _, code := clientFor(*cfg, "holdfast", stderr)
	if cl == nil {
		return code
	}
	ctx, cancel := interruptible()
	defer cancel()
	if err := listQueue(ctx, cl, f, *asJSON, stdout); err != nil {
		return apiExit("holdfast", err, stderr)
	}
	return 0
}

// listQueue streams the listing in mailq layout or as postqueue -j lines.
func listQueue(ctx context.Context, cl *control.Client, f control.Filter, asJSON bool, stdout io.Writer) error {
	w := bufio.NewWriterSize(stdout, 64<<10)
	var q *mailq
	if !asJSON {
		q = &mailq{w: w}
	}
	_, err := cl.List(ctx, f, "", 0, func(m *control.Message) error {
		if asJSON {
			writeJSONLine(w, m)
		} else {
			q.message(m)
		}
		return nil
	})
	if err != nil {
		w.Flush()
		return err
	}
	if q != nil {
		q.trailer()
	}
	return w.Flush()
}

func queueShow(args []string, stdout, stderr io.Writer) int {
	fs, cfg := commandFlags("holdfast queue show", stderr)
	pos, err := parseMixed(fs, args)
	if err != nil {
		return exUsage
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: holdfast queue show [-c FILE] ID")
		return exUsage
	}
	cl, _, code := clientFor(*cfg, "holdfast", stderr)
	if cl == nil {
		return code
	}
	s, err := cl.Show(context.Background(), pos[0])
	if err != nil {
		return apiExit("holdfast", err, stderr)
	}
	w := bufio.NewWriter(stdout)
	writeShow(w, s)
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "holdfast: %v\n", err)
		return exIOErr
	}
	return 0
}

// queueStats prints the message count per queue and the content bytes
// (O(1) in the daemon: counters kept by the store).
func queueStats(args []string, stdout, stderr io.Writer) int {
	fs, cfg := commandFlags("holdfast queue stats", stderr)
	asJSON := fs.Bool("json", false, "one JSON object")
	inCluster := fs.Bool("cluster", false, "every node's share of the fast-flush destinations (cluster_etcd_endpoints)")
	if !parseNoArgs(fs, args, stderr) {
		return exUsage
	}
	cl, _, code := clientFor(*cfg, "holdfast", stderr)
	if cl == nil {
		return code
	}
	if *inCluster {
		return printClusterSummaries(cl, *asJSON, stdout, stderr, func(w io.Writer, sums []cluster.Summary) {
			writeClusterStats(w, sums, time.Now())
		})
	}
	st, err := cl.Stats(context.Background())
	if err != nil {
		return apiExit("holdfast", err, stderr)
	}
	if *asJSON {
		json.NewEncoder(stdout).Encode(st)
		return 0
	}
	fmt.Fprintf(stdout, "incoming %d\nactive %d\ndeferred %d\nhold %d\ncorrupt %d\nbytes %d\n",
		st.Incoming, st.Active, st.Deferred, st.Hold, st.Corrupt, st.Bytes)
	return 0
}

// writeShow prints a message like postcat -q: the envelope, then the
// content, then the per-recipient state.
func writeShow(w io.Writer, s *control.Show) {
	m := s.Message
	fmt.Fprintln(w, "*** ENVELOPE RECORDS ***")
	fmt.Fprintf(w, "queue_id: %s\n", m.ID)
	fmt.Fprintf(w, "queue_name: %s\n", m.Queue)
	fmt.Fprintf(w, "message_size: %d\n", m.Size)
	fmt.Fprintf(w, "message_arrival_time: %s\n", m.Arrival.Local().Format(time.ANSIC))
	if m.ClientAddr != "" || m.ClientName != "" {
		fmt.Fprintf(w, "named_attribute: client_name=%s\n", m.ClientName)
		fmt.Fprintf(w, "named_attribute: client_address=%s\n", m.ClientAddr)
	}
	if m.Helo != "" {
		fmt.Fprintf(w, "named_attribute: helo_name=%s\n", m.Helo)
	}
	if m.Protocol != "" {
		fmt.Fprintf(w, "named_attribute: protocol_name=%s\n", m.Protocol)
	}
	if m.EnvID != "" {
		fmt.Fprintf(w, "named_attribute: envelope_id=%s\n", m.EnvID)
	}
	fmt.Fprintf(w, "sender: %s\n", m.Sender)
	for _, r := range m.Recipients {
		if r.Orig != "" {
			fmt.Fprintf(w, "original_recipient: %s\n", r.Orig)
		}
		fmt.Fprintf(w, "recipient: %s\n", r.Address)
	}
	fmt.Fprintln(w, "*** MESSAGE CONTENTS ***")
	body := strings.ReplaceAll(string(s.Body), "\r\n", "\n")
	io.WriteString(w, body)
	if !strings.HasSuffix(body, "\n") {
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "*** HEADER EXTRACTED ***")
	fmt.Fprintln(w, "*** RECIPIENT STATE ***")
	for _, r := range m.Recipients {
		line := fmt.Sprintf("%s: %s attempts=%d", r.Address, r.State, r.Attempts)
		if !r.NextAttempt.IsZero() && r.State == "pending" {
			line += " next=" + r.NextAttempt.Local().Format(time.RFC3339)
		}
		if r.DSN != "" {
			line += " dsn=" + r.DSN
		}
		if r.Reason != "" {
			line += " (" + r.Reason + ")"
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "*** END ***")
}

// opWords are the result lines of the bulk operations (postsuper's).
var opWords = map[string]string{
	"delete": "Deleted", "hold": "Placed on hold", "release": "Released from hold", "requeue": "Requeued",
}

func plural(n int) string {
	if n == 1 {
		return "message"
	}
	return "messages"
}

func queueOp(verb string, args []string, stdout, stderr io.Writer) int {
	fs, cfg := commandFlags("holdfast queue "+verb, stderr)
	var f control.Filter
	states := filterFlags(fs, &f, true)
	pos, err := parseMixed(fs, args)
	if err != nil {
		return exUsage
	}
	f.States = *states
	filtered := f.Domain != "" || f.Sender != "" || f.Recipient != "" || f.OlderThan != ""
	req := control.OpRequest{Filter: f}
	switch {
	case len(pos) == 1 && pos[0] == "ALL":
		req.All = true
	case len(pos) == 0 && (filtered || len(f.States) > 0):
		req.All = true
	case len(pos) == 0:
		fmt.Fprintf(stderr, "usage: holdfast queue %s [-c FILE] ID...|ALL [--state S] [--domain D] [--sender S] [--recipient R] [--older-than AGE]\n", verb)
		return exUsage
	default:
		if filtered || len(f.States) > 0 {
			fmt.Fprintf(stderr, "holdfast queue %s: filters apply to ALL, not to listed ids\n", verb)
			return exUsage
		}
		req.IDs = pos
	}
	cl, _, code := clientFor(*cfg, "holdfast", stderr)
	if cl == nil {
		return code
	}
	ctx, cancel := interruptible()
	defer cancel()
	bar := newProgressBar(stderr, verb)
	p, err := cl.Operate(ctx, verb, req, bar.update)
	bar.finish()
	if err != nil {
		return apiExit("holdfast", err, stderr)
	}
	fmt.Fprintf(stdout, "%s: %d %s\n", opWords[verb], p.Done, plural(p.Done))
	return 0
}

// progressBar draws one self-overwriting line on a terminal; elsewhere it
// prints nothing.
type progressBar struct {
	w     io.Writer
	label string
	on    bool
	drawn bool
	start time.Time
}

func newProgressBar(w io.Writer, label string) *progressBar {
	return &progressBar{w: w, label: label, on: isTerminal(w), start: time.Now()}
}

func (b *progressBar) update(p control.Progress) {
	if !b.on || p.End {
		return
	}
	rate := float64(p.Done) / max(time.Since(b.start).Seconds(), 0.001)
	if p.Total > 0 {
		pct := min(100, 100*int64(p.Matched)/p.Total)
		n := int(pct / 5)
		fmt.Fprintf(b.w, "\r%s [%-20s] %3d%% %d/%d (%.0f/s)", b.label,
			strings.Repeat("#", n), pct, p.Matched, p.Total, rate)
	} else {
		fmt.Fprintf(b.w, "\r%s %d done, %d matched (%.0f/s)", b.label, p.Done, p.Matched, rate)
	}
	b.drawn = true
}

func (b *progressBar) finish() {
	if b.drawn {
		fmt.Fprint(b.w, "\r\033[K")
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
