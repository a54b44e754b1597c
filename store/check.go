package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Check verifies bbolt's page structure and the store's invariants in
// one read transaction: every record decodes and has a body; the due,
// flush, hold and active buckets hold exactly the entries the records
// call for (the flush-index invariant of doc.go); no body, due or flush
// entry is left without its record; the counters match. It returns all
// problems found, joined. O(queue): a tool for tests and operators.
//
// It runs in a write transaction that it rolls back (nothing is written,
// nothing synced), which keeps writers out while it runs: bbolt's page
// check reads the database's shared freelist, and in a read-only
// transaction a concurrent commit that reuses a freed page makes that page
// look "unreachable unfreed" to it (bbolt documents Tx.Check as unsafe on
// a read-only transaction with concurrent writers). The daemon's queue
// check (control API) runs while mail flows.
func (s *Store) Check() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.fence(); err != nil {
		return err
	}
	var errs []error
	err := s.guard("check", func() error {
		tx, err := s.db.Begin(true)
		if err != nil {
			return classify(err)
		}
		defer tx.Rollback()
		// bbolt's page check runs in a goroutine of its own, where a
		// damaged page can crash the process: walk the pages first (the
		// write lock held keeps the file still) and stop at damage.
		if probs, err := CheckPages(s.path, 20); err != nil || len(probs) > 0 {
			if err != nil {
				return err
			}
			for _, p := range probs {
				errs = append(errs, &DamageError{Op: "check", Page: p.Page, Bucket: p.Bucket, Cause: p.What})
			}
			return nil
		}
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		w := &wtx{s: s}
		c := &checker{tx: tx, w: w, errs: &errs}
		c.records()
		c.orphans()
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

type checker struct {
	tx   *bolt.Tx
	w    *wtx
	errs *[]error
}

func (c *checker) fail(format string, a ...any) {
	if len(*c.errs) < 100 {
		*c.errs = append(*c.errs, fmt.Errorf("store: check: "+format, a...))
	}
}

func (c *checker) records() {
	b := func(n []byte) *bolt.Bucket { return c.tx.Bucket(n) }
	var n [StateHold + 1]int64
	var size int64
	b(bktMsg).ForEach(func(k, v []byte) error {
		m, err := decodeMessage(ID(k), v)
		if err != nil {
			c.fail("%v", err)
			return nil
		}
		n[m.State]++
		size += m.Size
		if n, ok := bodySize(b(bktBody), m.ID); !ok || n != m.Size {
			c.fail("%s: body missing or size %d != %d", m.ID, n, m.Size)
		}
		if !m.Pending() {
			c.fail("%s: no pending recipient", m.ID)
		}
		if dk := dueOf(m); dk != nil && b(bktDue).Get(dk) == nil {
			c.fail("%s: %s without due entry", m.ID, m.State)
		}
		if (b(bktHold).Get(k) != nil) != (m.State == StateHold) {
			c.fail("%s: hold entry disagrees with state %s", m.ID, m.State)
		}
		if (b(bktActive).Get(k) != nil) != (m.State == StateActive) {
			c.fail("%s: active entry disagrees with state %s", m.ID, m.State)
		}
		for _, d := range c.w.indexed(m) {
			if b(bktFlush).Get(flushKey(d, m.ID)) == nil {
				c.fail("%s: flush entry for %s missing", m.ID, d)
			}
		}
		return nil
	})
	meta := b(bktMeta)
	for st := StateIncoming; st <= StateHold; st++ {
		if got := getInt(meta.Get(stateCounter(st))); got != n[st] {
			c.fail("counter %s = %d, records say %d", st, got, n[st])
		}
	}
	if got := getInt(meta.Get(metaBytes)); got != size {
		c.fail("byte counter = %d, records say %d", got, size)
	}
	var nc int64
	b(bktCorrupt).ForEach(func(k, _ []byte) error {
		if len(k) > 4 && string(k[len(k)-4:]) == "/msg" {
			nc++
		}
		return nil
	})
	if got := getInt(meta.Get(metaCorrupt)); got != nc {
		c.fail("corrupt counter = %d, bucket has %d", got, nc)
	}
}

// orphans checks each index entry against its record.
func (c *checker) orphans() {
	msgs := c.tx.Bucket(bktMsg)
	get := func(id ID) *Message {
		v := msgs.Get(msgKey(id))
		if v == nil {
			return nil
		}
		m, _ := decodeMessage(id, v)
		return m
	}
	c.tx.Bucket(bktBody).ForEach(func(k, _ []byte) error {
		if len(k) != idLen && len(k) != idLen+4 {
			c.fail("body key %q malformed", k)
		} else if msgs.Get(k[:idLen]) == nil && c.tx.Bucket(bktSpool).Get(k[:idLen]) == nil {
			c.fail("body %s without record", k[:idLen])
		}
		return nil
	})
	c.tx.Bucket(bktDue).ForEach(func(k, _ []byte) error {
		t, id, ok := parseDueKey(k)
		m := get(id)
		if !ok || m == nil || dueOf(m) == nil || !m.Due.Equal(t) {
			c.fail("due entry %x has no matching record", k)
		}
		return nil
	})
	c.tx.Bucket(bktFlush).ForEach(func(k, _ []byte) error {
		rd, id, ok := parseFlushKey(k)
		m := get(id)
		if !ok || m == nil {
			c.fail("flush entry %q has no record", k)
			return nil
		}
		for _, d := range c.w.indexed(m) {
			if reverseDomain(d) == rd {
				return nil
			}
		}
		c.fail("flush entry %q not called for by %s (%s)", k, id, m.State)
		return nil
	})
}

// RebuildIndex recomputes the flush index from the records with the
// current policy, in one transaction, and stores the policy fingerprint.
// Open calls it when Options.PolicyKey changed.
func (s *Store) RebuildIndex() error {
	return s.update("rebuild index", func(w *wtx) error {
		if err := w.tx.DeleteBucket(bktFlush); err != nil {
			return err
		}
		fb, err := w.tx.CreateBucket(bktFlush)
		if err != nil {
			return err
		}
		w.flush = fb
		var bad []ID
		var raw [][]byte
		err = w.msg.ForEach(func(k, v []byte) error {
			m, err := decodeMessage(ID(k), v)
			if err != nil {
				bad, raw = append(bad, ID(k)), append(raw, append([]byte(nil), v...))
				return nil
			}
			for _, d := range w.indexed(m) {
				if err := fb.Put(flushKey(d, m.ID), nil); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, id := range bad {
			if err := w.quarantine(id, raw[i], fmt.Errorf("%w: %s", ErrCorrupt, id)); err != nil {
				return err
			}
		}
		return w.meta.Put(metaPolicy, []byte(s.currentPolicy().key))
	})
}

// Backup writes a consistent snapshot of the live database to out
// (bbolt's Tx.WriteTo, in a read transaction: writers go on meanwhile).
// The snapshot is a complete queue file.
func (s *Store) Backup(out io.Writer) (int64, error) {
	var n int64
	want := s.journalLast()
	err := s.view(func(tx *bolt.Tx) error {
		// The view waits for the messages journaled before the call,
		// except while the applier fails; a snapshot without them would
		// miss acknowledged mail, so it is refused.
		if filed := uint64(getInt(tx.Bucket(bktMeta).Get(metaJournal))); filed < want {
			cause := s.journalErr()
			if cause == nil {
				cause = ErrClosed
			}
			return fmt.Errorf("messages %d-%d wait in the journal: %w", filed+1, want, cause)
		}
		var err error
		n, err = tx.WriteTo(out)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("store: backup: %w", err)
	}
	return n, nil
}

const timeoutCompact = time.Second

// Compact copies the queue file src into a new file dst, leaving out
// free pages: bbolt files never shrink by themselves. src must not be
// open by a running holdfast (ErrLocked); dst must not exist.
func Compact(src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("store: compact: %s exists", dst)
	}
	sdb, err := bolt.Open(src, 0o400, &bolt.Options{ReadOnly: true, Timeout: timeoutCompact})
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("store: compact %s: %w%s", src, ErrLocked, holder(src))
	}
	if err != nil {
		return fmt.Errorf("store: compact %s: %w", src, err)
	}
	defer sdb.Close()
	ddb, err := bolt.Open(dst, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("store: compact %s: %w", dst, classify(err))
	}
	// A damaged source panics in bbolt: guard turns that into an error.
	if err := (*Store)(nil).guard("compact "+src, func() error { return bolt.Compact(ddb, sdb, 64<<20) }); err != nil {
		ddb.Close()
		os.Remove(dst)
		return fmt.Errorf("store: compact %s: %w", src, classify(err))
	}
	return ddb.Close()
}
