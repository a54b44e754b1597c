package store

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var updateFixture = flag.Bool("update-fixture", false, "rewrite testdata/schema1.db (only when schema 1 is current)")

// The schema-1 fixture: a queue written by the first release, with one
// message per state, a delivered recipient, a flush-indexed destination
// and a dead destination. Opening it must migrate it to the current
// schema and decode every record.
var fixtureT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	fixIncoming = ID("0000000000a1")
	fixDeferred = ID("0000000000a2")
	fixHold     = ID("0000000000a3")
	fixActive   = ID("0000000000a4")
)

func writeFixture(t *testing.T, path string) {
	clk := &clock{t: fixtureT0}
	s, err := Open(path, Options{Eligible: eligibleTLD, PolicyKey: "tld", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range []ID{fixIncoming, fixDeferred, fixHold, fixActive} {
		m := newMsg("a@customer.tld", "b@other.example")
		m.ID = id
		m.EnvID, m.Ret, m.SMTPUTF8 = "env-"+string(id), RetHdrs, true
		m.Recipients[0].Notify = NotifyFailure | NotifyDelay
		m.Recipients[0].Orig = "rfc822;a@customer.tld"
		if err := s.Enqueue(m, []byte("Subject: "+string(id)+"\r\n\r\nfixture\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	ms, _ := s.Lease(clk.Now(), 4)
	for _, m := range ms {
		switch m.ID {
		case fixDeferred, fixHold:
			s.Finish(m.ID, Finish{Outcomes: []Outcome{
				{Rcpt: 0, Result: RcptPending, Reply: "connect refused", DSN: "4.4.1", NextAttempt: fixtureT0.Add(time.Hour)},
				{Rcpt: 1, Result: RcptDelivered, Reply: "250 ok", DSN: "2.0.0", RemoteMTA: "mx.other.example"}}})
		case fixIncoming:
			s.Unlease(m.ID)
		}
	}
	s.Hold(fixHold)
	s.PutDest("customer.tld", DestState{DeadUntil: fixtureT0.Add(time.Hour), Reason: "connect refused"})
}

func TestSchema1Fixture(t *testing.T) {
	src := filepath.Join("testdata", "schema1.db")
	if *updateFixture {
		os.Remove(src)
		writeFixture(t, src)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "queue.db")
	os.WriteFile(path, data, 0o600)
	clk := &clock{t: fixtureT0.Add(time.Minute)}
	s, err := Open(path, Options{Eligible: eligibleTLD, PolicyKey: "tld", Now: clk.Now, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r := s.Report(); r.SchemaFrom != 1 || r.Recovered != 1 || r.Rebuilt {
		t.Fatalf("Report = %+v (the fixture has one message left active)", r)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	want := map[ID]State{fixIncoming: StateIncoming, fixDeferred: StateDeferred, fixHold: StateHold, fixActive: StateIncoming}
	for id, st := range want {
		m, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if m.State != st || m.EnvID != "env-"+string(id) || m.Ret != RetHdrs || !m.SMTPUTF8 ||
			m.Recipients[0].Notify != NotifyFailure|NotifyDelay || !m.Arrival.Equal(fixtureT0) {
			t.Errorf("%s: %+v", id, m)
		}
	}
	m, _ := s.Get(fixDeferred)
	if r := m.Recipients; r[0].Attempts != 1 || r[0].Reply != "connect refused" || r[1].State != RcptDelivered ||
		r[1].RemoteMTA != "mx.other.example" || !m.Due.Equal(fixtureT0.Add(time.Hour)) {
		t.Errorf("deferred record: %+v", m)
	}
	if res, err := s.Flush("customer.tld", false); err != nil || res.Messages != 3 {
		t.Errorf("Flush on fixture = %+v, %v", res, err)
	}
	if d, _ := s.Dests(); d["customer.tld"].Reason != "connect refused" {
		t.Errorf("Dests = %v", d)
	}
	if b, _ := s.Body(fixHold); string(b) != "Subject: "+string(fixHold)+"\r\n\r\nfixture\r\n" {
		t.Errorf("body = %q", b)
	}
}
