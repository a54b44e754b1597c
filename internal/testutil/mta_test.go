package testutil

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/store"
)

func send(t *testing.T, addr, from string, to []string) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.SendMail(from, to, strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
}

func TestMTARecordsAndScripts(t *testing.T) {
	m := NewMTA(t, MTAOptions{})
	if err := send(t, m.Addr, "a@x.test", []string{"b@y.test"}); err != nil {
		t.Fatal(err)
	}
	m.Rcpt("bad@y.test", Reply(550, "5.1.1 no such user"))
	err := send(t, m.Addr, "a@x.test", []string{"bad@y.test"})
	var se *smtp.SMTPError
	if !asSMTP(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
		t.Fatalf("scripted rcpt: %v", err)
	}
	msgs := m.Wait(1, time.Second)
	if len(msgs) != 1 || msgs[0].From != "a@x.test" || msgs[0].To[0] != "b@y.test" || !strings.Contains(string(msgs[0].Data), "body") {
		t.Fatalf("messages: %+v", msgs)
	}
	if m.Conns() != 2 {
		t.Fatalf("conns = %d", m.Conns())
	}
	m.Down()
	if err := send(t, m.Addr, "a@x.test", []string{"b@y.test"}); err == nil {
		t.Fatal("down MTA accepted a connection")
	}
	m.Up(t)
	if err := send(t, m.Addr, "a@x.test", []string{"b@y.test"}); err != nil {
		t.Fatal(err)
	}
}

func asSMTP(err error, p **smtp.SMTPError) bool {
	se, ok := err.(*smtp.SMTPError)
	*p = se
	return ok
}

func TestStoreHelper(t *testing.T) {
	s := Store(t, store.Options{NoSync: true})
	m := &store.Message{Sender: "a@x.test", Recipients: []store.Recipient{{Addr: "b@y.test"}}}
	if err := s.Enqueue(m, []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	path := StorePath(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := OpenStore(t, path, store.Options{NoSync: true})
	if got, err := s2.Get(m.ID); err != nil || got.Sender != "a@x.test" {
		t.Fatalf("reopen: %v %+v", err, got)
	}
}

func TestMTAHangup(t *testing.T) {
	m := NewMTA(t, MTAOptions{})
	m.Hangup(true)
	if err := send(t, m.Addr, "a@x.test", []string{"b@y.test"}); err == nil {
		t.Fatal("hang-up MTA accepted mail")
	}
	if m.Hangups() != 1 || m.Conns() != 0 {
		t.Fatalf("hangups %d conns %d", m.Hangups(), m.Conns())
	}
	m.Hangup(false)
	if err := send(t, m.Addr, "a@x.test", []string{"b@y.test"}); err != nil {
		t.Fatal(err)
	}
}

func TestConfigHelper(t *testing.T) {
	c := Config(t, "relay_domains", "customer.tld", "defer_transports", "etrn-only")
	if l, err := c.List("defer_transports"); err != nil || len(l) != 1 || l[0] != "etrn-only" {
		t.Fatalf("%v %v", l, err)
	}
}
