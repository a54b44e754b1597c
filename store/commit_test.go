package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openCommitter(t *testing.T) *committer {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "c.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	db := s.db
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return &committer{s: s}
}

// TestCommitterConcurrent: many writers, some failing, some panicking;
// each gets its own result, and exactly the successful writes are in the
// file.
func TestCommitterConcurrent(t *testing.T) {
	for _, gather := range []time.Duration{0, 200 * time.Microsecond} {
		t.Run(fmt.Sprint("gather=", gather), func(t *testing.T) {
			c := openCommitter(t)
			c.gather = gather
			testCommitterConcurrent(t, c)
		})
	}
}

func testCommitterConcurrent(t *testing.T, c *committer) {
	const n = 400
	errBad := errors.New("bad")
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.do(func(tx *bolt.Tx) error {
				if err := tx.Bucket([]byte("b")).Put([]byte(fmt.Sprint(i)), []byte("v")); err != nil {
					return err
				}
				switch i % 50 {
				case 7:
					return errBad
				case 9:
					panic("boom")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	err := c.s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := 0; i < n; i++ {
			has := b.Get([]byte(fmt.Sprint(i))) != nil
			switch i % 50 {
			case 7:
				if !errors.Is(errs[i], errBad) || has {
					t.Errorf("writer %d: err %v, written %v; want errBad, not written", i, errs[i], has)
				}
			case 9:
				if errs[i] == nil || has {
					t.Errorf("writer %d (panics): err %v, written %v", i, errs[i], has)
				}
			default:
				if errs[i] != nil || !has {
					t.Errorf("writer %d: err %v, written %v", i, errs[i], has)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.running || len(c.pending) != 0 {
		t.Errorf("committer left running=%v with %d pending", c.running, len(c.pending))
	}
}

// TestCommitterShares: writers that queue behind a running commit share
// the next one.
func TestCommitterShares(t *testing.T) {
	c := openCommitter(t)
	hold, started := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- c.do(func(tx *bolt.Tx) error {
			close(started)
			<-hold
			return nil
		})
	}()
	<-started
	const n = 20
	var txs sync.Map
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.do(func(tx *bolt.Tx) error { txs.Store(tx.ID(), true); return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	for {
		c.mu.Lock()
		k := len(c.pending)
		c.mu.Unlock()
		if k == n {
			break
		}
		runtime.Gosched()
	}
	close(hold)
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	k := 0
	txs.Range(func(any, any) bool { k++; return true })
	if k != 1 {
		t.Errorf("%d writers queued behind one commit used %d transactions, want 1", n, k)
	}
}

// TestOnCommit: every group commit is reported once, and the writers it
// reports add up to the writers that committed (the metric
// holdfast_store_commit_batch_size).
func TestOnCommit(t *testing.T) {
	var mu sync.Mutex
	commits, writers := 0, 0
	o := Options{NoSync: true, OnCommit: func(d time.Duration, n int) {
		mu.Lock()
		defer mu.Unlock()
		commits++
		writers += n
		if d <= 0 || n < 1 {
			t.Errorf("OnCommit(%v, %d)", d, n)
		}
	}}
	s, err := Open(filepath.Join(t.TempDir(), "q.db"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 40
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Enqueue(newMsg("u@customer.tld"), []byte("x\r\n")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if writers != n || commits < 1 || commits > n {
		t.Errorf("%d enqueues: OnCommit saw %d writers in %d commits", n, writers, commits)
	}
}

// TestLeaseNothingDueCommitsNothing: a Lease with nothing due answers
// from a read transaction, with no commit (and no fsync): the scheduler
// looks after every delivery that ends. One with mail due commits once.
func TestLeaseNothingDueCommitsNothing(t *testing.T) {
	f := open(t)
	var commits atomic.Int32
	f.o.OnCommit = func(time.Duration, int) { commits.Add(1) }
	f.reopen()
	if ms, err := f.s.Lease(f.clk.Now(), 10); err != nil || len(ms) != 0 {
		t.Fatalf("empty queue: Lease = %d, %v", len(ms), err)
	}
	m := newMsg("u@customer.tld")
	if err := f.s.Enqueue(m, []byte("x\r\n")); err != nil {
		t.Fatal(err)
	}
	f.deferAll(f.lease()[m.ID], time.Hour)
	commits.Store(0)
	if ms, err := f.s.Lease(f.clk.Now(), 10); err != nil || len(ms) != 0 {
		t.Fatalf("deferred for an hour: Lease = %d, %v", len(ms), err)
	}
	if n := commits.Load(); n != 0 {
		t.Errorf("Lease with nothing due: %d commits, want 0", n)
	}
	f.clk.Add(2 * time.Hour)
	if ms, err := f.s.Lease(f.clk.Now(), 10); err != nil || len(ms) != 1 {
		t.Fatalf("due again: Lease = %d, %v", len(ms), err)
	}
	if n := commits.Load(); n != 1 {
		t.Errorf("Lease of one message: %d commits, want 1", n)
	}
}
