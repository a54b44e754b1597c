package store

import (
	"testing"
	"time"
)

// TestEnqueueLeased: a message given StateActive is stored leased when it
// is due now (active, no due entry, still in the flush index), and Finish
// ends it as any lease; one whose recipients are all deferred on arrival
// is stored deferred instead, and the Spool path does the same. After a
// crash, a message leased on arrival is back in the queue, due now
// (recoverLeases), as any lease. Check runs after each step.
func TestEnqueueLeased(t *testing.T) {
	f := open(t)
	m := newMsg("a@x.tld", "b@y.tld")
	m.State = StateActive
	if err := f.s.Enqueue(m, []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	f.check()
	if m.State != StateActive || !m.Due.IsZero() {
		t.Fatalf("returned %s due %v; want active, no due time", m.State, m.Due)
	}
	if got := f.get(m.ID); got.State != StateActive {
		t.Fatalf("stored %s; want active", got.State)
	}
	if st := f.stats(); st.Active != 1 || st.Incoming != 0 {
		t.Fatalf("stats %+v; want one active", st)
	}
	if got := f.lease(); len(got) != 0 {
		t.Fatalf("Lease took %d messages leased on arrival", len(got))
	}
	if keys := f.flushKeys(); len(keys) != 2 {
		t.Fatalf("flush index %v; want both domains", keys)
	}
	f.finish(m.ID, Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered}, {Rcpt: 1, Result: RcptDelivered}}})
	if st := f.stats(); st.Active+st.Incoming+st.Deferred != 0 {
		t.Fatalf("after Finish: %+v", st)
	}

	// Nothing due now: stored deferred, not leased.
	d := newMsg("c@x.tld")
	d.State = StateActive
	d.Recipients[0].NextAttempt = f.clk.Now().Add(time.Hour)
	if err := f.s.Enqueue(d, []byte("Subject: y\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	f.check()
	if d.State != StateDeferred {
		t.Fatalf("deferred on arrival, asked leased: stored %s", d.State)
	}

	// The Spool path, then a crash before the delivery ends.
	sp, err := f.s.Spool(NewID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Write([]byte("Subject: z\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	c := newMsg("e@z.tld")
	c.State = StateActive
	if err := sp.Enqueue(c); err != nil {
		t.Fatal(err)
	}
	f.check()
	if c.State != StateActive {
		t.Fatalf("spooled, asked leased: stored %s", c.State)
	}
	f.crash()
	f.check()
	got := f.get(c.ID)
	if got.State != StateIncoming || got.Due.After(f.clk.Now()) {
		t.Fatalf("after a crash: %s due %v; want incoming, due now", got.State, got.Due)
	}
	if leased := f.lease(); leased[c.ID] == nil {
		t.Fatalf("after a crash the message leased on arrival is not leased again")
	}
}

// TestSalvageActive: a message in flight (active) when a file is salvaged
// is copied back into the queue, incoming and due now, as a crash returns
// it; the copy's Enqueue does not take its state as a lease.
func TestSalvageActive(t *testing.T) {
	f := open(t)
	id := f.enqueue("a@x.tld")
	if got := f.lease(); got[id] == nil {
		t.Fatal("not leased")
	}
	f.s.Close()
	dst := f.path + ".salvaged"
	rep, err := Salvage(f.path, dst, f.o)
	if err != nil || rep.Recovered != 1 {
		t.Fatalf("Salvage: %+v, %v", rep, err)
	}
	s, err := Open(dst, f.o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, err := s.Get(id)
	if err != nil || m.State != StateIncoming || m.Due.After(f.clk.Now()) {
		t.Fatalf("salvaged: %+v, %v; want incoming, due now", m, err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
