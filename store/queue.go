package store

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Enqueue stores a new message: record, body, due entry and flush
// entries, shared with concurrent writers (Store.batch) so that
// concurrent sessions share one fsync. It fills in m.ID (when empty),
// Arrival (when zero), Size, State and Due, and returns only after the
// commit. The message is due at the earliest NextAttempt of its pending
// recipients, zero meaning now: a caller that defers recipients on
// arrival (defer_transports) sets their Attempts, NextAttempt and Reply,
// and a message with nothing due now is stored deferred, with no lease
// and no second commit.
//
// A caller that has a delivery slot for the message (delivery's Admit)
// passes it with State StateActive: when it is due now it is leased in
// the same transaction as it is stored and comes back StateActive, to be
// ended with Finish or Unlease as any leased message; otherwise it is
// stored as above. That saves the lease's commit (and its fsyncs) before
// the first delivery. A crash leaves it active in the file, and Open
// returns it to the queue, due now (recoverLeases), as any lease.
//
// The closure is idempotent: bbolt may run it again after another call
// in the batch failed.
func (s *Store) Enqueue(m *Message, body []byte) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := prepare(m, body, s.now()); err != nil {
		return fmt.Errorf("store: enqueue: %w", err)
	}
	err := s.shared(func(tx *bolt.Tx) error {
		w := s.begin(tx)
		if err := s.checkSize(tx, len(body)); err != nil {
			return err
		}
		if err := w.insert(m, body); err != nil {
			return err
		}
		return w.commit()
	})
	if err != nil {
		return fmt.Errorf("store: enqueue %s: %w", m.ID, classify(err))
	}
	return nil
}

// checkSize refuses a write of about n bytes that would take the live
// pages (file high-water mark minus free pages) past MaxSize.
func (s *Store) checkSize(tx *bolt.Tx, n int) error {
	if s.o.MaxSize <= 0 {
		return nil
	}
	used := tx.Size() - int64(s.db.Stats().FreeAlloc)
	if used+int64(n)+4096 > s.o.MaxSize {
		return fmt.Errorf("%w: queue would exceed %d bytes", ErrNoSpace, s.o.MaxSize)
	}
	return nil
}

// Lease takes up to n messages due by now, in due order, and makes them
// active. The returned messages are copies owned by the caller. Like
// Enqueue and Finish its commit is shared (Store.batch), so that the scheduler's
// lease shares a commit with concurrent Enqueues and Finishes; bbolt may
// run the closure again, which therefore starts from an empty result.
func (s *Store) Lease(now time.Time, n int) ([]*Message, error) {
	if n <= 0 {
		return nil, nil
	}
	limit := dueKey(now, "zzzzzzzzzzzz")
	// Nothing due: answer from a read transaction. A write transaction
	// that changes nothing still costs a commit and its fsyncs, and the
	// scheduler looks each time a delivery ends. An incoming message
	// (due now, not leased) journaled and not filed yet is filed by the
	// lease's own transaction and leased in it (one commit for both);
	// Lease does not wait for the others: those journaled leased
	// (delivery's Admit) are their workers', those held or deferred
	// wait for the applier.
	incoming := s.journaledIncoming()
	if due, err := s.dueBy(limit); err != nil || (!due && !incoming) {
		return nil, err
	}
	lease := s.batchFiled
	if incoming {
		lease = s.batch
	}
	var out []*Message
	err := lease("lease", func(w *wtx) error {
		out = out[:0]
		// Messages that cannot be read (damaged page) keep their due
		// entry: walk on past them, so that they never hide the rest.
		var after []byte
		for len(out) < n {
			ks := dueKeys(w.due, after, limit, n-len(out))
			if len(ks) == 0 {
				return nil
			}
			after = ks[len(ks)-1]
			for _, k := range ks {
				m, err := w.leaseOne(k)
				if err != nil {
					return err
				}
				if m != nil {
					out = append(out, m)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// dueBy reports whether the schedule has an entry at or before limit (a
// due key), in a read transaction.
func (s *Store) dueBy(limit []byte) (bool, error) {
	var due bool
	err := s.viewFiled(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bktDue).Cursor().First()
		due = k != nil && string(k) <= string(limit)
		return nil
	})
	return due, err
}

// dueKeys copies up to n due keys after the key after (nil: from the
// first), up to limit.
func dueKeys(b *bolt.Bucket, after, limit []byte, n int) [][]byte {
	var ks [][]byte
	c := b.Cursor()
	k, _ := c.First()
	if after != nil {
		if k, _ = c.Seek(after); k != nil && string(k) == string(after) {
			k, _ = c.Next()
		}
	}
	for ; k != nil && len(ks) < n && string(k) <= string(limit); k, _ = c.Next() {
		ks = append(ks, append([]byte(nil), k...))
	}
	return ks
}

// leaseOne makes the message of due key k active; nil when it cannot be
// read (corrupt record moved aside, damaged page) or is gone.
func (w *wtx) leaseOne(k []byte) (*Message, error) {
	_, id, ok := parseDueKey(k)
	old, err := w.loadGuarded(id)
	if !ok || errors.Is(err, ErrNotFound) {
		return nil, w.due.Delete(k) // an entry without a record: drop it
	}
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrDamaged) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m := clone(old)
	m.State, m.Due = StateActive, time.Time{}
	return m, w.save(old, m)
}

// NextDue returns the earliest due time; false when nothing is scheduled.
// It does not wait for the journal's applier: an incoming message
// journaled and not filed yet makes it now (Lease files it).
func (s *Store) NextDue() (time.Time, bool, error) {
	var t time.Time
	var ok bool
	err := s.viewFiled(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bktDue).Cursor().First()
		if k != nil {
			t, _, ok = parseDueKey(k)
		}
		return nil
	})
	if err == nil && s.journaledIncoming() {
		if now := s.now(); !ok || now.Before(t) {
			t, ok = now, true
		}
	}
	return t, ok, err
}

// Get returns a copy of the message's envelope.
func (s *Store) Get(id ID) (*Message, error) {
	var m *Message
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktMsg).Get(msgKey(id))
		if v == nil {
			return fmt.Errorf("store: get %s: %w", id, ErrNotFound)
		}
		var err error
		m, err = decodeMessage(id, v)
		return err
	})
	return m, err
}

// Outcome is the result of one attempt for one recipient.
type Outcome struct {
	// Rcpt is the index in Message.Recipients.
	Rcpt int
	// Result: RcptDelivered, RcptBounced, or RcptPending for deferred.
	Result RcptState
	// Reply, DSN and RemoteMTA describe the outcome (mailq shows Reply).
	Reply, DSN, RemoteMTA string
	// NextAttempt is when a deferred recipient is next due.
	NextAttempt time.Time
}

// Finish describes the end of an attempt.
type Finish struct {
	// Outcomes per attempted recipient; recipients without an outcome
	// keep their state and NextAttempt.
	Outcomes []Outcome
	// Bounces are new messages (DSNs) enqueued in the same transaction;
	// their IDs are filled in.
	Bounces []NewMessage
	// WarnSent records that the delay warning went out (clears WarnAt).
	WarnSent bool
}

// NewMessage is a message to enqueue inside another transaction.
type NewMessage struct {
	Msg  *Message
	Body []byte
}

// Finish ends an attempt on an active message in one transaction; see
// the contract in doc.go. A message put on hold during the attempt gets
// the outcomes and stays on hold. Like Enqueue its commit is shared (Store.batch),
// so that concurrent delivery workers share one fsync; the closure only
// reads f and the stored record, so bbolt may run it again.
func (s *Store) Finish(id ID, f Finish) error {
	// A message leased at acceptance and still journaled is ended
	// without being filed when nothing is left to deliver; otherwise it
	// is filed first, in this transaction. Any other leased message is
	// filed: its Finish neither files nor waits for journal records.
	if s.finishJournaled(id, f) {
		return nil
	}
	finish := s.batchFiled
	if _, ok := s.journaled(id); ok {
		finish = s.batch
	}
	err := finish("finish "+string(id), func(w *wtx) error { return w.finish(id, f, false) })
	if errors.Is(err, ErrDamaged) {
		// bbolt reads the neighbours of a page a delete empties: a damaged
		// page next to this record can fail the commit of a delivery that
		// was made. Record it without the delete (retire), rather than
		// have the message sent again after a salvage.
		if rerr := s.update("finish "+string(id)+" in place", func(w *wtx) error { return w.finish(id, f, true) }); rerr == nil {
			return nil
		}
	}
	return err
}

// finish is Finish's transaction; retire keeps the record of a message
// with nothing left to deliver (see wtx.retire).
func (w *wtx) finish(id ID, f Finish, retire bool) error {
	old, err := w.load(id)
	if err != nil {
		return err
	}
	heldActive := old.State == StateHold && old.HeldFrom == StateActive
	if old.State != StateActive && !heldActive {
		return fmt.Errorf("%w: %s is %s", ErrNotActive, id, old.State)
	}
	m := clone(old)
	if err := applyOutcomes(m, f, w.now); err != nil {
		return err
	}
	for _, b := range f.Bounces {
		if err := prepare(b.Msg, b.Body, w.now); err != nil {
			return err
		}
		if err := w.insert(b.Msg, b.Body); err != nil {
			return err
		}
	}
	if !m.Pending() {
		if retire {
			return w.retire(old, m)
		}
		return w.save(old, nil)
	}
	if heldActive {
		m.HeldFrom = StateDeferred
	} else {
		schedule(m, w.now)
	}
	return w.save(old, m)
}

// retire ends a message without deleting its record (or body), for a
// file where the delete cannot be committed (Finish): the record is
// rewritten with every recipient done, and its flush, hold and active
// entries and its share of the counters go. Nothing leases or flushes it
// again; Check reports it ("no pending recipient"); Salvage skips it.
func (w *wtx) retire(old, m *Message) error {
	k := msgKey(old.ID)
	if err := w.reindex(old, m, old.ID); err != nil {
		return err
	}
	if err := mark(w.hold, k, old.State == StateHold, false); err != nil {
		return err
	}
	if err := mark(w.active, k, old.State == StateActive, false); err != nil {
		return err
	}
	w.counts[old.State]--
	w.bytes -= old.Size
	return w.msg.Put(k, encodeMessage(m))
}

func applyOutcomes(m *Message, f Finish, now time.Time) error {
	attempted := make([]bool, len(m.Recipients))
	for _, o := range f.Outcomes {
		if o.Rcpt < 0 || o.Rcpt >= len(m.Recipients) {
			return fmt.Errorf("recipient %d out of range (%d)", o.Rcpt, len(m.Recipients))
		}
		r := &m.Recipients[o.Rcpt]
		if r.State != RcptPending {
			continue
		}
		attempted[o.Rcpt] = true
		r.Reply, r.DSN, r.RemoteMTA = o.Reply, o.DSN, o.RemoteMTA
		switch o.Result {
		case RcptDelivered, RcptBounced:
			r.State, r.NextAttempt = o.Result, time.Time{}
		case RcptPending:
			r.Attempts++
			r.NextAttempt = o.NextAttempt
		default:
			return fmt.Errorf("recipient %d: bad result %d", o.Rcpt, o.Result)
		}
	}
	for i := range m.Recipients {
		if attempted[i] {
			m.Recipients[i].Forced = false
		}
	}
	consumeFlushPending(m, now)
	if f.WarnSent {
		m.WarnAt = time.Time{}
	}
	return nil
}

// Unlease releases a lease without an attempt (shutdown): the message is
// due again at its recipients' old times (now when those have passed).
func (s *Store) Unlease(id ID) error {
	return s.update("unlease "+string(id), func(w *wtx) error {
		old, err := w.load(id)
		if err != nil {
			return err
		}
		m := clone(old)
		consumeFlushPending(m, w.now)
		switch {
		case old.State == StateActive:
			schedule(m, w.now)
			if m.State == StateIncoming {
				// Keep its place: the old due time was the earliest
				// pending NextAttempt, or the arrival for a new message.
				for i := range m.Recipients {
					r := &m.Recipients[i]
					t := r.NextAttempt
					if t.IsZero() {
						t = m.Arrival
					}
					if r.State == RcptPending && t.Before(m.Due) {
						m.Due = t
					}
				}
			}
		case old.State == StateHold && old.HeldFrom == StateActive:
			m.HeldFrom = StateIncoming
		default:
			return fmt.Errorf("%w: %s is %s", ErrNotActive, id, old.State)
		}
		return w.save(old, m)
	})
}
