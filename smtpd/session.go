package smtpd

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/accept"
	"github.com/holdfast-mta/holdfast/internal/tlscert"
	"github.com/holdfast-mta/holdfast/store"
)

// session is one SMTP connection. Its state is plain fields; reset clears
// the mail transaction.
type session struct {
	srv  *Server
	cfg  *conf // the configuration in force when the session began (Reload)
	conn net.Conn
	raw  net.Conn // the TCP connection under TLS
	r    *bufio.Reader
	w    *bufio.Writer
	log  zerolog.Logger
	id   string

	client  netip.Addr
	port    string // client port
	namaddr string // name[192.0.2.1]
	rfcAddr string // 192.0.2.1 or IPv6:2001:db8::1 (Received:)
	// name is the client's forward-confirmed name, reverseName its
	// address's name (lookupPeer); "unknown" when there is none.
	name, reverseName         string
	nameStatus, reverseStatus peerStatus

	// illPipelining: the client sent a command ahead of a reply where
	// RFC 2920 does not allow it (reject_unauth_pipelining).
	illPipelining bool
	// denied is the reply of smtpd_client_restrictions at connect
	// (smtpd_delay_reject = no); later commands are refused.
	denied *smtp.SMTPError
	// deferClient and deferHelo are the defer_if_permit replies the
	// client and helo stages left when they ran at connect and HELO
	// (smtpd_delay_reject = no), applied at RCPT and ETRN.
	deferClient, deferHelo *smtp.SMTPError

	helo  string // HELO/EHLO argument, "" before
	esmtp bool
	tls   bool
	// tlsState is the TLS session after STARTTLS, for Received:.
	tlsState *tls.ConnectionState

	tx *transaction // nil outside a mail transaction

	sasl saslState // AUTH (auth.go)

	errors int
	junk   int
	// counts per command for the disconnect log: ok / total.
	counts [numCounted][2]int

	rejected string // why policy ended the session (metrics), "" if not

	// bare is smtpd_forbid_bare_newline for this client (no for
	// smtpd_forbid_bare_newline_exclusions); noteBareLF records a bare
	// LF seen under note, for the disconnect log (Postfix's
	// notes=bare_lf).
	bare       BareNewline
	noteBareLF bool

	idle atomic.Bool // waiting for a command (Shutdown may interrupt)

	// io sets the connection's deadlines (smtpd_timeout,
	// smtpd_per_request_deadline, smtpd_min_data_rate, the transaction
	// deadline) and holds the limits in force for the current request.
	io deadlines
	// exempt: the client is in smtpd_client_event_limit_exceptions, so
	// the per-client limits do not apply.
	exempt bool
	// where is the last command's verb, "CONNECT" before any (logs).
	where string
	// out is where reply renders a reply before it is queued.
	out []byte
	buf *buffers // r, w and out, from buffersPool
}

// transaction is the state between MAIL and the end of DATA (or RSET).
type transaction struct {
	authSeen  bool // MAIL had an AUTH= parameter (RFC 4954 sec 5)
	from      string
	rcpts     []store.Recipient
	size      int64 // SIZE= declared
	body8bit  bool
	smtputf8  bool
	ret       store.Ret
	envid     string
	overshoot int
	// BDAT (RFC 3030): the message being assembled, its ID and arrival
	// time, the data size so far, and the failure that makes the rest of
	// the transfer be skipped.
	spool    *accept.Draft // the content, from DATA or the first BDAT
	content  *content      // writes spool (BDAT)
	id       store.ID
	arrival  time.Time
	bdatSize int64
	bdatFail *smtp.SMTPError
	// hold and discard are access-table results (HOLD, DISCARD): the
	// message goes to the hold queue, or is accepted and dropped.
	hold, discard bool
	// deferSender is the sender stage's defer_if_permit when it ran at
	// MAIL (smtpd_delay_reject = no).
	deferSender *smtp.SMTPError
}

func newSession(s *Server, cfg *conf, c net.Conn, ip netip.Addr) *session {
	sess := &session{
		srv: s, cfg: cfg, conn: c, raw: c, id: s.newID(), client: ip,
		name: "unknown", reverseName: "unknown", nameStatus: peerPerm, reverseStatus: peerPerm,
	}
	sess.io.s = sess
	sess.where = "CONNECT"
	sess.io.begin(false)
	b := buffersPool.Get().(*buffers)
	b.r.Reset(&sess.io)
	b.w.Reset(&sess.io)
	sess.buf, sess.r, sess.w, sess.out = b, b.r, b.w, b.out[:0]
	sess.namaddr = newNamaddr(sess.name, ip)
	if _, port, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		sess.port = port
	}
	sess.rfcAddr = ip.String()
	if ip.Is6() {
		sess.rfcAddr = "IPv6:" + ip.String()
	}
	sess.log = s.log.With().Str("conn_id", sess.id).Str("remote", ip.String()).Logger()
	return sess
}

// buffers are a session's reader, writer, reply buffer and peeker, kept for the
// next session when one ends: less to allocate and clear per
// connection. The reader holds 4 KiB, as Postfix's VSTREAM_BUFSIZE: a
// small message's content then comes in one read more often than not
// (6.6 reads per message against 7.8 with 1 KiB).
type buffers struct {
	r    *bufio.Reader
	w    *bufio.Writer
	out  []byte
	peek peeker
}

var buffersPool = sync.Pool{New: func() any {
	return &buffers{r: bufio.NewReaderSize(nil, 4096), w: bufio.NewWriterSize(nil, 1024)}
}}

// release gives the session's buffers back once it has ended (run
// returned): nothing reads or writes through them after that.
func (s *session) release() {
	b := s.buf
	s.buf, s.r, s.w = nil, nil, nil
	b.r.Reset(nil)
	b.w.Reset(nil)
	b.peek.rc = nil
	if cap(s.out) <= 4096 {
		b.out = s.out[:0]
	}
	s.out = nil
	buffersPool.Put(b)
}

// reset ends the transaction; a content being spooled is dropped.
func (s *session) reset() {
	if s.tx != nil && s.tx.spool != nil {
		s.tx.spool.Abort()
	}
	s.tx = nil
}

// interruptIdle makes a session that waits for a command notice Shutdown.
func (s *session) interruptIdle() {
	if s.idle.Load() {
		s.io.stale.Store(true)
		s.raw.SetReadDeadline(time.Now())
	}
}

// run is the one loop: greet, then read a command, dispatch it, reply
// and do what its action says, until QUIT, an error limit, a timeout,
// shutdown or a lost connection.
func (s *session) run() {
	s.lookupPeer()
	s.namaddr = newNamaddr(s.name, s.client)
	s.log.Info().Str("event", "connect").Str("client_name", s.name).Msg("connect from " + s.namaddr)
	reason := ""
	defer func() {
		s.authEnd()
		s.reset()
		s.flush()
		counts := s.countString()
		ev := s.log.Info().Str("event", "disconnect").Str("counts", counts)
		if reason != "" {
			ev = ev.Str("reason", reason)
		}
		if s.noteBareLF {
			ev = ev.Str("notes", "bare_lf")
		}
		ev.Msg("disconnect from " + s.namaddr + " " + counts)
	}()
	var stop bool
	if reason, stop = s.greet(); stop {
		return
	}
	for {
		if reason, stop = s.command(); stop {
			return
		}
	}
}

// greet sends the greeting, or the reply that replaces it
// (smtpd_client_restrictions at connect time, as in Postfix; a 421 ends
// the session, as after any command); a client that talks before the
// greeting violates RFC 5321 sec 4.3.1, and Postfix's
// smtpd_forbid_unauth_pipelining disconnects it (stop).
func (s *session) greet() (reason string, stop bool) {
	o := &s.cfg.opts
	if (o.ForbidUnauthPipelining || s.cfg.pipeCheck) && s.kernelPending() {
		s.illPipelining = true
	}
	if o.ForbidUnauthPipelining && s.illPipelining {
		reason, s.rejected = "improper command pipelining after CONNECT", "pipelining"
		s.log.Info().Msg(reason)
		s.reply(replyPipelining)
		return reason, true
	}
	s.bare = o.BareNewline
	if o.BareNewlineExclusions != nil && o.BareNewlineExclusions.Contains(s.client) {
		s.bare = BareNewlineNo
	}
	if r := s.checkConnect(); r != nil {
		s.denied = r // replaces the greeting, as in Postfix
		s.logReject("CONNECT", r, "")
		s.reply(r)
		s.errors++
		return s.perform(after(r, actNext))
	}
	s.reply(replyGreeting(o.Banner))
	return "", false
}

// command reads and dispatches one command and does what its action
// says, unless the session ends first: the error limit, shutdown, a read
// that failed, a bare LF.
func (s *session) command() (reason string, stop bool) {
	// Each command is a new request: its deadline, and the limits of
	// the stress state now (Postfix: smtp_stream_setup in the loop).
	s.io.begin(false)
	if s.tx == nil {
		s.io.txEnd = time.Time{}
	}
	if s.errors >= s.io.lim.HardErrorLimit {
		s.rejected = "errors"
		s.reply(replyTooManyErrors(s.cfg.opts.Hostname))
		return "too many errors", true
	}
	if s.srv.sessions.Closing() {
		s.reply(replyShutdown)
		return "shutdown", true
	}
	line, bareLF, err := s.readCommand()
	if err != nil {
		return s.perform(readFailed(err))
	}
	if bareLF && s.bareCommand() {
		return "", true
	}
	s.log.Debug().Str("in", redactAuth(line)).Msg("command")
	a := s.dispatch(line)
	s.txClock()
	return s.perform(a)
}

// txClock starts smtpd_transaction_deadline's clock when a transaction
// is open and has none yet.
func (s *session) txClock() {
	if s.tx != nil && s.io.txEnd.IsZero() && s.io.lim.TransactionDeadline > 0 {
		s.io.txEnd = time.Now().Add(s.io.lim.TransactionDeadline)
	}
}

// perform does what a command's action says once its reply is queued:
// read the content after 354, carry an AUTH exchange on, start TLS, or
// end the session (stop: hang up after QUIT or a 421, a read that
// failed inside the command).
func (s *session) perform(a action) (reason string, stop bool) {
	switch a {
	case actContent:
		return s.content()
	case actExchange:
		return s.exchange()
	case actStartTLS:
		return s.startTLS()
	case actHangUp:
		return "", true
	case actTimeout:
		return s.timedOut(), true
	case actLost:
		return "lost connection", true
	}
	return "", false
}

// readFailed is the action for a read that failed: a timeout (or
// shutdown: errShutdown is one) or a lost connection.
func readFailed(err error) action {
	if isTimeout(err) {
		return actTimeout
	}
	return actLost
}

// timedOut ends the session after a read timed out: 421, or the
// shutdown's 421 when the server is closing. The reply gets a request's
// time of its own, as in Postfix.
func (s *session) timedOut() (reason string) {
	why := s.io.why
	s.io.begin(false)
	if s.srv.sessions.Closing() {
		s.reply(replyShutdown)
		return "shutdown"
	}
	s.reply(replyTimeout(s.cfg.opts.Hostname))
	if why == "" {
		why = "timeout"
	}
	s.log.Info().Str("reason", why).Msgf("%s after %s from %s", why, s.where, s.namaddr)
	return why
}

// content reads the message content after DATA's 354 and answers it; a
// failure is counted against the DATA command and as an error.
func (s *session) content() (reason string, stop bool) {
	s.io.begin(true)
	r, err := s.receive()
	if err != nil {
		return s.perform(readFailed(err))
	}
	if r.Code >= 400 {
		s.counts[cntData][0]--
		s.logReject("DATA", r, "")
		s.replyErr(r)
	} else {
		s.reply(r)
	}
	return s.perform(after(r, actNext))
}

// exchange reads the client's responses of an AUTH exchange until it
// ends; the AUTH command is counted then, with its final reply.
func (s *session) exchange() (reason string, stop bool) {
	for {
		line, _, err := s.readCommand()
		if err != nil {
			s.authEnd()
			return s.perform(readFailed(err))
		}
		r, a := s.authContinue(line)
		if a == actExchange {
			s.reply(r)
			continue
		}
		s.countCmd(cntAuth, r.Code < 400)
		if r.Code >= 400 {
			s.replyErr(r)
		} else {
			s.reply(r)
		}
		return s.perform(after(r, a))
	}
}

// startTLS runs the handshake after STARTTLS's 220. A new (not resumed)
// TLS session counts against smtpd_client_new_tls_session_rate_limit;
// over it the session ends (Postfix: the real protection is STARTTLS's
// check before the handshake, this one is for "human factors").
func (s *session) startTLS() (reason string, stop bool) {
	st, err := s.handshake()
	if err != nil {
		s.log.Info().Err(err).Msg("TLS handshake failed")
		return "TLS handshake failed", true
	}
	if !st.DidResume && s.overRate(evNewTLS, s.io.lim.ClientNewTLSRateLimit, "New TLS session") {
		s.reply(replyTooManyTLSHangup(s.cfg.opts.Hostname, s.namaddr))
		s.rejected = "tls_rate_from_client"
		return "", true
	}
	return "", false
}

// readCommand reads one command line. Replies are flushed first when the
// client's input is drained (RFC 2920 sec 3.1: pipelined replies are
// sent when the server would otherwise wait). A line longer than
// line_length_limit is cut there and the rest skipped, as Postfix does.
// bareLF reports that the line ended in a bare LF.
func (s *session) readCommand() (line string, bareLF bool, err error) {
	if s.w.Buffered() > 0 && !s.lineBuffered() {
		if err := s.flush(); err != nil {
			return "", false, err
		}
	}
	s.idle.Store(true)
	defer s.idle.Store(false)
	if s.srv.sessions.Closing() && s.r.Buffered() == 0 {
		return "", false, errShutdown
	}
	limit := s.cfg.opts.LineLengthLimit
	var buf []byte
	var last byte
	for {
		chunk, err := s.r.ReadSlice('\n')
		if err == nil && buf == nil && len(chunk) <= limit {
			// The whole line in the buffer (most commands): no copy
			// before the string.
			n := len(chunk)
			bareLF = !(n >= 2 && chunk[n-2] == '\r')
			return string(bytes.TrimRight(chunk, "\r\n")), bareLF, nil
		}
		if len(buf) < limit {
			n := min(len(chunk), limit-len(buf))
			buf = append(buf, chunk[:n]...)
		}
		if err == bufio.ErrBufferFull {
			last = chunk[len(chunk)-1]
			continue
		}
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", false, err
		}
		n := len(chunk)
		bareLF = !(n >= 2 && chunk[n-2] == '\r' || n == 1 && last == '\r')
		break
	}
	buf = bytes.TrimRight(buf, "\r\n")
	return string(buf), bareLF, nil
}

// bareCommand handles a command line that ended in a bare LF: under
// smtpd_forbid_bare_newline = reject it is answered with Postfix's reply
// and the session ends (true); under note it is remembered for the log.
func (s *session) bareCommand() bool {
	switch s.bare {
	case BareNewlineNote:
		s.noteBareLF = true
	case BareNewlineReject:
		r := replyBareLF(s.cfg.opts.BareNewlineRejectCode, s.cfg.opts.Hostname)
		s.log.Info().Str("event", "reject").Str("reply", strings.TrimRight(formatReply(r), "\r\n")).
			Str("client", s.namaddr).Msg("reject: bare <LF> received")
		s.reply(r)
		return true
	}
	return false
}

type shutdownErr struct{}

func (shutdownErr) Error() string   { return "shutting down" }
func (shutdownErr) Timeout() bool   { return true }
func (shutdownErr) Temporary() bool { return true }

var errShutdown net.Error = shutdownErr{}

// dispatch runs one command line through the command table, queues the
// reply and returns what the session does next: the table's checks
// (parse, pipeliningRefused, precondition), the handler, then the
// accounting (account).
func (s *session) dispatch(line string) action {
	verb, arg := splitCommand(line)
	cmd, r := s.parse(line, verb)
	if cmd == nil {
		s.countCmd(cntUnknown, false)
		s.replyErr(r)
		return actNext
	}
	if s.pipeliningRefused(cmd) {
		s.countCmd(cmd.counted, false)
		s.reply(replyPipelining)
		s.rejected = "pipelining"
		return actHangUp
	}
	r, a := s.precondition(cmd), actNext
	if r == nil {
		r, a = cmd.handle(s, arg)
	}
	switch {
	case r == nil: // a read inside the command failed (BDAT's data)
		return a
	case a == actExchange: // AUTH goes on: counted when it ends
		s.reply(r)
		return a
	}
	s.account(cmd, verb, arg, r, a == actExcused)
	return after(r, a)
}

// after is what the session does after reply r of a command that asked
// for a: a 421 ends the session whatever the command asked (RFC 5321 sec
// 3.8; Postfix's smtpd_chat_reply), an excused refusal goes on.
func after(r *smtp.SMTPError, a action) action {
	switch {
	case r.Code == 421:
		return actHangUp
	case a == actExcused:
		return actNext
	}
	return a
}

// parse finds the command of a line, or the reply to a line that is not
// one (bad syntax, not UTF-8, unknown verb).
func (s *session) parse(line, verb string) (*command, *smtp.SMTPError) {
	switch {
	case verb == "":
		return nil, replyBadSyntax
	case !utf8.ValidString(line):
		return nil, replyBadUTF8
	}
	cmd := lookupCommand(verb)
	s.where = "UNKNOWN"
	if cmd == nil {
		return nil, replyUnknownCmd
	}
	s.where = cmd.verb
	return cmd, nil
}

// pipeliningRefused notes improper pipelining (RFC 2920 sec 3.1,
// Postfix's SMTPD_FLAG_ILL_PIPELINING; looked for only when something
// acts on it) and reports whether smtpd_forbid_unauth_pipelining ends
// the session for it.
func (s *session) pipeliningRefused(cmd *command) bool {
	o := &s.cfg.opts
	if (o.ForbidUnauthPipelining || s.cfg.pipeCheck) && !s.illPipelining && cmd.verb != "QUIT" &&
		(!s.esmtp || !cmd.group) && s.inputPending() {
		s.illPipelining = true
		s.log.Info().Str("command", cmd.verb).Msg("improper command pipelining")
	}
	return o.ForbidUnauthPipelining && s.illPipelining && cmd.verb != "QUIT"
}

// precondition is the command table's answer before the handler runs
// (access, TLS first, HELO required, BDAT in progress, transaction in
// progress), or nil.
func (s *session) precondition(cmd *command) *smtp.SMTPError {
	o := &s.cfg.opts
	if denied := s.accessDenied(cmd.verb); denied != nil {
		return denied
	}
	switch {
	case o.EnforceTLS && !s.tls && !cmd.preTLS:
		return replyTLSFirst
	case cmd.needHelo != nil && o.HeloRequired && s.helo == "":
		return cmd.needHelo
	case cmd.afterBdat != nil && s.tx.inBdat():
		return cmd.afterBdat
	case cmd.noTxn != nil && s.tx != nil:
		return cmd.noTxn
	}
	return nil
}

// account sends a command's reply and counts it: the disconnect-log
// counters, the error count, the reject log line and the junk commands
// (Postfix's SMTPD_CMD_FLAG_LIMIT: past the limit each one also counts
// as an error). An excused refusal is neither an error nor a reject.
func (s *session) account(cmd *command, verb, arg string, r *smtp.SMTPError, excused bool) {
	failed := r.Code >= 400 && !excused
	s.countCmd(cmd.counted, r.Code < 400)
	s.reply(r)
	if failed {
		s.errors++
	}
	if failed && r.Code < 600 {
		s.logReject(verb, r, arg)
	}
	if cmd.junk {
		if s.junk > s.io.lim.JunkCommandLimit {
			s.errors++
		}
		s.junk++
	}
}

// replyErr replies and counts an error (dispatcher-level failures).
func (s *session) replyErr(r *smtp.SMTPError) {
	s.reply(r)
	s.errors++
}

// reply queues a reply. Once the error count has reached
// smtpd_soft_error_limit every reply is delayed by smtpd_error_sleep_time
// (reference spec §1.2 notes).
func (s *session) reply(r *smtp.SMTPError) {
	o := &s.cfg.opts
	if s.errors >= o.SoftErrorLimit && o.ErrorSleep > 0 {
		s.flush()
		time.Sleep(o.ErrorSleep)
	}
	s.out = appendReply(s.out[:0], r)
	if s.log.GetLevel() <= zerolog.DebugLevel {
		s.log.Debug().Str("out", strings.TrimRight(string(s.out), "\r\n")).Msg("reply")
	}
	s.w.Write(s.out)
}

// flush sends the queued replies (deadlines: s.io).
func (s *session) flush() error {
	if s.w.Buffered() == 0 {
		return nil
	}
	return s.w.Flush()
}

// formatReply renders a reply: one line per '\n'-separated line of the
// text, "code-" on all but the last; the enhanced code, if any, on each.
func formatReply(r *smtp.SMTPError) string { return string(appendReply(nil, r)) }

// appendReply appends formatReply's rendering of r to b (session.reply
// renders into a buffer it keeps, with no allocation).
func appendReply(b []byte, r *smtp.SMTPError) []byte {
	enh := r.EnhancedCode != smtp.NoEnhancedCode && r.EnhancedCode != smtp.EnhancedCodeNotSet
	for msg := r.Message; ; {
		line, rest, more := strings.Cut(msg, "\n")
		b = strconv.AppendInt(b, int64(r.Code), 10)
		if more {
			b = append(b, '-')
		} else {
			b = append(b, ' ')
		}
		if enh {
			e := r.EnhancedCode
			b = strconv.AppendInt(b, int64(e[0]), 10)
			b = append(b, '.')
			b = strconv.AppendInt(b, int64(e[1]), 10)
			b = append(b, '.')
			b = strconv.AppendInt(b, int64(e[2]), 10)
			b = append(b, ' ')
		}
		b = append(b, line...)
		b = append(b, "\r\n"...)
		if !more {
			return b
		}
		msg = rest
	}
}

// handshake runs STARTTLS's TLS handshake. Input the client pipelined
// after STARTTLS is discarded with the old reader (RFC 3207 sec 4.2), and
// the session state is reset to before HELO (sec 4.2: "the server MUST
// discard any knowledge obtained from the client").
func (s *session) handshake() (*tls.ConnectionState, error) {
	if err := s.flush(); err != nil {
		return nil, err
	}
	tc := tls.Server(s.conn, s.cfg.opts.TLS)
	tc.SetDeadline(time.Now().Add(s.io.lim.StartTLSTimeout))
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	s.io.forget()
	s.conn = tc
	s.r.Reset(&s.io) // the input pipelined after STARTTLS is dropped
	s.w.Reset(&s.io)
	s.tls = true
	s.sasl = saslState{} // RFC 3207 sec 4.2
	s.helo = ""
	s.esmtp = false
	s.reset()
	st := tc.ConnectionState()
	s.tlsState = &st
	if s.cfg.opts.TLSLogLevel >= 1 {
		// No client certificate is requested: Postfix's "Anonymous".
		bits := tlscert.CipherBits(st.CipherSuite)
		proto, cipher := tlscert.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)
		s.log.Info().Str("event", "tls_established").Str("client", s.namaddr).Str("tls_trust", "Anonymous").
			Str("tls_protocol", proto).Str("tls_cipher", cipher).Int("tls_bits", bits).
			Msgf("Anonymous TLS connection established from %s: %s with cipher %s (%d/%d bits)", s.namaddr, proto, cipher, bits, bits)
	}
	return &st, nil
}

// logReject logs one event per rejected command with the reply and, as
// Postfix's smtpd_check.c does, the envelope so far: from (MAIL's
// argument, or the transaction's sender), to (RCPT's argument), proto
// and helo.
func (s *session) logReject(verb string, r *smtp.SMTPError, arg string) {
	verb = strings.ToUpper(verb)
	ev := s.log.Info().Str("event", "reject").Str("command", verb).
		Str("reply", strings.TrimRight(formatReply(r), "\r\n")).Str("client", s.namaddr)
	switch {
	case verb == "MAIL":
		ev = ev.Str("from", logPath(arg))
	case s.tx != nil:
		ev = ev.Str("from", s.tx.from)
	}
	if verb == "RCPT" {
		ev = ev.Str("to", logPath(arg))
	}
	if verb != "CONNECT" {
		proto := "SMTP"
		if s.esmtp {
			proto = "ESMTP"
		}
		ev = ev.Str("proto", proto)
	}
	if s.helo != "" {
		ev = ev.Str("helo", s.helo)
	}
	ev.Msg("NOQUEUE: reject")
}

// logPath is the address of a MAIL FROM:<a> or RCPT TO:<a> argument for
// the log, at most 256 bytes (the rest of a hostile line is not logged).
func logPath(arg string) string {
	if i := strings.IndexByte(arg, '<'); i >= 0 {
		arg = arg[i+1:]
		if j := strings.IndexByte(arg, '>'); j >= 0 {
			arg = arg[:j]
		}
	} else if _, rest, ok := strings.Cut(arg, ":"); ok {
		arg = ""
		if f := strings.Fields(rest); len(f) > 0 {
			arg = f[0]
		}
	}
	return arg[:min(len(arg), 256)]
}

// protocol is the Received: "with" protocol name.
func (s *session) protocol() string {
	p := "SMTP"
	if s.esmtp {
		p = "ESMTP"
	}
	if s.tls {
		p += "S"
	}
	if s.sasl.login != "" { // RFC 3848
		p += "A"
	}
	return p
}

// Command counters for the disconnect log, in Postfix's order.
const (
	cntHelo = iota
	cntEhlo
	cntStartTLS
	cntAuth
	cntMail
	cntRcpt
	cntData
	cntBdat
	cntRset
	cntNoop
	cntVrfy
	cntEtrn
	cntQuit
	cntUnknown
	numCounted
)

var countNames = [numCounted]string{"helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop", "vrfy", "etrn", "quit", "unknown"}

func (s *session) countCmd(i int, ok bool) {
	s.counts[i][1]++
	if ok {
		s.counts[i][0]++
	}
}

// countString renders Postfix's "ehlo=1 etrn=1/4 quit=1 commands=3/6".
func (s *session) countString() string {
	var b strings.Builder
	okAll, all := 0, 0
	for i, c := range s.counts {
		if c[1] == 0 {
			continue
		}
		okAll += c[0]
		all += c[1]
		b.WriteString(countNames[i])
		b.WriteByte('=')
		b.WriteString(ratio(c[0], c[1]))
		b.WriteByte(' ')
	}
	b.WriteString("commands=")
	b.WriteString(ratio(okAll, all))
	return b.String()
}

func ratio(ok, all int) string {
	if ok == all {
		return strconv.Itoa(ok)
	}
	return strconv.Itoa(ok) + "/" + strconv.Itoa(all)
}

// sleep is the "sleep N" restriction: pending replies are sent first.
func (s *session) sleep(secs int) {
	s.flush()
	time.Sleep(time.Duration(secs) * time.Second)
}
