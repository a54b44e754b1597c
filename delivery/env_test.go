package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// fakeClock is a Clock whose time moves only when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	// made counts NewTimer calls: the scheduler makes one each time it
	// goes to sleep (settle).
	made int
}

type fakeTimer struct {
	clock   *fakeClock
	c       chan time.Time
	at      time.Time
	stopped bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }
func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func newFakeClock(t0 time.Time) *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.made++
	t := &fakeTimer{clock: c, c: make(chan time.Time, 1), at: c.now.Add(d)}
	if d <= 0 {
		t.c <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

// Set moves the clock to t and fires the timers that are due.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	keep := c.timers[:0]
	for _, tm := range c.timers {
		if tm.stopped {
			continue
		}
		if !tm.at.After(t) {
			tm.c <- t
			continue
		}
		keep = append(keep, tm)
	}
	c.timers = keep
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// mapTable is a transport map for tests: exact address, then domain.
type mapTable map[string]string

func (m mapTable) Lookup(a string) (string, bool, error) {
	if v, ok := m[a]; ok {
		return v, true, nil
	}
	v, ok := m[addr.DomainOf(a)]
	return v, ok, nil
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// env is one scheduler over a temporary store, with a fake clock, a
// customer MTA (customer.test) and a sender's MTA (origin.test, where
// notices go).
type env struct {
	t      *testing.T
	clock  *fakeClock
	s      *store.Store
	mta    *testutil.MTA
	origin *testutil.MTA
	tm     mapTable
	o      Options
	d      *Scheduler
	logs   *testutil.SyncBuffer
	stop   func() error
}

// testOptions are the options of the defaults table for a relay named
// relay.test that finds next hops without the DNS (smtp_host_lookup =
// native): the tests' next hops are [addresses] or a test DNS server
// they set themselves.
func testOptions(t testing.TB) Options {
	t.Helper()
	o, err := OptionsFromConfig(testutil.Config(t, "myhostname", "relay.test", "smtp_host_lookup", "native"))
	if err != nil {
		t.Fatalf("OptionsFromConfig: %v", err)
	}
	return o
}

func newEnv(t *testing.T, tweak func(e *env)) *env {
	t.Helper()
	e := &env{t: t, clock: newFakeClock(t0), logs: &testutil.SyncBuffer{}}
	e.mta = testutil.NewMTA(t, testutil.MTAOptions{})
	e.origin = testutil.NewMTA(t, testutil.MTAOptions{Domain: "mx.origin.test"})
	e.tm = mapTable{
		"customer.test": "smtp:[127.0.0.1]:" + fmt.Sprint(e.mta.Port),
		"origin.test":   "smtp:[127.0.0.1]:" + fmt.Sprint(e.origin.Port),
	}
	e.o = testOptions(t)
	e.o.Transports, e.o.Clock, e.o.ShutdownGrace = e.tm, e.clock, 2*time.Second
	e.s = testutil.Store(t, store.Options{NoSync: true, Now: e.clock.Now, Eligible: func(string) bool { return true }})
	if tweak != nil {
		tweak(e)
	}
	e.start()
	return e
}

// start runs a scheduler on e.s until the test ends (or stop is called).
func (e *env) start() {
	e.t.Helper()
	log := zerolog.New(e.logs)
	d, err := New(e.o, e.s, log)
	if err != nil {
		e.t.Fatal(err)
	}
	e.d = d
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- d.Run(ctx) }()
	var once sync.Once
	var runErr error
	e.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-res:
			case <-time.After(10 * time.Second):
				runErr = errors.New("Run did not return within 10s")
			}
		})
		return runErr
	}
	e.t.Cleanup(func() {
		if err := e.stop(); err != nil && !errors.Is(err, store.ErrClosed) {
			e.t.Errorf("Run: %v", err)
		}
	})
}

// enqueue queues a message and wakes the scheduler.
// runStarted waits until Run hands out worker slots (Reserve grants one
// only while Run runs) and gives back the one it took.
func (e *env) runStarted() {
	e.t.Helper()
	testutil.WaitFor(10*time.Second, func() bool { n := e.d.Reserve(1); e.d.Deliver(nil, n); return n > 0 })
}

func (e *env) enqueue(sender string, rcpts ...string) store.ID {
	e.t.Helper()
	m := &store.Message{Sender: sender, Arrival: e.clock.Now()}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, store.Recipient{Addr: r})
	}
	body := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: test %d\r\nMessage-ID: <m%d@origin.test>\r\n\r\nHello.\r\n", sender, rcpts[0], len(rcpts), time.Now().UnixNano())
	if err := e.s.Enqueue(m, []byte(body)); err != nil {
		e.t.Fatal(err)
	}
	e.d.Wake()
	return m.ID
}

// settle wakes the scheduler and waits until it has gone round its loop
// (drain, lease what is due, sleep again): the event after which a test
// may assert that nothing was leased, instead of sleeping.
func (e *env) settle() {
	e.t.Helper()
	e.clock.mu.Lock()
	n := e.clock.made
	e.clock.mu.Unlock()
	e.d.Wake()
	testutil.Eventually(e.t, 10*time.Second, "the scheduler to go round its loop", func() bool {
		e.clock.mu.Lock()
		defer e.clock.mu.Unlock()
		return e.clock.made > n
	})
}

// waitMsg polls the store until cond holds for message id (nil when it
// is gone), for up to 10 s.
func (e *env) waitMsg(id store.ID, what string, cond func(m *store.Message) bool) *store.Message {
	e.t.Helper()
	var m *store.Message
	ok := testutil.WaitFor(10*time.Second, func() bool {
		var err error
		m, err = e.s.Get(id)
		if errors.Is(err, store.ErrNotFound) {
			m = nil
		} else if err != nil {
			e.t.Fatalf("get %s: %v", id, err)
		}
		return (m == nil || m.State != store.StateActive) && cond(m)
	})
	if !ok {
		e.t.Fatalf("%s: timed out; message %+v\nlog:\n%s", what, m, e.logs.String())
	}
	return m
}

// waitAttempts waits until recipient 0 of id has failed n times.
func (e *env) waitAttempts(id store.ID, n int) *store.Message {
	e.t.Helper()
	return e.waitMsg(id, fmt.Sprintf("attempt %d", n), func(m *store.Message) bool {
		return m != nil && m.Recipients[0].Attempts >= n
	})
}

// waitGone waits until id has left the queue.
func (e *env) waitGone(id store.ID) {
	e.t.Helper()
	e.waitMsg(id, "delivery", func(m *store.Message) bool { return m == nil })
}
