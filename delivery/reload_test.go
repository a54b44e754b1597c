package delivery

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// Reload: admission and the deliveries started after it use the new
// configuration (a new transport map entry, a new defer_transports); the
// scheduler keeps running and nothing queued is lost.
func TestReload(t *testing.T) {
	e := newEnv(t, nil)
	before := e.enqueue("alice@origin.test", "bob@customer.test")
	e.waitGone(before)

	o := e.o
	tm := maps.Clone(e.tm)
	tm["new.test"] = tm["customer.test"]
	tm["etrn.test"] = "etrn-only:" + tm["customer.test"][len("smtp:"):]
	o.Transports = tm
	o.DeferTransports = []string{"etrn-only"}
	o.Events, o.Self = nil, nil // kept from the running configuration
	e.d.Reload(o)

	id := e.enqueue("alice@origin.test", "carol@new.test")
	e.waitGone(id)
	m := e.enqueueAdmitted("alice@origin.test", "dave@etrn.test")
	got, err := e.s.Get(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.StateDeferred || got.Recipients[0].Reply != "deferred transport" {
		t.Fatalf("defer_transports after reload: %+v", got)
	}
	if n := len(e.mta.Messages()); n != 2 {
		t.Fatalf("customer MTA got %d messages, want 2", n)
	}
}

// A reload's destination concurrency limit applies to a hop already
// contacted: raised, a waiting delivery dials at once; lowered, a freed
// slot above the new limit is not passed on.
func TestPoolSetLimit(t *testing.T) {
	p := &pool{limit: 1}
	ctx := context.Background()
	if cn, err := p.get(ctx); cn != nil || err != nil {
		t.Fatalf("first get: %v %v", cn, err)
	}
	got := make(chan error, 2)
	go func() { _, err := p.get(ctx); got <- err }()
	waitWaiters(t, p, 1)
	p.setLimit(2)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	go func() { _, err := p.get(ctx); got <- err }()
	waitWaiters(t, p, 1)
	p.setLimit(1)
	p.release() // 2 open, limit 1: not passed on
	// release hands a slot on before it returns: the waiter must still
	// be waiting now.
	p.mu.Lock()
	waiting := len(p.waiters)
	p.mu.Unlock()
	if waiting != 1 {
		t.Fatal("a slot above the lowered limit was passed on")
	}
	p.release() // 1 open = limit: passed on
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func waitWaiters(t *testing.T, p *pool, n int) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%d waiters", n), func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.waiters) == n
	})
}
