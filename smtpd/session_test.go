package smtpd

import (
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The 452s past smtpd_recipient_limit are not errors while the overshoot
// is within smtpd_recipient_overshoot_limit (the handler's actExcused,
// Postfix's rcpt_cmd); past it each one counts towards
// smtpd_hard_error_limit.
func TestRecipientOvershoot(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, "smtpd_recipient_limit = 1", "smtpd_hard_error_limit = 2"),
		withOptions(func(o *Options) { o.RecipientOvershootLimit = 2 }))
	c := e.dial("")
	c.expect("220 *")
	c.send("HELO client.test\r\n")
	c.expect("250 relay.test")
	c.send("MAIL FROM:<a@sender.test>\r\n")
	c.expect("250 2.1.0 Ok")
	c.send("RCPT TO:<u1@customer.test>\r\n")
	c.expect("250 2.1.5 Ok")
	for i := 2; i <= 5; i++ { // u2 and u3 excused, u4 and u5 errors
		c.send("RCPT TO:<u@customer.test>\r\n")
		c.expect("452 4.5.3 Error: too many recipients")
	}
	c.send("NOOP\r\n")
	c.expect("421 4.7.0 relay.test Error: too many errors")
	c.expectClose()

	// Within the overshoot limit the session goes on.
	c = e.dial("")
	c.expect("220 *")
	c.send("HELO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u1@customer.test>\r\n")
	c.expect("250 relay.test")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	for i := 0; i < 3; i++ { // two excused, one error
		c.send("RCPT TO:<u@customer.test>\r\n")
		c.expect("452 4.5.3 Error: too many recipients")
	}
	c.send("NOOP\r\n")
	c.expect("250 2.0.0 Ok")
}

// after: a 421 hangs up whatever the command asked; an excused refusal
// goes on like any other reply.
func TestAfter(t *testing.T) {
	for _, tc := range []struct {
		code int
		a    action
		want action
	}{
		{250, actNext, actNext},
		{354, actContent, actContent},
		{221, actHangUp, actHangUp},
		{452, actExcused, actNext},
		{421, actNext, actHangUp},
		{421, actContent, actHangUp},
		{220, actStartTLS, actStartTLS},
	} {
		if got := after(rep(tc.code, none, "x"), tc.a); got != tc.want {
			t.Errorf("after(%d, %d) = %d, want %d", tc.code, tc.a, got, tc.want)
		}
	}
}

// An AUTH exchange is read under smtpd_timeout like a command: a client
// that stops after the 334 is told 421 and disconnected.
func TestAuthExchangeTimeout(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, authConfig(t, "smtpd_timeout = 1s")...))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("AUTH LOGIN\r\n")
	c.expect("334 VXNlcm5hbWU6")
	if last, _ := c.closedWithin(30 * time.Second); last != "421 4.4.2 relay.test Error: timeout exceeded" {
		t.Errorf("last reply %q, want the timeout's 421", last)
	}
}

// A reply is one line per line of its text, "code-" on all but the
// last, the enhanced code on each (RFC 5321 sec 4.2.1, RFC 2034).
func TestFormatReply(t *testing.T) {
	for _, c := range []struct {
		r    *smtp.SMTPError
		want string
	}{
		{&smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok"}, "250 2.0.0 Ok\r\n"},
		{&smtp.SMTPError{Code: 220, EnhancedCode: smtp.NoEnhancedCode, Message: "hf.test ESMTP"}, "220 hf.test ESMTP\r\n"},
		{&smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "a\nb\nc"}, "250-a\r\n250-b\r\n250 c\r\n"},
		{&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "one\ntwo"}, "554-5.7.1 one\r\n554 5.7.1 two\r\n"},
		{&smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: ""}, "421 4.4.2 \r\n"},
	} {
		if got := formatReply(c.r); got != c.want {
			t.Errorf("formatReply(%d %v %q) = %q, want %q", c.r.Code, c.r.EnhancedCode, c.r.Message, got, c.want)
		}
		if got := string(appendReply([]byte("x"), c.r)); got != "x"+c.want {
			t.Errorf("appendReply = %q, want %q", got, "x"+c.want)
		}
	}
}
