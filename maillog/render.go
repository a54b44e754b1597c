package maillog

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// line is one maillog line: the Postfix program it is logged as (smtpd,
// qmgr, smtp, bounce, ...) and the text after "name/program[pid]: ".
type line struct {
	prog, text string
}

// event is one decoded zerolog event.
type event map[string]any

func (e event) str(k string) string {
	switch v := e[k].(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return ""
	}
	return fmt.Sprint(e[k])
}

func (e event) has(k string) bool { _, ok := e[k]; return ok }

// qid is the queue ID an event is about, or NOQUEUE.
func (e event) qid() string {
	if id := e.str("queue_id"); id != "" {
		return id
	}
	return "NOQUEUE"
}

// Fields every event has, and the ones renderers consume; the generic
// renderer appends the others as name=value.
var skipFields = map[string]bool{
	"level": true, "time": true, "message": true, "component": true, "event": true,
	"conn_id": true, "remote": true, "queue_id": true, "error": true,
	// Session context that smtpd's messages already carry in Postfix's words.
	"client": true, "client_name": true, "counts": true, "helo": true,
	"sasl_method": true, "sasl_username": true,
}

// renderer turns events into lines. It remembers which messages are in
// Postfix's active queue, so that qmgr's "(queue active)" line is logged
// once per move into it, as Postfix does, although holdfast reports both
// the acceptance and the start of each attempt.
type renderer struct {
	active map[string]bool
	ring   []string // active's keys in insertion order, to bound it
	next   int
}

// activeLimit bounds the remembered queue IDs; past it the oldest is
// forgotten (at worst a second "(queue active)" line).
const activeLimit = 10000

func newRenderer() *renderer {
	return &renderer{active: map[string]bool{}, ring: make([]string, activeLimit)}
}

// enterActive reports whether the message just moved into the active
// queue, and remembers that it is there.
func (r *renderer) enterActive(id string) bool {
	if r.active[id] {
		return false
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.active, old)
	}
	r.ring[r.next], r.active[id] = id, true
	r.next = (r.next + 1) % len(r.ring)
	return true
}

// render turns one event into the lines Postfix would log for it.
func (r *renderer) render(e event) []line {
	out := render(e)
	id := e.qid()
	switch {
	case e.str("event") == "accepted" || e.str("queue") == "active":
		if !r.enterActive(id) {
			out = slicesDeleteQmgr(out)
		}
	case e.str("status") == "deferred" || e.str("event") == "removed":
		delete(r.active, id) // a later attempt moves it back: log that
	}
	return out
}

// slicesDeleteQmgr drops the "(queue active)" line of out.
func slicesDeleteQmgr(out []line) []line {
	kept := out[:0]
	for _, l := range out {
		if l.prog != "qmgr" || !strings.HasSuffix(l.text, "(queue active)") {
			kept = append(kept, l)
		}
	}
	return kept
}

// render turns one event into the lines Postfix would log for it, without
// the state of renderer.
func render(e event) []line {
	comp, ev := e.str("component"), e.str("event")
	if out, ok := received(e, comp, ev); ok {
		return out
	}
	switch {
	case e.has("to") && e.has("status") && e.has("relay"):
		return []line{delivery(e)}
	case comp == "delivery" && e.str("queue") == "active":
		// A delivery attempt starts: qmgr moves the message to the active
		// queue (pflogsumm counts its size once per queue ID).
		return []line{queueActive(e)}
	case ev == "tls_established":
		return []line{tlsSummary(e, comp)}
	case ev == "tls_failed":
		return []line{{tlsProgram(comp), e.str("message")}}
	case ev == "removed":
		return []line{{"qmgr", e.qid() + ": removed"}}
	case ev == "bounce" || ev == "delay_warning" || ev == "success":
		return []line{notice(e, ev)}
	case e.str("status") == "expired":
		return []line{{"qmgr", fmt.Sprintf("%s: from=<%s>, status=expired, returned to sender", e.qid(), e.str("from"))}}
	}
	return []line{generic(e, comp)}
}

// received renders the events of a message coming in: accepted by smtpd
// or by local submission, or refused by smtpd. ok is false for any other
// event.
func received(e event, comp, ev string) (out []line, ok bool) {
	switch {
	case comp == "smtpd" && ev == "accepted":
		return accepted(e), true
	case comp == "control" && ev == "accepted":
		return pickedUp(e), true
	case comp == "smtpd" && (ev == "reject" || ev == "reject_warning"):
		if e.str("command") == "AUTH" {
			return nil, true // Postfix logs the SASL warning, not a reject
		}
		return []line{{"smtpd", reject(e)}}, true
	}
	return nil, false
}

// queueActive is qmgr's from= line of a message moved to the active
// queue.
func queueActive(e event) line {
	return line{"qmgr", fmt.Sprintf("%s: from=<%s>, size=%s, nrcpt=%s (queue active)",
		e.qid(), e.str("from"), e.str("size"), e.str("nrcpt"))}
}

// accepted is smtpd's client= line, cleanup's message-id= line and
// qmgr's from= line of a message that was just queued: pflogsumm counts
// a message received from the first and takes its size from the last.
func accepted(e event) []line {
	id := e.qid()
	out := []line{{"smtpd", fmt.Sprintf("%s: client=%s", id, e.str("client"))}}
	if login := e.str("sasl_username"); login != "" {
		out[0].text += fmt.Sprintf(", sasl_method=%s, sasl_username=%s", e.str("sasl_method"), login)
	}
	if mid := e.str("message_id"); mid != "" {
		out = append(out, line{"cleanup", fmt.Sprintf("%s: message-id=%s", id, mid)})
	}
	return append(out, queueActive(e))
}

// pickedUp is pickup's uid= line and qmgr's from= line of a message
// queued by local submission (sendmail, postdrop): pflogsumm counts a
// message received from the pickup line as from smtpd's client= line.
func pickedUp(e event) []line {
	return []line{
		{"pickup", fmt.Sprintf("%s: uid=%s from=<%s>", e.qid(), e.str("uid"), e.str("from"))},
		queueActive(e),
	}
}

// reject is smtpd's "NOQUEUE: reject: RCPT from name[addr]: 554 5.7.1
// ...; from=<a> to=<b> proto=ESMTP helo=<h>" line (smtpd_check.c).
func reject(e event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s: %s from %s: %s", e.qid(), rejectKind(e), e.str("command"), e.str("client"), e.str("reply"))
	sep := "; "
	for _, f := range []struct{ name, key string }{{"from", "from"}, {"to", "to"}} {
		if e.has(f.key) {
			fmt.Fprintf(&b, "%s%s=<%s>", sep, f.name, e.str(f.key))
			sep = " "
		}
	}
	if p := e.str("proto"); p != "" {
		fmt.Fprintf(&b, "%sproto=%s", sep, p)
		sep = " "
	}
	if h := e.str("helo"); h != "" {
		fmt.Fprintf(&b, "%shelo=<%s>", sep, h)
	}
	return b.String()
}

// rejectKind is reject, or Postfix's other verdict words when the event
// names one (reject_warning for warn_if_reject, hold, discard).
func rejectKind(e event) string {
	if k := e.str("action"); k != "" {
		return k
	}
	if e.str("event") == "reject_warning" {
		return "reject_warning"
	}
	return "reject"
}

// delivery is the to= line of one recipient outcome, logged as the
// transport that made it (smtp, lmtp, error, discard, retry ...).
func delivery(e event) line {
	prog := e.str("transport")
	if prog == "" || prog == "relay" || prog == "etrn-only" {
		prog = "smtp"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: to=<%s>", e.qid(), e.str("to"))
	if o := e.str("orig_to"); o != "" {
		fmt.Fprintf(&b, ", orig_to=<%s>", o)
	}
	fmt.Fprintf(&b, ", relay=%s, delay=%s", e.str("relay"), delay(e["delay"]))
	if d := e.str("delays"); d != "" {
		fmt.Fprintf(&b, ", delays=%s", d)
	}
	if d := e.str("dsn"); d != "" {
		fmt.Fprintf(&b, ", dsn=%s", d)
	}
	fmt.Fprintf(&b, ", status=%s (%s)", e.str("status"), e.str("reply"))
	return line{prog, b.String()}
}

// tlsSummary is Postfix's one line per TLS session (tls_log_summary at
// *_tls_loglevel 1): "Verified TLS connection established to
// mx[addr]:25: TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128
// bits)", "from client[addr]" for the server.
func tlsSummary(e event, comp string) line {
	dir, peer := "to", e.str("relay")
	if comp == "smtpd" {
		dir, peer = "from", e.str("client")
	}
	return line{tlsProgram(comp), fmt.Sprintf("%s TLS connection established %s %s: %s with cipher %s (%s/%s bits)",
		e.str("tls_trust"), dir, peer, e.str("tls_protocol"), e.str("tls_cipher"), e.str("tls_bits"), e.str("tls_bits"))}
}

// tlsProgram is the Postfix program that logs a component's TLS lines.
func tlsProgram(comp string) string {
	if comp == "delivery" {
		return "smtp"
	}
	return program(comp)
}

// delay formats seconds as Postfix does: two significant digits below
// ten seconds, whole seconds above.
func delay(v any) string {
	f, _ := v.(float64)
	switch {
	case f >= 10:
		return strconv.FormatFloat(f, 'f', 0, 64)
	case f >= 1:
		return strconv.FormatFloat(f, 'f', 1, 64)
	case f >= 0.01:
		return strconv.FormatFloat(f, 'f', 2, 64)
	}
	return strconv.FormatFloat(f, 'g', 2, 64)
}

// notice is bounce's line for a notice queued to the sender.
func notice(e event, kind string) line {
	what := map[string]string{"bounce": "non-delivery notification", "delay_warning": "delay notification",
		"success": "delivery status notification"}[kind]
	return line{"bounce", fmt.Sprintf("%s: sender %s: %s", e.qid(), what, e.str("notice_id"))}
}

// generic renders any other event: "[QID: ][warning: |error: ]message
// name=value ...", as the program that logged it.
func generic(e event, comp string) line {
	var b strings.Builder
	if e.has("queue_id") {
		b.WriteString(e.qid() + ": ")
	}
	switch e.str("level") {
	case "warn":
		b.WriteString("warning: ")
	case "error":
		b.WriteString("error: ")
	case "fatal":
		b.WriteString("fatal: ")
	case "panic":
		b.WriteString("panic: ")
	}
	b.WriteString(e.str("message"))
	if err := e.str("error"); err != "" {
		b.WriteString(": " + err)
	}
	keys := make([]string, 0, len(e))
	for k := range e {
		if !skipFields[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, e.str(k))
	}
	return line{program(comp), strings.TrimSpace(b.String())}
}

// program maps a holdfast component to the Postfix program that does
// its job.
func program(comp string) string {
	switch comp {
	case "":
		return "master"
	case "delivery":
		return "qmgr"
	case "control":
		return "postqueue"
	}
	return comp
}
