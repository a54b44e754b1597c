package smtpd

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/internal/printable"
	"github.com/holdfast-mta/holdfast/store"
)

// command is one row of the command table (Postfix's smtpd_cmd_table).
// The dispatcher applies the row's checks before the handler runs
// (session.precondition) and counts the reply after (session.account).
type command struct {
	verb string
	// handle checks the command's own preconditions in Postfix's order,
	// does one thing and returns the reply and what the session does
	// next; it never writes to the client.
	handle func(*session, string) (*smtp.SMTPError, action)
	// junk: counts against smtpd_junk_command_limit (SMTPD_CMD_FLAG_LIMIT).
	junk bool
	// preTLS: allowed before STARTTLS when TLS is enforced.
	preTLS bool
	// needHelo: the reply when smtpd_helo_required and no HELO/EHLO yet;
	// nil when the command is allowed before HELO.
	needHelo *smtp.SMTPError
	// noTxn: the reply when a mail transaction is in progress; nil when
	// the command is allowed in a transaction.
	noTxn *smtp.SMTPError
	// group: may be followed by more commands in a pipelined group
	// (RFC 2920 sec 3.1); the others are synchronisation points, which
	// must end the group (reject_unauth_pipelining).
	group bool
	// afterBdat: the reply once a BDAT transfer has begun; nil when the
	// command is allowed then.
	afterBdat *smtp.SMTPError
	// counted is the disconnect-log counter.
	counted int
}

// action is what the session does once a command's reply is queued. The
// handler returns it with the reply, so the loop (session.perform) acts
// on what the command says rather than on flags it left behind.
type action uint8

const (
	// actNext: read the next command.
	actNext action = iota
	// actExcused: read the next command; the refusal is not counted as
	// an error nor logged as a reject (RCPT within
	// smtpd_recipient_overshoot_limit, as Postfix's rcpt_cmd).
	actExcused
	// actContent: after 354, read the message content and answer it
	// (DATA: session.content).
	actContent
	// actExchange: after 334, read the client's next AUTH response
	// (session.exchange); the AUTH command is counted when it ends.
	actExchange
	// actStartTLS: after 220, the TLS handshake (session.startTLS).
	actStartTLS
	// actHangUp: close the connection after the reply (QUIT, a 421, a
	// BDAT whose data cannot be delimited, improper pipelining).
	actHangUp
	// actTimeout: a read inside the command (BDAT's data) timed out or
	// was cut by shutdown: 421, then close (session.timedOut).
	actTimeout
	// actLost: the connection was lost inside the command.
	actLost
)

var commands []command

func init() {
	commands = []command{
		{verb: "HELO", handle: continues((*session).heloCmd), junk: true, preTLS: true, counted: cntHelo},
		{verb: "EHLO", handle: continues((*session).ehloCmd), junk: true, preTLS: true, counted: cntEhlo},
		{verb: "STARTTLS", handle: (*session).starttlsCmd, preTLS: true, counted: cntStartTLS},
		// RFC 4954; auth.go.
		{verb: "AUTH", handle: (*session).authCmd, needHelo: replyMailHelo, noTxn: replyAuthInTxn, counted: cntAuth},
		{verb: "MAIL", handle: continues((*session).mailCmd), needHelo: replyMailHelo, noTxn: replyNestedMail, afterBdat: replyMailAfterBdat, group: true, counted: cntMail},
		{verb: "RCPT", handle: (*session).rcptCmd, afterBdat: replyRcptAfterBdat, group: true, counted: cntRcpt},
		{verb: "DATA", handle: (*session).dataCmd, afterBdat: replyDataAfterBdat, counted: cntData},
		// RFC 3030 CHUNKING; the handler reads the chunk's data.
		{verb: "BDAT", handle: (*session).bdatCmd, preTLS: true, group: true, counted: cntBdat},
		{verb: "RSET", handle: continues((*session).rsetCmd), junk: true, preTLS: true, group: true, counted: cntRset},
		{verb: "NOOP", handle: continues((*session).noopCmd), junk: true, preTLS: true, counted: cntNoop},
		{verb: "VRFY", handle: continues((*session).vrfyCmd), junk: true, counted: cntVrfy},
		// RFC 1985; reference spec §1.2 for the order of the checks.
		{verb: "ETRN", handle: continues((*session).etrn), junk: true, needHelo: replyEtrnHelo, noTxn: replyEtrnInTxn, counted: cntEtrn},
		{verb: "QUIT", handle: (*session).quitCmd, preTLS: true, counted: cntQuit},
	}
}

// continues makes a handler whose command only replies into a row's
// handler: the session reads the next command after it.
func continues(h func(*session, string) *smtp.SMTPError) func(*session, string) (*smtp.SMTPError, action) {
	return func(s *session, arg string) (*smtp.SMTPError, action) { return h(s, arg), actNext }
}

func lookupCommand(verb string) *command {
	for i := range commands {
		if strings.EqualFold(commands[i].verb, verb) {
			return &commands[i]
		}
	}
	return nil
}

// heloCmd: RFC 5321 sec 4.1.1.1. A second HELO acts as RSET (Postfix).
func (s *session) heloCmd(arg string) *smtp.SMTPError {
	if r := s.hello(arg, replyHeloSyntax, false); r != nil {
		return r
	}
	return replyHelo(s.cfg.opts.Hostname)
}

// hello is what HELO and EHLO share: the hostname argument (syntax is the
// reply without one) and its restrictions, then a new session state with
// that name (a second greeting acts as RSET), ESMTP or not. A non-nil
// reply refuses the command.
func (s *session) hello(arg string, syntax *smtp.SMTPError, esmtp bool) *smtp.SMTPError {
	arg = strings.TrimSpace(arg)
	if arg == "" {
		return syntax
	}
	if r := s.checkHelo(printable.String(arg)); r != nil {
		return r
	}
	s.reset()
	s.helo = printable.String(arg)
	s.esmtp = esmtp
	return nil
}

// ehloCmd answers with the keywords in Postfix's order (anchor 01).
func (s *session) ehloCmd(arg string) *smtp.SMTPError {
	if r := s.hello(arg, replyEhloSyntax, true); r != nil {
		return r
	}
	o := &s.cfg.opts
	kw := []string{o.Hostname, "PIPELINING"}
	if o.MessageSizeLimit > 0 {
		kw = append(kw, "SIZE "+strconv.FormatInt(o.MessageSizeLimit, 10))
	} else {
		kw = append(kw, "SIZE")
	}
	if !o.DisableVRFY {
		kw = append(kw, "VRFY")
	}
	if s.srv.flush != nil && s.srv.flush.Enabled() {
		kw = append(kw, "ETRN")
	}
	if o.TLS != nil && !s.tls {
		kw = append(kw, "STARTTLS")
	}
	if m := s.authMechs(); len(m) > 0 {
		kw = append(kw, "AUTH "+strings.Join(m, " "))
		if o.SASL.BrokenClients { // broken_sasl_auth_clients: Outlook Express 4, Microsoft Exchange 5.0
			kw = append(kw, "AUTH="+strings.Join(m, " "))
		}
	}
	kw = append(kw, "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING")
	return rep(250, none, strings.Join(kw, "\n"))
}

// starttlsCmd: RFC 3207 sec 4; the handshake follows the 220.
func (s *session) starttlsCmd(arg string) (*smtp.SMTPError, action) {
	if strings.TrimSpace(arg) != "" {
		return replyTLSSyntax, actNext
	}
	if s.tls {
		return replyTLSActive, actNext
	}
	if s.cfg.opts.TLS == nil {
		return replyTLSNotOffered, actNext
	}
	if l := s.io.lim.ClientNewTLSRateLimit; !s.exempt && l > 0 && s.srv.anvil.rate(s.client, evNewTLS, time.Now()) > l {
		s.log.Warn().Msgf("Refusing STARTTLS request from %s for service smtp", s.namaddr)
		s.srv.limitEvents(func(e LimitEvents) { e.RateLimited("newtls") })
		return replyTooManyTLS(s.namaddr), actNext
	}
	return replyStartTLS, actStartTLS
}

// mailCmd: RFC 5321 sec 4.1.1.2 with the parameters of RFC 1870 (SIZE),
// RFC 6152 (BODY), RFC 3461 (RET, ENVID), RFC 6531 (SMTPUTF8) and RFC
// 4954 (AUTH).
func (s *session) mailCmd(arg string) *smtp.SMTPError {
	path, params, err := addr.ParseArg(arg, "FROM:")
	if errors.Is(err, addr.ErrCommand) {
		return replyMailSyntax
	}
	if s.overRate(evMail, s.io.lim.ClientMessageRateLimit, "Message delivery request") {
		return replyRateLimited("too much mail", s.client.String())
	}
	if err != nil {
		return replyBadSender
	}
	tx := &transaction{}
	for _, p := range params {
		// RFC 4954 sec 5 (auth.go); with AUTH off it is an unsupported
		// option, as in Postfix 3.7 (var_smtpd_sasl_enable).
		if k, v, _ := strings.Cut(p, "="); strings.EqualFold(k, "AUTH") && s.cfg.opts.SASL.Backend != nil {
			if r := s.mailAuthParam(tx, v); r != nil {
				return r
			}
			continue
		}
		if r := tx.mailParam(p, s.cfg.opts.MessageSizeLimit); r != nil {
			return r
		}
	}
	if path != "" {
		m, err := addr.Parse(path)
		if err != nil {
			return replyBadSender
		}
		if m.UTF8() && !tx.smtputf8 {
			return replyNeedUTF8
		}
		tx.from = m.String()
	}
	if r := s.checkMail(tx); r != nil {
		return r
	}
	s.tx = tx
	return replyMailOK
}

func (tx *transaction) mailParam(p string, limit int64) *smtp.SMTPError {
	key, val, hasVal := strings.Cut(p, "=")
	switch strings.ToUpper(key) {
	case "SIZE":
		if !allDigits(val) {
			return replySizeSyntax
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil || (limit > 0 && n > limit) {
			return replySizeExceeded
		}
		tx.size = n
	case "BODY":
		switch strings.ToUpper(val) {
		case "7BIT":
			tx.body8bit = false
		case "8BITMIME":
			tx.body8bit = true
		default:
			return replyBodySyntax
		}
	case "RET":
		switch strings.ToUpper(val) {
		case "FULL":
			tx.ret = store.RetFull
		case "HDRS":
			tx.ret = store.RetHdrs
		default:
			return replyRetSyntax
		}
	case "ENVID":
		v, ok := decodeXtext(val)
		if !ok || v == "" || len(v) > 100 || !addr.IsASCII(v) {
			return replyEnvidSyntax
		}
		tx.envid = v
	case "SMTPUTF8":
		if hasVal {
			return replyUnsupportedOption(p)
		}
		tx.smtputf8 = true
	default:
		return replyUnsupportedOption(p)
	}
	return nil
}

// rcptCmd: RFC 5321 sec 4.1.1.3 with NOTIFY and ORCPT (RFC 3461 sec 4).
// Past smtpd_recipient_limit the 452 is not counted as an error until
// smtpd_recipient_overshoot_limit is passed (Postfix's rcpt_cmd).
// Restrictions: restrict_stage.go (checkRcpt).
func (s *session) rcptCmd(arg string) (*smtp.SMTPError, action) {
	rc, r := s.rcptArg(arg)
	if r != nil {
		return r, actNext
	}
	if len(s.tx.rcpts) >= s.cfg.opts.RecipientLimit {
		s.tx.overshoot++
		if s.tx.overshoot <= s.cfg.opts.RecipientOvershootLimit {
			return replyTooManyRcpts, actExcused
		}
		return replyTooManyRcpts, actNext
	}
	if r := s.checkRcpt("RCPT", rc.Addr); r != nil {
		return r, actNext
	}
	s.tx.rcpts = append(s.tx.rcpts, rc)
	return replyRcptOK, actNext
}

// rcptArg parses RCPT's argument into a recipient, with its checks in
// Postfix's order (a transaction, the syntax, the recipient rate, the
// address, SMTPUTF8, the parameters).
func (s *session) rcptArg(arg string) (store.Recipient, *smtp.SMTPError) {
	var rc store.Recipient
	if s.tx == nil {
		return rc, replyNeedMail
	}
	path, params, err := addr.ParseArg(arg, "TO:")
	if errors.Is(err, addr.ErrCommand) {
		return rc, replyRcptSyntax
	}
	if s.overRate(evRcpt, s.io.lim.ClientRecipientRateLimit, "Recipient address") {
		return rc, replyRateLimited("too many recipients", s.client.String())
	}
	if err != nil || path == "" {
		return rc, replyBadRcpt
	}
	if strings.EqualFold(path, "postmaster") { // RFC 5321 sec 4.5.1
		path = "postmaster@" + s.cfg.opts.Hostname
	}
	m, err := addr.Parse(path)
	if err != nil {
		return rc, replyBadRcpt
	}
	if m.UTF8() && !s.tx.smtputf8 {
		return rc, replyNeedUTF8
	}
	rc.Addr = m.String()
	for _, p := range params {
		if r := rcptParam(&rc, p); r != nil {
			return rc, r
		}
	}
	return rc, nil
}

func rcptParam(rc *store.Recipient, p string) *smtp.SMTPError {
	key, val, _ := strings.Cut(p, "=")
	switch strings.ToUpper(key) {
	case "NOTIFY":
		if rc.Notify != 0 || val == "" {
			return replyNotifySyntax
		}
		for _, w := range strings.Split(strings.ToUpper(val), ",") {
			switch w {
			case "NEVER":
				rc.Notify |= store.NotifyNever
			case "SUCCESS":
				rc.Notify |= store.NotifySuccess
			case "FAILURE":
				rc.Notify |= store.NotifyFailure
			case "DELAY":
				rc.Notify |= store.NotifyDelay
			default:
				return replyNotifySyntax
			}
		}
		if rc.Notify&store.NotifyNever != 0 && rc.Notify != store.NotifyNever {
			return replyNotifySyntax
		}
	case "ORCPT":
		typ, x, ok := strings.Cut(val, ";")
		if !ok || rc.Orig != "" || typ == "" || !addr.IsASCII(typ) {
			return replyOrcptSyntax
		}
		v, ok := decodeXtext(x)
		if !ok || v == "" {
			return replyOrcptSyntax
		}
		rc.Orig = strings.ToLower(typ) + ";" + v
	default:
		return replyUnsupportedOption(p)
	}
	return nil
}

func (s *session) rsetCmd(arg string) *smtp.SMTPError {
	if strings.TrimSpace(arg) != "" {
		return replyRsetSyntax
	}
	s.reset()
	return replyOK
}

// noopCmd: RFC 5321 sec 4.1.1.9 allows (and ignores) a parameter.
func (s *session) noopCmd(string) *smtp.SMTPError { return replyOK }

// quitCmd: RFC 5321 sec 4.1.1.10; the session hangs up after the 221.
func (s *session) quitCmd(string) (*smtp.SMTPError, action) {
	return replyBye, actHangUp
}

// vrfyCmd answers 252 with the address (RFC 5321 sec 3.5.3) after the
// recipient restrictions, as Postfix does.
func (s *session) vrfyCmd(arg string) *smtp.SMTPError {
	if s.cfg.opts.DisableVRFY {
		return replyVrfyDisabled
	}
	arg = strings.TrimSpace(arg)
	if arg == "" {
		return replyVrfySyntax
	}
	path := arg
	if strings.HasPrefix(arg, "<") && strings.HasSuffix(arg, ">") {
		path = arg[1 : len(arg)-1]
	}
	m, err := addr.Parse(path)
	if err != nil {
		return replyBadRcpt
	}
	if r := s.checkRcpt("VRFY", m.String()); r != nil {
		return r
	}
	return replyVrfy(m.String())
}
