package delivery

import (
	"errors"
	"fmt"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/store"
)

// dataLMTP sends DATA, the content and the final dot over an LMTP session
// and reads one reply per accepted recipient (RFC 2033 sec 4.2): each
// recipient gets its own outcome, delivered, deferred or bounced. ok are
// the positions in rcpts of the recipients the server accepted; the
// result has one entry per element of ok. A recipient whose reply never
// came (lost connection, timeout) is deferred.
func (d *Scheduler) dataLMTP(cn *conn, m *store.Message, rcpts, ok []int) []result {
	to := &cn.t.cf.Timeouts
	out := make([]result, len(ok))
	all := func(r result) []result {
		for i := range out {
			out[i] = r
		}
		return out
	}
	cn.c.CommandTimeout = to.DataInit
	w, err := cn.c.Data()
	if err != nil {
		d.brokenUnlessReply(cn, err)
		return all(classify(err, cn.t, "DATA", d.o.SoftBounce))
	}
	if r := d.writeBody(cn, w, m.ID, to.DataXfer); r != nil {
		return all(*r)
	}
	cn.c.SubmissionTimeout = to.DataDone
	resp, err := w.CloseWithLMTPResponse()
	var perRcpt smtp.LMTPDataError
	errors.As(err, &perRcpt)
	// Replies that never came: the session is out of step and ends.
	lost := transient(cn.t, "4.4.2", fmt.Sprintf("lost connection with %s[%s] while %s", cn.t.Name, cn.t.ip(), sending("end of DATA")))
	if isTimeout(err) {
		lost = transient(cn.t, "4.4.2", fmt.Sprintf("conversation with %s[%s] timed out while %s", cn.t.Name, cn.t.ip(), sending("end of DATA")))
	}
	if len(resp)+len(perRcpt) < len(cn.lmtpAddrs(m, rcpts, ok)) {
		cn.broken = true
	}
	for k, i := range ok {
		addr := m.Recipients[rcpts[i]].Addr
		switch {
		case resp[addr] != nil:
			out[k] = classify(&smtp.SMTPError{Code: 250, EnhancedCode: smtp.NoEnhancedCode, Message: resp[addr].StatusText}, cn.t, "end of DATA", false)
			out[k].Relayed = !cn.dsn
		case perRcpt[addr] != nil:
			out[k] = classify(perRcpt[addr], cn.t, "end of DATA", d.o.SoftBounce)
		default:
			out[k] = lost
		}
	}
	return out
}

// lmtpAddrs is the set of distinct accepted addresses: the server sends
// one reply per successful RCPT, go-smtp keys them by address.
func (cn *conn) lmtpAddrs(m *store.Message, rcpts, ok []int) map[string]bool {
	set := make(map[string]bool, len(ok))
	for _, i := range ok {
		set[m.Recipients[rcpts[i]].Addr] = true
	}
	return set
}
