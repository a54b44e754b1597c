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
}

// maxBatch bounds the functions of one transaction, as bbolt's
// MaxBatchSize does; a longer queue is committed in several.
const maxBatch = 1000

type commitCall struct {
	fn func(*bolt.Tx) error
	// done receives the call's result, or errLead: the call now leads
	// and commits the pending calls (itself first).
	done chan error
}

var errLead = errors.New("store: lead the next commit")

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
	n := min(len(c.pending), maxBatch)
	batch := c.pending[:n:n]
	c.pending = append([]*commitCall(nil), c.pending[n:]...)
	c.last = n
	c.mu.Unlock()

	errs := c.commit(batch)

	// Hand the lead to the first writer that queued meanwhile before
	// answering this batch, so that the next commit starts at once.
	c.mu.Lock()
	if len(c.pending) > 0 {
		c.pending[0].done <- errLead
	} else {
		c.running = false
	}
	c.mu.Unlock()
	for i, o := range batch[1:] {
		o.done <- errs[i+1]
	}
	return errs[0]
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
