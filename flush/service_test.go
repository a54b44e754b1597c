package flush

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/store"
)

type countWaker struct{ n atomic.Int32 }

func (w *countWaker) Wake() { w.n.Add(1) }

// testPolicy is the flush policy of these tests: customer.tld and
// other.tld are relay (flushable) domains.
func testPolicy(t *testing.T) *Policy {
	t.Helper()
	c := config.Default()
	c.Set("relay_domains", "customer.tld, other.tld")
	p, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newService(t *testing.T) (*Service, *store.Store, *countWaker) {
	t.Helper()
	p := testPolicy(t)
	s, err := store.Open(filepath.Join(t.TempDir(), "queue.db"), store.Options{
		Timeout: time.Second, NoSync: true, Eligible: p.Eligible, PolicyKey: p.Key(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil {
			t.Errorf("store check: %v", err)
		}
		s.Close()
	})
	w := &countWaker{}
	return NewService(p, s, w, zerolog.New(zerolog.NewTestWriter(t))), s, w
}

// deferred enqueues a message for rcpts and defers every recipient an hour.
func deferred(t *testing.T, s *store.Store, rcpts ...string) store.ID {
	t.Helper()
	m := &store.Message{ID: store.NewID(), Sender: "a@sender.test", Arrival: time.Now()}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, store.Recipient{Addr: r})
	}
	if err := s.Enqueue(m, []byte("Subject: t\r\n\r\nhi\r\n")); err != nil {
		t.Fatal(err)
	}
	ms, err := s.Lease(time.Now(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ms {
		var f store.Finish
		for i := range l.Recipients {
			f.Outcomes = append(f.Outcomes, store.Outcome{Rcpt: i, Result: store.RcptPending,
				Reply: "deferred transport", DSN: "4.3.2", NextAttempt: time.Now().Add(time.Hour)})
		}
		if err := s.Finish(l.ID, f); err != nil {
			t.Fatal(err)
		}
	}
	return m.ID
}

func TestServiceFlush(t *testing.T) {
	svc, s, w := newService(t)
	deferred(t, s, "u1@customer.tld")
	deferred(t, s, "u2@CUSTOMER.tld", "x@other.tld")
	deferred(t, s, "u3@sub.customer.tld")
	deferred(t, s, "u4@other.tld")

	// Not eligible: ErrNotEligible, nothing woken.
	for _, site := range []string{"not.a.customer.domain", "[127.0.0.1]", "tld"} {
		if _, err := svc.Flush(site, false); !errors.Is(err, ErrNotEligible) {
			t.Errorf("Flush(%q) err = %v, want ErrNotEligible", site, err)
		}
	}
	// Eligible, no mail: no error, zero count, no wake-up.
	res, err := svc.Flush("empty.customer.tld", false)
	if err != nil || res.Messages != 0 {
		t.Errorf("Flush(empty) = %+v, %v", res, err)
	}
	if w.n.Load() != 0 {
		t.Errorf("woken %d times without mail", w.n.Load())
	}

	// Exact destination, case and trailing dot normalised.
	res, err = svc.Flush("Customer.TLD.", false)
	if err != nil || res.Messages != 2 {
		t.Errorf("Flush(customer.tld) = %+v, %v; want 2 messages", res, err)
	}
	if w.n.Load() != 1 {
		t.Errorf("woken %d times, want 1", w.n.Load())
	}
	// Sub-tree: customer.tld (already due) and sub.customer.tld.
	res, err = svc.Flush("customer.tld", true)
	if err != nil || res.Messages != 3 {
		t.Errorf("Flush(@customer.tld) = %+v, %v; want 3 messages", res, err)
	}
	res, err = svc.FlushAll()
	if err != nil || res.Messages != 4 {
		t.Errorf("FlushAll = %+v, %v; want 4", res, err)
	}
}

func TestServiceDisabled(t *testing.T) {
	c := config.Default()
	c.Set("relay_domains", "")
	p, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	svc := NewService(p, nil, nil, zerolog.Nop())
	if svc.Enabled() || svc.Eligible("customer.tld") {
		t.Fatal("service enabled with empty fast_flush_domains")
	}
	if _, err := svc.Flush("customer.tld", false); !errors.Is(err, ErrNotEligible) {
		t.Fatalf("Flush err = %v, want ErrNotEligible", err)
	}
}

func TestServiceEligibleNormalises(t *testing.T) {
	svc, _, _ := newService(t)
	for _, d := range []string{"CUSTOMER.TLD", "customer.tld.", "Sub.Other.Tld"} {
		if !svc.Eligible(d) {
			t.Errorf("Eligible(%q) = false", d)
		}
	}
	if svc.As("etrn").event != "etrn" || svc.event != "flush" {
		t.Errorf("As did not copy")
	}
}

// TestServiceFlushJoins: a flush of more than a chunk answers after its
// first chunk with the destination's count and goes on in the
// background; a request for the same destination meanwhile joins it
// (same counts, Joined, nothing new started); once it ends, a request
// starts a new flush. Close stops a running flush at its next chunk.
func TestServiceFlushJoins(t *testing.T) {
	svc, s, _ := newService(t)
	n := store.FlushChunk + 10
	later := time.Now().Add(time.Hour)
	for i := range n {
		m := &store.Message{Sender: "a@sender.test", Recipients: []store.Recipient{
			{Addr: fmt.Sprintf("u%d@customer.tld", i), NextAttempt: later}}}
		if err := s.Enqueue(m, []byte("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	hold, steps := make(chan struct{}), make(chan struct{}, 10)
	svc.beforeStep = func() { steps <- struct{}{}; <-hold }

	res, err := svc.Flush("customer.tld", false)
	if err != nil || res.Joined || res.Messages != n || res.Pending != 10 {
		t.Fatalf("first Flush = %+v, %v; want %d messages, 10 pending", res, err, n)
	}
	<-steps // the background run waits before its second chunk
	if st, _ := s.Stats(); st.Incoming != int64(store.FlushChunk) {
		t.Errorf("after the reply %d messages are due; want the first chunk, %d", st.Incoming, store.FlushChunk)
	}
	again, err := svc.As("etrn").Flush("CUSTOMER.tld.", false)
	if err != nil || !again.Joined || again.Messages != n {
		t.Errorf("second Flush while running = %+v, %v; want it joined with %d messages", again, err, n)
	}
	close(hold)
	svc.Close() // waits for the run, which had started its last chunk
	if st, _ := s.Stats(); st.Incoming != int64(n) {
		t.Errorf("after the run %d messages are due; want %d", st.Incoming, n)
	}
	if _, err := svc.Flush("customer.tld", false); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close: %v; want ErrClosed", err)
	}
}

// TestServiceFlushEarly: the Early service (smtpd's ETRN) answers with
// the destination's index count before anything is committed; the whole
// run, first chunk included, goes on in the background; a request for the
// destination meanwhile joins it; the scheduler is woken as chunks
// commit.
func TestServiceFlushEarly(t *testing.T) {
	base, s, w := newService(t)
	svc := base.As("etrn").Early()
	n := store.FlushChunk + 10
	later := time.Now().Add(time.Hour)
	for i := range n {
		m := &store.Message{Sender: "a@sender.test", Recipients: []store.Recipient{
			{Addr: fmt.Sprintf("u%d@customer.tld", i), NextAttempt: later}}}
		if err := s.Enqueue(m, []byte("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	hold, steps := make(chan struct{}), make(chan struct{}, 10)
	svc.beforeStep = func() { steps <- struct{}{}; <-hold }

	res, err := svc.Flush("customer.tld", false)
	if err != nil || res.Joined || res.Messages != n || res.Pending != n {
		t.Fatalf("early Flush = %+v, %v; want %d messages, all pending", res, err, n)
	}
	<-steps // the background run waits before its first chunk
	if st, _ := s.Stats(); st.Incoming != 0 {
		t.Errorf("at the reply %d messages are due; want none yet", st.Incoming)
	}
	again, err := svc.Flush("customer.tld", false)
	if err != nil || !again.Joined || again.Messages != n {
		t.Errorf("second Flush while running = %+v, %v; want it joined with %d messages", again, err, n)
	}
	close(hold)
	svc.runs.wg.Wait() // the run ends on its own
	if st, _ := s.Stats(); st.Incoming != int64(n) {
		t.Errorf("after the run %d messages are due; want %d", st.Incoming, n)
	}
	if w.n.Load() == 0 {
		t.Error("the scheduler was not woken")
	}
	// Nothing listed: the answer counts nothing and starts no run.
	svc2, _, _ := newService(t)
	res, err = svc2.Early().Flush("other.tld", false)
	if err != nil || res.Messages != 0 || len(svc2.runs.m) != 0 {
		t.Errorf("early Flush of an empty destination = %+v, %v, %d runs", res, err, len(svc2.runs.m))
	}
}

// deliverer is a Deliverer that grants up to grant slots and keeps what
// it is handed.
type deliverer struct {
	countWaker
	grant    int
	reserved int
	got      []*store.Message
}

func (d *deliverer) Reserve(n int) int {
	k := min(n, d.grant)
	d.reserved += k
	return k
}

func (d *deliverer) Deliver(msgs []*store.Message, reserved int) {
	d.got = append(d.got, msgs...)
	d.reserved -= reserved
}

// TestServiceLeasesForDeliverer: with a Deliverer, the flush's own
// transaction leases what it makes due, within the slots granted, and
// hands it over; the scheduler is woken only for what is left. The
// leased messages are active in the store (one commit, no second one for
// the lease).
func TestServiceLeasesForDeliverer(t *testing.T) {
	_, s, _ := newService(t)
	p := testPolicy(t)
	for _, grant := range []int{10, 2} {
		for i := range 3 {
			deferred(t, s, fmt.Sprintf("u%d@customer.tld", i))
		}
		d := &deliverer{grant: grant}
		svc := NewService(p, s, d, zerolog.New(zerolog.NewTestWriter(t)))
		res, err := svc.Flush("customer.tld", false)
		if err != nil || res.Messages != 3 {
			t.Fatalf("grant %d: Flush = %+v, %v", grant, res, err)
		}
		if want := min(grant, 3); len(d.got) != want || d.reserved != 0 {
			t.Errorf("grant %d: %d messages handed over, %d slots still reserved; want %d, 0", grant, len(d.got), d.reserved, want)
		}
		for _, m := range d.got {
			if m.State != store.StateActive {
				t.Errorf("grant %d: %s handed over %v, want active", grant, m.ID, m.State)
			}
			if got, _ := s.Get(m.ID); got.State != store.StateActive {
				t.Errorf("grant %d: %s is %v in the store, want active", grant, m.ID, got.State)
			}
		}
		if woken := d.n.Load() > 0; woken != (grant < 3) {
			t.Errorf("grant %d: scheduler woken %v; want %v (woken only for mail left due)", grant, woken, grant < 3)
		}
		left, err := s.Lease(time.Now(), 100)
		if err != nil || len(left) != 3-len(d.got) {
			t.Errorf("grant %d: Lease after the flush: %d, %v; want %d", grant, len(left), err, 3-len(d.got))
		}
		for _, m := range append(d.got, left...) {
			if err := s.Finish(m.ID, store.Finish{Outcomes: []store.Outcome{{Rcpt: 0, Result: store.RcptDelivered}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// predialer is a deliverer that also records its Predial calls, with the
// messages active in the store at each (0: the chunk's commit has not
// happened yet).
type predialer struct {
	mu sync.Mutex
	deliverer
	s      *store.Store
	calls  []string
	active []int64
	done   chan struct{}
}

func (d *predialer) Reserve(n int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deliverer.Reserve(n)
}

func (d *predialer) Deliver(msgs []*store.Message, reserved int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deliverer.Deliver(msgs, reserved)
	close(d.done)
}

func (d *predialer) Predial(dest string, n int) {
	st, _ := d.s.Stats()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, fmt.Sprintf("%s %d", dest, n))
	d.active = append(d.active, st.Active)
}

// TestServicePredials: an early flush (ETRN) tells a Predialer the
// destination and how many messages its chunk may hand over (those the
// index listed, within the slots granted) before the chunk's commit; the
// operator's flush, which has not counted them, does not.
func TestServicePredials(t *testing.T) {
	_, s, _ := newService(t)
	p := testPolicy(t)
	for _, tc := range []struct {
		grant int
		early bool
		want  string
	}{{10, true, "customer.tld 3"}, {2, true, "customer.tld 2"}, {10, false, ""}} {
		for i := range 3 {
			deferred(t, s, fmt.Sprintf("u%d@customer.tld", i))
		}
		d := &predialer{deliverer: deliverer{grant: tc.grant}, s: s, done: make(chan struct{})}
		svc := NewService(p, s, d, zerolog.New(zerolog.NewTestWriter(t)))
		if tc.early {
			svc = svc.Early()
		}
		if _, err := svc.Flush("customer.tld", false); err != nil {
			t.Fatal(err)
		}
		<-d.done
		svc.Close()
		d.mu.Lock()
		if got := strings.Join(d.calls, ","); got != tc.want {
			t.Errorf("grant %d, early %v: Predial calls %q, want %q", tc.grant, tc.early, got, tc.want)
		}
		for _, a := range d.active {
			if a != 0 {
				t.Errorf("grant %d: Predial called with %d messages active: after the commit", tc.grant, a)
			}
		}
		got := d.got
		d.mu.Unlock()
		left, err := s.Lease(time.Now(), 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range append(got, left...) {
			if err := s.Finish(m.ID, store.Finish{Outcomes: []store.Outcome{{Rcpt: 0, Result: store.RcptDelivered}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestServicePredialsBeforeAnswer: an early flush (ETRN) asks for its
// first chunk's slots and sessions before it answers, so that the
// connects are on their way while the reply is written; a run that stops
// before its first chunk (Close) gives those slots back.
func TestServicePredialsBeforeAnswer(t *testing.T) {
	_, s, _ := newService(t)
	p := testPolicy(t)
	for i := range 3 {
		deferred(t, s, fmt.Sprintf("u%d@customer.tld", i))
	}
	d := &predialer{deliverer: deliverer{grant: 10}, s: s, done: make(chan struct{})}
	svc := NewService(p, s, d, zerolog.New(zerolog.NewTestWriter(t))).Early()
	hold := make(chan struct{})
	svc.beforeStep = func() { <-hold }
	if _, err := svc.Flush("customer.tld", false); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	calls, reserved := strings.Join(d.calls, ","), d.reserved
	d.mu.Unlock()
	if calls != "customer.tld 3" || reserved != 10 {
		t.Errorf("at the answer: Predial calls %q, %d slots reserved; want %q, the 10 granted", calls, reserved, "customer.tld 3")
	}
	close(hold)
	<-d.done
	svc.Close()
	if d.reserved != 0 || len(d.got) != 3 {
		t.Errorf("after the run: %d slots reserved, %d messages handed over; want 0, 3", d.reserved, len(d.got))
	}

	// A run that stops before its first chunk.
	d2 := &deliverer{grant: 10}
	svc2 := NewService(p, s, d2, zerolog.New(zerolog.NewTestWriter(t))).Early()
	key := runKey{"customer.tld", false}
	if cur, _, err := svc2.claim(key); cur == nil || err != nil {
		t.Fatalf("claim: %v", err)
	}
	svc2.runs.closing.Store(true)
	svc2.finish(key, s.NewFlushRun(key.dest, false), store.FlushResult{Messages: 3, Pending: 3}, time.Now(), d2.Reserve(store.FlushChunk))
	if d2.reserved != 0 || len(d2.got) != 0 {
		t.Errorf("a run closed before its first chunk left %d slots reserved, handed over %d messages", d2.reserved, len(d2.got))
	}
}
