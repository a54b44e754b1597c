package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/holdfast-mta/holdfast/control"
)

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
