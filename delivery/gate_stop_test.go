package delivery

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// TestGateAcrossStop: attempts whose Finish the gate holds while another
// attempt is still delivering are recorded when Run stops, also when the
// one they wait for outlasts ShutdownGrace and is cut: the delivered
// messages leave the queue, none stays leased, and the cut one is back
// in the queue, not lost.
func TestGateAcrossStop(t *testing.T) {
	e := newEnv(t, func(e *env) { e.o.ShutdownGrace = 500 * time.Millisecond })
	e.d.gate.mu.Lock()
	e.d.gate.hold = time.Hour // held until the slow attempt ends
	e.d.gate.mu.Unlock()
	inData := make(chan struct{}, 1)
	unblock := make(chan struct{})
	defer close(unblock)
	e.mta.OnData(func(r testutil.Received) {
		if slices.Contains(r.To, "slow@customer.test") {
			inData <- struct{}{}
			<-unblock
		}
	})
	slow := e.enqueue("alice@origin.test", "slow@customer.test")
	select {
	case <-inData:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow message never reached DATA")
	}
	var fast []store.ID
	for range 5 {
		fast = append(fast, e.enqueue("alice@origin.test", "bob@customer.test"))
	}
	if got := len(e.mta.Wait(5, 10*time.Second)); got != 5 {
		t.Fatalf("%d of 5 delivered", got)
	}
	if !testutil.WaitFor(10*time.Second, func() bool {
		e.d.gate.mu.Lock()
		defer e.d.gate.mu.Unlock()
		return e.d.gate.held == 5
	}) {
		t.Fatal("the delivered attempts are not held")
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	for _, id := range fast {
		if m, err := e.s.Get(id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("delivered %s still queued after the stop: %+v, %v", id, m, err)
		}
	}
	m, err := e.s.Get(slow)
	if err != nil {
		t.Fatalf("the cut message: %v", err)
	}
	if m.State == store.StateActive || m.Recipients[0].State != store.RcptPending {
		t.Errorf("the cut message is %v with its recipient %v, want queued and pending", m.State, m.Recipients[0].State)
	}
}
