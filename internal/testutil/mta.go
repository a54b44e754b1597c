// Package testutil holds test helpers shared by several packages: a
// loopback "customer MTA" built on go-smtp's Server that records what it
// receives and can be scripted to refuse or fail, and a temporary store
// that is checked when the test ends.
package testutil

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Received is one message accepted by an MTA.
type Received struct {
	// Conn is the number of the connection that carried it (1 = first).
	Conn int
	// From is the MAIL FROM address ("" for the null sender).
	From string
	// To are the recipients the MTA accepted, in RCPT order.
	To []string
	// Data is the message content as received (CRLF line ends).
	Data []byte
	// Size is the SIZE= parameter of MAIL FROM (0 when absent).
	Size int64
	// TLS reports whether the transaction ran over STARTTLS.
	TLS bool
	// ClientCert is the common name of the client's certificate, "" for
	// none.
	ClientCert string
	// Helo is the EHLO/HELO name the client gave.
	Helo string
	// Ret and EnvID are the RFC 3461 RET= and ENVID= parameters of MAIL
	// FROM ("" when absent; only an MTA with DSN accepts them).
	Ret, EnvID string
	// Notify and ORcpt are the NOTIFY= and ORCPT= parameters of each
	// accepted RCPT, parallel to To: Notify as "SUCCESS,FAILURE", ORcpt as
	// "RFC822;addr" (type as go-smtp spells it, address decoded), "" when
	// absent.
	Notify, ORcpt []string
}

// MTAOptions configure NewMTA. The zero value is a plain ESMTP server
// without STARTTLS.
type MTAOptions struct {
	// TLS announces STARTTLS with a self-signed certificate for
	// "localhost" and 127.0.0.1.
	TLS bool
	// TLSConfig, when set, is the server's TLS configuration instead
	// (STARTTLS announced), e.g. with a certificate from a test CA.
	TLSConfig *tls.Config
	// MaxMessageBytes is announced as SIZE and enforced (552); 0 = none.
	MaxMessageBytes int64
	// Domain is the greeting host name; "" = "mx.test".
	Domain string
	// ReadTimeout closes a session idle for this long (with go-smtp's
	// "421 4.4.2 Idle timeout"); 0 = 30 s.
	ReadTimeout time.Duration
	// DSN announces the RFC 3461 extension and accepts RET, ENVID,
	// NOTIFY and ORCPT (recorded in Received). Without it a client that
	// sends them gets go-smtp's 504 reply.
	DSN bool
	// SMTPUTF8 announces RFC 6531 and accepts UTF-8 addresses; without
	// it the relay must not send them (it bounces or downgrades).
	SMTPUTF8 bool
}

// MTA is a scripted SMTP server on 127.0.0.1 standing in for a customer's
// mail server. It is safe for concurrent use. Its port stays the same
// across Down/Up so that a transport map entry keeps pointing at it.
type MTA struct {
	// Addr is "127.0.0.1:port".
	Addr string
	// Host is "127.0.0.1", Port the TCP port.
	Host string
	Port int

	opts MTAOptions
	tls  *tls.Config

	mu   sync.Mutex
	srv  *smtp.Server
	ln   net.Listener // closed by stop itself: see stop
	done chan struct{}
	// accepted are the connections open now (closed by stop itself).
	accepted map[net.Conn]struct{}
	conns    int
	open     int
	// contents: DATA contents read in full, replied to or not.
	contents int
	maxOpen  int
	msgs     []Received
	rcpt     map[string]*smtp.SMTPError
	rcptAll  *smtp.SMTPError
	mailErr  *smtp.SMTPError
	dataErr  *smtp.SMTPError
	dataHook func(Received)
	delay    time.Duration
	notify   chan struct{}
	hangup   bool
	hangups  int
	ehlos    ehloCounter
}

// ehloCounter counts the EHLO and HELO commands in go-smtp's debug
// stream (what was read and written, in chunks of whole lines).
type ehloCounter struct {
	mu sync.Mutex
	n  int
}

func (c *ehloCounter) Write(p []byte) (int, error) {
	s := "\n" + strings.ToUpper(string(p))
	c.mu.Lock()
	c.n += strings.Count(s, "\nEHLO ") + strings.Count(s, "\nHELO ")
	c.mu.Unlock()
	return len(p), nil
}

// Hellos is how many EHLO and HELO commands the MTA got.
func (m *MTA) Hellos() int {
	m.ehlos.mu.Lock()
	defer m.ehlos.mu.Unlock()
	return m.ehlos.n
}

// NewMTA starts an MTA on 127.0.0.1:0. It is shut down when the test ends.
func NewMTA(t testing.TB, o MTAOptions) *MTA {
	t.Helper()
	if o.Domain == "" {
		o.Domain = "mx.test"
	}
	m := &MTA{opts: o, rcpt: map[string]*smtp.SMTPError{}, notify: make(chan struct{}, 1),
		accepted: map[net.Conn]struct{}{}}
	m.tls = o.TLSConfig
	if o.TLS && o.TLSConfig == nil {
		cfg, err := SelfSignedTLS("localhost", "127.0.0.1")
		if err != nil {
			t.Fatalf("testutil: tls: %v", err)
		}
		m.tls = cfg
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testutil: listen: %v", err)
	}
	a := l.Addr().(*net.TCPAddr)
	m.Addr, m.Host, m.Port = a.String(), a.IP.String(), a.Port
	m.serve(l)
	t.Cleanup(m.stop)
	return m
}

// Rcpt scripts the reply to RCPT TO:<addr>; nil restores acceptance.
// Example: m.Rcpt("a@x", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}).
func (m *MTA) Rcpt(addr string, reply *smtp.SMTPError) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if reply == nil {
		delete(m.rcpt, addr)
		return
	}
	m.rcpt[addr] = reply
}

// RcptAll scripts the reply to every RCPT not scripted by Rcpt; nil = accept.
func (m *MTA) RcptAll(reply *smtp.SMTPError) { m.set(&m.rcptAll, reply) }

// Mail scripts the reply to MAIL FROM; nil = accept.
func (m *MTA) Mail(reply *smtp.SMTPError) { m.set(&m.mailErr, reply) }

// Data scripts the reply after the final dot; nil = accept.
func (m *MTA) Data(reply *smtp.SMTPError) { m.set(&m.dataErr, reply) }

// Delay makes every DATA take d before its reply (slow server).
func (m *MTA) Delay(d time.Duration) {
	m.mu.Lock()
	m.delay = d
	m.mu.Unlock()
}

// OnData calls f (outside the MTA's lock) for every accepted message,
// before the 250 reply is sent.
func (m *MTA) OnData(f func(Received)) {
	m.mu.Lock()
	m.dataHook = f
	m.mu.Unlock()
}

func (m *MTA) set(p **smtp.SMTPError, reply *smtp.SMTPError) {
	m.mu.Lock()
	*p = reply
	m.mu.Unlock()
}

// Down closes the listener and all connections: connecting is refused
// until Up.
func (m *MTA) Down() {
	m.stop()
}

// Up listens again on the same port. It fails the test if the port was
// taken in between.
func (m *MTA) Up(t testing.TB) {
	t.Helper()
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if l, err = net.Listen("tcp", m.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("testutil: relisten %s: %v", m.Addr, err)
	}
	m.serve(l)
}

// Hangup, while on, makes the MTA accept TCP connections and close them at
// once without a greeting (a broken server). They are counted by Hangups,
// not by Conns.
func (m *MTA) Hangup(on bool) {
	m.mu.Lock()
	m.hangup = on
	m.mu.Unlock()
}

// read is one of m's counters, read under m.mu.
func (m *MTA) read(counter *int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return *counter
}

// Hangups is the number of connections closed by Hangup mode.
func (m *MTA) Hangups() int { return m.read(&m.hangups) }

// Conns is the number of SMTP sessions accepted so far.
func (m *MTA) Conns() int { return m.read(&m.conns) }

// Contents is the number of DATA contents read in full so far, whether
// their reply has been sent yet or not (Delay holds it back): a test
// knows by it that a client is waiting for the reply to its content.
func (m *MTA) Contents() int { return m.read(&m.contents) }

// Open is the number of connections open now.
func (m *MTA) Open() int { return m.read(&m.open) }

// MaxOpen is the largest number of connections that were open at once.
func (m *MTA) MaxOpen() int { return m.read(&m.maxOpen) }

// Messages returns a copy of the messages received so far.
func (m *MTA) Messages() []Received {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Received(nil), m.msgs...)
}

// Reset forgets received messages and counters (scripts are kept).
func (m *MTA) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs, m.conns, m.hangups, m.maxOpen = nil, 0, 0, m.open
}

// Wait waits until at least n messages were received or d passed, and
// returns what was received. It does not fail the test.
func (m *MTA) Wait(n int, d time.Duration) []Received {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		if msgs := m.Messages(); len(msgs) >= n {
			return msgs
		}
		select {
		case <-m.notify:
		case <-deadline.C:
			return m.Messages()
		}
	}
}

func (m *MTA) serve(l net.Listener) {
	s := smtp.NewServer(smtp.BackendFunc(m.newSession))
	s.Domain = m.opts.Domain
	s.MaxMessageBytes = m.opts.MaxMessageBytes
	s.TLSConfig = m.tls
	s.EnableDSN = m.opts.DSN
	s.EnableSMTPUTF8 = m.opts.SMTPUTF8
	s.ReadTimeout = 30 * time.Second
	if m.opts.ReadTimeout > 0 {
		s.ReadTimeout = m.opts.ReadTimeout
	}
	s.WriteTimeout = 30 * time.Second
	s.ErrorLog = discardLogger{}
	s.Debug = &m.ehlos
	done := make(chan struct{})
	m.mu.Lock()
	m.srv, m.done, m.ln = s, done, l
	m.mu.Unlock()
	go func() {
		defer close(done)
		_ = s.Serve(&hangupListener{Listener: l, m: m})
	}()
}

// stop ends Serve and every session without go-smtp's Server.Close,
// which races with its own connection goroutines: Close reads the Conn's
// net.Conn while a STARTTLS in progress replaces it (handleStartTLS sets
// it without the lock Close holds; go-smtp v0.25.1, the race detector
// saw it about once in 20 runs of delivery's TestTLSPolicyMaps). Closing
// the listener and the accepted connections ourselves makes each
// session's read or handshake fail, so its own goroutine ends it; then
// Shutdown waits for those goroutines.
func (m *MTA) stop() {
	m.mu.Lock()
	s, done, l := m.srv, m.done, m.ln
	m.srv, m.done, m.ln = nil, nil, nil
	m.mu.Unlock()
	if s == nil {
		return
	}
	// Closing the listener ends Serve even when it has not started
	// accepting yet (a test that fails right after NewMTA).
	_ = l.Close()
	<-done // no Accept after this
	m.mu.Lock()
	conns := m.accepted
	m.accepted = map[net.Conn]struct{}{}
	m.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx) // waits for the connection goroutines
}

// hangupListener closes accepted connections while the MTA is in Hangup
// mode, and records the others for stop.
type hangupListener struct {
	net.Listener
	m *MTA
}

func (l *hangupListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.m.mu.Lock()
		h := l.m.hangup
		if h {
			l.m.hangups++
		} else {
			c = &trackedConn{Conn: c, m: l.m}
			l.m.accepted[c] = struct{}{}
		}
		l.m.mu.Unlock()
		if !h {
			return c, nil
		}
		c.Close()
	}
}

// trackedConn leaves the MTA's set of accepted connections when closed.
type trackedConn struct {
	net.Conn
	m *MTA
}

func (c *trackedConn) Close() error {
	c.m.mu.Lock()
	delete(c.m.accepted, c)
	c.m.mu.Unlock()
	return c.Conn.Close()
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

// session is one connection's state.
type session struct {
	m    *MTA
	c    *smtp.Conn
	n    int
	cur  Received
	done bool
}

func (m *MTA) newSession(c *smtp.Conn) (smtp.Session, error) {
	m.mu.Lock()
	m.conns++
	m.open++
	if m.open > m.maxOpen {
		m.maxOpen = m.open
	}
	n := m.conns
	m.mu.Unlock()
	return &session{m: m, c: c, n: n}, nil
}

func (s *session) Reset() { s.cur = Received{} }

func (s *session) Logout() error {
	if !s.done {
		s.done = true
		s.m.mu.Lock()
		s.m.open--
		s.m.mu.Unlock()
	}
	return nil
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.m.mu.Lock()
	err := s.m.mailErr
	s.m.mu.Unlock()
	if err != nil {
		return err
	}
	s.cur = Received{Conn: s.n, From: from, Helo: s.c.Hostname()}
	if opts != nil {
		s.cur.Size = opts.Size
		s.cur.Ret, s.cur.EnvID = string(opts.Return), opts.EnvelopeID
	}
	var cs tls.ConnectionState
	cs, s.cur.TLS = s.c.TLSConnectionState()
	if len(cs.PeerCertificates) > 0 {
		s.cur.ClientCert = cs.PeerCertificates[0].Subject.CommonName
	}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.m.mu.Lock()
	err, ok := s.m.rcpt[to]
	if !ok {
		err = s.m.rcptAll
	}
	s.m.mu.Unlock()
	if err != nil {
		return err
	}
	s.cur.To = append(s.cur.To, to)
	var notify []string
	orcpt := ""
	if opts != nil {
		for _, n := range opts.Notify {
			notify = append(notify, string(n))
		}
		if opts.OriginalRecipient != "" {
			orcpt = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	s.cur.Notify = append(s.cur.Notify, strings.Join(notify, ","))
	s.cur.ORcpt = append(s.cur.ORcpt, orcpt)
	return nil
}

func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m.mu.Lock()
	s.m.contents++
	derr, delay, hook := s.m.dataErr, s.m.delay, s.m.dataHook
	s.m.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	if derr != nil {
		return derr
	}
	rec := s.cur
	rec.To = append([]string(nil), s.cur.To...)
	rec.Notify = append([]string(nil), s.cur.Notify...)
	rec.ORcpt = append([]string(nil), s.cur.ORcpt...)
	rec.Data = b
	if hook != nil {
		hook(rec)
	}
	s.m.mu.Lock()
	s.m.msgs = append(s.m.msgs, rec)
	s.m.mu.Unlock()
	select {
	case s.m.notify <- struct{}{}:
	default:
	}
	return nil
}

// Reply builds an *smtp.SMTPError for scripting: Reply(550, "5.1.1 no such user").
// The enhanced code is taken from the start of text when present.
func Reply(code int, text string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, Message: text, EnhancedCode: smtp.NoEnhancedCode}
	var a, b, c int
	var rest string
	if n, _ := fmt.Sscanf(text, "%d.%d.%d", &a, &b, &c); n == 3 {
		prefix := strconv.Itoa(a) + "." + strconv.Itoa(b) + "." + strconv.Itoa(c)
		if len(text) > len(prefix) && text[:len(prefix)] == prefix {
			rest = text[len(prefix):]
			if len(rest) > 0 && rest[0] == ' ' {
				rest = rest[1:]
			}
			e.EnhancedCode = smtp.EnhancedCode{a, b, c}
			e.Message = rest
		}
	}
	return e
}
