package relaytest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/test/crashtest"
)

// loopDaemon starts a daemon (myhostname name) that relays loop.test and
// origin.test; loop.test goes to whatever route(d) says once the daemon's
// own port is known (it is restarted on the same port with that
// transport), origin.test to origin.
func loopDaemon(t *testing.T, name string, origin *testutil.MTA, extra map[string]string) (*crashtest.Daemon, func(string)) {
	t.Helper()
	dir := t.TempDir()
	transport := filepath.Join(dir, "transport")
	write := func(loop string) {
		body := fmt.Sprintf("origin.test smtp:[127.0.0.1]:%d\n", origin.Port)
		if loop != "" {
			body += "loop.test smtp:" + loop + "\n"
		}
		if err := os.WriteFile(transport, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	params := map[string]string{
		"myhostname":             name,
		"mynetworks":             "127.0.0.2/32",
		"relay_domains":          "loop.test, origin.test",
		"transport_maps":         "texthash:" + transport,
		"smtpd_error_sleep_time": "0",
		"minimal_backoff_time":   "1h",
		"maximal_backoff_time":   "2h",
	}
	for k, v := range extra {
		params[k] = v
	}
	d := crashtest.NewDaemon(t, params)
	d.Start()
	return d, func(loop string) {
		write(loop)
		if err := d.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		d.Start()
	}
}

// sendTo submits one message from a stranger (127.0.0.1) and returns the
// reply to the final dot.
func sendTo(t *testing.T, d *crashtest.Daemon, rcpt, header string) (int, string) {
	t.Helper()
	s := dial(t, d, "127.0.0.1")
	defer s.Close()
	expect(t, s, "EHLO stranger.example", 250, "")
	expect(t, s, "MAIL FROM:<alice@origin.test>", 250, "")
	expect(t, s, "RCPT TO:<"+rcpt+">", 250, "")
	expect(t, s, "DATA", 354, "")
	return cmd(t, s, header+"Subject: loop\r\n\r\nhello\r\n.")
}

// TestTransportLoopToSelf: a transport entry that routes a domain back to
// holdfast itself defers the mail with Postfix's "loops back to myself"
// instead of relaying it to itself again and again (the issue saw 2,567
// passes in 35 s).
func TestTransportLoopToSelf(t *testing.T) {
	t.Parallel()
	origin := testutil.NewMTA(t, testutil.MTAOptions{Domain: "mx.origin.test"})
	d, route := loopDaemon(t, "relay.test", origin, nil)
	route("[127.0.0.1]:" + port(d.Addr()))
	if code, msg := sendTo(t, d, "user@loop.test", ""); code != 250 {
		t.Fatalf("DATA: %d %s", code, msg)
	}
	want := fmt.Sprintf("mail for [127.0.0.1]:%s loops back to myself", port(d.Addr()))
	if !testutil.WaitFor(20*time.Second, func() bool { return strings.Contains(d.Log(), want) }) {
		t.Fatalf("no deferral %q:\n%s", want, d.LogTail(20))
	}
	// The deferral is committed: a looping message would have been
	// accepted a second time before it.
	waitQueue(t, d, "the deferral to commit", func(s control.Stats) bool { return s.Deferred == 1 && s.Incoming+s.Active == 0 })
	if n := strings.Count(d.Log(), "message accepted"); n != 1 {
		t.Errorf("%d messages accepted, want 1 (the mail looped)", n)
	}
	if !strings.Contains(grepLines(d.Log(), want), `"dsn":"4.4.6"`) {
		t.Errorf("deferral not 4.4.6:\n%s", grepLines(d.Log(), want))
	}
}

// TestLoopBouncedAtHopLimit: two relays (different names, so neither sees
// itself) route loop.test to each other. Each pass adds a Received:
// field; at hopcount_limit (50) the receiving relay refuses with 554 5.4.0
// Error: too many hops and the sending relay bounces the mail to its
// sender. A message that arrives with more Received: fields than the limit
// is refused at once.
func TestLoopBouncedAtHopLimit(t *testing.T) {
	t.Parallel()
	origin := testutil.NewMTA(t, testutil.MTAOptions{Domain: "mx.origin.test"})
	a, routeA := loopDaemon(t, "a.relay.test", origin, nil)
	b, routeB := loopDaemon(t, "b.relay.test", origin, nil)
	routeA("[127.0.0.1]:" + port(b.Addr()))
	routeB("[127.0.0.1]:" + port(a.Addr()))

	var hops strings.Builder
	for i := range 51 {
		fmt.Fprintf(&hops, "Received: from h%d.test by h%d.test; Mon, 1 Jan 2026 00:00:00 +0000\r\n", i, i+1)
	}
	if code, msg := sendTo(t, a, "user@loop.test", hops.String()); code != 554 || msg != "5.4.0 Error: too many hops" {
		t.Errorf("51 Received: fields: %d %s, want 554 5.4.0 Error: too many hops", code, msg)
	}

	if code, msg := sendTo(t, a, "user@loop.test", ""); code != 250 {
		t.Fatalf("DATA: %d %s", code, msg)
	}
	got := origin.Wait(1, 60*time.Second)
	if len(got) != 1 {
		t.Fatalf("no bounce at the sender after the loop\nA:\n%s\nB:\n%s", a.LogTail(10), b.LogTail(10))
	}
	bounce := string(got[0].Data)
	if got[0].From != "" || !strings.Contains(bounce, "Status: 5.4.0") || !strings.Contains(bounce, "too many hops") {
		t.Errorf("bounce from <%s>:\n%.2000s", got[0].From, bounce)
	}
	passes := strings.Count(a.Log(), "message accepted") + strings.Count(b.Log(), "message accepted")
	t.Logf("the loop ended after %d acceptances", passes)
	if passes > 52 {
		t.Errorf("%d acceptances: the hop limit did not end the loop", passes)
	}
}

// port is the port of a host:port address.
func port(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
