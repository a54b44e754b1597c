package delivery

import (
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// TestPredialBesideDeliveries: the sessions Predial opens and those the
// deliveries running at the same time open share the hop's destination
// concurrency limit, whoever dials first; every message is delivered
// once; and once the mail is out, every session, those opened ahead
// included, is closed after smtp_connection_cache_time_limit.
func TestPredialBesideDeliveries(t *testing.T) {
	const limit = 2
	e := newEnv(t, func(e *env) {
		e.o.DefaultDestinationLimit, e.o.DestinationLimit = limit, nil
		e.o.ConnCacheTime = 300 * time.Millisecond
	})
	e.runStarted()
	e.mta.Delay(100 * time.Millisecond) // the deliveries hold their sessions
	var ids []store.ID
	for range 6 {
		ids = append(ids, e.enqueue("alice@origin.test", "bob@customer.test"))
		e.d.Predial("customer.test", 10)
	}
	for _, id := range ids {
		e.waitGone(id)
	}
	if got := len(e.mta.Wait(6, 5*time.Second)); got != 6 {
		t.Fatalf("%d of 6 delivered", got)
	}
	if o := e.mta.MaxOpen(); o > limit {
		t.Errorf("%d sessions open at once, the limit is %d", o, limit)
	}
	if !testutil.WaitFor(10*time.Second, func() bool { return e.mta.Open() == 0 }) {
		t.Errorf("%d sessions still open after smtp_connection_cache_time_limit", e.mta.Open())
	}
	t.Logf("%d connections for 6 messages, at most %d open at once", e.mta.Conns(), e.mta.MaxOpen())
}
