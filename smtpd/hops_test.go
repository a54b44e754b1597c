package smtpd

import (
	"fmt"
	"strings"
	"testing"
)

// hopcount_limit: Postfix's cleanup counts the Received: fields of the
// header section with smtpd's own and refuses a message that reaches the
// limit (554 5.4.0 Error: too many hops), over DATA and BDAT. Received:
// lines in the body and folded lines do not count.
func TestHopcountLimit(t *testing.T) {
	e := startServer(t, newConfig(t, "hopcount_limit = 50"))
	if e.opts.HopcountLimit != 50 {
		t.Fatalf("HopcountLimit %d", e.opts.HopcountLimit)
	}
	header := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "received: from hop%d.test\r\n\tby hop%d.test; Mon, 1 Jan 2026 00:00:00 +0000\r\n", i, i+1)
		}
		return b.String()
	}
	body := "Subject: loop\r\n\r\nReceived: in the body, not counted\r\n"
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	// 48 + ours = 49: accepted.
	c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n" + header(48) + body + ".\r\n")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("354 *")
	c.expect("250 2.0.0 Ok: queued as *")
	// 49 + ours = 50: refused.
	c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n" + header(49) + body + ".\r\n")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("354 *")
	c.expect("554 5.4.0 Error: too many hops")
	msg := header(60) + body
	c.send(fmt.Sprintf("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nBDAT %d LAST\r\n%s", len(msg), msg))
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("554 5.4.0 Error: too many hops")
	c.send("NOOP\r\n")
	c.expect("250 2.0.0 Ok")
	if n := e.queued(); n != 1 {
		t.Fatalf("%d messages queued, want 1", n)
	}
}
