package smtpd

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/store"
)

// onlyMessage returns the one queued message and its body.
func (e *env) onlyMessage() (*store.Message, string) {
	e.t.Helper()
	ms, _, err := e.st.List(store.Filter{}, "", 10)
	if err != nil || len(ms) != 1 {
		e.t.Fatalf("List: %d messages, %v", len(ms), err)
	}
	body, err := e.st.Body(ms[0].ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return ms[0], string(body)
}

func TestAcceptedContentAndEnvelope(t *testing.T) {
	at := time.Date(2026, 11, 4, 22, 22, 18, 0, time.UTC)
	e := startServer(t, newConfig(t), withOptions(func(o *Options) { o.Now = func() time.Time { return at } }))
	c := e.dial("")
	c.expect("220 relay.test ESMTP holdfast")
	c.ehlo()
	c.send("MAIL FROM:<a@Sender.TEST> SIZE=40 BODY=8BITMIME RET=HDRS ENVID=id+2B1\r\n")
	c.expect("250 2.1.0 Ok")
	c.send("RCPT TO:<U1@Customer.Test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;U1+40customer.test\r\n")
	c.expect("250 2.1.5 Ok")
	c.send("DATA\r\n")
	c.expect("354 *")
	// Dot-stuffed line, a bare LF inside a line (stored as CRLF) and a
	// bare-LF "." line that must not end the data (no smuggling) and is
	// dropped (smtpd_forbid_bare_newline = normalize).
	c.send("Subject: t\r\n\r\n..dot\r\nbare\nlf\r\n.\nstill data\r\n.\r\n")
	got := c.expect("250 2.0.0 Ok: queued as *")
	m, body := e.onlyMessage()
	if want := "250 2.0.0 Ok: queued as " + string(m.ID); got != want {
		t.Errorf("reply %q, want %q", got, want)
	}
	wantBody := "Received: from client.test (unknown [127.0.0.1])\r\n" +
		"\tby relay.test (holdfast) with ESMTP id " + string(m.ID) + "\r\n" +
		"\tfor <U1@customer.test>; Wed,  4 Nov 2026 22:22:18 +0000 (UTC)\r\n" +
		"Subject: t\r\n\r\n.dot\r\nbare\r\nlf\r\nstill data\r\n"
	if body != wantBody {
		t.Errorf("body\n%q\nwant\n%q", body, wantBody)
	}
	if m.Sender != "a@sender.test" || m.EnvID != "id+1" || m.Ret != store.RetHdrs || !m.Body8Bit ||
		m.Helo != "client.test" || m.Protocol != "ESMTP" || m.ClientAddr != "127.0.0.1" || m.Size != int64(len(body)) {
		t.Errorf("envelope %+v", m)
	}
	r := m.Recipients[0]
	if len(m.Recipients) != 1 || r.Addr != "U1@customer.test" || r.Orig != "rfc822;U1@customer.test" ||
		r.Notify != store.NotifySuccess|store.NotifyDelay {
		t.Errorf("recipients %+v", m.Recipients)
	}
	// Two recipients: Postfix's multi-recipient Received: form.
	c.send("MAIL FROM:<>\r\nRCPT TO:<a@customer.test>\r\nRCPT TO:<b@customer.test>\r\nDATA\r\n")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("354 *")
	c.send("x\r\n.\r\n")
	id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as *"), "250 2.0.0 Ok: queued as ")
	b, err := e.st.Body(store.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	want := "Received: from client.test (unknown [127.0.0.1])\r\n\tby relay.test (holdfast) with ESMTP id " + id +
		";\r\n\tWed,  4 Nov 2026 22:22:18 +0000 (UTC)\r\nx\r\n"
	if string(b) != want {
		t.Errorf("body %q, want %q", b, want)
	}
}

// TestDurability: a message acknowledged with 250 is in the store after
// it is closed and reopened (real fsync); a client that vanishes in the
// middle of DATA leaves nothing behind.
func TestDurability(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "queue.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(testOptions(t, nil), st, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st}
	e.addr = serve(t, srv)

	c := e.dial("")
	c.expect("220 *")
	c.send("HELO c\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	c.expect("250 relay.test")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("354 *")
	c.send("Subject: kept\r\n\r\nbody\r\n.\r\n")
	id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as *"), "250 2.0.0 Ok: queued as ")

	v := e.dial("")
	v.expect("220 *")
	v.send("HELO c\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	for range 3 {
		v.line()
	}
	v.expect("354 *")
	v.send("Subject: lost\r\n\r\npartial line without end")
	v.conn.Close()
	// The session notices the lost client.
	waitSessions(t, srv, 1)
	c.send("QUIT\r\n")
	c.expect("221 2.0.0 Bye")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ms, _, err := st.List(store.Filter{}, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || string(ms[0].ID) != id {
		t.Fatalf("after reopen: %d messages, want only %s", len(ms), id)
	}
	if err := st.Check(); err != nil {
		t.Fatal(err)
	}
}

// failingQueue fails every Enqueue with err.
type failingQueue struct{ err error }

func (f failingQueue) Spool(store.ID) (store.Content, error) { return failingContent(f), nil }

// failingContent takes the content and fails its Enqueue.
type failingContent struct{ err error }

func (failingContent) Write(p []byte) (int, error)    { return len(p), nil }
func (c failingContent) Enqueue(*store.Message) error { return c.err }
func (failingContent) Abort()                         {}

func TestStoreErrorsReplies(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("store: enqueue: %w", store.ErrNoSpace), "452 4.3.1 Insufficient system storage"},
		{errors.New("disk on fire"), "451 4.3.0 Error: queue file write error"},
	} {
		e := startServer(t, newConfig(t), withQueue(func(*store.Store) Queue { return failingQueue{tc.err} }))
		c := e.dial("")
		c.expect("220 *")
		c.send("HELO c\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
		for range 3 {
			c.line()
		}
		c.expect("354 *")
		c.send("x\r\n.\r\nNOOP\r\n")
		c.expect(tc.want)
		c.expect("250 2.0.0 Ok")
	}
}

// TestStoreFullReal: the real store at its MaxSize refuses the message;
// nothing of it remains.
func TestStoreFullReal(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "queue.db"), store.Options{NoSync: true, MaxSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := New(testOptions(t, nil), st, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st}
	e.addr = serve(t, srv)
	c := e.dial("")
	c.expect("220 *")
	c.send("HELO c\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	for range 3 {
		c.line()
	}
	c.expect("354 *")
	line := strings.Repeat("x", 998) + "\r\n"
	c.send(strings.Repeat(line, 200) + ".\r\n")
	c.expect("452 4.3.1 Insufficient system storage")
	if n := e.queued(); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

// TestBDATContent: chunks are stored verbatim (no dot-unstuffing) but
// for bare LF, stored as CRLF, after our Received: header; a client that vanishes during a
// transfer leaves nothing.
func TestBDATContent(t *testing.T) {
	e := startServer(t, newConfig(t))
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nBDAT 14\r\nSubject: b\r\n\r\nBDAT 11 LAST\r\n.dot\nbare\r\n")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("250 2.0.0 Ok: 14 bytes")
	c.expect("250 2.0.0 Ok: queued as *")
	m, body := e.onlyMessage()
	if !strings.HasPrefix(body, "Received: from client.test (unknown [127.0.0.1])\r\n\tby relay.test (holdfast) with ESMTP id "+string(m.ID)+"\r\n") ||
		!strings.HasSuffix(body, "\r\nSubject: b\r\n\r\n.dot\r\nbare\r\n") {
		t.Fatalf("body %q", body)
	}
	v := e.dial("")
	v.expect("220 *")
	v.ehlo()
	v.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nBDAT 100 LAST\r\nonly part")
	v.expect("250 2.1.0 Ok")
	v.expect("250 2.1.5 Ok")
	v.conn.Close()
	c.send("NOOP\r\n")
	c.expect("250 2.0.0 Ok")
	waitSessions(t, e.srv, 1) // v's session has ended, its chunk aborted
	if n := e.queued(); n != 1 {
		t.Fatalf("%d messages queued", n)
	}
}

// delay_warning_time: WarnAt = arrival + delay for a non-null sender,
// none for the null sender (Postfix's cleanup), over DATA and BDAT.
func TestDelayWarningTime(t *testing.T) {
	at := time.Date(2026, 11, 4, 22, 22, 18, 0, time.UTC)
	e := startServer(t, newConfig(t, "delay_warning_time = 1h"), withOptions(func(o *Options) { o.Now = func() time.Time { return at } }))
	if e.opts.DelayWarning != time.Hour {
		t.Fatalf("DelayWarning %v", e.opts.DelayWarning)
	}
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	send := func(from, data string) store.ID {
		c.send("MAIL FROM:<" + from + ">\r\nRCPT TO:<u@customer.test>\r\n" + data)
		c.expect("250 2.1.0 Ok")
		c.expect("250 2.1.5 Ok")
		if strings.HasPrefix(data, "DATA") {
			c.expect("354 *")
		}
		return store.ID(strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as *"), "250 2.0.0 Ok: queued as "))
	}
	for _, tc := range []struct {
		from, data string
		want       time.Time
	}{
		{"a@sender.test", "DATA\r\nx\r\n.\r\n", at.Add(time.Hour)},
		{"b@sender.test", "BDAT 3 LAST\r\nx\r\n", at.Add(time.Hour)},
		{"", "DATA\r\nx\r\n.\r\n", time.Time{}},
	} {
		m, err := e.st.Get(send(tc.from, tc.data))
		if err != nil {
			t.Fatal(err)
		}
		if !m.WarnAt.Equal(tc.want) {
			t.Errorf("from <%s>: WarnAt %v, want %v", tc.from, m.WarnAt, tc.want)
		}
	}
	// Default 0h: no warning.
	e2 := startServer(t, newConfig(t))
	c2 := e2.dial("")
	c2.expect("220 *")
	c2.ehlo()
	c2.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	c2.expect("250 2.1.0 Ok")
	c2.expect("250 2.1.5 Ok")
	c2.expect("354 *")
	c2.send("x\r\n.\r\n")
	c2.expect("250 2.0.0 Ok: queued as *")
	if m, _ := e2.onlyMessage(); !m.WarnAt.IsZero() {
		t.Errorf("default: WarnAt %v", m.WarnAt)
	}
}

// TestInflightContentLimit: when the in-flight content budget is taken
// (here one message's worth), DATA and the first BDAT wait briefly and
// are then answered 452 4.3.1 (the BDAT's data is still read); a
// finished message frees the budget.
func TestInflightContentLimit(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "queue.db"), store.Options{
		NoSync: true, ContentLimit: store.BodyChunk, ContentWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := New(testOptions(t, nil), st, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st}
	e.addr = serve(t, srv)
	start := func(c *client) {
		c.expect("220 *")
		c.send("EHLO c\r\n")
		for l := c.expect("250*"); strings.HasPrefix(l, "250-"); l = c.expect("250*") {
		}
		c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\n")
		c.expect("250 2.1.0 Ok")
		c.expect("250 2.1.5 Ok")
	}
	a := e.dial("")
	start(a)
	a.send("DATA\r\n")
	a.expect("354 *")
	a.send("Subject: holds the budget\r\n\r\n")

	b := e.dial("")
	start(b)
	b.send("DATA\r\n")
	b.expect("452 4.3.1 Insufficient system storage")
	b.send("BDAT 5\r\nhelloBDAT 3 LAST\r\nx\r\n")
	b.expect("452 4.3.1 Insufficient system storage")
	b.expect("452 4.3.1 Insufficient system storage")

	a.send("body\r\n.\r\n")
	a.expect("250 2.0.0 Ok: queued as *")
	b.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	b.expect("250 2.1.0 Ok")
	b.expect("250 2.1.5 Ok")
	b.expect("354 *")
	b.send("now\r\n.\r\n")
	b.expect("250 2.0.0 Ok: queued as *")
	if n := e.queued(); n != 2 {
		t.Fatalf("%d queued", n)
	}
}

// TestLargeMessageChunks: a message of several store chunks, by DATA and
// by BDAT, is stored whole and byte for byte; one cut off in the middle
// leaves no chunk behind (the store check after the test).
func TestLargeMessageChunks(t *testing.T) {
	e := startServer(t, newConfig(t))
	var b strings.Builder
	for i := 0; b.Len() < 3*store.BodyChunk+100; i++ {
		fmt.Fprintf(&b, "line %d %s\r\n", i, strings.Repeat("y", i%900))
	}
	text := b.String()
	c := e.dial("")
	c.expect("220 *")
	c.ehlo()
	c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("354 *")
	c.send(text + ".\r\n")
	id1 := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as *"), "250 2.0.0 Ok: queued as ")
	c.send(fmt.Sprintf("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nBDAT %d LAST\r\n%s", len(text), text))
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	id2 := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as *"), "250 2.0.0 Ok: queued as ")
	for _, id := range []string{id1, id2} {
		body, err := e.st.Body(store.ID(id))
		if err != nil {
			t.Fatal(err)
		}
		if _, got, ok := strings.Cut(string(body), ")\r\n"); !ok || !strings.HasSuffix(got, text) || len(body) < len(text) {
			t.Fatalf("%s: body of %d bytes differs", id, len(body))
		}
	}
	v := e.dial("")
	v.expect("220 *")
	v.ehlo()
	v.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@customer.test>\r\nDATA\r\n")
	v.expect("250 2.1.0 Ok")
	v.expect("250 2.1.5 Ok")
	v.expect("354 *")
	v.send(text)
	v.conn.Close()
	c.send("NOOP\r\n")
	c.expect("250 2.0.0 Ok")
	if n := e.queued(); n != 2 {
		t.Fatalf("%d queued", n)
	}
}
