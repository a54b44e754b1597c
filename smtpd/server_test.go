package smtpd

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

func TestConnectionLimits(t *testing.T) {
	// 127.0.0.2 is in mynetworks, which is exempt from the per-client
	// limit (smtpd_client_event_limit_exceptions' default) but not from
	// the global one.
	e := startServer(t, newConfig(t, "mynetworks = 127.0.0.2/32",
		"smtpd_client_connection_count_limit = 2", "smtpd_connection_limit = 5"))
	a, b := e.dial("127.0.0.1"), e.dial("127.0.0.1")
	a.expect("220 *")
	b.expect("220 *")
	third := e.dial("127.0.0.1")
	third.expect("421 4.7.0 relay.test Error: too many connections from 127.0.0.1")
	third.expectClose()
	for range 3 {
		e.dial("127.0.0.2").expect("220 *")
	}
	over := e.dial("127.0.0.3")
	over.expect("421 4.7.0 relay.test Error: too many connections")
	over.expectClose()
	// A freed slot is reusable.
	a.send("QUIT\r\n")
	a.expect("221 *")
	a.expectClose()
	var l string
	if !testutil.WaitFor(5*time.Second, func() bool {
		l, _ = e.dial("127.0.0.1").line()
		return strings.HasPrefix(l, "220 ")
	}) {
		t.Fatalf("slot not freed: %q", l)
	}
}

// sessionEvents records Options.Events calls.
type sessionEvents struct {
	mu             sync.Mutex
	opened, closed int
	rejected       []string
}

func (ev *sessionEvents) SessionOpened() { ev.mu.Lock(); ev.opened++; ev.mu.Unlock() }
func (ev *sessionEvents) SessionClosed() { ev.mu.Lock(); ev.closed++; ev.mu.Unlock() }
func (ev *sessionEvents) SessionRejected(reason string) {
	ev.mu.Lock()
	ev.rejected = append(ev.rejected, reason)
	ev.mu.Unlock()
}

func (ev *sessionEvents) String() string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return fmt.Sprintf("opened %d closed %d rejected %s", ev.opened, ev.closed, strings.Join(ev.rejected, ","))
}

// Options.Events: sessions opened and closed, refusals and policy
// hang-ups with their reason.
func TestSessionEvents(t *testing.T) {
	ev := &sessionEvents{}
	e := startServer(t, newConfig(t, "mynetworks = 127.0.0.2/32", "smtpd_client_connection_count_limit = 1",
		"smtpd_hard_error_limit = 2"), withOptions(func(o *Options) { o.Events = ev }))
	a := e.dial("127.0.0.1")
	a.expect("220 *")
	b := e.dial("127.0.0.1")
	b.expect("421 4.7.0 relay.test Error: too many connections from 127.0.0.1")
	b.expectClose()
	a.send("BOGUS\r\nBOGUS\r\n")
	a.expect("502 5.5.2 *")
	a.expect("502 5.5.2 *")
	a.expect("421 4.7.0 relay.test Error: too many errors")
	a.expectClose()
	c := e.dial("127.0.0.1")
	c.expect("220 *")
	c.send("QUIT\r\n")
	c.expect("221 *")
	c.expectClose()
	const want = "opened 2 closed 2 rejected too_many_connections_from_client,errors"
	if !testutil.WaitFor(5*time.Second, func() bool { return ev.String() == want }) {
		t.Fatalf("events: %s, want %s", ev, want)
	}
}

// TestShutdown: an idle session is told 421 4.3.2 at once; a session in
// the middle of DATA finishes its message, then gets the 421.
func TestShutdown(t *testing.T) {
	e := startServer(t, newConfig(t))
	idle := e.dial("")
	idle.expect("220 *")
	busy := e.dial("")
	busy.expect("220 *")
	busy.send("HELO c\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	for range 3 {
		busy.line()
	}
	busy.expect("354 *")
	busy.send("Subject: half\r\n")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	idle.expect("421 4.3.2 Service shutting down")
	idle.expectClose() // the server is closing: busy's next command gets 421
	busy.send("\r\nrest\r\n.\r\nNOOP\r\n")
	busy.expect("250 2.0.0 Ok: queued as *")
	busy.expect("421 4.3.2 Service shutting down")
	busy.expectClose()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := e.queued(); n != 1 {
		t.Fatalf("%d messages", n)
	}
}

func TestUnknownRestriction(t *testing.T) {
	_, err := New(testOptions(t, func(o *Options) { o.ETRNRestrictions = []string{"permit_mynetworks", "reject_everything"} }), failingQueue{}, nil, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), `smtpd_etrn_restrictions: unknown restriction "reject_everything"`) {
		t.Fatalf("err = %v", err)
	}
	_, err = New(testOptions(t, func(o *Options) { o.ClientRestrictions = []string{"check_client_access"} }), failingQueue{}, nil, zerolog.Nop())
	if err == nil {
		t.Fatal("check_client_access without table accepted")
	}
}

// TestEnforceTLS: with TLS required only STARTTLS, EHLO, HELO, NOOP,
// RSET and QUIT work before the handshake.
func TestEnforceTLS(t *testing.T) {
	e := startServer(t, newConfig(t), withTLS, withOptions(func(o *Options) { o.EnforceTLS = true }))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("MAIL FROM:<a@sender.test>\r\nETRN customer.test\r\nSTARTTLS\r\n")
	c.expect("530 5.7.0 Must issue a STARTTLS command first")
	c.expect("530 5.7.0 Must issue a STARTTLS command first")
	c.expect("220 2.0.0 Ready to start TLS")
	c.startTLS()
	c.send("ETRN customer.test\r\n")
	c.expect("250 Queuing started")
}

// TestLongCommandLine: a line past line_length_limit is cut there and the
// rest skipped; the session goes on.
func TestLongCommandLine(t *testing.T) {
	e := startServer(t, newConfig(t, "line_length_limit = 100"))
	c := e.dial("")
	c.expect("220 *")
	c.send("NOOP " + strings.Repeat("x", 5000) + "\r\nHELO client.test\r\n")
	c.expect("250 2.0.0 Ok")
	c.expect("250 relay.test")
}

// TestErrorSleep: from smtpd_soft_error_limit on, replies are delayed.
func TestErrorSleep(t *testing.T) {
	e := startServer(t, newConfig(t, "smtpd_soft_error_limit = 2"),
		withOptions(func(o *Options) { o.ErrorSleep = 200 * time.Millisecond }))
	c := e.dial("")
	c.expect("220 *")
	c.send("FOO\r\nFOO\r\n")
	c.expect("502 *")
	c.expect("502 *")
	start := time.Now()
	c.send("NOOP\r\n")
	c.expect("250 2.0.0 Ok")
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("reply after %v, want the error sleep", d)
	}
}

// slowListener delays each accepted connection, so that a client's
// early input is there before the greeting.
type slowListener struct{ net.Listener }

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		time.Sleep(100 * time.Millisecond)
	}
	return c, err
}

// TestTalkBeforeGreetingReusedBuffers: the pipelining peek lives in the
// session's pooled buffers (it keeps the connection's RawConn); sessions
// one after another, which take the buffers of the one before, each
// look at their own connection: a client that talks before the
// greeting is caught after a session that was served, and a client
// that waits is served after one that was cut.
func TestTalkBeforeGreetingReusedBuffers(t *testing.T) {
	e := slowServer(t, true)
	for range 3 {
		c := e.dial("")
		c.expect("220 *")
		c.ehlo()
		c.send("QUIT\r\n")
		c.expect("221 *")
		c.expectClose()

		c = e.dial("")
		c.send("EHLO early.test\r\n")
		c.expect("554 5.5.0 Error: SMTP protocol synchronization")
		c.expectClose()
	}
}

// slowServer serves on a loopback listener whose connections are
// greeted late (slowListener), so that a client can talk first, with
// smtpd_forbid_unauth_pipelining set to forbid; the server is shut down
// when the test ends.
func slowServer(t *testing.T, forbid bool) *env {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "q.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := New(testOptions(t, func(o *Options) { o.MyNetworks, o.ForbidUnauthPipelining = nil, forbid }), st, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(slowListener{ln})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(ctx)
		cancel()
	})
	return &env{t: t, st: st, addr: ln.Addr().String()}
}

// TestTalkBeforeGreeting: with smtpd_forbid_unauth_pipelining a client
// that sends before the greeting gets 554 5.5.0 and is disconnected;
// without it, it is served.
func TestTalkBeforeGreeting(t *testing.T) {
	for _, forbid := range []bool{true, false} {
		t.Run(fmt.Sprintf("forbid=%v", forbid), func(t *testing.T) {
			c := slowServer(t, forbid).dial("")
			c.send("EHLO early.test\r\n")
			if forbid {
				c.expect("554 5.5.0 Error: SMTP protocol synchronization")
				c.expectClose()
			} else {
				c.expect("220 *")
				c.expect("250-relay.test")
			}
		})
	}
}
