package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/store"
)

// The Postfix-compatible front ends, chosen by argv[0]. Their messages
// and exit codes are Postfix's (reference spec §4): every postqueue fatal
// error exits 69, every sendmail fatal error 75, postsuper's 1.
func init() {
	registerCompat("sendmail", runSendmail)
	registerCompat("mailq", runMailq)
	registerCompat("postqueue", runPostqueue)
	registerCompat("postsuper", runPostsuper)
}

const postsuperFatal = 1

// ---- postqueue ----

const postqueueUsage = "usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site"

// runPostqueue is postqueue(1): -f, -s site, -i id, -p, -j; -c FILE.
func runPostqueue(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	cfg := defaultConfigPath
	mode, arg := byte(0), ""
	fatal := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "postqueue: fatal: "+format+"\n", a...)
		return exUnavailable
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			return fatal("%s", postqueueUsage)
		}
		for j := 1; j < len(a); j++ {
			opt := a[j]
			switch opt {
			case 'v':
				continue
			case 'f', 'j', 'p':
				if mode != 0 {
					return fatal("%s", postqueueUsage)
				}
				mode = opt
				continue
			case 'c', 'i', 's':
			default:
				return fatal("%s", postqueueUsage)
			}
			val, ok := optValue(args, &i, a[j+1:])
			if !ok {
				return fatal("%s", postqueueUsage)
			}
			if opt == 'c' {
				cfg = val
			} else {
				if mode != 0 {
					return fatal("%s", postqueueUsage)
				}
				mode, arg = opt, val
			}
			break
		}
	}
	switch mode {
	case 'p', 'j':
		return postqueueList(cfg, mode == 'j', "postqueue", stdout, stderr)
	case 'f':
		return postqueueFlush(cfg, control.FlushRequest{All: true}, "postqueue", stderr)
	case 's':
		return postqueueFlush(cfg, control.FlushRequest{Site: arg}, "postqueue", stderr)
	case 'i':
		return postqueueFlush(cfg, control.FlushRequest{ID: arg}, "postqueue", stderr)
	}
	return fatal("%s", postqueueUsage)
}

// postqueueList is postqueue -p / -j (and mailq, sendmail -bp).
func postqueueList(cfg string, asJSON bool, prog string, stdout, stderr io.Writer) int {
	cl, _, _ := clientFor(cfg, prog, stderr)
	if cl == nil {
		return exUnavailable
	}
	err := listQueue(context.Background(), cl, control.Filter{}, asJSON, stdout)
	if err == nil {
		return 0
	}
	var de *control.DownError
	var ae *control.Error
	switch {
	case errors.As(err, &de):
		fmt.Fprintf(stderr, "%s: fatal: Queue report unavailable - mail system is down\n", prog)
	case errors.As(err, &ae) && ae.Code == control.CodeForbidden:
		fmt.Fprintf(stderr, "%s: fatal: %s\n", prog, ae.Msg)
	default:
		fmt.Fprintf(stderr, "%s: fatal: %v\n", prog, err)
	}
	return exUnavailable
}

// postqueueFlush is postqueue -f / -s / -i with Postfix's checks and
// messages (reference spec §4.2).
func postqueueFlush(cfg string, req control.FlushRequest, prog string, stderr io.Writer) int {
	fatal := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "%s: fatal: "+format+"\n", append([]any{prog}, a...)...)
		return exUnavailable
	}
	switch {
	case req.Site != "" && !flush.ValidSite(req.Site):
		return fatal("Cannot flush mail queue - invalid destination: %q", cutSite(req.Site))
	case req.ID != "" && !validQueueName(req.ID):
		return fatal("Cannot flush queue ID - invalid name: %q", req.ID)
	}
	cl, _, _ := clientFor(cfg, prog, stderr)
	if cl == nil {
		return exUnavailable
	}
	_, err := cl.Flush(context.Background(), req, nil)
	if err == nil {
		return 0
	}
	var de *control.DownError
	var ae *control.Error
	switch {
	case errors.As(err, &de):
		if req.ID != "" {
			return fatal("Cannot flush queue ID - mail system is down")
		}
		return fatal("Cannot flush mail queue - mail system is down")
	case errors.As(err, &ae):
		return fatal("%s", ae.Msg)
	}
	return fatal("%v", err)
}

func cutSite(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

// validQueueName is Postfix's mail_queue_id_ok: 1 to 255 characters of
// [A-Za-z0-9_].
func validQueueName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// ---- mailq ----

// runMailq is mailq(1): postqueue -p. Recipients are an error, as in
// Postfix's sendmail in -bp mode.
func runMailq(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	cfg := defaultConfigPath
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-v":
		case (a == "-c" || a == "-C") && i+1 < len(args):
			i++
			cfg = args[i]
		case strings.HasPrefix(a, "-C") || strings.HasPrefix(a, "-c"):
			cfg = a[2:]
		default:
			fmt.Fprintln(stderr, "mailq: fatal: display queue mode requires no recipient")
			return exTempFail
		}
	}
	return postqueueList(cfg, false, "postqueue", stdout, stderr)
}

// ---- postsuper ----

// postsuperQueues maps postsuper's queue names to holdfast states; the
// names without messages here (maildrop, defer, bounce, flush) are
// accepted and select nothing.
var postsuperQueues = map[string]string{
	"incoming": "incoming", "active": "active", "deferred": "deferred", "hold": "hold",
	"maildrop": "", "defer": "", "bounce": "", "flush": "", "corrupt": "", "trace": "",
}

type postsuperOp struct {
	verb string
	ids  []string
	all  bool
}

// runPostsuper is postsuper(1) -d/-h/-H/-r (id, "-" for stdin, or ALL),
// repeatable, followed by queue names; -c FILE.
func runPostsuper(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg := defaultConfigPath
	var ops []*postsuperOp
	verbs := map[byte]string{'d': "delete", 'h': "hold", 'H': "release", 'r': "requeue"}
	fatal := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "postsuper: fatal: "+format+"\n", a...)
		return postsuperFatal
	}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		opt, val := a[1], a[2:]
		verb, isOp := verbs[opt]
		switch {
		case opt == 'v' || opt == 's' || opt == 'p' || opt == 'S':
			continue
		case opt != 'c' && !isOp:
			return fatal("usage: postsuper [-c config_dir] [-d queue_id (delete)] [-h queue_id (hold)] [-H queue_id (un-hold)] [-r queue_id (requeue)] [-v (verbose)] [queue...]")
		}
		val, ok := optValue(args, &i, val)
		if !ok {
			return fatal("option -%c requires an argument", opt)
		}
		if opt == 'c' {
			cfg = val
			continue
		}
		op := lastOp(&ops, verb)
		switch val {
		case "ALL":
			op.all = true
		case "-":
			sc := bufio.NewScanner(stdin)
			for sc.Scan() {
				op.ids = append(op.ids, strings.Fields(sc.Text())...)
			}
		default:
			op.ids = append(op.ids, val)
		}
	}
	states, nothing, bad := postsuperStates(args[i:])
	if bad != "" {
		return fatal("invalid directory name: %s", bad)
	}
	cl, _, _ := clientFor(cfg, "postsuper", stderr)
	if cl == nil {
		return postsuperFatal
	}
	for _, op := range ops {
		if nothing {
			break // only queues that hold no messages here were named
		}
		if code := postsuperRun(cl, op, states, stderr); code != 0 {
			return code
		}
	}
	return 0
}

// postsuperStates maps queue names to states; nothing is set when every
// name is a queue without messages here; bad is an unknown name.
func postsuperStates(names []string) (states []string, nothing bool, bad string) {
	for _, q := range names {
		st, ok := postsuperQueues[q]
		if !ok {
			return nil, false, q
		}
		if st != "" {
			states = append(states, st)
		}
	}
	return states, len(names) > 0 && len(states) == 0, ""
}

// lastOp returns the pending operation for verb, merging repeated options
// of one kind as postsuper does.
func lastOp(ops *[]*postsuperOp, verb string) *postsuperOp {
	for _, op := range *ops {
		if op.verb == verb {
			return op
		}
	}
	op := &postsuperOp{verb: verb}
	*ops = append(*ops, op)
	return op
}

func postsuperRun(cl *control.Client, op *postsuperOp, states []string, stderr io.Writer) int {
	var ids []string
	for _, id := range op.ids {
		if _, err := store.ParseID(id); err != nil {
			fmt.Fprintf(stderr, "postsuper: warning: invalid mail queue id: %s\n", id)
			continue
		}
		ids = append(ids, id)
	}
	total := 0
	for _, req := range []control.OpRequest{
		{IDs: ids, Filter: control.Filter{States: states}},
		{All: op.all, Filter: control.Filter{States: states}},
	} {
		if len(req.IDs) == 0 && !req.All {
			continue
		}
		p, err := cl.Operate(context.Background(), op.verb, req, nil)
		if err != nil {
			var ae *control.Error
			if errors.As(err, &ae) && ae.Code == control.CodeForbidden {
				fmt.Fprintln(stderr, "postsuper: fatal: use of this command is reserved for the superuser")
			} else {
				fmt.Fprintf(stderr, "postsuper: fatal: %v\n", err)
			}
			return postsuperFatal
		}
		total += p.Done
	}
	if total > 0 {
		fmt.Fprintf(stderr, "postsuper: %s: %d %s\n", opWords[op.verb], total, plural(total))
	}
	return 0
}

// ---- sendmail ----

// sendmailArgs is a parsed sendmail command line.
type sendmailArgs struct {
	cfg        string
	sender     string
	hasSender  bool
	extract    bool // -t
	ignoreDots bool // -i, -oi
	mode       string
	site, id   string
	rcpts      []string
}

// runSendmail is sendmail(1): local submission from standard input, or
// the queue commands -q, -qR<site>, -qI<id>, -bp.
func runSendmail(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a, code := parseSendmail(args, stderr)
	if code >= 0 {
		return code
	}
	fatal := func(format string, v ...any) int {
		fmt.Fprintf(stderr, "sendmail: fatal: "+format+"\n", v...)
		return exTempFail
	}
	switch a.mode {
	case "flush", "site", "id", "list":
		if len(a.rcpts) > 0 {
			what := map[string]string{"flush": "flush queue mode", "site": "flush site",
				"id": "flush queue ID", "list": "display queue mode"}[a.mode]
			return fatal("%s requires no recipient", what)
		}
	}
	switch a.mode {
	case "list":
		return postqueueList(a.cfg, false, "postqueue", stdout, stderr)
	case "flush":
		return postqueueFlush(a.cfg, control.FlushRequest{All: true}, "postqueue", stderr)
	case "site":
		return postqueueFlush(a.cfg, control.FlushRequest{Site: a.site}, "postqueue", stderr)
	case "id":
		return postqueueFlush(a.cfg, control.FlushRequest{ID: a.id}, "postqueue", stderr)
	case "ignore":
		return 0
	case "deliver":
		return sendmailSubmit(a, stdin, stderr)
	}
	return fatal("-b%s is not supported", a.mode)
}

// parseSendmail reads sendmail's options. code is -1 to go on, else the
// exit status after a message.
func parseSendmail(args []string, stderr io.Writer) (*sendmailArgs, int) {
	a := &sendmailArgs{cfg: defaultConfigPath, mode: "deliver"}
	fatal := func(format string, v ...any) (*sendmailArgs, int) {
		fmt.Fprintf(stderr, "sendmail: fatal: "+format+"\n", v...)
		return nil, exTempFail
	}
	withArg := "BCcFNRVXbfhor"
	i := 0
	for ; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			break
		}
		if strings.HasPrefix(arg, "-q") {
			if code := a.queueOption(arg[2:], stderr); code >= 0 {
				return nil, code
			}
			continue
		}
		opt := arg[1]
		if !strings.ContainsRune(withArg, rune(opt)) {
			switch opt {
			case 't':
				a.extract = true
			case 'i':
				a.ignoreDots = true
			case 'v', 'n', 'm', 'e', 'A', 'L':
			default:
				return fatal("-%c: unknown option", opt)
			}
			continue
		}
		val := arg[2:]
		val, ok := optValue(args, &i, val)
		if !ok {
			return fatal("option -%c requires an argument", opt)
		}
		a.set(opt, val)
	}
	a.rcpts = args[i:]
	return a, -1
}

// set applies an option that takes a value; values of options holdfast
// does not use (-F, -N, -R, -V, -X, -h, most -o) are accepted and ignored.
func (a *sendmailArgs) set(opt byte, val string) {
	switch opt {
	case 'C', 'c':
		a.cfg = val
	case 'f', 'r':
		a.sender, a.hasSender = strings.TrimSuffix(strings.TrimPrefix(val, "<"), ">"), true
	case 'o':
		if strings.HasPrefix(val, "i") {
			a.ignoreDots = true
		}
	case 'b':
		switch val {
		case "p":
			a.mode = "list"
		case "m":
		default:
			a.mode = val
		}
	}
}

// queueOption handles -q, -q<interval>, -qR<site>, -qI<id> (reference
// spec §4.1).
func (a *sendmailArgs) queueOption(v string, stderr io.Writer) int {
	fail := func(format string, x ...any) int {
		fmt.Fprintf(stderr, "sendmail: fatal: "+format+"\n", x...)
		return exTempFail
	}
	switch {
	case v == "":
		a.mode = "flush"
	case v[0] >= '0' && v[0] <= '9':
		a.mode = "ignore"
	case v[0] == 'R':
		if len(v) == 1 {
			return fail("specify: -qRsitename")
		}
		a.mode, a.site = "site", v[1:]
	case v[0] == 'I':
		if len(v) == 1 {
			return fail("specify: -qIqueueid")
		}
		a.mode, a.id = "id", v[1:]
	default:
		return fail("-q%c is not implemented", v[0])
	}
	return -1
}

// sendmailSubmit reads the message, takes recipients from the headers
// with -t, and queues it through the daemon.
func sendmailSubmit(a *sendmailArgs, stdin io.Reader, stderr io.Writer) int {
	fatal := func(format string, v ...any) int {
		fmt.Fprintf(stderr, "sendmail: fatal: "+format+"\n", v...)
		return exTempFail
	}
	cl, c, _ := clientFor(a.cfg, "sendmail", stderr)
	if cl == nil {
		return exTempFail
	}
	limit, err := c.Size("message_size_limit")
	if err != nil || limit <= 0 {
		limit = 1 << 40
	}
	content, err := readMessage(stdin, a.ignoreDots, limit)
	if err != nil {
		return fatal("%v", err)
	}
	rcpts := a.rcpts
	if a.extract {
		var hdr []string
		content, hdr = extractRecipients(content)
		rcpts = append(rcpts, hdr...)
	}
	if len(rcpts) == 0 {
		return fatal("No recipient addresses found in message header")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := cl.Submit(ctx, a.sender, a.hasSender, rcpts, bytes.NewReader(content)); err != nil {
		return fatal("%v", err)
	}
	return 0
}

// readMessage reads a message from standard input: a leading mbox "From "
// line is dropped, a line with a single "." ends the input unless
// ignoreDots, and line ends become CRLF.
func readMessage(r io.Reader, ignoreDots bool, limit int64) ([]byte, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var out bytes.Buffer
	first := true
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			text := bytes.TrimRight(line, "\r\n")
			if first && bytes.HasPrefix(text, []byte("From ")) {
				first = false
				continue
			}
			first = false
			if !ignoreDots && string(text) == "." {
				break
			}
			out.Write(text)
			out.WriteString("\r\n")
			if int64(out.Len()) > limit {
				return nil, errors.New("message file too big")
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read message: %w", err)
		}
	}
	return out.Bytes(), nil
}

// extractRecipients implements -t: the addresses in To:, Cc: and Bcc:
// (RFC 5322 sec 3.6.3); Bcc: lines are removed from the content.
func extractRecipients(content []byte) ([]byte, []string) {
	end := bytes.Index(content, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(content)
	} else {
		end += 2
	}
	var kept bytes.Buffer
	var rcpts []string
	var field string // current header name (lower case) while in a field
	var value strings.Builder
	flushField := func() {
		switch field {
		case "to", "cc", "bcc":
			if list, err := mail.ParseAddressList(value.String()); err == nil {
				for _, ad := range list {
					rcpts = append(rcpts, ad.Address)
				}
			} else {
				for _, s := range strings.Split(value.String(), ",") {
					if s = strings.Trim(strings.TrimSpace(s), "<>"); s != "" {
						rcpts = append(rcpts, s)
					}
				}
			}
		}
		field = ""
		value.Reset()
	}
	inBcc := false
	for _, line := range strings.SplitAfter(string(content[:end]), "\r\n") {
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			value.WriteString(strings.TrimRight(line, "\r\n"))
		} else {
			flushField()
			if k := strings.IndexByte(line, ':'); k > 0 {
				field = strings.ToLower(strings.TrimSpace(line[:k]))
				value.WriteString(strings.TrimRight(line[k+1:], "\r\n"))
			}
			inBcc = field == "bcc"
		}
		if !inBcc {
			kept.WriteString(line)
		}
	}
	flushField()
	kept.Write(content[end:])
	return kept.Bytes(), rcpts
}

// ---- listing formats ----

// mailq writes Postfix's mailq layout for long queue IDs (postqueue
// showq_compat: ID 17, size 8, time 19 columns), as our 12-character IDs
// need (reference spec §4.3).
type mailq struct {
	w     *bufio.Writer
	n     int
	bytes int64
}

const mailqHeading = "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n"

func (q *mailq) message(m *control.Message) {
	if q.n == 0 {
		q.w.WriteString(mailqHeading)
	} else {
		q.w.WriteString("\n")
	}
	q.n++
	q.bytes += m.Size
	id := m.ID
	switch m.Queue {
	case "active":
		id += "*"
	case "hold":
		id += "!"
	}
	if m.Expired {
		id += "#"
	}
	arrival := m.Arrival.Local().Format("Mon Jan _2 15:04:05 2006")[:19]
	fmt.Fprintf(q.w, "%-17s %8d %-19s %s\n", id, m.Size, arrival, showSender(m.Sender))
	last := ""
	for _, r := range m.Recipients {
		if r.State != "pending" {
			continue
		}
		if r.Reason != last {
			last = r.Reason
			show := last
			if show == "" {
				show = "reason unavailable"
			}
			fmt.Fprintf(q.w, "%*s(%s)\n", max(0, 76-len(show)), "", show)
		}
		fmt.Fprintf(q.w, "%-17s %8s %-19s %s\n", "", "", "", r.Address)
	}
}

func (q *mailq) trailer() {
	if q.n == 0 {
		q.w.WriteString("Mail queue is empty\n")
		return
	}
	s := "s"
	if q.n == 1 {
		s = ""
	}
	fmt.Fprintf(q.w, "\n-- %d Kbytes in %d Request%s.\n", q.bytes/1024, q.n, s)
}

// showSender is the sender as showq prints it: the null sender is
// MAILER-DAEMON (empty_address_recipient).
func showSender(s string) string {
	if s == "" {
		return "MAILER-DAEMON"
	}
	return s
}

// writeJSONLine writes one postqueue -j object, with Postfix's spacing
// and members (reference spec §4.4).
func writeJSONLine(w *bufio.Writer, m *control.Message) {
	fmt.Fprintf(w, `{"queue_name": %s, "queue_id": %s, "arrival_time": %d, "message_size": %d, "forced_expire": %t, "sender": %s, "recipients": [`,
		jsonQuote(m.Queue, false), jsonQuote(m.ID, false), m.Arrival.Unix(), m.Size, m.Expired,
		jsonQuote(showSender(m.Sender), m.SMTPUTF8))
	n := 0
	for _, r := range m.Recipients {
		if r.State != "pending" {
			continue
		}
		if n > 0 {
			w.WriteString(", ")
		}
		n++
		w.WriteString(`{`)
		if r.Orig != "" {
			fmt.Fprintf(w, `"orig_address": %s, `, jsonQuote(r.Orig, m.SMTPUTF8))
		}
		fmt.Fprintf(w, `"address": %s`, jsonQuote(r.Address, m.SMTPUTF8))
		if r.Reason != "" {
			fmt.Fprintf(w, `, "delay_reason": %s`, jsonQuote(r.Reason, m.SMTPUTF8))
		}
		w.WriteString(`}`)
	}
	w.WriteString("]}\n")
}

// jsonQuote quotes s as Postfix's postqueue does: '"' and '\' escaped,
// unprintable characters (and non-ASCII unless utf8) replaced by '?'.
func jsonQuote(s string, utf8 bool) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || r == 0xfffd:
			b.WriteByte('?')
		case r >= 0x80 && !utf8:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// optValue returns an option's value as getopt does: the rest of the
// argument (-sSITE), or else the next argument (-s SITE), advancing *i.
// ok is false when neither is there.
func optValue(args []string, i *int, rest string) (string, bool) {
	if rest != "" {
		return rest, true
	}
	if *i+1 >= len(args) {
		return "", false
	}
	*i++
	return args[*i], true
}
