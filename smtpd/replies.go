package smtpd

import (
	"fmt"
	"strconv"

	"github.com/emersion/go-smtp"
)

// Every reply the server sends is declared here once, with Postfix 3.7's
// exact text (reference spec §1; anchors in the Postfix transcripts).
// Replies that Postfix sends without an enhanced status code use
// smtp.NoEnhancedCode.

func rep(code int, enh smtp.EnhancedCode, text string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}
}

func ec(a, b, c int) smtp.EnhancedCode { return smtp.EnhancedCode{a, b, c} }

var none = smtp.NoEnhancedCode

// Fixed replies.
var (
	replyOK         = rep(250, ec(2, 0, 0), "Ok")
	replyMailOK     = rep(250, ec(2, 1, 0), "Ok")
	replyRcptOK     = rep(250, ec(2, 1, 5), "Ok")
	replyBye        = rep(221, ec(2, 0, 0), "Bye")
	replyStartData  = rep(354, none, "End data with <CR><LF>.<CR><LF>")
	replyStartTLS   = rep(220, ec(2, 0, 0), "Ready to start TLS")
	replyShutdown   = rep(421, ec(4, 3, 2), "Service shutting down")
	replyBadSyntax  = rep(500, ec(5, 5, 2), "Error: bad syntax")
	replyBadUTF8    = rep(500, ec(5, 5, 2), "Error: bad UTF-8 syntax")
	replyUnknownCmd = rep(502, ec(5, 5, 2), "Error: command not recognized")

	replyHeloSyntax = rep(501, none, "Syntax: HELO hostname")
	replyEhloSyntax = rep(501, none, "Syntax: EHLO hostname")

	replyMailHelo     = rep(503, ec(5, 5, 1), "Error: send HELO/EHLO first")
	replyNestedMail   = rep(503, ec(5, 5, 1), "Error: nested MAIL command")
	replyMailSyntax   = rep(501, ec(5, 5, 4), "Syntax: MAIL FROM:<address>")
	replyBadSender    = rep(501, ec(5, 1, 7), "Bad sender address syntax")
	replySizeSyntax   = rep(501, ec(5, 5, 4), "Bad message size syntax")
	replySizeExceeded = rep(552, ec(5, 3, 4), "Message size exceeds fixed limit")
	// replyTooManyHops: hopcount_limit (Postfix's smtpd, CLEANUP_STAT_HOPS).
	replyTooManyHops = rep(554, ec(5, 4, 0), "Error: too many hops")
	replyRetSyntax   = rep(501, ec(5, 5, 4), "Bad RET parameter syntax")
	replyEnvidSyntax = rep(501, ec(5, 5, 4), "Bad ENVID parameter syntax")
	replyBodySyntax  = rep(501, ec(5, 5, 4), "Bad BODY keyword syntax")
	replyNeedUTF8    = rep(553, ec(5, 6, 7), "Must declare SMTPUTF8 to send unicode address")

	replyNeedMail      = rep(503, ec(5, 5, 1), "Error: need MAIL command")
	replyRcptSyntax    = rep(501, ec(5, 5, 4), "Syntax: RCPT TO:<address>")
	replyBadRcpt       = rep(501, ec(5, 1, 3), "Bad recipient address syntax")
	replyNotifySyntax  = rep(501, ec(5, 5, 4), "Error: Bad NOTIFY parameter syntax")
	replyOrcptSyntax   = rep(501, ec(5, 5, 4), "Error: Bad ORCPT parameter syntax")
	replyTooManyRcpts  = rep(452, ec(4, 5, 3), "Error: too many recipients")
	replyNeedRcpt      = rep(503, ec(5, 5, 1), "Error: need RCPT command")
	replyNoValidRcpts  = rep(554, ec(5, 5, 1), "Error: no valid recipients")
	replyDataSyntax    = rep(501, ec(5, 5, 4), "Syntax: DATA")
	replyRsetSyntax    = rep(501, ec(5, 5, 4), "Syntax: RSET")
	replyNoSpace       = rep(452, ec(4, 3, 1), "Insufficient system storage")
	replyWriteError    = rep(451, ec(4, 3, 0), "Error: queue file write error")
	replyVrfyDisabled  = rep(502, ec(5, 5, 1), "VRFY command is disabled")
	replyVrfySyntax    = rep(501, ec(5, 5, 4), "Syntax: VRFY address")
	replyTLSSyntax     = rep(501, ec(5, 5, 4), "Syntax: STARTTLS")
	replyTLSActive     = rep(554, ec(5, 5, 1), "Error: TLS already active")
	replyTLSNotOffered = rep(502, ec(5, 5, 1), "Error: command not implemented")
	replyTLSFirst      = rep(530, ec(5, 7, 0), "Must issue a STARTTLS command first")
	replyBdatSyntax    = rep(521, ec(5, 5, 4), "Syntax: BDAT count [LAST]")
	replyNullBdat      = rep(551, ec(5, 7, 1), "Null BDAT request")
	replyChunkTooBig   = rep(552, ec(5, 3, 4), "Chunk exceeds message size limit")
	replyDataAfterBdat = rep(503, ec(5, 5, 1), "Error: DATA after BDAT")
	replyMailAfterBdat = rep(503, ec(5, 5, 1), "Error: MAIL after BDAT")
	replyRcptAfterBdat = rep(503, ec(5, 5, 1), "Error: RCPT after BDAT")
	replyPipelining    = rep(554, ec(5, 5, 0), "Error: SMTP protocol synchronization")

	// ETRN (reference spec §1.2): none carries an enhanced status code.
	replyEtrnHelo      = rep(503, none, "Error: send HELO/EHLO first")
	replyEtrnInTxn     = rep(503, none, "Error: MAIL transaction in progress")
	replyEtrnSyntax    = rep(500, none, "Syntax: ETRN domain")
	replyEtrnBadParam  = rep(501, none, "Error: invalid parameter syntax")
	replyEtrnCantQueue = rep(458, none, "Unable to queue messages")
	replyEtrnStarted   = rep(250, none, "Queuing started")
)

// Replies with arguments.

func replyGreeting(banner string) *smtp.SMTPError { return rep(220, none, banner) }

func replyHelo(host string) *smtp.SMTPError { return rep(250, none, host) }

func replyQueued(id string) *smtp.SMTPError {
	return rep(250, ec(2, 0, 0), "Ok: queued as "+id)
}

func replyChunkOK(n int64) *smtp.SMTPError {
	return rep(250, ec(2, 0, 0), "Ok: "+strconv.FormatInt(n, 10)+" bytes")
}

func replyVrfy(addr string) *smtp.SMTPError { return rep(252, ec(2, 0, 0), addr) }

func replyUnsupportedOption(opt string) *smtp.SMTPError {
	return rep(555, ec(5, 5, 4), "Unsupported option: "+opt)
}

func replyTimeout(host string) *smtp.SMTPError {
	return rep(421, ec(4, 4, 2), host+" Error: timeout exceeded")
}

func replyTooManyErrors(host string) *smtp.SMTPError {
	return rep(421, ec(4, 7, 0), host+" Error: too many errors")
}

func replyTooManyConnsFrom(host, addr string) *smtp.SMTPError {
	return rep(421, ec(4, 7, 0), host+" Error: too many connections from "+addr)
}

func replyTooManyConns(host string) *smtp.SMTPError {
	return rep(421, ec(4, 7, 0), host+" Error: too many connections")
}

// replyBareLF: smtpd_forbid_bare_newline = reject (Postfix 3.9's smtpd.c,
// code smtpd_forbid_bare_newline_reject_code).
func replyBareLF(code int, host string) *smtp.SMTPError {
	return rep(code, ec(5, 5, 2), host+" Error: bare <LF> received")
}

// Per-client rate limits (Postfix smtpd.c, anvil): MAIL and RCPT name the
// client's address, the TLS replies its name[address].

// replyRateLimited is 450 4.7.1 "Error: too much mail from ADDR", with
// what "too much mail", "too many recipients" or "too many AUTH commands".
func replyRateLimited(what, addr string) *smtp.SMTPError {
	return rep(450, ec(4, 7, 1), "Error: "+what+" from "+addr)
}

func replyTooManyTLS(namaddr string) *smtp.SMTPError {
	return rep(454, ec(4, 7, 0), "Error: too many new TLS sessions from "+namaddr)
}

func replyTooManyTLSHangup(host, namaddr string) *smtp.SMTPError {
	return rep(421, ec(4, 7, 0), host+" Error: too many new TLS sessions from "+namaddr)
}

// replyTooManyEtrn is ours (Postfix has no ETRN rate limit): RFC 1985's
// 458, without an enhanced code like Postfix's other ETRN replies.
func replyTooManyEtrn(addr string) *smtp.SMTPError {
	return rep(458, none, "Error: too many ETRN requests from "+addr)
}

// replyEtrnDenied: RFC 1985's 459; DOMAIN is the argument as typed after
// the one-character prefix is removed (reference spec §1.2 row 8).
func replyEtrnDenied(domain string) *smtp.SMTPError {
	return rep(459, none, "<"+domain+">: service unavailable")
}

// RFC 1985 sec 5: the counting replies, used with etrn_reply_counts = yes.
func replyEtrnNone(node string) *smtp.SMTPError {
	return rep(251, none, "OK, no messages waiting for node "+node)
}

func replyEtrnCount(n int, node string) *smtp.SMTPError {
	return rep(253, none, fmt.Sprintf("OK, %d pending messages for node %s started", n, node))
}

// Restriction replies (Postfix smtpd_check.c vocabulary). class is
// "Client host", "Sender address", "Recipient address" or "Etrn command";
// name the bracketed subject.

func replyRejected(code int, enh smtp.EnhancedCode, name, class, text string) *smtp.SMTPError {
	return rep(code, enh, "<"+name+">: "+class+" rejected: "+text)
}

func replyRelayDenied(code int, enh smtp.EnhancedCode, addr string) *smtp.SMTPError {
	return rep(code, enh, "<"+addr+">: Relay access denied")
}

func replyLookupFailure(name string) *smtp.SMTPError {
	return rep(451, ec(4, 3, 0), "<"+name+">: Temporary lookup failure")
}

// Restriction replies without a subject.
var (
	replyConfigError  = rep(451, ec(4, 3, 5), "Server configuration error")
	rep450Unavailable = rep(450, ec(4, 7, 1), "Service unavailable")
)

// replyAccessDeniedFor answers commands after the client restrictions
// rejected the connection (smtpd_delay_reject = no; RFC 5321 sec 3.1).
func replyAccessDeniedFor(namaddr string) *smtp.SMTPError {
	return rep(503, ec(5, 7, 0), "Error: access denied for "+namaddr)
}

// AUTH replies (Postfix's text; RFC 4954 sec 6 codes).
var (
	replyAuthOK           = rep(235, ec(2, 7, 0), "Authentication successful")
	replyAuthDisabled     = rep(503, ec(5, 5, 1), "Error: authentication not enabled")
	replyAuthAlready      = rep(503, ec(5, 5, 1), "Error: already authenticated")
	replyAuthInTxn        = rep(503, ec(5, 5, 1), "Error: MAIL transaction in progress")
	replyAuthNeedTLS      = rep(504, ec(5, 5, 4), "Encryption required for requested authentication mechanism")
	replyAuthMechNeedsTLS = rep(538, ec(5, 7, 11), "Encryption required for requested authentication mechanism")
	replyAuthSyntax       = rep(501, ec(5, 5, 4), "Syntax: AUTH mechanism")
	replyAuthAborted      = rep(501, ec(5, 7, 0), "Authentication aborted")
	replyAuthDecode       = rep(501, ec(5, 5, 2), "Cannot decode response")
	replyAuthLineTooLong  = rep(500, ec(5, 5, 6), "Authentication Exchange line is too long")
)

func replyAuthFailed(reason string) *smtp.SMTPError {
	return rep(535, ec(5, 7, 8), "Error: authentication failed: "+reason)
}

func replyAuthTemp(reason string) *smtp.SMTPError {
	return rep(454, ec(4, 7, 0), "Temporary authentication failure: "+reason)
}

var replyAuthParamTwice = rep(503, ec(5, 5, 4), "Error: multiple AUTH= options")
