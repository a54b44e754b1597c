package delivery

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/store"
)

// The mail transaction (MAIL FROM, RCPT TO, DATA, the content, the final
// dot, RSET, QUIT) is written here on the session's connection, not
// through go-smtp's Client: go-smtp sends each command and waits for its
// reply, which costs four round trips per message. When the server
// announced PIPELINING (RFC 2920), MAIL FROM, every RCPT TO and DATA go in
// one write and the replies are read in order, as Postfix's smtp_proto.c
// (smtp_loop) does: two round trips per message, DATA and the dot.
// Without PIPELINING each command waits for its reply, as before. go-smtp's
// Client still runs the handshake (EHLO or HELO, and EHLO again after
// STARTTLS); see handshake.

// pipeBuf bounds the commands written ahead of their replies, as
// Postfix's PIPELINING_BUFSIZE (VSTREAM_BUFSIZE, 4,096 bytes): a command
// that would take them beyond it waits until the replies to those before
// it are read. A server that stops reading commands while its replies
// are not read can then never block both sides; a batch of 50 recipients
// is usually well under it.
const pipeBuf = 4096

// step is one command of a transaction and, once read, its reply.
type step struct {
	line  string        // the command, without CRLF
	stage string        // for the log: "MAIL FROM", "RCPT TO", "DATA"; after a broken session, the stage it broke in
	wait  time.Duration // how long its reply may take
	want  int           // the reply code that accepts it (textproto's expectCode)
	err   error         // nil: accepted; *smtp.SMTPError: refused; else the session broke
	done  bool          // the reply was read (or the session broke before it)
}

// pipe runs the steps of one transaction on cn: it buffers commands and
// reads their replies in order.
type pipe struct {
	d     *Scheduler
	cn    *conn
	steps []step
	sent  int // steps written to cn.w (not necessarily flushed)
	read  int // steps whose reply was read
	ahead int // bytes of the commands sent and not yet answered
}

// send buffers the next step's command. With PIPELINING, it first reads
// the replies owed when the command would take the unanswered commands
// beyond pipeBuf; it reports false when the session broke doing so.
func (p *pipe) send() bool {
	s := &p.steps[p.sent]
	if p.cn.pipelining && p.ahead > 0 && p.ahead+len(s.line)+2 > pipeBuf {
		if !p.catchUp() {
			return false
		}
	}
	p.cn.w.WriteString(s.line)
	p.cn.w.WriteString("\r\n")
	p.sent++
	p.ahead += len(s.line) + 2
	return true
}

// catchUp flushes what is buffered and reads every reply owed. It reports
// false when the session broke: every step without a reply then carries
// the error, and the connection is marked broken.
func (p *pipe) catchUp() bool {
	for p.read < p.sent {
		if !p.recv() {
			return false
		}
	}
	p.ahead = 0
	return true
}

// recv reads the reply to the next step, flushing the commands first
// under the same deadline (Postfix: the stream's timeout is the reply's).
// A reply that ends the session (421, RFC 5321 sec 3.8) stands for every
// step after it too.
func (p *pipe) recv() bool {
	cn, s := p.cn, &p.steps[p.read]
	if cn.owed != nil {
		// The end-of-data reply owed to the attempt that handed the
		// session over comes first (handoff.go). When the session broke
		// there, this transaction was never answered: it is lost at MAIL
		// FROM, as on a session that broke before the first reply.
		if err := p.d.settle(cn); err != nil {
			p.breakAll(err)
			return false
		}
	}
	cn.netc.SetDeadline(time.Now().Add(s.wait))
	err := cn.w.Flush()
	if err == nil {
		s.err = cn.reply(s.want)
	} else {
		s.err = err
	}
	s.done = true
	p.read++
	if !cn.brokenBy(s.err) {
		return true
	}
	p.read--
	p.breakAll(s.err)
	return false
}

// breakAll gives every step from the next one to be read on the error
// err that broke the session, and the stage it broke in.
func (p *pipe) breakAll(err error) {
	stage := p.steps[p.read].stage
	for i := p.read; i < len(p.steps); i++ {
		p.steps[i].err, p.steps[i].stage, p.steps[i].done = err, stage, true
	}
	p.read = len(p.steps)
}

// reply reads one reply; a code other than want is an *smtp.SMTPError
// (parseReply), a broken session any other error.
func (cn *conn) reply(want int) error {
	code, msg, err := cn.r.ReadResponse(want)
	if err == nil {
		return nil
	}
	if code == 0 {
		return err
	}
	return parseReply(code, msg)
}

// brokenBy marks cn broken unless err is nil or an SMTP reply after which
// the session goes on (any but 421).
func (cn *conn) brokenBy(err error) bool {
	if err == nil {
		return false
	}
	if se, ok := err.(*smtp.SMTPError); ok && se.Code != 421 {
		return false
	}
	cn.broken = true
	return true
}

// transfer runs one mail transaction for the recipients rcpts of m: MAIL
// FROM, one RCPT TO each (one recipient's reply affects only that
// recipient), DATA, and the content when at least one was accepted. It
// returns one result per recipient, in order; handed is content's.
func (d *Scheduler) transfer(cn *conn, m *store.Message, rcpts []int, utf8 bool) (out []result, handed bool) {
	to := &cn.t.cf.Timeouts
	p := &pipe{d: d, cn: cn, steps: make([]step, 0, len(rcpts)+2)}
	p.steps = append(p.steps, step{line: cn.mailLine(m, utf8), stage: "MAIL FROM", wait: to.Mail, want: 2})
	for _, ri := range rcpts {
		p.steps = append(p.steps, step{line: cn.rcptLine(&m.Recipients[ri]), stage: "RCPT TO", wait: to.Rcpt, want: 2})
	}
	// RFC 2920 sec 3.1: DATA ends the group; its 354 is waited for.
	p.steps = append(p.steps, step{line: "DATA", stage: "DATA", wait: to.DataInit, want: 354})
	if cn.owed != nil {
		p.ahead = len(".\r\n") // the dot before MAIL FROM waits for its reply too
	}
	defer func() {
		if !handed { // else the deadlines are the next attempt's
			cn.netc.SetDeadline(time.Time{})
		}
	}()
	accepted := d.envelope(p)
	out = make([]result, len(rcpts))
	mail, data := &p.steps[0], &p.steps[len(p.steps)-1]
	if mail.err != nil {
		cn.lostAtMail = cn.broken
		r := classify(mail.err, cn.t, "MAIL FROM", d.o.SoftBounce)
		for i := range out {
			out[i] = r
		}
		d.abandon(p)
		return out, false
	}
	var ok []int
	for i := range rcpts {
		s := &p.steps[1+i]
		if s.err != nil {
			out[i] = classify(s.err, cn.t, s.stage, d.o.SoftBounce)
		} else {
			ok = append(ok, i)
		}
	}
	if len(ok) == 0 {
		d.abandon(p)
		return out, false
	}
	if !accepted {
		r := classify(data.err, cn.t, data.stage, d.o.SoftBounce)
		for _, i := range ok {
			out[i] = r
		}
		d.abandon(p)
		return out, false
	}
	return out, d.content(cn, m, ok, out)
}

// envelope sends the steps of p and reads their replies. With PIPELINING
// all go in one write (pipeBuf permitting); without, each waits for its
// reply, MAIL FROM refused ends the transaction, and DATA is not sent
// when no recipient was accepted. It reports whether DATA got its 354.
func (d *Scheduler) envelope(p *pipe) bool {
	last := len(p.steps) - 1
	for p.sent < last {
		if !p.send() {
			return false
		}
		if !p.cn.pipelining {
			if !p.recv() || (p.sent == 1 && p.steps[0].err != nil) {
				return false
			}
		}
	}
	if !p.cn.pipelining && !anyAccepted(p.steps[1:last]) {
		return false
	}
	if !p.send() || !p.catchUp() {
		return false
	}
	return p.steps[last].err == nil
}

// anyAccepted: one of the RCPT steps got a 2xx.
func anyAccepted(rcpts []step) bool {
	for i := range rcpts {
		if rcpts[i].done && rcpts[i].err == nil {
			return true
		}
	}
	return false
}

// abandon ends a transaction that carries no content. When DATA got its
// 354 (a server that took DATA although MAIL FROM or every recipient was
// refused), a lone dot ends it (RFC 2920 sec 3.1, as Postfix's
// smtp_loop); otherwise RSET, except without PIPELINING after a refused
// MAIL FROM, where no transaction began. A failure ends the session.
func (d *Scheduler) abandon(p *pipe) {
	cn := p.cn
	if cn.broken {
		return
	}
	data := &p.steps[len(p.steps)-1]
	to := &cn.t.cf.Timeouts
	line, wait := "RSET", to.Rset
	switch {
	case data.done && data.err == nil:
		line, wait = ".", to.DataDone
	case !cn.pipelining && p.steps[0].err != nil:
		return
	}
	cn.netc.SetDeadline(time.Now().Add(wait))
	cn.w.WriteString(line)
	cn.w.WriteString("\r\n")
	err := cn.w.Flush()
	if err == nil {
		err = cn.reply(2)
	}
	if err != nil && (line == "RSET" || cn.brokenBy(err)) {
		cn.broken = true
	}
}

// content sends the content and the final dot after DATA's 354 and reads
// the outcome: one reply for SMTP, one per accepted recipient for LMTP
// (RFC 2033 sec 4.2). ok are the positions of the accepted recipients in
// out. Over SMTP with PIPELINING, when another attempt waits for a
// session of the hop, the session goes to it with the dot unflushed and
// its reply owed (handoff.go): handed reports that, and the outcome is
// the one that attempt read.
func (d *Scheduler) content(cn *conn, m *store.Message, ok []int, out []result) (handed bool) {
	to := &cn.t.cf.Timeouts
	dw := &dotWriter{w: cn.w}
	// smtp_data_xfer_timeout bounds each write, as Postfix's limit per
	// write call: a large message on a slow link goes on while it moves.
	if r := d.writeBody(cn, dw, m.ID, to.DataXfer); r != nil {
		for _, i := range ok {
			out[i] = *r
		}
		return false
	}
	cn.netc.SetWriteDeadline(time.Now().Add(to.DataXfer))
	var r result
	switch {
	case cn.t.lmtp:
		if err := dw.Close(); err != nil { // the dot, flushed
			r = d.dotLost(cn, err)
			break
		}
		d.lmtpReplies(cn, ok, out)
		return false
	default:
		dw.end() // the dot, flushed by settle or by the next attempt
		o := &owed{done: make(chan result, 1)}
		cn.owed = o
		if handed = cn.pipelining && cn.pool != nil && cn.pool.handOff(cn); !handed {
			d.settle(cn)
		}
		r = <-o.done
	}
	for _, i := range ok {
		out[i] = r
	}
	return handed
}

// dotLost is the outcome of a transaction whose content or final dot
// could not be written: the session ends.
func (d *Scheduler) dotLost(cn *conn, err error) result {
	cn.broken = true
	return classify(err, cn.t, "sending message body", true)
}

// endOfData reads one reply to the final dot: delivered, refused, or
// lost (the session is out of step and ends).
func (d *Scheduler) endOfData(cn *conn) result {
	r, _ := d.dataReply(cn)
	return r
}

// dataReply is endOfData, and the error that broke the session (nil
// when it goes on).
func (d *Scheduler) dataReply(cn *conn) (result, error) {
	cn.netc.SetReadDeadline(time.Now().Add(cn.t.cf.Timeouts.DataDone))
	code, msg, err := cn.r.ReadResponse(2)
	switch {
	case err == nil:
		r := classify(&smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: msg}, cn.t, "end of DATA", false)
		// A next hop without DSN cannot honour NOTIFY=SUCCESS: the
		// notice ("relayed") is ours to send (RFC 3461 sec 5.2.3, as
		// Postfix).
		r.Relayed = !cn.dsn
		return r, nil
	case code != 0:
		se := parseReply(code, msg)
		r := classify(se, cn.t, "end of DATA", d.o.SoftBounce)
		if cn.brokenBy(se) {
			return r, se
		}
		return r, nil
	}
	cn.broken = true
	return classify(err, cn.t, "end of DATA", true), err
}

// mailLine is the MAIL FROM command with its parameters: BODY=8BITMIME
// and SIZE (RFC 6152, RFC 1870) when announced, SMTPUTF8 (RFC 6531) when
// utf8, RET and ENVID (RFC 3461 sec 4.3, 4.4) when DSN was announced.
func (cn *conn) mailLine(m *store.Message, utf8 bool) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<")
	b.WriteString(m.Sender)
	b.WriteByte('>')
	if cn.eightBit {
		b.WriteString(" BODY=8BITMIME")
	}
	if cn.hasSize && m.Size > 0 {
		b.WriteString(" SIZE=")
		b.WriteString(strconv.FormatInt(m.Size, 10))
	}
	if utf8 {
		b.WriteString(" SMTPUTF8")
	}
	if cn.dsn {
		switch m.Ret {
		case store.RetFull:
			b.WriteString(" RET=FULL")
		case store.RetHdrs:
			b.WriteString(" RET=HDRS")
		}
		if m.EnvID != "" && printable(m.EnvID) {
			b.WriteString(" ENVID=")
			b.WriteString(xtext(m.EnvID))
		}
	}
	return b.String()
}

// rcptLine is the RCPT TO command with NOTIFY and ORCPT (RFC 3461 sec
// 4.1, 4.2) when the server announced DSN.
func (cn *conn) rcptLine(r *store.Recipient) string {
	var b strings.Builder
	b.WriteString("RCPT TO:<")
	b.WriteString(r.Addr)
	b.WriteByte('>')
	if !cn.dsn {
		return b.String()
	}
	if n := notify(r.Notify); n != "" {
		b.WriteString(" NOTIFY=")
		b.WriteString(n)
	}
	if typ, addr, ok := strings.Cut(r.Orig, ";"); ok && strings.EqualFold(typ, "rfc822") && printable(addr) && addr != "" {
		b.WriteString(" ORCPT=rfc822;")
		b.WriteString(xtext(addr))
	}
	return b.String()
}

// notify is the NOTIFY value of a recipient's DSN request, "" for none.
func notify(n store.Notify) string {
	if n&store.NotifyNever != 0 {
		return "NEVER"
	}
	var v []string
	if n&store.NotifySuccess != 0 {
		v = append(v, "SUCCESS")
	}
	if n&store.NotifyFailure != 0 {
		v = append(v, "FAILURE")
	}
	if n&store.NotifyDelay != 0 {
		v = append(v, "DELAY")
	}
	return strings.Join(v, ",")
}

// xtext encodes s as RFC 3461 sec 4 xtext: "+" followed by two upper-case
// hex digits for "+", "=" and every byte outside "!".."~".
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '!' && c <= '~' && c != '+' && c != '=' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "+%02X", c)
	}
	return b.String()
}

// writeBody streams the content of message id from the store to w (the
// DATA dot writer). A failure ends the connection: from the store it is a
// local 4.3.0 (the transfer is abandoned without its final dot, so the
// next hop takes nothing), from the network the classified error.
func (d *Scheduler) writeBody(cn *conn, w io.Writer, id store.ID, xfer time.Duration) *result {
	pw := &paced{w: w, conn: cn.netc, xfer: xfer}
	_, err := d.s.BodyReader(id).WriteTo(pw)
	if err == nil {
		return nil
	}
	cn.broken = true
	if pw.err == nil { // the store, not the network
		cn.netc.Close()
		r := local(store.RcptPending, "4.3.0", "queue file read error")
		return &r
	}
	r := classify(err, cn.t, "sending message body", true)
	return &r
}

// dotWriter writes the content of DATA (RFC 5321 sec 4.5.2): a dot that
// begins a line is doubled, every line ends with CRLF, and Close ends the
// last line when it is open and sends the final dot. It copies the
// content a line at a time (net/textproto's dot writer handles it a byte
// at a time: 55 MB/s on the test machine, 19 ms of CPU per MB). A bare CR
// or LF, which the store does not hold (smtpd queues them as CRLF), goes
// out as CRLF too, so that no line end a next hop might take for one
// reaches it unpaired.
type dotWriter struct {
	w   *bufio.Writer
	mid bool // inside a line: a dot now is not at its start
	cr  bool // a CR was read and held back: CRLF goes out either way
}

// Write implements io.Writer.
func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.cr {
			d.cr, d.mid = false, false
			d.w.WriteString("\r\n")
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		if !d.mid && p[0] == '.' {
			d.w.WriteByte('.')
		}
		d.mid = true
		// The line's end, and a CR before it: the CR of its CRLF, or a
		// bare one (both searches run at memchr speed).
		i := bytes.IndexByte(p, '\n')
		line := p
		if i >= 0 {
			line = p[:i]
		}
		j := bytes.IndexByte(line, '\r')
		switch {
		case j >= 0 && j < len(line)-1: // a bare CR
			d.w.Write(p[:j])
			d.cr, p = true, p[j+1:]
		case i < 0: // the line goes on in the next write
			if j >= 0 {
				d.w.Write(p[:j])
				d.cr = true
			} else {
				d.w.Write(p)
			}
			p = nil
		default: // CRLF, or a bare LF
			if j >= 0 {
				line = line[:j]
			}
			d.w.Write(line)
			d.w.WriteString("\r\n")
			d.mid, p = false, p[i+1:]
		}
	}
	if _, err := d.w.Write(nil); err != nil { // bufio's error is sticky
		return 0, err
	}
	return n, nil
}

// Close ends an open last line and sends the final dot, flushed.
func (d *dotWriter) Close() error {
	d.end()
	return d.w.Flush()
}

// end ends an open last line and buffers the final dot.
func (d *dotWriter) end() {
	if d.cr || d.mid {
		d.w.WriteString("\r\n")
	}
	d.w.WriteString(".\r\n")
}
