package store

import (
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Content is the body of a new message as it is received: written as it
// arrives, then queued with its envelope by Enqueue (which returns only
// after the commit), or dropped by Abort. *Spool is the store's; smtpd,
// control and delivery's Admit pass it through their queue wrappers.
type Content interface {
	io.Writer
	// Enqueue stores m with the content written so far, like
	// Store.Enqueue. The Content is finished either way.
	Enqueue(m *Message) error
	// Abort drops what was written. It is a no-op after Enqueue.
	Abort()
}

// Spool writes a new message's content into the queue file in chunks of
// BodyChunk bytes as it arrives, so that a session holds at most one
// chunk in memory whatever the size of the message. Each full chunk is
// committed on its own (shared with the other writers of the
// moment) and listed in bucket spool until Enqueue commits the message's
// record with the last chunk, in one transaction: a message exists in
// the queue only whole. The chunks of a spool that is never enqueued
// (abort, crash) are removed by Abort or by the next Open.
//
// A Spool holds a share of Options.ContentLimit from Store.Spool until
// Enqueue or Abort. It is used by one goroutine.
type Spool struct {
	s       *Store
	id      ID
	seq     uint32 // chunks committed
	buf     []byte
	n       int64
	err     error // the first failure; later writes are dropped
	release func()
	done    bool
}

// contentWait is how long Spool waits for a share of the content budget.
const contentWait = 5 * time.Second

// Spool starts the content of a new message with the given ID. When the
// content budget (Options.ContentLimit) is used up it waits up to
// Options.ContentWait for a share and then fails with ErrBusy.
func (s *Store) Spool(id ID) (Content, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	release, err := s.budget.acquire(s.budget.wait)
	if err != nil {
		return nil, err
	}
	return &Spool{s: s, id: id, release: release}, nil
}

// Write buffers p and commits each full chunk. After a failure (disk
// full) it keeps accepting and dropping data, so that the caller can read
// its client to the end; Enqueue then returns the failure.
func (sp *Spool) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && sp.err == nil {
		if sp.buf == nil {
			sp.buf = make([]byte, 0, min(BodyChunk, max(4096, len(p))))
		}
		k := min(len(p), BodyChunk-len(sp.buf))
		sp.buf = append(sp.buf, p[:k]...)
		p = p[k:]
		sp.n += int64(k)
		if len(sp.buf) == BodyChunk {
			sp.err = sp.flushChunk()
			sp.buf = sp.buf[:0]
		}
	}
	return n, sp.err
}

// flushChunk commits the buffered chunk and the spool entry.
func (sp *Spool) flushChunk() error {
	s, seq, chunk := sp.s, sp.seq, sp.buf
	err := s.shared(func(tx *bolt.Tx) error {
		if err := s.checkSize(tx, len(chunk)); err != nil {
			return err
		}
		if err := tx.Bucket(bktSpool).Put(msgKey(sp.id), nil); err != nil {
			return err
		}
		b := tx.Bucket(bktBody)
		b.FillPercent = appendFill
		return putChunk(b, sp.id, seq, chunk)
	})
	if err != nil {
		return fmt.Errorf("store: spool %s: %w", sp.id, classify(err))
	}
	sp.seq++
	return nil
}

// Size is the number of bytes written.
func (sp *Spool) Size() int64 { return sp.n }

// Enqueue stores m with the content: the last chunk, the record, its
// index entries, in one transaction shared with concurrent writers
// (Store.batch), like Store.Enqueue; m.Size is the content's size. A
// message of one chunk or less goes through the journal instead, when
// the store has one (journal.go): Enqueue returns once it is in the
// journal, fsync'd, and the applier files it in the queue right after;
// every other operation waits for that (fence).
func (sp *Spool) Enqueue(m *Message) error {
	if sp.done {
		return fmt.Errorf("store: enqueue %s: spool already finished", sp.id)
	}
	if sp.err != nil {
		sp.Abort()
		return sp.err
	}
	defer sp.finish()
	s := sp.s
	m.ID = sp.id
	if err := prepare(m, nil, s.now()); err != nil {
		sp.abortChunks()
		return fmt.Errorf("store: enqueue: %w", err)
	}
	m.Size = sp.n
	seq, tail := sp.seq, sp.buf
	if seq == 0 {
		// All of it in one value: through the journal (journal.go) when
		// it can take it; sp.buf is not used again. A message leased at
		// acceptance is journaled leased: its worker reads the content
		// from memory, and a Finish that ends it before the applier
		// files it leaves it unfiled (journal.go: finishJournaled).
		if ok, err := s.journalEnqueue(m, tail); ok {
			if err != nil {
				return fmt.Errorf("store: enqueue %s: %w", m.ID, err)
			}
			return nil
		}
	}
	if err := s.shared(sp.commitFn(m, seq, tail)); err != nil {
		sp.abortChunks()
		return fmt.Errorf("store: enqueue %s: %w", m.ID, classify(err))
	}
	return nil
}

// commitFn is Enqueue's transaction: the last chunk (tail, chunk number
// seq), the spool entry removed, the record and its indexes.
func (sp *Spool) commitFn(m *Message, seq uint32, tail []byte) func(tx *bolt.Tx) error {
	s := sp.s
	return func(tx *bolt.Tx) error {
		w := s.begin(tx)
		if err := s.checkSize(tx, len(tail)); err != nil {
			return err
		}
		switch {
		case seq == 0: // it all fits in one value
			if err := w.body.Put(msgKey(m.ID), tail); err != nil {
				return err
			}
		case len(tail) > 0:
			if err := putChunk(w.body, m.ID, seq, tail); err != nil {
				return err
			}
		}
		// Only a spool that committed a chunk is listed in spool.
		if seq > 0 {
			if err := tx.Bucket(bktSpool).Delete(msgKey(m.ID)); err != nil {
				return err
			}
		}
		if err := w.insertRecord(m); err != nil {
			return err
		}
		return w.commit()
	}
}

// Abort drops the content: committed chunks are deleted.
func (sp *Spool) Abort() {
	if sp.done {
		return
	}
	sp.abortChunks()
	sp.finish()
}

func (sp *Spool) abortChunks() {
	if sp.seq == 0 {
		return
	}
	id := sp.id
	// Best effort: what a failure leaves is removed at the next Open.
	sp.s.shared(func(tx *bolt.Tx) error {
		if tx.Bucket(bktMsg).Get(msgKey(id)) != nil {
			return nil
		}
		if err := deleteBody(tx.Bucket(bktBody), id); err != nil {
			return err
		}
		return tx.Bucket(bktSpool).Delete(msgKey(id))
	})
	sp.seq = 0
}

func (sp *Spool) finish() {
	sp.done = true
	sp.buf = nil
	if sp.release != nil {
		sp.release()
		sp.release = nil
	}
}

// dropSpooled removes the chunks of spools a crash left behind (Open).
func (w *wtx) dropSpooled() error {
	sb := w.tx.Bucket(bktSpool)
	var ids []ID
	sb.ForEach(func(k, _ []byte) error {
		ids = append(ids, ID(k))
		return nil
	})
	for _, id := range ids {
		if w.msg.Get(msgKey(id)) == nil {
			if err := deleteBody(w.body, id); err != nil {
				return err
			}
		}
		if err := sb.Delete(msgKey(id)); err != nil {
			return err
		}
	}
	return nil
}

// budget bounds the content held in memory by spools: each holds
// BodyChunk of it from Spool to Enqueue or Abort.
type budget struct {
	slots chan struct{} // nil = unbounded
	wait  time.Duration // contentWait; shorter in tests
}

func newBudget(limit int64, wait time.Duration) *budget {
	if limit <= 0 {
		return &budget{}
	}
	if wait <= 0 {
		wait = contentWait
	}
	return &budget{slots: make(chan struct{}, max(1, limit/BodyChunk)), wait: wait}
}

func (b *budget) acquire(wait time.Duration) (func(), error) {
	if b.slots == nil {
		return func() {}, nil
	}
	select {
	case b.slots <- struct{}{}:
	default:
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case b.slots <- struct{}{}:
		case <-t.C:
			return nil, ErrBusy
		}
	}
	return func() { <-b.slots }, nil
}
