package delivery

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/dsn"
	"github.com/holdfast-mta/holdfast/store"
)

// FuzzDSN feeds the bounce builder arbitrary message content, remote
// replies, addresses and envelope values: whatever a remote server or a
// sender puts there, the notice must stay a well-formed multipart/report
// (RFC 3464) whose delivery-status part holds only header-style lines.
func FuzzDSN(f *testing.F) {
	f.Add([]byte("Subject: hi\r\nMessage-Id: <a@b>\r\n\r\nbody\r\n"), "550 5.1.1 <u@x.test>: Recipient address rejected", "u@x.test", "s@y.test", "rfc822;u@x.test", "env1")
	f.Add([]byte("no header at all"), "451 4.3.0 temporary\nsecond line", "a@[1.2.3.4]", "", "", "")
	f.Add([]byte("Subject: x\n\n--boundary\r\n"), "550-first\r\n550 second", "\"q u\"@x.test", "s@y.test", "x;y;z", "E=N\rV")
	o := testOptions(f)
	o.Clock = newFakeClock(time.Unix(1_800_000_000, 0))
	f.Fuzz(func(t *testing.T, body []byte, reply, rcpt, sender, orig, envid string) {
		d := &Scheduler{o: o}
		m := &store.Message{ID: store.NewID(), Sender: sender, EnvID: envid, Arrival: time.Unix(1_799_990_000, 0),
			Recipients: []store.Recipient{{Addr: rcpt, Orig: orig}}}
		a := &attempt{m: m, now: time.Unix(1_800_000_000, 0), log: zerolog.Nop(), head: body, whole: body,
			results: map[int]result{0: {State: store.RcptBounced, DSN: "5.1.1", Reply: reply, Diag: "smtp; " + reply}}}
		for _, kind := range []dsn.Kind{dsn.Failed, dsn.Delayed, dsn.Relayed} {
			checkDSN(t, d.buildDSN(a, []int{0}, kind))
		}
	})
}

func checkDSN(t *testing.T, dsn []byte) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(dsn))
	if err != nil {
		t.Fatalf("notice is not a message: %v\n%q", err, dsn)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	parts := 0
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("part %d: %v\n%q", parts+1, err, dsn)
		}
		parts++
		content, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("part %d: %v", parts, err)
		}
		if strings.HasSuffix(p.Header.Get("Content-Type"), "delivery-status") {
			checkStatusFields(t, content)
		}
	}
	if parts != 3 {
		t.Fatalf("%d parts, want 3\n%q", parts, dsn)
	}
}

// checkStatusFields: RFC 3464 sec 2.1: groups of header fields separated
// by blank lines; every other line is a field or a continuation.
func checkStatusFields(t *testing.T, b []byte) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, _, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			t.Fatalf("delivery-status line %q is not a field", line)
		}
	}
}
