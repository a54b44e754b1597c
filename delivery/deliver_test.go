package delivery

import (
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// TestReserveDeliver: mail a flush leased in its own transaction is
// delivered through Deliver within the slots Reserve granted, and the
// slots count against qmgr_message_active_limit. After Run has stopped,
// Reserve grants nothing and Deliver returns what it is handed to the
// queue.
func TestReserveDeliver(t *testing.T) {
	e := newEnv(t, func(e *env) { e.o.ActiveLimit = 3 })
	var ids []store.ID
	for range 4 {
		m := &store.Message{Sender: "alice@origin.test", Arrival: e.clock.Now(), Recipients: []store.Recipient{
			{Addr: "bob@customer.test", NextAttempt: e.clock.Now().Add(time.Hour)}}}
		if err := e.s.Enqueue(m, []byte("Subject: flushed\r\n\r\nHello.\r\n")); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	// Reserve grants nothing until Run has started (newEnv starts it in
	// a goroutine).
	var n int
	testutil.WaitFor(10*time.Second, func() bool { n = e.d.Reserve(10); return n > 0 })
	if n != 3 {
		t.Fatalf("Reserve(10) with an active limit of 3 = %d", n)
	}
	if k := e.d.Reserve(1); k != 0 {
		t.Fatalf("Reserve(1) with every slot reserved = %d", k)
	}
	r := e.s.NewFlushRun("customer.test", false)
	res, msgs, err := r.NextLeased(n)
	if err != nil || res.Messages != 4 || len(msgs) != 3 {
		t.Fatalf("NextLeased(%d) = %+v, %d leased, %v", n, res, len(msgs), err)
	}
	e.d.Deliver(msgs, n)
	e.d.Wake() // the fourth, due now, goes through Lease
	for _, id := range ids {
		e.waitGone(id)
	}
	if got := e.mta.Wait(4, 5*time.Second); len(got) != 4 {
		t.Fatalf("%d of 4 delivered", len(got))
	}

	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if k := e.d.Reserve(1); k != 0 {
		t.Errorf("Reserve after Run stopped = %d, want 0", k)
	}
	id := e.enqueue("alice@origin.test", "bob@customer.test")
	leased, err := e.s.Lease(e.clock.Now(), 10)
	if err != nil || len(leased) != 1 {
		t.Fatalf("Lease = %d, %v", len(leased), err)
	}
	e.d.Deliver(leased, 0)
	if m, err := e.s.Get(id); err != nil || m.State == store.StateActive {
		t.Errorf("after Deliver to a stopped scheduler: %+v, %v; want back in the queue", m, err)
	}
}
