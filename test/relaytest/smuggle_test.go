package relaytest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/test/crashtest"
)

// TestSmugglingNormalized: SMTP smuggling attempts from a client outside
// mynetworks (smtpd_forbid_bare_newline = normalize, Postfix 3.9's
// default) each arrive at the next hop, a go-smtp server, as one message
// from the real sender, with no bare CR or bare LF left in it: the
// smuggled MAIL FROM is content, never a second transaction.
func TestSmugglingNormalized(t *testing.T) {
	t.Parallel()
	mta := testutil.NewMTA(t, testutil.MTAOptions{})
	transport := filepath.Join(t.TempDir(), "transport")
	if err := os.WriteFile(transport, []byte(fmt.Sprintf("sink.test smtp:[127.0.0.1]:%d\n", mta.Port)), 0o600); err != nil {
		t.Fatal(err)
	}
	d := crashtest.NewDaemon(t, map[string]string{
		"mynetworks":             "127.0.0.2/32",
		"relay_domains":          "sink.test",
		"transport_maps":         "texthash:" + transport,
		"smtpd_error_sleep_time": "0",
	})
	d.Start()

	smuggle := "MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@sink.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nforged\r\n"
	attacks := []string{
		"hello\r.\r" + smuggle,       // bare CR (the example)
		"hello\n.\n" + smuggle,       // bare LF
		"hello\r\n.\n" + smuggle,     // CRLF . LF
		"hello\n.\r\n" + smuggle,     // LF . CRLF
		"hello\r\n.\r" + smuggle,     // CRLF . CR
		"hello\r.\r\n" + smuggle,     // CR . CRLF
		"hello\r\n\r.\r\n" + smuggle, // CRLF CR . CRLF
	}
	s := dial(t, d, "127.0.0.1")
	expect(t, s, "EHLO stranger.example", 250, "")
	for i, a := range attacks {
		expect(t, s, "MAIL FROM:<sender@stranger.example>", 250, "")
		expect(t, s, "RCPT TO:<user@sink.test>", 250, "")
		expect(t, s, "DATA", 354, "")
		if _, err := fmt.Fprintf(s.Conn, "Subject: attack %d\r\n\r\n%s", i, a); err != nil {
			t.Fatal(err)
		}
		expect(t, s, ".", 250, "2.0.0")
	}
	expect(t, s, "QUIT", 221, "")

	mta.Wait(len(attacks), 30*time.Second)
	// A smuggled extra message would be queued with the rest: once the
	// queue is empty, everything there was to deliver has arrived.
	waitQueue(t, d, "an empty queue", queueEmpty)
	msgs := mta.Messages()
	if len(msgs) != len(attacks) {
		t.Fatalf("next hop got %d messages, want %d", len(msgs), len(attacks))
	}
	for _, m := range msgs {
		if m.From != "sender@stranger.example" || len(m.To) != 1 || m.To[0] != "user@sink.test" {
			t.Errorf("SMUGGLED: next hop got a message from <%s> to %v", m.From, m.To)
		}
		if i := bareNewline(m.Data); i >= 0 {
			t.Errorf("relayed content has a bare CR or LF at %d: %q", i, m.Data)
		}
		if !bytes.Contains(m.Data, []byte("MAIL FROM:<smuggled@evil.test>\r\n")) {
			t.Errorf("the smuggled lines are not in the content: %q", m.Data)
		}
	}
}

// bareNewline returns the index of the first CR not followed by LF or LF
// not preceded by CR, or -1.
func bareNewline(b []byte) int {
	for i, c := range b {
		switch {
		case c == '\r' && (i+1 == len(b) || b[i+1] != '\n'):
			return i
		case c == '\n' && (i == 0 || b[i-1] != '\r'):
			return i
		}
	}
	return -1
}
