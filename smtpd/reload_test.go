package smtpd

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// reloadTo builds Options from the base configuration plus lines and
// reloads the server with them.
func (e *env) reloadTo(lines ...string) error {
	e.t.Helper()
	o, err := OptionsFromConfig(newConfig(e.t, lines...))
	if err != nil {
		e.t.Fatalf("OptionsFromConfig: %v", err)
	}
	return e.srv.Reload(o)
}

// A reload applies to the sessions that start after it; a session in
// progress keeps the configuration it began with to its end.
func TestReloadNewSessionsOnly(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, outside()...))
	before := e.dial("")
	before.expect("220 *")
	before.ehlo()
	before.send("MAIL FROM:<a@sender.test>\r\n")
	before.expect("250 2.1.0 Ok")
	before.send("RCPT TO:<u@new.test>\r\n")
	before.expect("454 4.7.1 <u@new.test>: Relay access denied")

	if err := e.reloadTo(outside("relay_domains = customer.test, new.test")...); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	// The session that began before: the old relay_domains still.
	before.send("RCPT TO:<u@new.test>\r\n")
	before.expect("454 4.7.1 <u@new.test>: Relay access denied")
	before.send("RCPT TO:<u@customer.test>\r\n")
	before.expect("250 2.1.5 Ok")
	before.send("DATA\r\n")
	before.expect("354 *")
	before.send("Subject: t\r\n\r\nbody\r\n.\r\n")
	before.expect("250 2.0.0 Ok: queued as *")

	after := e.dial("")
	after.expect("220 *")
	after.ehlo()
	after.send("MAIL FROM:<a@sender.test>\r\n")
	after.expect("250 2.1.0 Ok")
	after.send("RCPT TO:<u@new.test>\r\n")
	after.expect("250 2.1.5 Ok")
}

// A configuration that does not load (an unknown restriction) is
// refused, and the one in force stays.
func TestReloadRefusesBadConfig(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, outside()...))
	err := e.reloadTo(outside("relay_domains = new.test", "smtpd_recipient_restrictions = permit_mynetworks, reject_everything_unknown")...)
	if err == nil || !strings.Contains(err.Error(), "reject_everything_unknown") {
		t.Fatalf("Reload: %v, want the unknown restriction named", err)
	}
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("MAIL FROM:<a@sender.test>\r\n")
	c.expect("250 2.1.0 Ok")
	c.send("RCPT TO:<u@new.test>\r\n")
	c.expect("454 4.7.1 <u@new.test>: Relay access denied")
	c.send("RCPT TO:<u@customer.test>\r\n")
	c.expect("250 2.1.5 Ok")
}

// smtpd_connection_limit is resized by a reload: raised, more sessions
// are served at once; lowered, the sessions above it keep running and new
// ones are refused until enough have ended.
func TestReloadConnectionLimit(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, "smtpd_connection_limit = 2"))
	a, b := e.dial(""), e.dial("")
	a.expect("220 *")
	b.expect("220 *")
	over := e.dial("")
	over.expect("421 4.7.0 relay.test Error: too many connections")
	if err := e.reloadTo("smtpd_connection_limit = 3"); err != nil {
		t.Fatal(err)
	}
	c := e.dial("")
	c.expect("220 *")
	if err := e.reloadTo("smtpd_connection_limit = 1"); err != nil {
		t.Fatal(err)
	}
	e.dial("").expect("421 4.7.0 relay.test Error: too many connections")
	for _, s := range []*client{a, b, c} { // still served
		s.send("NOOP\r\n")
		s.expect("250 2.0.0 Ok")
		s.send("QUIT\r\n")
		s.expect("221 2.0.0 Bye")
		s.expectClose()
	}
	testutil.Eventually(t, 10*time.Second, "every session to end", func() bool { return e.srv.busy.Load() == 0 })
	e.dial("").expect("220 *")
}

// Reloads racing with sessions (run under -race): every session sees one
// whole configuration.
func TestReloadRace(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t))
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				c := e.dial("")
				c.expect("220 *")
				c.ehlo()
				c.send("QUIT\r\n")
				c.expect("221 2.0.0 Bye")
				c.conn.Close()
			}
		}()
	}
	for i := range 20 {
		limit := "smtpd_connection_limit = 50"
		if i%2 == 1 {
			limit = "smtpd_connection_limit = 60"
		}
		if err := e.reloadTo(limit); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}
