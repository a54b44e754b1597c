package smtpd

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/holdfast-mta/holdfast/internal/testutil"
)

// logEvents decodes the JSON log lines written to buf.
func logEvents(t *testing.T, buf *testutil.SyncBuffer) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// TestLogEvents: Postfix's disconnect counts (anchor 04: "ehlo=1 etrn=1/4
// quit=1 commands=3/6"), one event per accepted message and per reject.
func TestLogEvents(t *testing.T) {
	var buf testutil.SyncBuffer
	e := startServer(t, newConfig(t), withLog(&buf))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	for _, d := range []string{"not.a.customer", "relay.test", "sender.test"} {
		c.send("ETRN " + d + "\r\n")
		c.expect("459 *")
	}
	c.send("ETRN sub.customer.test\r\n")
	c.expect("250 Queuing started")
	c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	c.expect("250 *")
	c.expect("250 *")
	c.expect("354 *")
	c.send("x\r\n.\r\nQUIT\r\n")
	c.expect("250 *")
	c.expect("221 *")
	c.expectClose()
	e.srv.Shutdown(t.Context())
	var accepted, rejects int
	var disconnect string
	for _, ev := range logEvents(t, &buf) {
		switch ev["event"] {
		case "accepted":
			accepted++
			if ev["from"] != "a@sender.test" || ev["nrcpt"] != 1.0 || ev["client"] != "unknown[127.0.0.1]" || ev["queue_id"] == nil || ev["size"] == nil {
				t.Errorf("accepted event %v", ev)
			}
		case "reject":
			rejects++
			if !strings.HasPrefix(ev["reply"].(string), "459 <") {
				t.Errorf("reject event %v", ev)
			}
		case "disconnect":
			disconnect = ev["counts"].(string)
		}
	}
	if accepted != 1 || rejects != 3 {
		t.Errorf("accepted %d, rejects %d", accepted, rejects)
	}
	if want := "ehlo=1 mail=1 rcpt=1 data=1 etrn=1/4 quit=1 commands=6/9"; disconnect != want {
		t.Errorf("disconnect counts %q, want %q", disconnect, want)
	}
}
