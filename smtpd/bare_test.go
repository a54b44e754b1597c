package smtpd

import (
	"strings"
	"testing"
)

// TestBareNewline: smtpd_forbid_bare_newline as Postfix 3.9 has it, for
// DATA, BDAT and commands. Whatever the mode, what is stored has CRLF
// line ends only: a bare CR or LF becomes CRLF, so the issue's
// "hello\r.\rMAIL FROM:<smuggled@...>" cannot end the message at a next
// hop that takes a bare CR for a line end.
func TestBareNewline(t *testing.T) {
	const tail = "\r\nSubject: t\r\n\r\n"
	for _, tc := range []struct {
		name, mode, data string
		reply            string // "" = queued
		body             string // what follows our Received: header
	}{
		{"bare CR normalized", "normalize", "Subject: t\r\n\r\nhello\r.\rMAIL FROM:<smuggled@evil.test>\r\n.\r\n",
			"", "hello\r\n.\r\nMAIL FROM:<smuggled@evil.test>\r\n"},
		{"bare CR at line end", "normalize", "Subject: t\r\n\r\na\r\r\nb\r\n.\r\n", "", "a\r\n\r\nb\r\n"},
		{"LF.LF is no end", "normalize", "Subject: t\r\n\r\na\n.\nRCPT TO:<x@evil.test>\r\n.\r\n", "", "a\r\nRCPT TO:<x@evil.test>\r\n"},
		{"CRLF.LF is no end", "normalize", "Subject: t\r\n\r\na\r\n.\nb\r\n.\r\n", "", "a\r\nb\r\n"},
		{"LF.CRLF is no end", "yes", "Subject: t\r\n\r\na\n.\r\nb\r\n.\r\n", "", "a\r\nb\r\n"},
		{"note", "note", "Subject: t\r\n\r\na\nb\r\n.\r\n", "", "a\r\nb\r\n"},
		{"reject", "reject", "Subject: t\r\n\r\na\nb\r\n.\r\n", "550 5.5.2 relay.test Error: bare <LF> received", ""},
		{"reject: bare CR is normalized", "reject", "Subject: t\r\n\r\na\rb\r\n.\r\n", "", "a\r\nb\r\n"},
		{"no: LF.LF ends", "no", "Subject: t\r\n\r\na\n.\nRSET\r\n", "", "a\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startServer(t, newConfig(t, "smtpd_forbid_bare_newline = "+tc.mode))
			c := e.dial("")
			c.expect("220 *")
			c.ehlo()
			c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
			c.expect("250 2.1.0 Ok")
			c.expect("250 2.1.5 Ok")
			c.expect("354 *")
			c.send(tc.data)
			if tc.reply != "" {
				c.expect(tc.reply)
				if n := e.queued(); n != 0 {
					t.Fatalf("%d queued", n)
				}
				return
			}
			c.expect("250 2.0.0 Ok: queued as *")
			if tc.mode == "no" {
				c.expect("250 2.0.0 Ok") // the RSET after the end
			}
			_, body := e.onlyMessage()
			if _, got, ok := strings.Cut(body, tail); !ok || got != tc.body {
				t.Fatalf("body %q, want …%q", body, tc.body)
			}
		})
	}
}

// TestBareNewlineBDAT: line ends are made CRLF across chunk boundaries;
// reject fails the chunk and the rest of the transfer.
func TestBareNewlineBDAT(t *testing.T) {
	e := startServer(t, newConfig(t))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nBDAT 5\r\nS: t\rBDAT 7\r\n\n\r\na\r.\rBDAT 2 LAST\r\nb\r")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("250 2.0.0 Ok: 5 bytes")
	c.expect("250 2.0.0 Ok: 7 bytes")
	c.expect("250 2.0.0 Ok: queued as *")
	_, body := e.onlyMessage()
	if !strings.HasSuffix(body, "\r\nS: t\r\n\r\na\r\n.\r\nb\r\n") {
		t.Fatalf("body %q", body)
	}

	r := startServer(t, newConfig(t, "smtpd_forbid_bare_newline = reject"))
	c = r.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nBDAT 3\r\na\nbBDAT 2 LAST\r\nc\n")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("550 5.5.2 relay.test Error: bare <LF> received")
	c.expect("550 5.5.2 relay.test Error: bare <LF> received")
	if n := r.queued(); n != 0 {
		t.Fatalf("%d queued", n)
	}
}

// TestBareNewlineCommand: under reject a command ending in a bare LF gets
// Postfix's reply and the client is disconnected; under normalize it is
// taken as ending in CRLF; smtpd_forbid_bare_newline_exclusions (default
// $mynetworks) turns the rule off for those clients.
func TestBareNewlineCommand(t *testing.T) {
	r := startServer(t, newConfig(t, "smtpd_forbid_bare_newline = reject"))
	c := r.dial("")
	c.expect("220 *")
	c.send("HELO c\n")
	c.expect("550 5.5.2 relay.test Error: bare <LF> received")
	c.expectClose()

	n := startServer(t, newConfig(t))
	c = n.dial("")
	c.expect("220 *")
	c.send("HELO c\nNOOP\r\n")
	c.expect("250 relay.test")
	c.expect("250 2.0.0 Ok")

	x := startServer(t, newConfig(t, "smtpd_forbid_bare_newline = reject", "smtpd_forbid_bare_newline_exclusions = 127.0.0.0/8"))
	c = x.dial("")
	c.expect("220 *")
	c.send("HELO c\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	c.expect("250 relay.test")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("354 *")
	c.send("a\n.\n")
	c.expect("250 2.0.0 Ok: queued as *")
	if _, body := x.onlyMessage(); !strings.HasSuffix(body, ")\r\na\r\n") {
		t.Fatalf("body %q", body)
	}
}
