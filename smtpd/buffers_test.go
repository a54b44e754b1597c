package smtpd

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// The reader, writer and reply buffer a session takes from buffersPool
// carry nothing of the session that had them before: neither the input
// it left unread (commands pipelined after QUIT) nor the replies it could
// not send (a client that reset the connection), nor, after STARTTLS,
// the plaintext pipelined behind it.
func TestSessionBuffersNotShared(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t), withTLS)
	for range 5 {
		// Unread input: what follows QUIT stays in the reader.
		a := e.dial("")
		a.expect("220 *")
		a.send("HELO a.test\r\n")
		a.expect("250 *")
		a.send("QUIT\r\nMAIL FROM:<leak@a.test>\r\nRCPT TO:<u@customer.test>\r\nNOOP leaked\r\n")
		a.expect("221 *")
		a.expectClose()

		// Unsent replies: the client pipelines commands and resets the
		// connection without reading; the replies stay in the writer.
		b := e.dial("")
		b.expect("220 *")
		b.send("HELO b.test\r\n" + strings.Repeat("NOOP\r\n", 60))
		b.conn.(*net.TCPConn).SetLinger(0)
		b.conn.Close()

		// A multi-line reply rendered into the reply buffer.
		c := e.dial("")
		c.expect("220 *")
		c.ehlo()

		// The next session reads only its own input and sends only its
		// own replies.
		d := e.dial("")
		d.expect("220 *")
		d.send("NOOP\r\n")
		d.expect("250 2.0.0 Ok")
		d.send("MAIL FROM:<d@d.test>\r\n")
		d.expect("250 2.1.0 Ok") // not "nested MAIL command"
		d.send("QUIT\r\n")
		d.expect("221 *")
		d.expectClose()
		c.send("QUIT\r\n")
		c.expect("221 *")
	}

	// STARTTLS: the plaintext pipelined after it is dropped (the reader
	// is reset, not replaced), and the session goes on under TLS alone.
	f := e.dial("")
	f.expect("220 *")
	f.ehlo()
	f.send("STARTTLS\r\nMAIL FROM:<injected@f.test>\r\n")
	f.expect("220 2.0.0 Ready to start TLS")
	f.startTLS()
	f.send("MAIL FROM:<f@f.test>\r\n")
	f.expect("250 2.1.0 Ok") // not "nested MAIL command"
	f.send("QUIT\r\n")
	f.expect("221 *")
}

// A read woken before its deadline by another goroutine goes on waiting
// under its own deadline: kick (stress began) marks the deadline stale
// and then sets the connection's read deadline to now; when the read it
// meant has ended meanwhile, the next read may take the mark before that
// deadline lands, and then finds it in place (the session had answered
// 421 timeout, at once or at its next command).
func TestReadWokenLateGoesOn(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, "smtpd_timeout = 30s"))
	c := e.dial("")
	c.expect("220 *")
	c.send("HELO c.test\r\n")
	c.expect("250 *")
	var sess *session
	if !testutil.WaitFor(10*time.Second, func() bool {
		e.srv.sessions.Each(func(s *session) {
			if s.io.reading.Load() {
				sess = s
			}
		})
		return sess != nil
	}) {
		t.Fatal("the session is not reading")
	}
	// The deadline of a kick whose flag was cleared (kicked false).
	sess.raw.SetReadDeadline(time.Now())
	c.send("NOOP\r\n")
	c.expect("250 2.0.0 Ok")
	c.send("QUIT\r\n")
	c.expect("221 *")
}

// TestShutdownCutsTLSSession: a session still busy (in DATA, after
// STARTTLS: its buffers reset, its deadlines forgotten) when Shutdown's
// time ends is cut: its connection is closed from Shutdown's goroutine,
// the session ends and its buffers go back to the pool, and the cut
// content is not queued.
func TestShutdownCutsTLSSession(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t), withTLS)
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.starttls()
	c.send("EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	for {
		l := c.expect("250*")
		if strings.HasPrefix(l, "250 ") {
			break
		}
	}
	c.expect("250 *")
	c.expect("250 *")
	c.expect("354 *")
	c.send("Subject: never ends\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the cut after its deadline", err)
	}
	c.expectClose()
	if n := e.queued(); n != 0 {
		t.Fatalf("%d messages queued from a cut DATA", n)
	}
}
