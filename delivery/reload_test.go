package delivery

import (
	"maps"
	"testing"

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
