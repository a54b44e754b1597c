package metrics

import (
	"strings"
	"testing"
	"time"
)

// TestAgesMetrics scrapes the age gauges an hour after the messages
// arrived.
func TestAgesMetrics(t *testing.T) {
	st, _ := newQueue(t)
	enqueue(t, st, "x@customer.test", true)
	enqueue(t, st, "y@other.test", false)
	later := func() time.Time { return time.Now().Add(time.Hour) }
	m := New(st.Stats)
	m.WatchAges(st.Ages, later)
	fams, err := m.Registry().Gather()
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
