package smtpd

import (
	"strings"
	"testing"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// TestPeerNameInReceivedAndLogs: the forward-confirmed client name (a
// real DNS server on loopback answers the PTR and A questions) appears
// in the Received: header, the connect log and the accept log; an
// unconfirmed name does not (Postfix's smtpd_peer.c).
func TestPeerNameInReceivedAndLogs(t *testing.T) {
	ds := testutil.NewDNS(t,
		"5.0.0.127.in-addr.arpa. 60 IN PTR good.client.test.",
		"good.client.test. 60 IN A 127.0.0.5",
		"6.0.0.127.in-addr.arpa. 60 IN PTR forged.client.test.",
		"forged.client.test. 60 IN A 192.0.2.1",
	)
	for _, tc := range []struct{ from, name string }{
		{"127.0.0.5", "good.client.test"},
		{"127.0.0.6", "unknown"},
	} {
		var buf testutil.SyncBuffer
		e := startServer(t, newConfig(t, "smtpd_peername_lookup = yes", "dns_resolver = "+ds.Addr), withLog(&buf))
		c := e.dial(tc.from)
		c.expect("220 *")
		c.send("HELO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
		c.expect("250 *")
		c.expect("250 *")
		c.expect("250 *")
		c.expect("354 *")
		c.send("x\r\n.\r\nQUIT\r\n")
		c.expect("250 *")
		c.expect("221 *")
		c.expectClose()
		m, body := e.onlyMessage()
		want := "Received: from client.test (" + tc.name + " [" + tc.from + "])\r\n"
		if !strings.HasPrefix(body, want) {
			t.Errorf("%s: body starts %q, want %q", tc.from, body[:min(len(body), 80)], want)
		}
		if m.ClientName != tc.name {
			t.Errorf("%s: stored client name %q, want %q", tc.from, m.ClientName, tc.name)
		}
		e.srv.Shutdown(t.Context())
		found := false
		for _, ev := range logEvents(t, &buf) {
			found = found || ev["message"] == "connect from "+tc.name+"["+tc.from+"]"
		}
		if !found {
			t.Errorf("%s: no connect log with the name %s", tc.from, tc.name)
		}
	}
	if n := ds.Asked("5.0.0.127.in-addr.arpa. PTR"); n != 1 {
		t.Errorf("PTR asked %d times, want 1", n)
	}
}
