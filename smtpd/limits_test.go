package smtpd

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/config"
)

// outside is a configuration in which 127.0.0.1 is outside mynetworks
// (and so outside smtpd_client_event_limit_exceptions).
func outside(lines ...string) []string {
	return append([]string{"mynetworks = 127.0.0.2/32"}, lines...)
}

// closedWithin reads until the server hangs up and returns the last line
// and how long it took; it fails the test if that takes longer than max.
func (c *client) closedWithin(max time.Duration) (string, time.Duration) {
	c.t.Helper()
	start := time.Now()
	c.conn.SetReadDeadline(start.Add(max))
	last := ""
	for {
		l, err := c.line()
		if err != nil {
			if time.Since(start) >= max {
				c.t.Fatalf("not closed within %v (last line %q)", max, last)
			}
			return last, time.Since(start)
		}
		last = l
	}
}

// trickle writes s one byte every gap until the server hangs up or s
// ends; it returns when it stopped.
func (c *client) trickle(s string, gap time.Duration) {
	for i := 0; i < len(s); i++ {
		if _, err := c.conn.Write([]byte{s[i]}); err != nil {
			return
		}
		time.Sleep(gap)
	}
}

// limitEvents records LimitEvents calls.
type limitEvents struct {
	sessionEvents
	mu      sync.Mutex
	stress  []bool
	limited []string
}

func (ev *limitEvents) Stress(on bool) {
	ev.mu.Lock()
	ev.stress = append(ev.stress, on)
	ev.mu.Unlock()
}
func (ev *limitEvents) RateLimited(event string) {
	ev.mu.Lock()
	ev.limited = append(ev.limited, event)
	ev.mu.Unlock()
}

func (ev *limitEvents) String() string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return fmt.Sprintf("stress %v limited %v", ev.stress, ev.limited)
}

// The stress values of ${stress?{x}:{y}} defaults reach Options.Stress;
// "stress = yes" in the file forces them.
func TestOptionsStress(t *testing.T) {
	o, err := OptionsFromConfig(newConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		name      string
		got, want any
	}{
		{"smtpd_timeout", o.Timeout, 300 * time.Second},
		{"stress smtpd_timeout", o.Stress.Timeout, 10 * time.Second},
		{"smtpd_hard_error_limit", o.HardErrorLimit, 20},
		{"stress smtpd_hard_error_limit", o.Stress.HardErrorLimit, 1},
		{"smtpd_junk_command_limit", o.JunkCommandLimit, 100},
		{"stress smtpd_junk_command_limit", o.Stress.JunkCommandLimit, 1},
		{"smtpd_client_connection_count_limit", o.ClientConnectionLimit, 50},
		{"stress smtpd_client_connection_count_limit", o.Stress.ClientConnectionLimit, 10},
		{"smtpd_per_request_deadline", o.PerRequestDeadline, true},
		{"smtpd_min_data_rate", o.MinDataRate, 500},
		{"smtpd_transaction_deadline", o.TransactionDeadline, 600 * time.Second},
		{"stress smtpd_transaction_deadline", o.Stress.TransactionDeadline, time.Minute},
		{"smtpd_client_message_rate_limit", o.ClientMessageRateLimit, 100},
		{"smtpd_client_etrn_rate_limit", o.ClientETRNRateLimit, 30},
		{"smtpd_stress_threshold", o.StressThreshold, 80},
	} {
		if d.got != d.want {
			t.Errorf("default %s = %v, want %v", d.name, d.got, d.want)
		}
	}
	o, err = OptionsFromConfig(newConfig(t, "stress = yes"))
	if err != nil {
		t.Fatal(err)
	}
	if o.Timeout != 10*time.Second || o.Stress.Timeout != 10*time.Second {
		t.Errorf("stress = yes: timeout %v, under stress %v", o.Timeout, o.Stress.Timeout)
	}
	c := newConfig(t, "smtpd_timeout = ${stress?{3}:{30}}s")
	if v, _ := c.Stressed().Time("smtpd_timeout"); v != 3*time.Second {
		t.Errorf("Stressed smtpd_timeout = %v", v)
	}
	// Zero means zero: no stress ever, no error sleep.
	if o, err = OptionsFromConfig(newConfig(t, "smtpd_stress_threshold = 0")); err != nil {
		t.Fatal(err)
	}
	if at, end := stressAt(&o); at != 0 || end != 0 || o.ErrorSleep != 0 {
		t.Errorf("smtpd_stress_threshold = 0: stress at %d (end %d), error sleep %v", at, end, o.ErrorSleep)
	}
	if d := DefaultOptions(); d.ErrorSleep != time.Second || d.StressThreshold != 80 || d.RecipientOvershootLimit != 1000 {
		t.Errorf("DefaultOptions: error sleep %v, stress threshold %d, overshoot %d", d.ErrorSleep, d.StressThreshold, d.RecipientOvershootLimit)
	}
	// The table's minimum (config/params.go): the file is refused.
	if _, err := config.Parse("test.cf", []byte("smtpd_min_data_rate = 0\n")); err == nil {
		t.Error("smtpd_min_data_rate = 0 accepted")
	}
}

// smtpd_per_request_deadline = yes: a command trickled one byte at a time
// is cut at smtpd_timeout even though no single read waits that long;
// with "no" (Postfix's per-read timeout) the same client completes it.
func TestPerRequestDeadline(t *testing.T) {
	t.Parallel()
	for _, on := range []string{"yes", "no"} {
		e := startServer(t, newConfig(t, "smtpd_timeout = 1s", "smtpd_per_request_deadline = "+on))
		c := e.dial("")
		c.expect("220 *")
		start := time.Now()
		done := make(chan struct{})
		go func() { c.trickle("NOOP trickled one byte at a time\r\n", 100*time.Millisecond); close(done) }()
		if on == "yes" {
			last, took := c.closedWithin(5 * time.Second)
			if last != "421 4.4.2 relay.test Error: timeout exceeded" || took > 3*time.Second {
				t.Errorf("per-request deadline: closed after %v with %q", took, last)
			}
			t.Logf("command trickled at 10 bytes/s cut after %v at smtpd_timeout = 1s", took.Round(10*time.Millisecond))
		} else {
			c.expect("250 2.0.0 Ok")
			took := time.Since(start)
			if took < 2*time.Second {
				t.Errorf("per-read timeout: reply after %v, before the command was sent", took)
			}
			t.Logf("per-read timeout: the same command answered after %v", took.Round(10*time.Millisecond))
		}
		<-done
	}
}

// smtpd_starttls_timeout limits the TLS handshake: a client that says
// STARTTLS and then nothing is cut there, not at smtpd_timeout.
func TestStartTLSTimeout(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, "smtpd_timeout = 30s", "smtpd_starttls_timeout = 1s"), withTLS)
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("STARTTLS\r\n")
	c.expect("220 2.0.0 Ready to start TLS")
	if _, took := c.closedWithin(5 * time.Second); took > 3*time.Second {
		t.Errorf("handshake cut after %v, want about 1s", took)
	}
}

// smtpd_min_data_rate: during DATA every n bytes earn n/rate seconds, so a
// body sent faster than the rate is not cut at smtpd_timeout, and one sent
// slower is.
func TestMinDataRate(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, "smtpd_timeout = 2s", "smtpd_min_data_rate = 500"))
	fast := e.dial("")
	fast.expect("220 *")
	fast.send("HELO c.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	fast.expect("250 *")
	fast.expect("250 *")
	fast.expect("250 *")
	fast.expect("354 *")
	// 1,000 bytes every 0.3 s: 3,300 bytes/s, 3 s in all, longer than
	// smtpd_timeout.
	line := strings.Repeat("x", 998) + "\r\n"
	for range 10 {
		fast.send(line)
		time.Sleep(300 * time.Millisecond)
	}
	fast.send(".\r\n")
	fast.expect("250 2.0.0 Ok: queued as *")

	slow := e.dial("")
	slow.expect("220 *")
	slow.send("HELO c.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	slow.expect("250 *")
	slow.expect("250 *")
	slow.expect("250 *")
	slow.expect("354 *")
	// 10 bytes every 0.1 s: 100 bytes/s, under the rate.
	go func() {
		for range 100 {
			if _, err := slow.conn.Write([]byte("slow body\n")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	last, took := slow.closedWithin(8 * time.Second)
	if last != "421 4.4.2 relay.test Error: timeout exceeded" || took > 5*time.Second {
		t.Errorf("slow DATA: closed after %v with %q", took, last)
	}
	t.Logf("DATA at 3,300 bytes/s for 3 s accepted; DATA at 100 bytes/s cut after %v (smtpd_timeout = 2s, smtpd_min_data_rate = 500)", took.Round(10*time.Millisecond))
	if n := e.queued(); n != 1 {
		t.Errorf("queued %d messages, want 1", n)
	}
}

// smtpd_transaction_deadline cuts a transaction whose commands each come
// well within smtpd_timeout.
func TestTransactionDeadline(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, "smtpd_timeout = 10s", "smtpd_transaction_deadline = 1s"))
	c := e.dial("")
	c.expect("220 *")
	c.send("HELO c.test\r\nMAIL FROM:<a@sender.test>\r\n")
	c.expect("250 *")
	c.expect("250 *")
	start := time.Now()
	go func() {
		for range 20 {
			if _, err := c.conn.Write([]byte("RCPT TO:<u@customer.test>\r\n")); err != nil {
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
	}()
	for {
		l, err := c.line()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if strings.HasPrefix(l, "421 ") {
			if l != "421 4.4.2 relay.test Error: timeout exceeded" {
				t.Errorf("got %q", l)
			}
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("transaction not cut after %v", time.Since(start))
		}
	}
	took := time.Since(start)
	if took > 3*time.Second {
		t.Errorf("cut after %v, want about 1s", took)
	}
	t.Logf("transaction of RCPTs every 0.3 s cut after %v at smtpd_transaction_deadline = 1s", took.Round(10*time.Millisecond))
	// Outside a transaction the deadline does not run.
	d := e.dial("")
	d.expect("220 *")
	for range 4 {
		time.Sleep(400 * time.Millisecond)
		d.send("NOOP\r\n")
		d.expect("250 *")
	}
}

// Each per-client rate gets Postfix's reply from a client outside
// mynetworks; a client in mynetworks is not limited.
func TestClientRateLimits(t *testing.T) {
	t.Parallel()
	ev := &limitEvents{}
	e := startServer(t, newConfig(t, outside(
		"smtpd_client_message_rate_limit = 2",
		"smtpd_client_recipient_rate_limit = 3",
		"smtpd_client_etrn_rate_limit = 2",
		"smtpd_client_connection_rate_limit = 4",
		"fast_flush_domains = customer.test",
	)...), withOptions(func(o *Options) { o.Events = ev }))
	for _, from := range []string{"127.0.0.1", "127.0.0.2"} {
		c := e.dial(from)
		c.expect("220 *")
		c.send("EHLO c.test\r\n")
		for l := c.expect("250*"); !strings.HasPrefix(l, "250 "); l = c.expect("250*") {
		}
		limited := from == "127.0.0.1"
		for i := 1; i <= 3; i++ {
			c.send("MAIL FROM:<a@sender.test>\r\n")
			if limited && i == 3 {
				c.expect("450 4.7.1 Error: too much mail from 127.0.0.1")
				break
			}
			c.expect("250 2.1.0 Ok")
			c.send("RCPT TO:<u@customer.test>\r\n")
			c.expect("250 2.1.5 Ok")
			if i == 2 {
				c.send("RCPT TO:<v@customer.test>\r\nRCPT TO:<w@customer.test>\r\n")
				c.expect("250 2.1.5 Ok")
				if limited {
					c.expect("450 4.7.1 Error: too many recipients from 127.0.0.1")
				} else {
					c.expect("250 2.1.5 Ok")
				}
			}
			c.send("RSET\r\n")
			c.expect("250 *")
		}
		for i := 1; i <= 3; i++ {
			c.send("ETRN customer.test\r\n")
			if limited && i == 3 {
				c.expect("458 Error: too many ETRN requests from 127.0.0.1")
			} else {
				c.expect("250 Queuing started")
			}
		}
		c.send("QUIT\r\n")
		c.expect("221 *")
	}
	// 127.0.0.1 has made one connection; three more are allowed.
	for i := 2; i <= 5; i++ {
		c := e.dial("127.0.0.1")
		if i == 5 {
			c.expect("421 4.7.0 relay.test Error: too many connections from 127.0.0.1")
			c.expectClose()
			break
		}
		c.expect("220 *")
		c.conn.Close()
	}
	e.dial("127.0.0.2").expect("220 *")
	if got := ev.String(); got != "stress [] limited [rcpt mail etrn]" {
		t.Errorf("events: %s", got)
	}
}

// smtpd_client_new_tls_session_rate_limit: a handshake over the limit
// ends the session with 421; then STARTTLS itself is refused with 454.
func TestClientTLSRateLimit(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, outside("smtpd_client_new_tls_session_rate_limit = 1")...), withTLS)
	starttls := func() *client {
		c := e.dial("127.0.0.1")
		c.expect("220 *")
		c.ehlo()
		c.send("STARTTLS\r\n")
		return c
	}
	c := starttls()
	c.expect("220 2.0.0 Ready to start TLS")
	c.startTLS()
	c.ehlo()
	c = starttls()
	c.expect("220 2.0.0 Ready to start TLS")
	c.startTLS()
	c.expect("421 4.7.0 relay.test Error: too many new TLS sessions from unknown[127.0.0.1]")
	c.expectClose()
	c = starttls()
	c.expect("454 4.7.0 Error: too many new TLS sessions from unknown[127.0.0.1]")
}

// Stress: once smtpd_stress_threshold percent of the slots are busy, the
// ${stress?...} values are in force, also for sessions opened before:
// an idle session under smtpd_timeout = ${stress?{2}:{30}}s is cut after
// about two seconds, and a session with one error is ended (hard error
// limit 1).
func TestStressShrinksLimits(t *testing.T) {
	t.Parallel()
	ev := &limitEvents{}
	e := startServer(t, newConfig(t, "smtpd_connection_limit = 5", "smtpd_timeout = ${stress?{2}:{30}}s"),
		withOptions(func(o *Options) { o.Events = ev }))
	early := e.dial("")
	early.expect("220 *")
	early.send("BOGUS\r\n")
	early.expect("502 *")
	idle := e.dial("")
	idle.expect("220 *")
	third := e.dial("")
	third.expect("220 *")
	time.Sleep(1500 * time.Millisecond)
	third.send("NOOP\r\n")
	third.expect("250 *") // not under stress: 30 s
	// The fourth session of five puts the server under stress.
	fourth := e.dial("")
	fourth.expect("220 *")
	start := time.Now()
	early.send("NOOP\r\n")
	early.expect("250 *")
	early.expect("421 4.7.0 relay.test Error: too many errors")
	early.expectClose()
	last, took := idle.closedWithin(8 * time.Second)
	if last != "421 4.4.2 relay.test Error: timeout exceeded" || took > 5*time.Second {
		t.Errorf("idle session opened before stress: closed after %v with %q", took, last)
	}
	t.Logf("stress cut an idle session after %v", time.Since(start).Round(10*time.Millisecond))
	if got := ev.String(); !strings.HasPrefix(got, "stress [true") {
		t.Errorf("events: %s", got)
	}
}

// anvil: rates per time unit, sessions in progress, address ranges, and
// a client forgotten once it has no session and its unit has ended.
func TestAnvil(t *testing.T) {
	a := newAnvil(time.Minute, 32, 84)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ip := netip.MustParseAddr("192.0.2.1")
	if n, r := a.connect(ip, t0); n != 1 || r != 1 {
		t.Errorf("first connect: count %d rate %d", n, r)
	}
	if n, r := a.connect(ip, t0.Add(time.Second)); n != 2 || r != 2 {
		t.Errorf("second connect: count %d rate %d", n, r)
	}
	for i := 1; i <= 3; i++ {
		if r := a.incr(ip, evMail, t0.Add(2*time.Second)); r != i {
			t.Errorf("mail %d: rate %d", i, r)
		}
	}
	// A new unit starts at the first event after the last one ended.
	if r := a.incr(ip, evMail, t0.Add(61*time.Second)); r != 1 {
		t.Errorf("mail in the next unit: rate %d, want 1", r)
	}
	if r := a.rate(ip, evConnect, t0.Add(62*time.Second)); r != 0 {
		t.Errorf("connection rate in the next unit: %d, want 0", r)
	}
	// IPv6 addresses in one /84 are one client; another /84 is another.
	v6a, v6b, v6c := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::fff:ffff:1"), netip.MustParseAddr("2001:db8:0:0:1::1")
	a.incr(v6a, evRcpt, t0)
	if r := a.incr(v6b, evRcpt, t0); r != 2 {
		t.Errorf("same /84: rate %d, want 2", r)
	}
	if r := a.incr(v6c, evRcpt, t0); r != 1 {
		t.Errorf("other /84: rate %d, want 1", r)
	}
	// Sessions keep a client; without them it is swept after its unit.
	a.disconnect(ip)
	a.disconnect(ip)
	a.connect(netip.MustParseAddr("192.0.2.9"), t0.Add(10*time.Minute))
	if n := a.size(); n != 1 {
		t.Errorf("%d clients tracked after the sweep, want 1", n)
	}
}

// The last tenth of smtpd_connection_limit is kept for clients in
// smtpd_client_event_limit_exceptions: a flood from outside fills nine
// slots of ten, and a client from mynetworks still gets 220.
func TestSlotsKeptForExceptions(t *testing.T) {
	t.Parallel()
	e := startServer(t, newConfig(t, outside("smtpd_connection_limit = 10")...))
	for i := range 9 {
		e.dial(fmt.Sprintf("127.0.0.%d", 10+i)).expect("220 *")
	}
	over := e.dial("127.0.0.30")
	over.expect("421 4.7.0 relay.test Error: too many connections")
	over.expectClose()
	e.dial("127.0.0.2").expect("220 *")
}

// The deadline a read or write leaves in place ends no earlier than its
// own and at most 1/64 of smtpd_timeout later, never after the
// transaction's end; one set is that much later than needed, so that the
// next commands find it in place.
func TestDeadlineSlack(t *testing.T) {
	d := &deadlines{lim: &Limits{Timeout: 64 * time.Second}} // slack 1 s
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for _, c := range []struct {
		name         string
		set, dl, end time.Time
		next         time.Time
		ok           bool
	}{
		{"none set", time.Time{}, at(64), time.Time{}, at(65), true},
		{"in place", at(65), at(64.5), time.Time{}, at(65), false},
		{"exactly", at(65), at(65), time.Time{}, at(65), false},
		{"too early", at(65), at(65.1), time.Time{}, at(66.1), true},
		{"too late", at(65), at(63.9), time.Time{}, at(64.9), true},
		{"transaction end", time.Time{}, at(10), at(10), at(10), true},
		{"transaction end in place", at(10), at(10), at(10), at(10), false},
		{"slack cut at the end", time.Time{}, at(9.5), at(10), at(10), true},
		{"set past a new end", at(10.5), at(10), at(10), at(10), true},
	} {
		next, ok := d.deadline(c.set, c.dl, c.end)
		if ok != c.ok || ok && !next.Equal(c.next) {
			t.Errorf("%s: deadline(%v, %v, %v) = %v, %v; want %v, %v", c.name,
				c.set.Sub(t0), c.dl.Sub(t0), c.end.Sub(t0), next.Sub(t0), ok, c.next.Sub(t0), c.ok)
		}
	}
}
