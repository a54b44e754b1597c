package odmr

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/auth"
	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/store"
)

// session is one ODMR connection: initial state (EHLO, AUTH, QUIT),
// authenticated state (ATRN, QUIT), then the turnaround (RFC 2645 sec 4).
type session struct {
	srv    *Server
	o      *Options // the server's options when the session began (Reload)
	raw    net.Conn // TCP
	conn   net.Conn // TCP or TLS over it
	tls    bool
	r      *bufio.Reader
	w      *bufio.Writer
	log    zerolog.Logger
	client netip.Addr

	ehlo   bool
	login  string
	errors int
	quit   bool
}

// errorLimit ends a session that keeps failing (smtpd_hard_error_limit's
// role; AUTH guessing is bounded by it too).
const errorLimit = 10

// ODMR replies (RFC 2645 sec 4 codes; the texts are the RFC's examples
// where it gives one).
const (
	replyATRNOK      = "250 OK now reversing the connection"
	replyNoMail      = "453 You have no mail"
	replyNeedAuth    = "530 5.7.0 Authentication required"
	replyATRNTemp    = "451 4.3.0 Unable to process ATRN request now"
	replyATRNSyntax  = "501 5.5.4 Syntax: ATRN [domain[,domain...]]"
	replyTooMany     = "501 5.5.4 Error: too many domains"
	replyUnknown     = "502 5.5.2 Error: command not recognized"
	replyNotHere     = "502 5.5.1 Error: command not available in this state"
	replyAuthOK      = "235 2.7.0 Authentication successful"
	replyAuthAlready = "503 5.5.1 Error: already authenticated"
	replyAuthSyntax  = "501 5.5.4 Syntax: AUTH mechanism"
	replyAuthAbort   = "501 5.7.0 Authentication aborted"
	replyAuthDecode  = "501 5.5.2 Cannot decode response"
	replyAuthLong    = "500 5.5.6 Authentication Exchange line is too long"
	replyHeloFirst   = "503 5.5.1 Error: send EHLO first"
)

func (s *session) run() {
	s.log.Info().Str("event", "connect").Msg("ODMR connect")
	defer func() {
		s.w.Flush()
		s.log.Info().Str("event", "disconnect").Str("sasl_username", s.login).Msg("ODMR disconnect")
	}()
	s.reply("220 " + s.o.Hostname + " ESMTP holdfast ODMR")
	for !s.quit {
		if s.errors >= errorLimit {
			s.reply("421 4.7.0 " + s.o.Hostname + " Error: too many errors")
			return
		}
		line, long, err := s.readLine()
		if err != nil {
			s.readFailed(err)
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		arg = strings.TrimSpace(arg)
		switch strings.ToUpper(verb) {
		case "EHLO":
			s.ehloCmd(arg)
		case "HELO":
			s.fail(replyNotHere) // RFC 2645 sec 4.1: EHLO (AUTH needs ESMTP)
		case "AUTH":
			s.authCmd(arg, long)
		case "ATRN":
			if s.atrnCmd(arg, long) {
				return // the connection was turned around
			}
		case "NOOP":
			s.reply("250 2.0.0 Ok")
		case "RSET":
			s.reply("250 2.0.0 Ok")
		case "QUIT":
			s.reply("221 2.0.0 Bye")
			return
		case "MAIL", "RCPT", "DATA", "BDAT", "ETRN", "VRFY", "EXPN", "STARTTLS", "TURN":
			if s.login == "" {
				s.fail(replyNeedAuth)
			} else {
				s.fail(replyNotHere)
			}
		default:
			s.fail(replyUnknown)
		}
	}
}

// readLine reads one line bounded by line_length_limit; long reports a
// line that was cut there (the rest is skipped).
func (s *session) readLine() (string, bool, error) {
	if err := s.flush(); err != nil {
		return "", false, err
	}
	s.conn.SetReadDeadline(time.Now().Add(s.o.Timeout))
	limit := s.o.LineLengthLimit
	var buf []byte
	long := false
	for {
		chunk, err := s.r.ReadSlice('\n')
		if n := min(len(chunk), limit-len(buf)); n > 0 {
			buf = append(buf, chunk[:n]...)
		}
		long = long || len(buf) >= limit
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", false, err
		}
		break
	}
	return strings.TrimRight(string(buf), "\r\n"), long, nil
}

func (s *session) readFailed(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		s.reply("421 4.4.2 " + s.o.Hostname + " Error: timeout exceeded")
	}
}

func (s *session) reply(line string) {
	s.w.WriteString(line + "\r\n")
}

func (s *session) fail(line string) {
	s.reply(line)
	s.errors++
}

func (s *session) flush() error {
	if s.w.Buffered() == 0 {
		return nil
	}
	s.conn.SetWriteDeadline(time.Now().Add(s.o.Timeout))
	return s.w.Flush()
}

func (s *session) ehloCmd(arg string) {
	if arg == "" {
		s.fail("501 Syntax: EHLO hostname")
		return
	}
	s.ehlo = true
	lines := []string{s.o.Hostname}
	if m := s.mechs(); len(m) > 0 && s.login == "" {
		lines = append(lines, "AUTH "+strings.Join(m, " "))
	}
	lines = append(lines, "ATRN", "8BITMIME", "ENHANCEDSTATUSCODES")
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		s.reply("250" + sep + l)
	}
}

// mechs lists the mechanisms offered on this connection.
func (s *session) mechs() []string {
	all, err := s.o.Backend.Mechanisms()
	if err != nil {
		s.log.Warn().Err(err).Msg("SASL: cannot list mechanisms")
		return nil
	}
	sec := s.o.Security
	if s.tls {
		sec = s.o.TLSSecurity
	}
	var out []string
	for _, m := range all {
		if sec.Allows(m) {
			out = append(out, m.Name)
		}
	}
	return out
}

// authCmd runs one AUTH exchange (RFC 4954) to its end.
func (s *session) authCmd(arg string, long bool) {
	mech, resp, r := s.authStart(arg, long)
	if r != "" {
		s.fail(r)
		return
	}
	x, err := s.o.Backend.Start(mech, auth.Info{Service: "smtp", Remote: s.client, Secured: s.tls})
	if err != nil {
		s.authError(mech, err)
		return
	}
	defer x.Close()
	initial := true
	for {
		ch, done, err := x.Step(resp, initial)
		if err != nil {
			s.authError(mech, err)
			return
		}
		if done {
			s.login = x.Login()
			s.log = s.log.With().Str("sasl_method", mech).Str("sasl_username", s.login).Logger()
			s.log.Info().Str("event", "auth").Msg("SASL authentication succeeded")
			s.reply(replyAuthOK)
			return
		}
		s.reply("334 " + ch)
		var ok bool
		if resp, ok = s.authResponse(); !ok {
			return
		}
		initial = false
	}
}

// authStart checks an AUTH command before the exchange, in Postfix's
// order (EHLO, not yet logged in, line length, syntax, rate, mechanism
// offered), and returns the mechanism and the initial response, or the
// reply that refuses it.
func (s *session) authStart(arg string, long bool) (mech, initial, refusal string) {
	switch {
	case !s.ehlo:
		return "", "", replyHeloFirst
	case s.login != "":
		return "", "", replyAuthAlready
	case long:
		return "", "", replyAuthLong
	}
	args := strings.Fields(arg)
	if len(args) < 1 || len(args) > 2 {
		return "", "", replyAuthSyntax
	}
	if lim := s.o.AuthRateLimit; lim > 0 && s.srv.auths.add(s.client, s.o.RateTimeUnit, time.Now()) > lim {
		s.log.Warn().Str("event", "rate_limit").Msg("too many AUTH commands")
		return "", "", "450 4.7.1 Error: too many AUTH commands from " + s.client.String()
	}
	mech = strings.ToUpper(args[0])
	if !slices.Contains(s.mechs(), mech) {
		return "", "", "535 5.7.8 Error: authentication failed: Invalid authentication mechanism"
	}
	if len(args) == 2 {
		initial = args[1]
	}
	return mech, initial, ""
}

// authResponse reads the client's answer to a 334 challenge; false
// ends the exchange (the client cancelled it, sent too long a line, or
// went away).
func (s *session) authResponse() (string, bool) {
	line, long, err := s.readLine()
	switch {
	case err != nil:
		s.quit = true
	case line == "*":
		s.fail(replyAuthAbort)
	case long:
		s.fail(replyAuthLong)
	default:
		return line, true
	}
	return "", false
}

func (s *session) authError(mech string, err error) {
	var f *auth.Failure
	switch {
	case errors.Is(err, auth.ErrMalformed):
		s.fail(replyAuthDecode)
	case errors.Is(err, auth.ErrNoMech):
		s.fail("535 5.7.8 Error: authentication failed: Invalid authentication mechanism")
	case errors.As(err, &f) && f.Temp:
		s.fail("454 4.7.0 Temporary authentication failure: " + f.Reason)
	case f != nil:
		s.fail("535 5.7.8 Error: authentication failed: " + f.Reason)
	default:
		s.fail("454 4.7.0 Temporary authentication failure: Authentication backend error")
	}
	s.log.Warn().Str("event", "auth_failed").Err(err).Msgf("SASL %s authentication failed", mech)
}

// atrnCmd: RFC 2645 sec 4.1. It returns true when the connection was
// turned around (the session is over then).
func (s *session) atrnCmd(arg string, long bool) bool {
	if s.login == "" {
		s.fail(replyNeedAuth)
		return false
	}
	start := time.Now()
	if long {
		s.event("refused", start)
		s.fail(replyTooMany)
		return false
	}
	domains, r := s.atrnDomains(arg)
	if r != "" {
		s.event("refused", start)
		s.fail(r)
		return false
	}
	lease := s.leaser(domains)
	first, err := lease()
	if err != nil {
		s.log.Error().Err(err).Msg("ATRN: lease failed")
		s.event("error", start)
		s.fail(replyATRNTemp)
		return false
	}
	if p := s.srv.o.Publish; p != nil {
		for _, d := range domains { // other hosts may hold mail when this one has none
			p(d)
		}
	}
	if len(first) == 0 {
		s.log.Info().Str("event", "atrn").Strs("domains", domains).Msg("ATRN: no mail")
		s.event("no_mail", start)
		s.reply(replyNoMail)
		return false
	}
	s.reply(replyATRNOK)
	s.turnaround(domains, first, lease, start)
	return true
}

// leaser returns the lease of the next batch of the domains' messages,
// each message once per session (one that comes back deferred is not
// tried again).
func (s *session) leaser(domains []string) func() ([]*store.Message, error) {
	tried := map[store.ID]bool{}
	skip := func(id store.ID) bool { return tried[id] }
	return func() ([]*store.Message, error) {
		msgs, err := s.srv.lease.LeaseDest(domains, s.o.Batch, skip)
		for _, m := range msgs {
			tried[m.ID] = true
		}
		return msgs, err
	}
}

// turnaround delivers the leased messages, first and what lease returns
// after them, back over the connection (RFC 2645 sec 4.2), and logs and
// counts the result.
func (s *session) turnaround(domains []string, first []*store.Message, lease func() ([]*store.Message, error), start time.Time) {
	if err := s.flush(); err != nil {
		// The 250 did not go out: the leased messages go back to their
		// schedule through Turnaround on a closed connection.
		s.srv.dlv.Turnaround(s.srv.ctx, closedConn{s.conn}, s.login, first, nil, func(string) bool { return false })
		return
	}
	s.conn.SetDeadline(time.Time{})
	match := func(d string) bool { return slices.Contains(domains, addr.Fold(d)) }
	res, err := s.srv.dlv.Turnaround(s.srv.ctx, s.bufferedConn(), s.login, first, lease, match)
	ev := s.log.Info().Str("event", "atrn").Strs("domains", domains).Int("messages", res.Messages).
		Int("delivered", res.Delivered).Int("deferred", res.Deferred).Int("bounced", res.Bounced).Int("returned", res.Returned)
	result := "ok"
	if err != nil {
		ev, result = ev.Err(err), "error"
	}
	ev.Msg("ATRN turnaround done")
	s.event(result, start)
}

func (s *session) event(result string, start time.Time) {
	if ev := s.o.Events; ev != nil {
		ev.FlushRequest("atrn", result, time.Since(start))
	}
}

// atrnDomains parses the argument (no argument: every destination the
// login owns) and checks that the login owns each (450 otherwise).
func (s *session) atrnDomains(arg string) ([]string, string) {
	o := s.o.Owners
	var domains []string
	if arg == "" {
		if o != nil {
			ds, err := o.Domains(s.login)
			if err != nil {
				return nil, replyATRNTemp
			}
			domains = ds
		}
		if len(domains) == 0 {
			return nil, "450 4.7.1 Error: no domains for " + s.login
		}
	} else {
		if strings.ContainsAny(arg, " \t") {
			return nil, replyATRNSyntax
		}
		for _, d := range strings.Split(arg, ",") {
			if len(domains) >= s.o.MaxDomains {
				return nil, replyTooMany
			}
			d = addr.Fold(strings.TrimSuffix(d, "."))
			if !validDomain(d) {
				return nil, replyATRNSyntax
			}
			if !slices.Contains(domains, d) {
				domains = append(domains, d)
			}
		}
	}
	for _, d := range domains {
		owned := false
		if o != nil {
			var err error
			if owned, _, err = o.Owns(s.login, d); err != nil {
				return nil, replyATRNTemp
			}
		}
		if !owned {
			s.log.Warn().Str("event", "atrn").Str("site", d).Msg("ATRN refused: destination not owned")
			return nil, "450 4.7.1 <" + d + ">: Access denied: not owned by " + s.login
		}
	}
	return domains, ""
}

// validDomain: a host name of letters, digits, hyphens and dots.
func validDomain(d string) bool {
	if d == "" || len(d) > 255 || strings.HasPrefix(d, ".") || strings.Contains(d, "..") {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c >= 0x80) {
			return false
		}
	}
	return true
}

// bufferedConn is the connection as Turnaround must read it: whatever
// our reader holds already comes first. Over TLS each line goes in its
// own TLS record: fetchmail's ODMR relay waits in select(2) for the
// socket and reads one line per wake-up, so a line left inside a record
// it has already taken would never be read (it hangs in DATA).
func (s *session) bufferedConn() net.Conn {
	var c net.Conn = &prefixed{Conn: s.conn, r: s.r}
	if s.tls {
		c = &lineRecords{Conn: c}
	}
	return c
}

// lineRecords writes each line with its own Write.
type lineRecords struct{ net.Conn }

func (l *lineRecords) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n') + 1
		if i == 0 {
			i = len(p)
		}
		k, err := l.Conn.Write(p[:i])
		n += k
		if err != nil {
			return n, err
		}
		p = p[i:]
	}
	return n, nil
}

type prefixed struct {
	net.Conn
	r io.Reader
}

func (p *prefixed) Read(b []byte) (int, error) { return p.r.Read(b) }

// closedConn is a connection already known dead: Turnaround then
// returns every message to the queue at once.
type closedConn struct{ net.Conn }

func (closedConn) Read([]byte) (int, error)  { return 0, io.ErrClosedPipe }
func (closedConn) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }
