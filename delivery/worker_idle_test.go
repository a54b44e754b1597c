package delivery

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// TestIdleWorkerKeepsNoMessage: a worker that waits for its next
// message does not keep the last one it delivered (a record with all
// its recipients; up to 128 workers wait).
func TestIdleWorkerKeepsNoMessage(t *testing.T) {
	e := newEnv(t, nil)
	e.runStarted()
	m := &store.Message{Sender: "alice@origin.test", Arrival: e.clock.Now(), Recipients: []store.Recipient{
		{Addr: "bob@customer.test", NextAttempt: e.clock.Now().Add(time.Hour)}}}
	if err := e.s.Enqueue(m, []byte("Subject: flushed\r\n\r\nHello.\r\n")); err != nil {
		t.Fatal(err)
	}
	id := m.ID
	n := e.d.Reserve(1)
	_, msgs, err := e.s.NewFlushRun("customer.test", false).NextLeased(n)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("NextLeased(%d): %d leased, %v", n, len(msgs), err)
	}
	var freed atomic.Bool
	runtime.SetFinalizer(msgs[0], func(*store.Message) { freed.Store(true) })
	e.d.Deliver(msgs, n)
	msgs = nil
	e.waitGone(id)
	if !testutil.WaitFor(10*time.Second, func() bool { return e.d.running.Load() == 0 && e.d.idle.Load() >= 1 }) {
		t.Fatalf("%d workers running, %d waiting", e.d.running.Load(), e.d.idle.Load())
	}
	if !testutil.WaitFor(10*time.Second, func() bool { runtime.GC(); return freed.Load() }) {
		t.Error("the delivered message is still referenced while its worker waits")
	}
}
