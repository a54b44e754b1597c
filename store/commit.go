package store

import (
	"errors"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// committer is group commit without a timer. A writer that finds no
// commit running runs its transaction at once, alone; writers that arrive
// while a commit is running queue up, and when it ends the first of them
// runs one transaction for all of them. A lone writer therefore never
// waits, and under contention the batch grows with the length of a
// commit (its fsyncs) instead of a fixed delay. bbolt's DB.Batch, by
// contrast, always waits for its MaxBatchDelay timer unless MaxBatchSize
// calls arrive first (1 ms of a lone writer's 2.5).
//
// As with DB.Batch the functions of a batch share one bolt.Tx and one
// fsync, and one of them failing makes the others run again: the failing
// one is then run in a transaction of its own, whose error it gets, and
// the rest are retried together. Each function must therefore only
// change the transaction, and may run more than once.
type committer struct {
	s  *Store
	mu sync.Mutex
	// running: a leader is committing; new calls queue in pending.
	running bool
	pending []*commitCall
	// last is the size of the last batch. With gather > 0 (benchmarks
	// only, Options.gather), a writer that finds no commit running after
	// a shared one (last > 1) waits up to gather for as many writers to
	// queue (the members of that batch, answered just now, may be on
	// their way back); full is closed when they have queued. It helped
	// writers in a tight loop (BenchmarkEnqueue) and measured worse with
	// real SMTP sessions (docs/benchmarks.md), so the store does not wait.
	last   int
	want   int
	full   chan struct{}
	gather time.Duration
	// wait is how long a lazy writer waits (lazyWait; tests change it).
	wait time.Duration
}

// maxBatch bounds the functions of one transaction, as bbolt's
// MaxBatchSize does; a longer queue is committed in several.
const maxBatch = 1000

type commitCall struct {
	fn func(*bolt.Tx) error
	// done receives the call's result, or errLead: the call now leads
	// and commits the pending calls (itself first).
	done chan error
	// lazy: the call may wait for another writer's commit (doLazy);
	// urgent once its wait is over. taken: in a batch being committed.
	lazy, urgent, taken bool
}

var errLead = errors.New("store: lead the next commit")

// lazyWait bounds how long a lazy writer (doLazy) waits for another
// writer's commit before it commits on its own: long enough for the
// next session's Enqueue under load (one every 0.4 ms at 2,500 msg/s),
// short beside anything a delivery waits for.
const lazyWait = 2 * time.Millisecond

// do runs fn in a write transaction, shared with the writers queued at
// the time, and returns after the commit (and its fsync).
func (c *committer) do(fn func(*bolt.Tx) error) error {
	call := &commitCall{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	if c.running {
		c.pending = append(c.pending, call)
		if c.full != nil && len(c.pending) >= c.want {
			close(c.full)
			c.full = nil
		}
		c.mu.Unlock()
		if err := <-call.done; err != errLead {
			return err
		}
		c.mu.Lock()
	} else {
		c.running = true
		c.pending = append(c.pending, call)
		if want := min(c.last, maxBatch); want > 1 && c.gather > 0 {
			full := make(chan struct{})
			c.want, c.full = want, full
			c.mu.Unlock()
			t := time.NewTimer(c.gather)
			select {
			case <-full:
			case <-t.C:
			}
			t.Stop()
			c.mu.Lock()
			c.full = nil
		}
	}
	return c.lead(call)
}

// doLazy is do for a writer nobody waits on (Finish: the delivery is
// made, and its outcome only has to be committed before the message is
// attempted again): it does not start a commit of its own at once, but
// waits up to c.wait (lazyWait) for a writer that must commit at once
// (do) and rides in that writer's commit. Under load that saves the
// commits, and their two fsyncs each, that lazy writers would have led
// or shared among themselves; a lone lazy writer commits after the wait.
func (c *committer) doLazy(fn func(*bolt.Tx) error) error {
	call := &commitCall{fn: fn, done: make(chan error, 1), lazy: true}
	c.mu.Lock()
	c.pending = append(c.pending, call)
	c.mu.Unlock()
	t := time.NewTimer(c.wait)
	select {
	case err := <-call.done:
		t.Stop()
		if err != errLead {
			return err
		}
		c.mu.Lock()
		return c.lead(call)
	case <-t.C:
	}
	c.mu.Lock()
	if !c.running && !call.taken {
		// Nobody came: commit now, with whatever queued meanwhile.
		c.running = true
		return c.lead(call)
	}
	// In a batch being committed, or queued behind a running commit:
	// the end of that commit answers it or, now that it is urgent,
	// hands it the lead (hand).
	call.urgent = true
	c.mu.Unlock()
	if err := <-call.done; err != errLead {
		return err
	}
	c.mu.Lock()
	return c.lead(call)
}

// lead commits the pending calls, call first, and answers them; called
// with c.mu held and c.running set, by the call that leads.
func (c *committer) lead(call *commitCall) error {
	if c.pending[0] != call {
		for i, o := range c.pending {
			if o == call {
				c.pending[0], c.pending[i] = call, c.pending[0]
				break
			}
		}
	}
	n := min(len(c.pending), maxBatch)
	batch := c.pending[:n:n]
	for _, o := range batch {
		o.taken = true
	}
	c.pending = append([]*commitCall(nil), c.pending[n:]...)
	c.last = n
	c.mu.Unlock()

	errs := c.commit(batch)

	// Hand the lead to the first writer that queued meanwhile before
	// answering this batch, so that the next commit starts at once.
	c.mu.Lock()
	c.hand()
	c.mu.Unlock()
	for i, o := range batch[1:] {
		o.done <- errs[i+1]
	}
	return errs[0]
}

// hand passes the lead to the first pending call when one of the pending
// calls must commit now (not lazy, or lazy and done waiting); otherwise
// the committer stops, and the lazy calls wait for a writer or their
// time. Called with c.mu held at the end of a commit.
func (c *committer) hand() {
	for _, o := range c.pending {
		if !o.lazy || o.urgent {
			c.pending[0].done <- errLead
			return
		}
	}
	c.running = false
}

// commit runs the batch in one transaction and returns each call's
// result. When a function fails, it runs alone in its own transaction and
// the others are committed again without it.
func (c *committer) commit(batch []*commitCall) []error {
	s := c.s
	errs := make([]error, len(batch))
	live := make([]int, len(batch))
	for i := range live {
		live[i] = i
	}
	for len(live) > 0 {
		failed := -1
		var ferr error
		start := time.Now()
		err := s.dbUpdate(func(tx *bolt.Tx) error {
			for j, i := range live {
				fn := batch[i].fn
				if ferr = s.guard("", func() error { return fn(tx) }); ferr != nil {
					failed = j
					return ferr
				}
			}
			return nil
		})
		if failed < 0 {
			// Committed, or the commit itself failed: the same for all.
			for _, i := range live {
				errs[i] = err
			}
			if err == nil && s.o.OnCommit != nil {
				s.o.OnCommit(time.Since(start), len(live))
			}
			return errs
		}
		i := live[failed]
		var de *DamageError
		switch {
		case len(live) == 1 || errors.As(ferr, &de):
			// Alone already, or running it alone would meet the same page.
			errs[i] = err
		default:
			errs[i] = s.dbUpdate(batch[i].fn)
		}
		live = append(live[:failed:failed], live[failed+1:]...)
	}
	return errs
}
