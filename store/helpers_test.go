package store

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// eligibleSuffix indexes the domains that end in ".tld" (a stand-in for
// fast_flush_domains = tld with subdomain matching).
func eligibleTLD(d string) bool { return d == "tld" || strings.HasSuffix(d, ".tld") }

type fixture struct {
	t    testing.TB
	path string
	o    Options
	s    *Store
	clk  *clock
}

// open opens a store in a temp dir, checks the invariant after the test
// and closes it.
func open(t testing.TB) *fixture {
	t.Helper()
	clk := newClock()
	f := &fixture{t: t, path: filepath.Join(t.TempDir(), "queue.db"), clk: clk,
		o: Options{Eligible: eligibleTLD, PolicyKey: "tld", Now: clk.Now, NoSync: true}}
	f.reopen()
	t.Cleanup(func() {
		if f.s != nil && !f.s.closed.Load() {
			f.check()
			f.s.Close()
		}
	})
	return f
}

func (f *fixture) reopen() {
	f.t.Helper()
	if f.s != nil && !f.s.closed.Load() {
		f.s.Close()
	}
	s, err := Open(f.path, f.o)
	if err != nil {
		f.t.Fatal(err)
	}
	f.s = s
}

// crash closes the bbolt file without any store bookkeeping, as a
// killed process would leave it (the lock goes with the process).
func (f *fixture) crash() {
	f.s.closed.Store(true)
	f.s.db.Close()
	f.s.closeFile()
	f.reopen()
}

func (f *fixture) check() {
	f.t.Helper()
	if err := f.s.Check(); err != nil {
		f.t.Fatalf("Check: %v", err)
	}
}

func newMsg(rcpts ...string) *Message {
	m := &Message{Sender: "sender@example.org", ClientAddr: "192.0.2.1", Helo: "client.example", Protocol: "ESMTP"}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, Recipient{Addr: r})
	}
	return m
}

func (f *fixture) enqueue(rcpts ...string) ID {
	f.t.Helper()
	m := newMsg(rcpts...)
	if err := f.s.Enqueue(m, []byte(fmt.Sprintf("Subject: %v\r\n\r\nbody\r\n", rcpts))); err != nil {
		f.t.Fatal(err)
	}
	f.check()
	return m.ID
}

func (f *fixture) get(id ID) *Message {
	f.t.Helper()
	m, err := f.s.Get(id)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

// lease leases everything due and returns it by ID.
func (f *fixture) lease() map[ID]*Message {
	f.t.Helper()
	ms, err := f.s.Lease(f.clk.Now(), 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	f.check()
	out := make(map[ID]*Message)
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

func (f *fixture) finish(id ID, fin Finish) {
	f.t.Helper()
	if err := f.s.Finish(id, fin); err != nil {
		f.t.Fatal(err)
	}
	f.check()
}

// deferAll defers every recipient of an active message by d.
func (f *fixture) deferAll(m *Message, d time.Duration) {
	f.t.Helper()
	var fin Finish
	for i := range m.Recipients {
		fin.Outcomes = append(fin.Outcomes, Outcome{Rcpt: i, Result: RcptPending, Reply: "try later", DSN: "4.4.1", NextAttempt: f.clk.Now().Add(d)})
	}
	f.finish(m.ID, fin)
}

func (f *fixture) stats() Stats {
	f.t.Helper()
	st, err := f.s.Stats()
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// flushKeys lists the flush index as "domain id" strings.
func (f *fixture) flushKeys() []string {
	var out []string
	f.s.db.View(func(tx *boltTx) error {
		return tx.Bucket(bktFlush).ForEach(func(k, _ []byte) error {
			rd, id, _ := parseFlushKey(k)
			out = append(out, reverseDomain(rd)+" "+string(id))
			return nil
		})
	})
	return out
}
