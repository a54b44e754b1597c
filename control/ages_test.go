package control

import (
	"strings"
	"testing"
	"time"
)

// TestAgesMetrics scrapes the age gauges an hour after the messages
// arrived.
func TestAgesMetrics(t *testing.T) {
	e := newEnv(t, nil)
	e.enqueue(t, "a@sender.test", "deferred transport", "x@customer.test")
	e.enqueue(t, "a@sender.test", "", "y@other.test")
	later := func() time.Time { return time.Now().Add(time.Hour) }
	e.metrics.WatchAges(e.store.Ages, later)
	fams, err := e.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range fams {
		if !strings.Contains(f.GetName(), "oldest_message_age_seconds") {
			continue
		}
		for _, m := range f.Metric {
			n++
			if v := m.GetGauge().GetValue(); v < 3590 || v > 3700 {
				t.Errorf("%s %v = %v, want about 3600", f.GetName(), m.Label, v)
			}
		}
	}
	if n != 3 { // deferred, incoming; customer.test
		t.Errorf("%d age series, want 3", n)
	}
}
