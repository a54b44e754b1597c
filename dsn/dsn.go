// Package dsn builds the delivery status notifications holdfast sends
// (RFC 3464 multipart/report, in Postfix's words and layout: reference
// spec §3.9): the non-delivery notice, the delay warning and the success
// notice, from the original message and the outcomes of its recipients.
// It is pure: no store access, no clock, no logging; delivery decides who
// gets a notice and queues it.
package dsn

import (
	"bufio"
	"bytes"
	"fmt"
	"net/textproto"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// Kind is the kind of notice.
type Kind int

const (
	Failed  Kind = iota // "Undelivered Mail Returned to Sender"
	Delayed             // "Delayed Mail (still being retried)"
	Relayed             // "Successful Mail Delivery Report" (action relayed)
)

// Event is the log event name of a notice of kind k.
func (k Kind) Event() string {
	return [...]string{Failed: "bounce", Delayed: "delay_warning", Relayed: "success"}[k]
}

// Wants applies RFC 3461 NOTIFY: none given means failures only (and
// delay warnings, at the MTA's discretion, as Postfix sends them); a
// success notice only when SUCCESS was asked for.
func Wants(n store.Notify, k Kind) bool {
	if n&store.NotifyNever != 0 {
		return false
	}
	switch k {
	case Relayed:
		return n&store.NotifySuccess != 0
	case Failed:
		return n == 0 || n&store.NotifyFailure != 0
	}
	return n == 0 || n&store.NotifyDelay != 0
}

// Lifetime is how long a message is kept in the queue:
// bounce_queue_lifetime for a notice (the null sender), but never longer
// than maximal_queue_lifetime (Postfix's qmgr), and maximal_queue_lifetime
// for the rest. 0 means one attempt. It is the one definition: expiry at
// an attempt, defer on arrival and the delay notice's text use it.
func Lifetime(m *store.Message, maximal, bounce time.Duration) time.Duration {
	if m.Sender == "" {
		return min(bounce, maximal)
	}
	return maximal
}

// Result is the outcome a notice reports for one recipient.
type Result struct {
	Rcpt   int    // index in Msg.Recipients
	Reply  string // Postfix's wording
	DSN    string // enhanced status code
	Diag   string // Diagnostic-Code ("smtp; 550 ..."); empty: "X-Postfix; " + Reply
	Remote string // Remote-MTA, or empty
	Relay  string // for the success notice: "name[addr]:port"
}

// Notice is what Build needs.
type Notice struct {
	Kind    Kind
	Msg     *store.Message // the original
	Results []Result       // the recipients it reports, in order
	// Head is the start of the original's content (at least its header
	// section); Whole is all of it, for a RET=FULL non-delivery notice
	// within bounce_size_limit, else nil.
	Head, Whole []byte
	Hostname    string // myhostname: From, Reporting-MTA, boundary
	Now         time.Time
	// DelayWarning (delay_warning_time) and Lifetime (the message's
	// queue lifetime, Lifetime) go into the delay warning.
	DelayWarning, Lifetime time.Duration
}

const failedText = `I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system
`

const delayedText = `####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than %s.
It will be retried until it is %s old.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system
`

const relayedText = `Your message was successfully delivered to the destination(s)
listed below. If the message was delivered to mailbox you will
receive no further notifications. Otherwise you may still receive
notifications of mail delivery errors from other systems.

                   The mail system
`

// Build writes the multipart/report notice (reference spec §3.9, RFC
// 3464) about n.Results of n.Msg.
func Build(n Notice) []byte {
	m, now, kind := n.Msg, n.Now, n.Kind
	boundary := fmt.Sprintf("%s.%d/%s", m.ID, now.Unix(), n.Hostname)
	subject := map[Kind]string{
		Failed:  "Undelivered Mail Returned to Sender",
		Delayed: "Delayed Mail (still being retried)",
		Relayed: "Successful Mail Delivery Report",
	}[kind]
	origID := originalMessageID(n.Head)
	var b bytes.Buffer
	h := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	h("Date: %s", now.Format(time.RFC1123Z))
	h("From: MAILER-DAEMON@%s (Mail Delivery System)", n.Hostname)
	h("Subject: %s", subject)
	h("To: %s", oneLine(m.Sender))
	h("Auto-Submitted: auto-replied")
	h("Message-Id: <%s.%s@%s>", now.UTC().Format("20060102150405"), store.NewID(), n.Hostname)
	if origID != "" {
		h("In-Reply-To: %s", origID)
		h("References: %s", origID)
	}
	h("MIME-Version: 1.0")
	h("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"", boundary)
	h("Content-Transfer-Encoding: 8bit")
	h("")
	h("This is a MIME-encapsulated message.")
	h("")
	h("--%s", boundary)
	h("Content-Description: Notification")
	h("Content-Type: text/plain; charset=us-ascii")
	h("")
	h("This is the mail system at host %s.", n.Hostname)
	h("")
	text := failedText
	switch kind {
	case Delayed:
		text = fmt.Sprintf(delayedText, hours(n.DelayWarning), days(n.Lifetime))
	case Relayed:
		text = relayedText
	}
	b.WriteString(crlf(text))
	for _, res := range n.Results {
		r := &m.Recipients[res.Rcpt]
		reason := res.Reply
		if kind == Relayed {
			reason = fmt.Sprintf("delivery via %s: %s", res.Relay, res.Reply)
		}
		h("")
		b.WriteString(crlf(wrap(fmt.Sprintf("<%s>: %s", r.Addr, reason), 79, "    ")))
	}
	h("")
	writeStatus(&b, n, boundary)
	var full []byte
	if m.Ret != store.RetHdrs && kind == Failed {
		full = n.Whole
	}
	writeOriginal(&b, n, boundary, full)
	h("--%s--", boundary)
	return b.Bytes()
}

// writeStatus writes the message/delivery-status part (RFC 3464 sec 2).
func writeStatus(b *bytes.Buffer, n Notice, boundary string) {
	m, kind := n.Msg, n.Kind
	h := func(format string, args ...any) {
		for i, v := range args {
			if s, ok := v.(string); ok {
				args[i] = oneLine(s)
			}
		}
		fmt.Fprintf(b, format+"\r\n", args...)
	}
	h("--%s", boundary)
	h("Content-Description: Delivery report")
	if m.SMTPUTF8 {
		h("Content-Type: message/global-delivery-status") // RFC 6533
	} else {
		h("Content-Type: message/delivery-status")
	}
	h("")
	h("Reporting-MTA: dns; %s", n.Hostname)
	if m.EnvID != "" {
		h("Original-Envelope-Id: %s", m.EnvID)
	}
	h("X-Postfix-Queue-ID: %s", m.ID)
	h("X-Postfix-Sender: rfc822; %s", m.Sender)
	h("Arrival-Date: %s", m.Arrival.Format(time.RFC1123Z))
	for _, res := range n.Results {
		r := &m.Recipients[res.Rcpt]
		h("")
		h("Final-Recipient: rfc822; %s", r.Addr)
		if typ, addr, ok := strings.Cut(r.Orig, ";"); ok {
			h("Original-Recipient: %s; %s", strings.TrimSpace(typ), strings.TrimSpace(addr))
		} else {
			h("Original-Recipient: rfc822; %s", r.Addr)
		}
		h("Action: %s", map[Kind]string{Failed: "failed", Delayed: "delayed", Relayed: "relayed"}[kind])
		h("Status: %s", res.DSN)
		if res.Remote != "" {
			h("Remote-MTA: dns; %s", res.Remote)
		}
		diag := res.Diag
		if diag == "" {
			diag = "X-Postfix; " + res.Reply
		}
		h("Diagnostic-Code: %s", diag)
		if kind == Delayed {
			h("Will-Retry-Until: %s", m.Arrival.Add(n.Lifetime).Format(time.RFC1123Z))
		}
	}
	h("")
}

// writeOriginal returns the message (full: RET=FULL, small enough, read
// by the caller) or its headers (RET=HDRS, larger than
// bounce_size_limit, delay warnings).
func writeOriginal(b *bytes.Buffer, n Notice, boundary string, whole []byte) {
	m, kind := n.Msg, n.Kind
	h := func(format string, args ...any) { fmt.Fprintf(b, format+"\r\n", args...) }
	// Headers only, unless the whole message came (RET applies to
	// failure notices only, RFC 3461 sec 4.3: a relay notice never
	// carries the content).
	content, desc, typ, utf8Typ := HeaderPart(n.Head), "Undelivered Message Headers", "text/rfc822-headers", "message/global-headers"
	switch {
	case kind == Relayed:
		desc = "Message Headers"
	case whole != nil:
		content, desc, typ, utf8Typ = whole, "Undelivered Message", "message/rfc822", "message/global"
	}
	if m.SMTPUTF8 {
		typ = utf8Typ // the UTF-8 types of RFC 6532 and RFC 6533
	}
	h("--%s", boundary)
	h("Content-Description: %s", desc)
	h("Content-Type: %s", typ)
	h("")
	h("Return-Path: <%s>", m.Sender)
	b.WriteString(crlf(string(content)))
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		h("")
	}
	h("")
}

// HeaderPart is the header section of a message, with its end line.
func HeaderPart(body []byte) []byte {
	if i := bytes.Index(body, []byte("\r\n\r\n")); i >= 0 {
		return body[:i+2]
	}
	if i := bytes.Index(body, []byte("\n\n")); i >= 0 {
		return body[:i+1]
	}
	return body
}

// originalMessageID is the Message-ID header of the original, or "".
func originalMessageID(body []byte) string {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(HeaderPart(body))))
	hdr, _ := r.ReadMIMEHeader()
	return strings.TrimSpace(hdr.Get("Message-Id"))
}

// crlf turns bare LF line ends into CRLF.
// oneLine folds CR and LF out of a value written into a header field: a
// remote server's multi-line reply, or an envelope value, must not start
// fields of its own in the notice (RFC 3464 sec 2.1.1).
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\r' || r == '\n' }), " ")
}

func crlf(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// wrap breaks text at width columns on spaces; continuation lines start
// with indent (Postfix's bounce template formatting).
func wrap(text string, width int, indent string) string {
	var out strings.Builder
	line := ""
	for _, w := range strings.Fields(text) {
		switch {
		case line == "":
			line = w
		case len(line)+1+len(w) > width:
			out.WriteString(line + "\n")
			line = indent + w
		default:
			line += " " + w
		}
	}
	out.WriteString(line + "\n")
	return out.String()
}

func hours(d time.Duration) string {
	n := int(d.Hours())
	if n == 1 {
		return "1 hour(s)"
	}
	return fmt.Sprintf("%d hour(s)", n)
}

func days(d time.Duration) string {
	return fmt.Sprintf("%d day(s)", int(d.Hours()/24))
}
