package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/store"
)

// result is the outcome of one recipient in one attempt.
type result struct {
	State  store.RcptState // Delivered, Bounced, or Pending (= deferred)
	DSN    string          // enhanced status code, "4.4.1"
	Reply  string          // Postfix's wording, for the log and mailq
	Diag   string          // DSN Diagnostic-Code: "smtp; 550 5.1.1 ..." or "X-Postfix; ..."
	Remote string          // host that gave the reply, for Remote-MTA
	Relay  string          // name[addr]:port for the log, "none" without one
	Status string          // log status: sent, deferred, bounced, expired
	// TLS is the session's TLS, for the log: nil without a session,
	// an empty Protocol for a plaintext one.
	TLS *tlsInfo
	// Relayed: delivered to a next hop that did not announce DSN, so a
	// NOTIFY=SUCCESS recipient gets a "relayed" notice from us.
	Relayed bool
}

// classify is the one place that turns the SMTP conversation's result into
// an outcome (STYLE.md 17): a 2xx reply delivers, 4xx and every network
// error or timeout defer, 5xx bounces (RFC 5321 sec 4.2.1). t is the
// server, stage the command in progress ("RCPT TO", "end of DATA").
func classify(err error, t target, stage string, softBounce bool) result {
	r := result{Remote: t.Name, Relay: t.Relay()}
	var se *smtp.SMTPError
	var le *replyLimitError
	switch {
	case errors.As(err, &se):
		text := replyText(se)
		r.Diag = "smtp; " + text
		r.DSN = enhanced(se)
		if se.Code >= 200 && se.Code < 300 {
			r.State, r.Status, r.Reply = store.RcptDelivered, "sent", text
			break
		}
		r.Reply = fmt.Sprintf("host %s[%s] said: %s (in reply to %s command)", t.Name, t.ip(), text, stage)
		switch {
		case se.Code >= 500 && !softBounce:
			r.State, r.Status = store.RcptBounced, "bounced"
		default:
			r.State, r.Status = store.RcptPending, "deferred"
			r.DSN = "4" + r.DSN[1:]
		}
	case errors.As(err, &le):
		// A protocol error, not the server's answer: a deferral (RFC 3463
		// 4.5.0), whatever the reply code was going to be.
		r = transient(t, "4.5.0", fmt.Sprintf("host %s[%s] sent a %s while %s", t.Name, t.Addr, le.what, receiving(stage)))
	case isTimeout(err):
		r = transient(t, "4.4.2", fmt.Sprintf("conversation with %s[%s] timed out while %s", t.Name, t.ip(), sending(stage)))
	default:
		r = transient(t, "4.4.2", fmt.Sprintf("lost connection with %s[%s] while %s", t.Name, t.ip(), sending(stage)))
	}
	return r
}

// sending words the stage of a broken conversation as Postfix's smtp(8).
func sending(stage string) string {
	switch stage {
	case "MAIL FROM", "RCPT TO", "RSET":
		return "sending " + stage
	case "DATA":
		return "sending DATA command"
	case "end of DATA":
		// The server may have taken the message: it may come twice.
		return "sending end of data -- message may be sent more than once"
	}
	return stage
}

// receiving words the stage for a bad reply: "receiving the initial
// server greeting", "performing the EHLO handshake", or the reply to a
// command ("receiving the reply to RCPT TO").
func receiving(stage string) string {
	switch stage {
	case "MAIL FROM", "RCPT TO", "RSET", "DATA", "QUIT":
		return "receiving the reply to " + stage
	case "end of DATA":
		return "receiving the reply to the end of data -- message may be sent more than once"
	}
	return stage
}

// transient is a deferral for reason text.
func transient(t target, dsn, text string) result {
	return result{State: store.RcptPending, Status: "deferred", DSN: dsn, Reply: text,
		Diag: "X-Postfix; " + text, Remote: t.Name, Relay: t.Relay()}
}

// connectFailure words a failed connection as Postfix does:
// "connect to mx[1.2.3.4]:25: Connection refused" (4.4.1).
func connectFailure(t target, err error) result {
	why := err.Error()
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		why = "Connection refused"
	case isTimeout(err) || errors.Is(err, context.DeadlineExceeded):
		why = "Connection timed out"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		why = "No route to host"
	}
	return transient(t, "4.4.1", fmt.Sprintf("connect to %s: %s", t.Relay(), why))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// replyText renders a reply as "550 5.1.1 text" (multi-line replies on one
// line, as Postfix logs them).
func replyText(se *smtp.SMTPError) string {
	msg := strings.ReplaceAll(se.Message, "\n", " ")
	if hasEnhanced(se) {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], msg)
	}
	return fmt.Sprintf("%d %s", se.Code, msg)
}

func hasEnhanced(se *smtp.SMTPError) bool {
	e := se.EnhancedCode
	return e != smtp.NoEnhancedCode && e != (smtp.EnhancedCode{}) && e[0] >= 2 && e[0] <= 5
}

// enhanced is the reply's enhanced status code with its class made to agree
// with the reply code, or X.0.0 when the server sent none (RFC 3463).
func enhanced(se *smtp.SMTPError) string {
	class := se.Code / 100
	if hasEnhanced(se) {
		return fmt.Sprintf("%d.%d.%d", class, se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return fmt.Sprintf("%d.0.0", class)
}

// splitDSN takes a leading "x.y.z " from text (error:text, lookups).
func splitDSN(text, def string) (dsn, rest string) {
	f := strings.SplitN(text, " ", 2)
	if len(f) > 0 && isDSN(f[0]) {
		if len(f) == 2 {
			return f[0], f[1]
		}
		return f[0], ""
	}
	return def, text
}

func isDSN(s string) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || len(p[0]) != 1 || (p[0] != "2" && p[0] != "4" && p[0] != "5") {
		return false
	}
	return isDigits(p[1]) && isDigits(p[2]) && len(p[1]) <= 3 && len(p[2]) <= 3
}
