// Package relaytest attacks a running holdfast from outside: open-relay
// tricks, connection and size limits, slow and noisy clients, ETRN floods.
// The daemon is the built binary (test/crashtest's harness); the
// attacker is 127.0.0.1, which the test configurations keep outside
// mynetworks.
package relaytest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
	"github.com/holdfast-mta/holdfast/test/crashtest"
)

func TestMain(m *testing.M) { os.Exit(crashtest.Main(m)) }

// relayDomains are the domains the test daemon relays for.
var relayDomains = []string{"sink.test", "customer.tld"}

// newRelay starts a daemon that relays for sink.test and customer.tld to
// sink, with mynetworks = 127.0.0.2/32 so that 127.0.0.1 is a stranger.
func newRelay(t *testing.T, sink *crashtest.Sink, extra map[string]string) *crashtest.Daemon {
	t.Helper()
	d := crashtest.NewDaemon(t, relayParams(t, sink, extra))
	d.Start()
	return d
}

// relayParams are newRelay's parameters, for a test that starts the
// daemon itself.
func relayParams(t *testing.T, sink *crashtest.Sink, extra map[string]string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	transport := filepath.Join(dir, "transport")
	p := sink.Addr[strings.LastIndexByte(sink.Addr, ':')+1:]
	body := fmt.Sprintf("sink.test smtp:[127.0.0.1]:%s\ncustomer.tld smtp:[127.0.0.1]:%s\n", p, p)
	if err := os.WriteFile(transport, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	params := map[string]string{
		"mynetworks":             "127.0.0.2/32",
		"relay_domains":          strings.Join(relayDomains, ", "),
		"transport_maps":         "texthash:" + transport,
		"smtpd_error_sleep_time": "0",
		"smtpd_soft_error_limit": "1000",
		"smtpd_hard_error_limit": "1000",
		"minimal_backoff_time":   "1h",
		"maximal_backoff_time":   "2h",
	}
	for k, v := range extra {
		params[k] = v
	}
	return params
}

// tempFailAll makes the sink refuse every delivery with 451, so that what
// the daemon accepted stays in its queue for inspection.
func tempFailAll(s *crashtest.Sink) {
	s.SetTempFail(func(string, int) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "not now"}
	})
}

// dial opens a session from local address from ("" = 127.0.0.1) and
// expects the 220 greeting.
func dial(t *testing.T, d *crashtest.Daemon, from string) *crashtest.Session {
	t.Helper()
	s, code, msg, err := crashtest.Dial(d.Addr(), from, 30*time.Second)
	if err != nil {
		t.Fatalf("dial %s from %q: %v", d.Addr(), from, err)
	}
	if code != 220 {
		s.Close()
		t.Fatalf("greeting from %q: %d %s", from, code, msg)
	}
	t.Cleanup(s.Close)
	return s
}

// cmd sends a line and returns the reply.
func cmd(t *testing.T, s *crashtest.Session, line string) (int, string) {
	t.Helper()
	code, msg, err := s.Cmd("%s", line)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return code, msg
}

// expect sends a line and checks the reply code and, if enh is not "",
// that the text starts with that enhanced status code.
func expect(t *testing.T, s *crashtest.Session, line string, code int, enh string) string {
	t.Helper()
	c, msg := cmd(t, s, line)
	if c != code || (enh != "" && !strings.HasPrefix(msg, enh)) {
		t.Fatalf("%s: got %d %s, want %d %s", trim(line), c, msg, code, enh)
	}
	return msg
}

func trim(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// relayTricks are RCPT TO arguments that must not be accepted from a
// client outside mynetworks: each names (or routes to) a domain holdfast
// does not relay for. relay.test is the daemon's own myhostname.
var relayTricks = []string{
	"<user@foreign.test>",
	"user@foreign.test",
	"<USER@FOREIGN.TEST>",
	"<user@foreign.test.>",
	"<user%foreign.test@relay.test>",
	"<user%foreign.test@sink.test>",
	"<foreign.test!user@relay.test>",
	"<foreign.test!user@sink.test>",
	"<@relay.test:user@foreign.test>",
	"<@sink.test:user@foreign.test>",
	"<@sink.test,@relay.test:user@foreign.test>",
	"<\"user@foreign.test\"@relay.test>",
	"<\"user@foreign.test\"@sink.test>",
	"<\"user%foreign.test\"@sink.test>",
	"<user@foreign.test@relay.test>",
	"<user@foreign.test@sink.test>",
	"<user@sink.test@foreign.test>",
	"<user@[127.0.0.1]>",
	"<user@[192.0.2.1]>",
	"<user@[IPv6:::1]>",
	"<user@[IPv6:2001:db8::1]>",
	"<user@[sink.test]>",
	"<user@sink.test.evil.test>",
	"<user@customer.tld.evil.test>",
	"<user@evilsink.test>",
	"<user@sink.test%foreign.test>",
	"<user@sink.test:25>",
	"<user@foreign.test >",
	"<user@xn--80ak6aa92e.test>",
	"<user@пример.test>",
}

// TestOpenRelayRefused: from 127.0.0.1 (outside mynetworks) every relay
// trick is refused, relay-domain recipients are accepted, and afterwards
// the queue holds nothing addressed elsewhere.
func TestOpenRelayRefused(t *testing.T) {
	t.Parallel()
	sink := crashtest.NewSink(t)
	tempFailAll(sink)
	d := newRelay(t, sink, nil)

	s := dial(t, d, "127.0.0.1")
	expect(t, s, "EHLO stranger.example", 250, "")
	for _, rcpt := range relayTricks {
		expect(t, s, "MAIL FROM:<spammer@stranger.example>", 250, "")
		code, msg := cmd(t, s, "RCPT TO:"+rcpt)
		if code < 400 {
			t.Errorf("OPEN RELAY: RCPT TO:%s from outside mynetworks got %d %s", rcpt, code, msg)
		}
		expect(t, s, "RSET", 250, "")
	}

	// Relay domains are accepted, whatever their case, and queued.
	accepted := []string{"<user@sink.test>", "<USER@SINK.TEST>", "<user@Customer.TLD>", "<\"quoted user\"@sink.test>"}
	for i, rcpt := range accepted {
		expect(t, s, "MAIL FROM:<sender@stranger.example>", 250, "")
		expect(t, s, "RCPT TO:"+rcpt, 250, "")
		expect(t, s, "DATA", 354, "")
		msg := fmt.Sprintf("Subject: relay %d\r\n%s: relay-%d\r\n\r\nhello\r\n.", i, crashtest.SeqHeader, i)
		expect(t, s, msg, 250, "2.0.0")
	}
	expect(t, s, "QUIT", 221, "")

	// Inside mynetworks the same daemon relays anywhere: the refusals
	// above are policy, not a broken configuration.
	in := dial(t, d, "127.0.0.2")
	expect(t, in, "EHLO friend.example", 250, "")
	expect(t, in, "MAIL FROM:<friend@friend.example>", 250, "")
	expect(t, in, "RCPT TO:<user@foreign.test>", 250, "")
	expect(t, in, "RSET", 250, "")
	expect(t, in, "QUIT", 221, "")

	// Let the scheduler try (and fail) the accepted mail, then inspect
	// the queue with the daemon stopped.
	sink.WaitFor(5*time.Second, func() bool { return sink.Conns() > 0 })
	if err := d.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	checkQueueDomains(t, d.QueueDB(), len(accepted))
	for _, k := range sink.Keys() {
		_, rc, _ := strings.Cut(k, " ")
		if !isRelayRecipient(rc) {
			t.Errorf("OPEN RELAY: sink received mail for %s", rc)
		}
	}
}

// checkQueueDomains opens the queue and fails for every recipient that is
// not a plain address in a relay domain; want is how many messages the
// session got accepted.
func checkQueueDomains(t *testing.T, path string, want int) {
	t.Helper()
	q, err := store.Open(path, store.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open queue: %v", err)
	}
	defer q.Close()
	n := 0
	var after store.ID
	for i := 0; i < 100; i++ {
		msgs, next, err := q.List(store.Filter{}, after, 100)
		if err != nil {
			t.Fatalf("list queue: %v", err)
		}
		for _, m := range msgs {
			n++
			for _, r := range m.Recipients {
				if !isRelayRecipient(r.Addr) {
					t.Errorf("OPEN RELAY: queued %s for %q (state %s)", m.ID, r.Addr, m.State)
				}
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	if n != want {
		t.Errorf("queue holds %d messages, want the %d accepted ones", n, want)
	}
}

// isRelayRecipient: the domain is a relay domain and the local part holds
// no routing operator.
func isRelayRecipient(a string) bool {
	dom := addr.DomainOf(a)
	local := a[:max(0, strings.LastIndexByte(a, '@'))]
	local = strings.Trim(local, "\"")
	if strings.ContainsAny(local, "@%!:") {
		return false
	}
	for _, r := range relayDomains {
		if dom == r {
			return true
		}
	}
	return false
}

// queueStats reads the running daemon's queue counters (holdfast queue
// stats --json, through its control socket).
func queueStats(t *testing.T, d *crashtest.Daemon) control.Stats {
	t.Helper()
	out, errOut, code := d.Command(20*time.Second, "queue", "stats", "--json")
	var s control.Stats
	if code != 0 {
		t.Fatalf("holdfast queue stats: exit %d: %s", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("holdfast queue stats: %v: %q", err, out)
	}
	return s
}

// waitQueue waits until the daemon's queue counters satisfy cond: the
// event after which a test may assert that nothing more happens (an
// empty queue delivers nothing more).
func waitQueue(t *testing.T, d *crashtest.Daemon, what string, cond func(control.Stats) bool) {
	t.Helper()
	var s control.Stats
	if !testutil.WaitFor(30*time.Second, func() bool { s = queueStats(t, d); return cond(s) }) {
		t.Fatalf("timed out waiting for %s; queue %+v", what, s)
	}
}

// queueEmpty: nothing incoming, active or deferred.
func queueEmpty(s control.Stats) bool { return s.Incoming+s.Active+s.Deferred == 0 }
