package delivery

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/internal/tlscert"
	"github.com/holdfast-mta/holdfast/store"
)

// conn is one SMTP session with a next hop, kept in the hop's pool between
// messages.
type conn struct {
	t    target
	netc net.Conn // the transport: TCP, or TLS over it after STARTTLS
	// r reads the server's replies through the bound of reply.go; w
	// buffers the commands and the content.
	r        *textproto.Reader
	w        *bufio.Writer
	tls      *tlsInfo // nil: plaintext
	size     int64    // SIZE announced by the server, 0 = none (RFC 1870)
	hasSize  bool     // SIZE announced, with or without a limit
	eightBit bool     // 8BITMIME announced (RFC 6152): BODY=8BITMIME is sent
	utf8     bool     // SMTPUTF8 announced
	dsn      bool     // DSN announced (RFC 3461): NOTIFY and the rest go on
	// pipelining: PIPELINING announced (RFC 2920; LMTP servers must
	// support it, RFC 2033 sec 4.1, and announce it): a transaction's
	// commands go in one write (xfer.go).
	pipelining bool
	uses       int  // transactions run on this connection
	broken     bool // must not be reused
	// lostAtMail: the session ended (421, lost connection) at MAIL FROM,
	// before the transaction began; on a reused session the server most
	// likely closed it while idle.
	lostAtMail bool
	idle       *time.Timer
	// pool is the hop's pool the session belongs to (nil: an ODMR
	// session, never pooled); owed, when not nil, is the end-of-data
	// reply the session still owes the attempt that handed it over
	// (handoff.go), read before anything else is.
	pool *pool
	owed *owed
}

// sessionError is a failure before the first MAIL FROM: the site cannot be
// used (connection, greeting, EHLO, STARTTLS).
type sessionError struct{ res result }

func (e *sessionError) Error() string { return e.res.Reply }

// dial opens a session with t under the TLS policy p (nil = plaintext):
// connect, greeting, EHLO, STARTTLS when offered (level may) or required,
// EHLO again over TLS (RFC 3207 sec 4.2).
func (d *Scheduler) dial(ctx context.Context, t target, p *tlsPolicy) (*conn, error) {
	dctx, cancel := ctx, context.CancelFunc(func() {})
	if c := t.cf.Timeouts.Connect; c > 0 { // lmtp_connect_timeout 0: the system's limit
		dctx, cancel = context.WithTimeout(ctx, c)
	}
	defer cancel()
	var nd net.Dialer
	if b := t.cf.BindAddress; b.IsValid() && t.Addr.Is4() { // smtp_bind_address
		nd.LocalAddr = &net.TCPAddr{IP: b.AsSlice()}
	}
	if b := t.cf.BindAddress6; b.IsValid() && t.Addr.Is6() {
		nd.LocalAddr = &net.TCPAddr{IP: b.AsSlice()}
	}
	network, addr := "tcp", net.JoinHostPort(t.Addr.String(), strconv.Itoa(t.Port))
	if t.Path != "" {
		network, addr = "unix", t.Path
	}
	raw, err := nd.DialContext(dctx, network, addr)
	if err != nil {
		return nil, &sessionError{connectFailure(t, err)}
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() }) // shutdown cuts the session
	c, err := d.handshake(raw, t, p)
	if !stop() || err != nil {
		raw.Close()
		if err == nil {
			err = &sessionError{transient(t, "4.4.2", fmt.Sprintf("lost connection with %s[%s] while performing the EHLO handshake", t.Name, t.ip()))}
		}
		return nil, err
	}
	return c, nil
}

// handshake runs greeting, EHLO and STARTTLS on raw. One EHLO is sent
// per plaintext session, and one more over TLS after STARTTLS.
func (d *Scheduler) handshake(raw net.Conn, t target, p *tlsPolicy) (*conn, error) {
	to, cf := &t.cf.Timeouts, t.cf
	hello := "EHLO"
	if t.lmtp {
		hello = "LHLO" // RFC 2033 sec 4.1
	}
	// Every reply is read through a bound (reply.go): a server that sends
	// an endless line or endless "250-" lines ends the session.
	tp := textproto.NewConn(bound(raw))
	raw.SetDeadline(time.Now().Add(to.Helo))
	banner, ehlo, ext, err := d.greet(tp, t, hello)
	if err != nil {
		return nil, err
	}
	nc, info, err := d.startTLS(raw, tp, t, p, ext["STARTTLS"])
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	g, ehloLine, br := replayed(nc, tp, banner, ehlo, info != nil)
	c := smtp.NewClient(g)
	if t.lmtp {
		c = smtp.NewClientLMTP(g)
	}
	c.CommandTimeout = to.Helo
	if err := c.Hello(cf.HeloName); err != nil {
		c.Close()
		return nil, d.greetError(t, err, "performing the "+hello+" handshake")
	}
	if line := ehloLine.text(); len(line) > 4 {
		if err := d.loopCheck(t, line[4:], "replied to HELO/EHLO"); err != nil {
			c.Close()
			return nil, err
		}
	}
	// From here on the session is ours (xfer.go): go-smtp's Client read
	// no further than the EHLO reply, what follows is read from br.
	cn := &conn{t: t, netc: nc, tls: info, r: textproto.NewReader(br), w: bufio.NewWriterSize(nc, connBuf)}
	if ok, v := c.Extension("SIZE"); ok {
		cn.hasSize = true
		cn.size, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	}
	cn.eightBit, _ = c.Extension("8BITMIME")
	cn.utf8, _ = c.Extension("SMTPUTF8")
	cn.dsn, _ = c.Extension("DSN")
	cn.pipelining, _ = c.Extension("PIPELINING")
	return cn, nil
}

// connBuf is the size of a session's write buffer: the commands of a
// transaction, and the content in pieces of this size (a TLS record
// carries up to 16 KiB).
const connBuf = 16 << 10

// greet reads the greeting and sends the session's one plaintext EHLO
// (LHLO), both loop-checked. ehlo is the reply ("" when the server
// refused EHLO with 5xx: go-smtp's Hello then falls back to HELO), ext
// its keywords.
func (d *Scheduler) greet(tp *textproto.Conn, t target, hello string) (banner, ehlo string, ext map[string]bool, err error) {
	_, banner, err = tp.ReadResponse(220)
	if err != nil {
		return "", "", nil, d.greetError(t, err, "receiving the initial server greeting")
	}
	banner, _, _ = strings.Cut(banner, "\n")
	if err := d.loopCheck(t, banner, "greeted me"); err != nil {
		return "", "", nil, err
	}
	if err := tp.PrintfLine("%s %s", hello, t.cf.HeloName); err != nil {
		return "", "", nil, d.greetError(t, err, "performing the "+hello+" handshake")
	}
	ext = map[string]bool{}
	_, ehlo, err = tp.ReadResponse(250)
	var te *textproto.Error
	switch {
	case err == nil:
		if err := d.loopCheck(t, ehlo, "replied to HELO/EHLO"); err != nil {
			return "", "", nil, err
		}
		for _, l := range strings.Split(ehlo, "\n")[1:] {
			k, _, _ := strings.Cut(l, " ")
			ext[strings.ToUpper(k)] = true
		}
	case !errors.As(err, &te) || te.Code/100 != 5 || t.lmtp:
		return "", "", nil, d.greetError(t, err, "performing the "+hello+" handshake")
	}
	return banner, ehlo, ext, nil
}

// replayed is the connection go-smtp's Client runs on. go-smtp reads a
// greeting first and sends EHLO: in plaintext both were done, so the
// greeting and the EHLO reply are replayed from memory and its EHLO is
// not sent again. Over TLS the session restarts with EHLO (RFC 3207 sec
// 4.2) after the replayed greeting, and the plaintext is bounded afresh.
// ehloLine keeps the first line of the reply go-smtp reads from the
// server, for the loop check (nil when it reads none). br is the bounded
// reader under go-smtp's, on which the session goes on after the
// handshake.
func replayed(nc net.Conn, tp *textproto.Conn, banner, ehlo string, overTLS bool) (g *greeted, ehloLine *firstLine, br *bufio.Reader) {
	g = &greeted{Conn: nc}
	greeting := strings.NewReader("220 " + banner + "\r\n")
	br = tp.R
	switch {
	case overTLS:
		br = bufio.NewReader(bound(nc))
		ehloLine = &firstLine{r: br}
		g.r = io.MultiReader(greeting, ehloLine)
	case ehlo != "":
		g.skipLine = true
		g.r = io.MultiReader(greeting, strings.NewReader(replayReply(250, ehlo)), tp.R) // tp.R: what is buffered comes first
	default: // EHLO refused: go-smtp's EHLO or HELO reply is checked
		ehloLine = &firstLine{r: tp.R}
		g.r = io.MultiReader(greeting, ehloLine)
	}
	return g, ehloLine, br
}

// startTLS sends STARTTLS when the policy p wants it and the server
// offered it, and checks the server's certificate against p. A level
// that requires TLS never goes on in plaintext: no STARTTLS is 4.7.4, a
// failed handshake or certificate 4.7.5 (Postfix's smtp_proto.c). info
// is nil for a plaintext session.
func (d *Scheduler) startTLS(raw net.Conn, tp *textproto.Conn, t target, p *tlsPolicy, offered bool) (net.Conn, *tlsInfo, error) {
	if p == nil || p.level == TLSNone {
		return raw, nil, nil
	}
	if !offered {
		if p.required() {
			return nil, nil, &sessionError{transient(t, "4.7.4", fmt.Sprintf("TLS is required, but was not offered by host %s[%s]", t.Name, t.ip()))}
		}
		return raw, nil, nil
	}
	raw.SetDeadline(time.Now().Add(t.cf.Timeouts.StartTLS))
	if err := tp.PrintfLine("STARTTLS"); err != nil {
		return nil, nil, d.greetError(t, err, "sending STARTTLS")
	}
	if _, msg, err := tp.ReadResponse(220); err != nil {
		var te *textproto.Error
		if !errors.As(err, &te) {
			return nil, nil, d.greetError(t, err, "receiving the STARTTLS response")
		}
		if !p.required() {
			return raw, nil, nil // may: on in plaintext
		}
		r := classify(&smtp.SMTPError{Code: te.Code, Message: msg, EnhancedCode: smtp.NoEnhancedCode}, t, "STARTTLS", true)
		r.Reply = fmt.Sprintf("TLS is required, but host %s[%s] refused to start TLS: %s", t.Name, t.ip(), strings.ReplaceAll(te.Msg, "\n", " "))
		if code, _, _ := strings.Cut(te.Msg, " "); len(code) == 5 && code[0] == '4' && code[1] == '.' && code[3] == '.' {
			r.DSN = code // the server's enhanced code, as Postfix's smtp_site_fail
		}
		return nil, nil, &sessionError{r}
	}
	if tp.R.Buffered() > 0 {
		// Bytes after "220 Ready to start TLS" before our handshake:
		// a server (or a man in the middle) injecting plaintext.
		return nil, nil, &sessionError{transient(t, "4.7.5", fmt.Sprintf("Cannot start TLS: handshake failure with %s[%s]: plaintext after the STARTTLS reply", t.Name, t.ip()))}
	}
	tc := tls.Client(raw, p.clientConfig(t))
	if err := tc.Handshake(); err != nil {
		return nil, nil, &sessionError{transient(t, "4.7.5", fmt.Sprintf("Cannot start TLS: handshake failure with %s[%s]: %v", t.Name, t.ip(), err))}
	}
	cs := tc.ConnectionState()
	trust, ok, why := checkPeer(cs, t, p, time.Now())
	if !ok {
		d.log.Info().Str("event", "tls_failed").Str("relay", t.Relay()).Str("tls_level", p.level).Msg(why)
		tc.Close()
		return nil, nil, &sessionError{transient(t, "4.7.5", "Server certificate not verified")}
	}
	info := &tlsInfo{Trust: trust, Protocol: tlscert.VersionName(cs.Version), Cipher: tls.CipherSuiteName(cs.CipherSuite), Bits: tlscert.CipherBits(cs.CipherSuite)}
	if p.s.LogLevel >= 1 {
		d.log.Info().Str("event", "tls_established").Str("relay", t.Relay()).Str("tls_trust", info.Trust).
			Str("tls_protocol", info.Protocol).Str("tls_cipher", info.Cipher).Int("tls_bits", info.Bits).Str("tls_level", p.level).
			Msgf("%s TLS connection established to %s: %s with cipher %s (%d/%d bits)", info.Trust, t.Relay(), info.Protocol, info.Cipher, info.Bits, info.Bits)
	}
	return tc, info, nil
}

// replayReply rebuilds the lines of a reply that textproto read as msg.
func replayReply(code int, msg string) string {
	lines := strings.Split(msg, "\n")
	var b strings.Builder
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(&b, "%d%s%s\r\n", code, sep, l)
	}
	return b.String()
}

// loopCheck: an SMTP server whose greeting or EHLO reply names our own
// myhostname is holdfast itself (or shares its name), as Postfix's
// smtp_helo.c decides: the mail is deferred with Postfix's text, and the
// hop is not tried again until minimal_backoff_time. LMTP servers are
// local and may share the host name, and an ODMR customer connected to
// us: not checked.
func (d *Scheduler) loopCheck(t target, reply, how string) error {
	name, _, _ := strings.Cut(strings.TrimSpace(reply), " ")
	if t.lmtp || t.turn || !strings.EqualFold(name, d.o.Hostname) {
		return nil
	}
	d.log.Warn().Str("relay", t.Relay()).Msgf("host %s[%s] %s with my own hostname %s", t.Name, t.ip(), how, d.o.Hostname)
	dest := t.dest
	if dest == "" {
		dest = t.Name
	}
	return &sessionError{transient(t, "4.4.6", "mail for "+dest+" loops back to myself")}
}

// greetError is a session failure: a reply from the server (Postfix: "host
// X refused to talk to me") or a lost connection.
func (d *Scheduler) greetError(t target, err error, stage string) error {
	var te *textproto.Error
	if errors.As(err, &te) {
		err = &smtp.SMTPError{Code: te.Code, Message: te.Msg, EnhancedCode: smtp.NoEnhancedCode}
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		r := classify(se, t, "EHLO", true) // a site failure is never permanent
		r.Reply = fmt.Sprintf("host %s[%s] refused to talk to me: %s", t.Name, t.ip(), replyText(se))
		return &sessionError{r}
	}
	return &sessionError{classify(err, t, stage, true)}
}

// firstLine passes r on and keeps the first line read from it (at most
// 512 bytes of it): the first line of the EHLO reply ("250-name ...").
type firstLine struct {
	r    io.Reader
	line []byte
	done bool
}

// text is the line kept, "" for a nil f.
func (f *firstLine) text() string {
	if f == nil {
		return ""
	}
	return string(f.line)
}

func (f *firstLine) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	for _, b := range p[:n] {
		if f.done {
			break
		}
		if b == '\r' || b == '\n' {
			f.done = true
		} else if len(f.line) < 512 {
			f.line = append(f.line, b)
		}
	}
	return n, err
}

// greeted is a net.Conn whose first bytes come from r. With skipLine,
// the first line written (go-smtp's EHLO, already sent) is dropped.
type greeted struct {
	net.Conn
	r        io.Reader
	skipLine bool
}

func (g *greeted) Read(p []byte) (int, error) { return g.r.Read(p) }

func (g *greeted) Write(p []byte) (int, error) {
	if !g.skipLine {
		return g.Conn.Write(p)
	}
	i := bytes.IndexByte(p, '\n')
	if i < 0 {
		return len(p), nil
	}
	g.skipLine = false
	if i+1 == len(p) {
		return len(p), nil // nothing after the line: no empty write
	}
	n, err := g.Conn.Write(p[i+1:])
	return i + 1 + n, err
}

// send runs one mail transaction for the recipients rcpts of m: MAIL FROM,
// one RCPT TO each (one recipient's reply affects only that recipient),
// DATA when at least one was accepted. It returns one result per
// recipient, in order. On a network error the connection is marked broken.
// head is the content's header section; the content is streamed from the
// store (transfer, xfer.go).
//
// handed reports that the session went to the next attempt with the
// end-of-data reply still owed (handoff.go): it is no longer the
// caller's.
func (d *Scheduler) send(cn *conn, m *store.Message, rcpts []int, head []byte) (out []result, handed bool) {
	out = make([]result, len(rcpts))
	all := func(r result) ([]result, bool) {
		for i := range out {
			out[i] = r
		}
		return out, false
	}
	cn.uses++
	if cn.size > 0 && m.Size > cn.size {
		text := fmt.Sprintf("message size %d exceeds size limit %d of server %s[%s]", m.Size, cn.size, cn.t.Name, cn.t.ip())
		return all(result{State: store.RcptBounced, Status: "bounced", DSN: "5.3.4", Reply: text, Diag: "X-Postfix; " + text, Remote: cn.t.Name, Relay: cn.t.Relay()})
	}
	utf8 := m.SMTPUTF8 && cn.utf8
	if m.SMTPUTF8 && !cn.utf8 && needsUTF8(m, rcpts, head) {
		// RFC 6531 sec 3.2: without SMTPUTF8 at the next hop, only mail
		// that really needs it is returned; the rest goes as plain SMTP.
		text := fmt.Sprintf("SMTPUTF8 is required, but was not offered by host %s[%s]", cn.t.Name, cn.t.ip())
		return all(result{State: store.RcptBounced, Status: "bounced", DSN: "5.6.7", Reply: text, Diag: "X-Postfix; " + text, Remote: cn.t.Name, Relay: cn.t.Relay()})
	}
	if !oneLine(m, rcpts) {
		// No address the store holds has one (smtpd reads addresses
		// from a line); should one, it must not end a command early.
		return all(local(store.RcptPending, "4.5.0", "envelope address contains CR or LF"))
	}
	return d.transfer(cn, m, rcpts, utf8)
}

// oneLine: no envelope address of the transaction holds CR or LF.
func oneLine(m *store.Message, rcpts []int) bool {
	if strings.ContainsAny(m.Sender, "\r\n") {
		return false
	}
	for _, i := range rcpts {
		if strings.ContainsAny(m.Recipients[i].Addr, "\r\n") {
			return false
		}
	}
	return true
}

// dataChunk is how much of the content is written per write deadline.
const dataChunk = 64 << 10

// sendWithin is send bounded by the delivery deadline (Timeouts.Delivery):
// at the deadline the connection is closed, and the recipients the
// transaction left pending are deferred with that reason.
// handed is send's.
func (d *Scheduler) sendWithin(cn *conn, m *store.Message, rcpts []int, head []byte) ([]result, bool) {
	limit := cn.t.cf.Timeouts.Delivery
	if limit <= 0 {
		return d.send(cn, m, rcpts, head)
	}
	var over atomic.Bool
	timer := time.AfterFunc(limit, func() {
		over.Store(true)
		cn.netc.Close()
	})
	res, handed := d.send(cn, m, rcpts, head)
	timer.Stop()
	if !over.Load() {
		return res, handed
	}
	if !handed { // else the next attempt's: the close breaks its read
		cn.broken = true
	}
	name := "smtp_delivery_deadline"
	if cn.t.lmtp {
		name = "lmtp_delivery_deadline"
	}
	text := fmt.Sprintf("conversation with %s[%s] timed out: the delivery took longer than %s (%v)", cn.t.Name, cn.t.Addr, name, limit)
	for i := range res {
		if res[i].State == store.RcptPending {
			res[i] = transient(cn.t, "4.4.2", text)
		}
	}
	return res, handed
}

// paced passes writes on in pieces of dataChunk, each with its write
// deadline (xfer), and keeps the first error.
type paced struct {
	w    io.Writer
	conn net.Conn
	xfer time.Duration
	err  error
}

func (l *paced) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		k := min(len(p), dataChunk)
		l.conn.SetWriteDeadline(time.Now().Add(l.xfer))
		n, err := l.w.Write(p[:k])
		total += n
		if err != nil {
			l.err = err
			return total, err
		}
		p = p[k:]
	}
	return total, nil
}

// needsUTF8: the envelope addresses or the header section are not ASCII.
func needsUTF8(m *store.Message, rcpts []int, head []byte) bool {
	if !ascii([]byte(m.Sender)) || !ascii(headerPart(head)) {
		return true
	}
	for _, i := range rcpts {
		if !ascii([]byte(m.Recipients[i].Addr)) {
			return true
		}
	}
	return false
}

func ascii(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}

// closeConn ends the session with QUIT, bounded by smtp_quit_timeout,
// and closes the connection.
func (d *Scheduler) closeConn(cn *conn) {
	if !cn.broken {
		cn.netc.SetDeadline(time.Now().Add(cn.t.cf.Timeouts.Quit))
		cn.w.WriteString("QUIT\r\n")
		if cn.w.Flush() == nil {
			cn.reply(2)
		}
	}
	cn.netc.Close()
}
