package metrics

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/accept"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// newQueue is a queue indexed for fast flush of customer.test and its
// flush service.
func newQueue(t *testing.T) (*store.Store, *flush.Service) {
	t.Helper()
	p, err := flush.New(testutil.Config(t, "fast_flush_domains", "customer.test"))
	if err != nil {
		t.Fatal(err)
	}
	st := testutil.Store(t, store.Options{NoSync: true, Eligible: p.Eligible, PolicyKey: p.Key()})
	return st, flush.NewService(p, st, nil, zerolog.New(zerolog.NewTestWriter(t)))
}

// enqueue queues a message to rcpt; deferred, it is then deferred for an
// hour as a failed attempt would.
func enqueue(t *testing.T, st *store.Store, rcpt string, deferred bool) {
	t.Helper()
	m := &store.Message{ID: store.NewID(), Sender: "a@sender.test", Recipients: []store.Recipient{{Addr: rcpt}}}
	if err := st.Enqueue(m, []byte("Subject: test\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if !deferred {
		return
	}
	leased, err := st.Lease(time.Now().Add(time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leased {
		if l.ID != m.ID {
			st.Unlease(l.ID)
			continue
		}
		f := store.Finish{Outcomes: []store.Outcome{{Rcpt: 0, Result: store.RcptPending,
			Reply: "deferred transport", DSN: "4.4.1", NextAttempt: time.Now().Add(time.Hour)}}}
		if err := st.Finish(m.ID, f); err != nil {
			t.Fatal(err)
		}
	}
}

// TestScrape serves /metrics after each hook was called once (the flush
// requests and the accepted message through the flush service and the
// acceptance path, which tell the Set themselves) and reads the values.
func TestScrape(t *testing.T) {
	st, svc := newQueue(t)
	m := New(st.Stats)
	svc.SetEvents(m)
	enqueue(t, st, "x@customer.test", true)
	enqueue(t, st, "y@customer.test", false)
	if _, err := svc.Flush("customer.test", false); err != nil {
		t.Fatal(err)
	}
	svc.Flush("other.test", false)
	svc.Invalid()
	m.Outcome("aaaaaaaaaaaa", "x@y", "sent")
	m.SessionOpened()
	m.SessionRejected("too_many_connections")
	m.Stress(true)
	m.RateLimited("mail")
	m.ObserveDelivery(30 * time.Millisecond)
	m.ObserveCommit(2*time.Millisecond, 8)
	m.ObserveJournalCommit(150*time.Microsecond, 4)
	d, err := accept.New(st, m).Begin() // counted from the acceptance event
	if err != nil {
		t.Fatal(err)
	}
	d.Write([]byte("x\r\n"))
	if _, err := d.Commit(accept.Envelope{Origin: accept.SMTP, Sender: "s@x", Recipients: []store.Recipient{{Addr: "z@customer.test"}}}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(l, m) }()
	defer func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	resp, err := http.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) float64 {
		f := fams[name]
		if f == nil {
			t.Errorf("no family %s", name)
			return -1
		}
	next:
		for _, mt := range f.Metric {
			for _, lp := range mt.Label {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case mt.Counter != nil:
				return mt.Counter.GetValue()
			case mt.Gauge != nil:
				return mt.Gauge.GetValue()
			case mt.Histogram != nil:
				return float64(mt.Histogram.GetSampleCount())
			}
		}
		return -1
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"holdfast_queue_messages", map[string]string{"state": "incoming"}, 3},
		{"holdfast_queue_messages", map[string]string{"state": "deferred"}, 0},
		{"holdfast_messages_total", map[string]string{"status": "accepted"}, 1},
		{"holdfast_messages_total", map[string]string{"status": "sent"}, 1},
		{"holdfast_flush_requests_total", map[string]string{"source": "cli", "result": "ok"}, 1},
		{"holdfast_flush_requests_total", map[string]string{"source": "cli", "result": "not_eligible"}, 1},
		{"holdfast_flush_requests_total", map[string]string{"source": "cli", "result": "invalid"}, 1},
		{"holdfast_flush_duration_seconds", nil, 1},
		{"holdfast_delivery_duration_seconds", nil, 1},
		{"holdfast_smtp_sessions_open", nil, 1},
		{"holdfast_smtp_sessions_rejected_total", map[string]string{"reason": "too_many_connections"}, 1},
		{"holdfast_smtp_stress", nil, 1},
		{"holdfast_smtp_rate_limited_total", map[string]string{"event": "mail"}, 1},
		{"holdfast_store_commit_duration_seconds", nil, 1},
		{"holdfast_store_commit_batch_size", nil, 1},
		{"holdfast_store_journal_commit_duration_seconds", nil, 1},
		{"holdfast_store_journal_commit_records", nil, 1},
	} {
		if got := value(tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}
