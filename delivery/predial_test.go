package delivery

import (
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// TestPredial: Predial opens sessions with a destination's next hop up
// to the messages announced and the destination concurrency limit,
// counting those open already, and sends no mail on them; the messages
// a flush then hands over are delivered over those sessions, with no
// other connection. A destination whose route needs no connection (the
// discard transport) gets none, and after Run has stopped Predial opens
// nothing.
func TestPredial(t *testing.T) {
	const limit = 4
	e := newEnv(t, func(e *env) {
		e.o.DefaultDestinationLimit, e.o.DestinationLimit = limit, nil
		e.tm["void.test"] = "discard:"
	})
	e.runStarted()
	e.d.Predial("customer.test", 2)
	testutil.WaitFor(10*time.Second, func() bool { return e.mta.Open() == 2 })
	e.d.Predial("customer.test", 10) // up to the limit: 2 more
	testutil.WaitFor(10*time.Second, func() bool { return e.mta.Open() == limit })
	e.d.Predial("customer.test", 10) // the pool is full: nothing more
	e.d.Predial("void.test", 10)
	if c := e.mta.Conns(); c != limit {
		t.Fatalf("%d connections after Predial, want %d", c, limit)
	}
	if n := len(e.mta.Messages()); n != 0 {
		t.Fatalf("%d messages sent on the sessions opened ahead", n)
	}

	var ids []store.ID
	for range 8 {
		m := &store.Message{Sender: "alice@origin.test", Arrival: e.clock.Now(), Recipients: []store.Recipient{
			{Addr: "bob@customer.test", NextAttempt: e.clock.Now().Add(time.Hour)}}}
		if err := e.s.Enqueue(m, []byte("Subject: flushed\r\n\r\nHello.\r\n")); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	n := e.d.Reserve(8)
	_, msgs, err := e.s.NewFlushRun("customer.test", false).NextLeased(n)
	if err != nil || len(msgs) != 8 {
		t.Fatalf("NextLeased(%d): %d leased, %v", n, len(msgs), err)
	}
	e.d.Deliver(msgs, n)
	for _, id := range ids {
		e.waitGone(id)
	}
	if got := len(e.mta.Wait(8, 5*time.Second)); got != 8 {
		t.Fatalf("%d of 8 delivered", got)
	}
	if c, o := e.mta.Conns(), e.mta.MaxOpen(); c != limit || o > limit {
		t.Errorf("%d connections (%d open at once) for 8 messages after Predial, want %d", c, o, limit)
	}

	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	before := e.mta.Conns()
	e.d.Predial("origin.test", 5) // Run has stopped: starts nothing
	if c := e.mta.Conns() + e.origin.Conns(); c != before {
		t.Errorf("Predial after Run stopped opened %d connections", c-before)
	}
}
