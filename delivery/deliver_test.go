package delivery

import (
	"sync/atomic"
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

// TestAdmitLeases: a message due now that Admit stores while a worker
// slot is free is leased in the commit that stores it and delivered from
// there: two commits in all (Enqueue, Finish), not three (and a Lease).
// With no slot free it is stored incoming, and Run leases it once the
// slot is back.
func TestAdmitLeases(t *testing.T) {
	var commits atomic.Int64
	e := newEnv(t, func(e *env) {
		e.o.ActiveLimit = 1
		e.s = testutil.Store(t, store.Options{NoSync: true, Now: e.clock.Now, Eligible: func(string) bool { return true },
			OnCommit: func(time.Duration, int) { commits.Add(1) }})
	})
	testutil.WaitFor(10*time.Second, func() bool { return e.d.Reserve(1) > 0 }) // Run has started
	e.d.Deliver(nil, 1)

	n0 := commits.Load()
	m := e.enqueueAdmitted("alice@origin.test", "bob@customer.test")
	if got, err := e.s.Get(m.ID); err == nil && got.State != store.StateActive {
		t.Fatalf("after Admit with a free slot: stored %s; want active", got.State)
	}
	e.waitGone(m.ID)
	if n := commits.Load() - n0; n != 2 {
		t.Errorf("admitted, leased and delivered in %d commits; want 2", n)
	}

	// Every slot taken: stored incoming, leased by Run once the slot is
	// given back.
	if k := e.d.Reserve(1); k != 1 {
		t.Fatalf("Reserve(1) = %d", k)
	}
	m = e.enqueueAdmitted("alice@origin.test", "carol@customer.test")
	if got, err := e.s.Get(m.ID); err != nil || got.State != store.StateIncoming {
		t.Fatalf("after Admit with no free slot: %+v, %v; want incoming", got, err)
	}
	e.d.Deliver(nil, 1)
	e.waitGone(m.ID)
	if got := e.mta.Wait(2, 5*time.Second); len(got) != 2 {
		t.Fatalf("%d of 2 delivered", len(got))
	}
}

// TestWorkersReused: a worker whose message is done waits for the next
// one, so that a second burst runs on the goroutines (and stacks) of the
// first; the waiting ones end when Run returns.
func TestWorkersReused(t *testing.T) {
	e := newEnv(t, nil)
	var first int64
	for round := range 2 {
		var ids []store.ID
		for range 10 {
			ids = append(ids, e.enqueue("alice@origin.test", "bob@customer.test"))
		}
		for _, id := range ids {
			e.waitGone(id)
		}
		if !testutil.WaitFor(10*time.Second, func() bool { return e.d.running.Load() == 0 && e.d.idle.Load() >= 1 }) {
			t.Fatalf("round %d: %d workers running, %d waiting", round, e.d.running.Load(), e.d.idle.Load())
		}
		if round == 0 {
			first = e.d.spawned.Load()
		}
	}
	// The second round's first message went to a waiting worker: fewer
	// goroutines than one per message of each round.
	if n := e.d.spawned.Load(); n < 1 || n-first > 9 || n > 19 {
		t.Errorf("%d workers started for 20 messages (%d in the first round); want the second round to reuse them", n, first)
	}
	if got := len(e.mta.Wait(20, 5*time.Second)); got != 20 {
		t.Fatalf("%d of 20 delivered", got)
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if !testutil.WaitFor(10*time.Second, func() bool { return e.d.idle.Load() == 0 }) {
		t.Errorf("%d workers still waiting after Run returned", e.d.idle.Load())
	}
}

// TestStarvedRunWoken: with every worker slot taken, Run waits for a
// worker to end; each one that ends wakes it (a finished worker wakes Run
// only while it waits for a slot), so a queue longer than the active
// limit is delivered without a Wake per message.
func TestStarvedRunWoken(t *testing.T) {
	e := newEnv(t, func(e *env) { e.o.ActiveLimit = 1 })
	var ids []store.ID
	for range 4 {
		m := &store.Message{Sender: "alice@origin.test", Arrival: e.clock.Now(),
			Recipients: []store.Recipient{{Addr: "bob@customer.test"}}}
		if err := e.s.Enqueue(m, []byte("Subject: starved\r\n\r\nHello.\r\n")); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	e.d.Wake() // once, for all four
	for _, id := range ids {
		e.waitGone(id)
	}
	if got := e.mta.Wait(4, 5*time.Second); len(got) != 4 {
		t.Fatalf("%d of 4 delivered", len(got))
	}
}

// TestSlotFreedAfterWakeWhileFull: mail that arrives while the only
// worker slot is taken, with a Wake that finds no slot (as Admit's) or a
// reload (which wakes Run and replaces its configuration while the
// worker runs under the old one), is delivered when the attempt in
// progress ends, without the clock moving (with the fake clock, a lost
// wake-up would wait for queue_run_delay).
func TestSlotFreedAfterWakeWhileFull(t *testing.T) {
	for _, kick := range []string{"wake", "reload"} {
		t.Run(kick, func(t *testing.T) {
			e := newEnv(t, func(e *env) { e.o.ActiveLimit = 1 })
			e.mta.Delay(200 * time.Millisecond)
			first := e.enqueue("alice@origin.test", "bob@customer.test")
			e.waitActive(first)
			m := &store.Message{Sender: "alice@origin.test", Arrival: e.clock.Now(),
				Recipients: []store.Recipient{{Addr: "carol@customer.test"}}}
			if err := e.s.Enqueue(m, []byte("Subject: second\r\n\r\nHello.\r\n")); err != nil {
				t.Fatal(err)
			}
			if kick == "wake" {
				e.d.Wake() // Run finds no slot and waits for the worker
			} else {
				e.d.Reload(e.o)
			}
			e.waitGone(first)
			e.waitGone(m.ID)
			if got := e.mta.Wait(2, 5*time.Second); len(got) != 2 || e.clock.Now() != t0 {
				t.Fatalf("%d of 2 delivered, clock moved by %v", len(got), e.clock.Now().Sub(t0))
			}
		})
	}
}
