package store

import (
	"errors"
	"fmt"
	"regexp"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DamageError is ErrDamaged with what is known of the damage: bbolt met a
// page that fails its checks (it panics on those; the store turns the
// panic, or a memory fault reading a wild page number, into this error).
type DamageError struct {
	// Op is the store operation that met the damage.
	Op string
	// Page is the damaged page, 0 when not known.
	Page uint64
	// Bucket is the bucket the page belongs to ("" when not known; "root"
	// for the page that lists the buckets).
	Bucket string
	// Cause is bbolt's description (its panic text) or the page check's.
	Cause string
}

func (e *DamageError) Error() string {
	where := ""
	switch {
	case e.Page != 0 && e.Bucket != "":
		where = fmt.Sprintf(" page %d (bucket %s):", e.Page, e.Bucket)
	case e.Page != 0:
		where = fmt.Sprintf(" page %d:", e.Page)
	case e.Bucket != "":
		where = fmt.Sprintf(" bucket %s:", e.Bucket)
	}
	op := ""
	if e.Op != "" {
		op = e.Op + ": "
	}
	return fmt.Sprintf("store: %squeue file is damaged:%s %s", op, where, e.Cause)
}

// Unwrap makes errors.Is(err, ErrDamaged) true.
func (e *DamageError) Unwrap() error { return ErrDamaged }

// pageInPanic finds the page number in bbolt's panic texts ("page 12:
// ...", "Page expected to be: 12, ...", "pgid (12) above ...").
var pageInPanic = regexp.MustCompile(`(?i)(?:page(?: expected to be:)?|pgid \(|pgId \()\s*(\d+)`)

// damaged turns a recovered panic value into a *DamageError.
func (s *Store) damaged(op string, r any) *DamageError {
	e := &DamageError{Op: op, Cause: fmt.Sprint(r)}
	if m := pageInPanic.FindStringSubmatch(e.Cause); m != nil {
		e.Page, _ = strconv.ParseUint(m[1], 10, 64)
	}
	if s != nil {
		s.locate(e)
	}
	return e
}

// guard runs fn with bbolt's panics and memory faults (a page number
// beyond the mapped file) turned into a *DamageError. Every store entry
// point that reads pages runs its transaction through it.
func (s *Store) guard(op string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = s.damaged(op, r)
		}
	}()
	return fn()
}

// dbUpdate is DB.Update under guard (bbolt rolls the transaction back and
// releases its lock when fn or the commit panics), with the file kept
// written ahead of the transaction (growAhead).
func (s *Store) dbUpdate(fn func(*bolt.Tx) error) error {
	return s.guard("", func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			s.growAhead(tx)
			return fn(tx)
		})
	})
}

// dbView is DB.View under guard.
func (s *Store) dbView(fn func(*bolt.Tx) error) error {
	return s.guard("", func() error { return s.db.View(fn) })
}

// errTrySolo asks a batch member to run its function on its own.
var errTrySolo = errors.New("store: batch member failed; run it alone")

// batcher is bbolt's DB.Batch, redone so that the batch transaction, its
// commit included, runs in a goroutine of the store's under guard: a
// damaged page met while committing a batch must not crash the process,
// as it would inside bbolt's own batch goroutine. Same rules: calls
// arriving within MaxBatchDelay share one transaction and one fsync, up to
// MaxBatchSize; a member that fails is taken out and asked to run alone,
// and the others run again. The store's writers share commits through the
// committer (commit.go) instead, which does not wait for a timer; the
// batcher is kept for Options.batchDelay, the benchmarks' comparison.
type batcher struct {
	mu  sync.Mutex
	cur *batchCalls
}

type batchCalls struct {
	calls []batchCall
	timer *time.Timer
	once  sync.Once
}

type batchCall struct {
	fn  func(*bolt.Tx) error
	err chan error
}

// dbBatch runs fn in a transaction shared with concurrent callers.
func (s *Store) dbBatch(fn func(*bolt.Tx) error) error {
	ch := make(chan error, 1)
	s.batches.mu.Lock()
	b := s.batches.cur
	if b == nil || len(b.calls) >= s.db.MaxBatchSize {
		b = &batchCalls{}
		s.batches.cur = b
		b.timer = time.AfterFunc(s.db.MaxBatchDelay, func() { s.runBatch(b) })
	}
	b.calls = append(b.calls, batchCall{fn: fn, err: ch})
	if len(b.calls) >= s.db.MaxBatchSize {
		go s.runBatch(b)
	}
	s.batches.mu.Unlock()
	err := <-ch
	if err == errTrySolo {
		err = s.dbUpdate(fn)
	}
	return err
}

func (s *Store) runBatch(b *batchCalls) {
	b.once.Do(func() {
		s.batches.mu.Lock()
		b.timer.Stop()
		if s.batches.cur == b {
			s.batches.cur = nil
		}
		s.batches.mu.Unlock()
		calls := b.calls
		for len(calls) > 0 {
			failed := -1
			var ferr error
			err := s.dbUpdate(func(tx *bolt.Tx) error {
				for i, c := range calls {
					if ferr = s.guard("", func() error { return c.fn(tx) }); ferr != nil {
						failed = i
						return ferr
					}
				}
				return nil
			})
			if failed >= 0 {
				c := calls[failed]
				calls[failed], calls = calls[len(calls)-1], calls[:len(calls)-1]
				var de *DamageError
				if errors.As(ferr, &de) {
					c.err <- ferr // running it alone would meet the same page
				} else {
					c.err <- errTrySolo
				}
				continue
			}
			for _, c := range calls {
				c.err <- err
			}
			return
		}
	})
}
