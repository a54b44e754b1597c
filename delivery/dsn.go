package delivery

import (
	"bufio"
	"bytes"
	"fmt"
	"net/textproto"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// dsnKind is the kind of notice: non-delivery, delay warning, or success.
type dsnKind int

const (
	dsnFailed  dsnKind = iota // "Undelivered Mail Returned to Sender"
	dsnDelayed                // "Delayed Mail (still being retried)"
	dsnRelayed                // "Successful Mail Delivery Report" (action relayed)
)

// bounce builds the RFC 3464 notice for recipients idx of the attempt, to
// be queued in the attempt's Finish transaction. It returns nil when no
// notice is owed: no recipient asked for one (NOTIFY), or the message has
// the null sender, whose failures are logged and dropped (RFC 5321 sec
// 4.5.5: never bounce a bounce).
func (d *Scheduler) bounce(a *attempt, idx []int, kind dsnKind) *store.NewMessage {
	var rcpts []int
	for _, i := range idx {
		if wants(a.m.Recipients[i].Notify, kind) {
			rcpts = append(rcpts, i)
		}
	}
	if len(rcpts) == 0 {
		return nil
	}
	if a.m.Sender == "" {
		if kind == dsnFailed {
			a.log.Info().Int("nrcpt", len(rcpts)).Str("status", "bounced").
				Msg("undeliverable mail from the null sender discarded, no notice sent")
		}
		return nil
	}
	d.readForNotice(a, kind)
	body := d.buildDSN(a, rcpts, kind)
	msg := &store.Message{
		ID:       store.NewID(),
		Sender:   "",
		Protocol: "LOCAL",
		Recipients: []store.Recipient{{
			Addr: a.m.Sender,
		}},
		SMTPUTF8: a.m.SMTPUTF8,
	}
	a.log.Info().Str("notice_id", string(msg.ID)).Str("to", a.m.Sender).
		Str("event", map[dsnKind]string{dsnFailed: "bounce", dsnDelayed: "delay_warning", dsnRelayed: "success"}[kind]).
		Msg("sender notification queued")
	return &store.NewMessage{Msg: msg, Body: body}
}

// wants applies RFC 3461 NOTIFY: none given means failures only (and
// delay warnings, at the MTA's discretion, as Postfix sends them); a
// success notice only when SUCCESS was asked for.
func wants(n store.Notify, kind dsnKind) bool {
	if n&store.NotifyNever != 0 {
		return false
	}
	switch kind {
	case dsnRelayed:
		return n&store.NotifySuccess != 0
	case dsnFailed:
		return n == 0 || n&store.NotifyFailure != 0
	}
	return n == 0 || n&store.NotifyDelay != 0
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

// readForNotice reads what a notice returns of the original: its header
// section, and the whole content when it is within bounce_size_limit.
func (d *Scheduler) readForNotice(a *attempt, kind dsnKind) {
	if err := d.loadHead(a); err != nil {
		a.log.Error().Err(err).Msg("read body for the notice failed")
	}
	m := a.m
	if a.whole != nil || m.Ret == store.RetHdrs || kind != dsnFailed || m.Size > d.o.BounceSizeLimit {
		return
	}
	body, err := d.s.Body(m.ID)
	if err != nil {
		a.log.Error().Err(err).Msg("read body for the notice failed")
		return
	}
	a.whole = body
}

// buildDSN writes the multipart/report notice (reference spec §3.9).
func (d *Scheduler) buildDSN(a *attempt, rcpts []int, kind dsnKind) []byte {
	m, now := a.m, d.o.Clock.Now()
	boundary := fmt.Sprintf("%s.%d/%s", m.ID, now.Unix(), d.o.Hostname)
	subject := map[dsnKind]string{
		dsnFailed:  "Undelivered Mail Returned to Sender",
		dsnDelayed: "Delayed Mail (still being retried)",
		dsnRelayed: "Successful Mail Delivery Report",
	}[kind]
	origID := originalMessageID(a.head)
	var b bytes.Buffer
	h := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	h("Date: %s", now.Format(time.RFC1123Z))
	h("From: MAILER-DAEMON@%s (Mail Delivery System)", d.o.Hostname)
	h("Subject: %s", subject)
	h("To: %s", oneLine(m.Sender))
	h("Auto-Submitted: auto-replied")
	h("Message-Id: <%s.%s@%s>", now.UTC().Format("20060102150405"), store.NewID(), d.o.Hostname)
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
	h("This is the mail system at host %s.", d.o.Hostname)
	h("")
	text := failedText
	switch kind {
	case dsnDelayed:
		text = fmt.Sprintf(delayedText, hours(d.o.DelayWarning), days(d.lifetime(m)))
	case dsnRelayed:
		text = relayedText
	}
	b.WriteString(crlf(text))
	for _, i := range rcpts {
		r, res := &m.Recipients[i], a.results[i]
		reason := res.Reply
		if kind == dsnRelayed {
			reason = fmt.Sprintf("delivery via %s: %s", res.Relay, res.Reply)
		}
		h("")
		b.WriteString(crlf(wrap(fmt.Sprintf("<%s>: %s", r.Addr, reason), 79, "    ")))
	}
	h("")
	d.writeStatus(&b, a, rcpts, kind, boundary)
	var full []byte
	if m.Ret != store.RetHdrs && kind == dsnFailed {
		full = a.whole
	}
	writeOriginal(&b, a, kind, boundary, full)
	h("--%s--", boundary)
	return b.Bytes()
}

// writeStatus writes the message/delivery-status part (RFC 3464 sec 2).
func (d *Scheduler) writeStatus(b *bytes.Buffer, a *attempt, rcpts []int, kind dsnKind, boundary string) {
	m := a.m
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
	h("Reporting-MTA: dns; %s", d.o.Hostname)
	if m.EnvID != "" {
		h("Original-Envelope-Id: %s", m.EnvID)
	}
	h("X-Postfix-Queue-ID: %s", m.ID)
	h("X-Postfix-Sender: rfc822; %s", m.Sender)
	h("Arrival-Date: %s", m.Arrival.Format(time.RFC1123Z))
	for _, i := range rcpts {
		r, res := &m.Recipients[i], a.results[i]
		h("")
		h("Final-Recipient: rfc822; %s", r.Addr)
		if typ, addr, ok := strings.Cut(r.Orig, ";"); ok {
			h("Original-Recipient: %s; %s", strings.TrimSpace(typ), strings.TrimSpace(addr))
		} else {
			h("Original-Recipient: rfc822; %s", r.Addr)
		}
		h("Action: %s", map[dsnKind]string{dsnFailed: "failed", dsnDelayed: "delayed", dsnRelayed: "relayed"}[kind])
		h("Status: %s", res.DSN)
		if res.Remote != "" {
			h("Remote-MTA: dns; %s", res.Remote)
		}
		diag := res.Diag
		if diag == "" {
			diag = "X-Postfix; " + res.Reply
		}
		h("Diagnostic-Code: %s", diag)
		if kind == dsnDelayed {
			h("Will-Retry-Until: %s", m.Arrival.Add(d.lifetime(m)).Format(time.RFC1123Z))
		}
	}
	h("")
}

// writeOriginal returns the message (full: RET=FULL, small enough, read
// by the caller) or its headers (RET=HDRS, larger than
// bounce_size_limit, delay warnings).
func writeOriginal(b *bytes.Buffer, a *attempt, kind dsnKind, boundary string, whole []byte) {
	m := a.m
	h := func(format string, args ...any) { fmt.Fprintf(b, format+"\r\n", args...) }
	full := whole != nil
	content := whole
	h("--%s", boundary)
	switch {
	case kind == dsnRelayed:
		// RET applies to failure notices only (RFC 3461 sec 4.3).
		content = headerPart(a.head)
		h("Content-Description: Message Headers")
		if m.SMTPUTF8 {
			h("Content-Type: message/global-headers")
		} else {
			h("Content-Type: text/rfc822-headers")
		}
	case full:
		h("Content-Description: Undelivered Message")
		if m.SMTPUTF8 {
			h("Content-Type: message/global")
		} else {
			h("Content-Type: message/rfc822")
		}
	default:
		content = headerPart(a.head)
		h("Content-Description: Undelivered Message Headers")
		if m.SMTPUTF8 {
			h("Content-Type: message/global-headers")
		} else {
			h("Content-Type: text/rfc822-headers")
		}
	}
	h("")
	h("Return-Path: <%s>", m.Sender)
	b.WriteString(crlf(string(content)))
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		h("")
	}
	h("")
}

// headerPart is the header section of a message, with its end line.
func headerPart(body []byte) []byte {
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
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(headerPart(body))))
	hdr, _ := r.ReadMIMEHeader()
	return strings.TrimSpace(hdr.Get("Message-Id"))
}

func (d *Scheduler) lifetime(m *store.Message) time.Duration {
	if m.Sender == "" {
		return d.o.BounceQueueLifetime
	}
	return d.o.MaxQueueLifetime
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
