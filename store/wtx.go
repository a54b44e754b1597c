package store

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// wtx is one write transaction: the buckets, the clock reading, and the
// counter deltas written to meta at commit. Every change of a message
// goes through save, which keeps the due, flush, hold and active buckets
// and the counters in step with the record (the index invariant).
type wtx struct {
	s                           *Store
	tx                          *bolt.Tx
	now                         time.Time
	meta, msg, body, due, flush *bolt.Bucket
	// The buckets most transactions never touch, opened when first
	// needed (hold(), active(), dest(), corrupt()): opening a bucket in
	// a write transaction costs bbolt a dozen allocations.
	lazyHold, lazyActive, lazyDest, lazyCorrupt *bolt.Bucket
	counts                                      [StateHold + 1]int64
	bytes, ncorrupt                             int64
	quarantined                                 []ID
	qerrs                                       []error
	// damaged: messages skipped because a page of theirs is unreadable.
	damaged []ID
	derrs   []error
}

// appendFill is the page fill for the append-mostly buckets.
const appendFill = 0.9

func (s *Store) begin(tx *bolt.Tx) *wtx {
	w := &wtx{
		s: s, tx: tx, now: s.now(),
		meta: tx.Bucket(bktMeta), msg: tx.Bucket(bktMsg), body: tx.Bucket(bktBody),
		due: tx.Bucket(bktDue), flush: tx.Bucket(bktFlush),
	}
	if tx.Writable() {
		// IDs grow with time, so msg and body are appended to (and due
		// nearly so): splitting full pages at bbolt's default 50% would
		// leave them half empty.
		fill := appendFill
		if s.o.fill > 0 {
			fill = s.o.fill
		}
		w.msg.FillPercent, w.body.FillPercent, w.due.FillPercent = fill, fill, fill
	}
	return w
}

// open returns the bucket in *b, opening it the first time.
func (w *wtx) open(b **bolt.Bucket, name []byte) *bolt.Bucket {
	if *b == nil {
		*b = w.tx.Bucket(name)
	}
	return *b
}

func (w *wtx) hold() *bolt.Bucket    { return w.open(&w.lazyHold, bktHold) }
func (w *wtx) active() *bolt.Bucket  { return w.open(&w.lazyActive, bktActive) }
func (w *wtx) dest() *bolt.Bucket    { return w.open(&w.lazyDest, bktDest) }
func (w *wtx) corrupt() *bolt.Bucket { return w.open(&w.lazyCorrupt, bktCorrupt) }

// commit writes the counter deltas.
func (w *wtx) commit() error {
	add := func(k []byte, d int64) error {
		if d == 0 {
			return nil
		}
		return w.meta.Put(k, putInt(getInt(w.meta.Get(k))+d))
	}
	for st := StateIncoming; st <= StateHold; st++ {
		if err := add(stateCounter(st), w.counts[st]); err != nil {
			return err
		}
	}
	if err := add(metaBytes, w.bytes); err != nil {
		return err
	}
	return add(metaCorrupt, w.ncorrupt)
}

// load reads and decodes a message. An undecodable record is moved to
// the corrupt bucket and the ErrCorrupt error returned.
func (w *wtx) load(id ID) (*Message, error) {
	v := w.msg.Get(msgKey(id))
	if v == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	m, err := decodeMessage(id, v)
	if err != nil {
		if qerr := w.quarantine(id, v, err); qerr != nil {
			return nil, qerr
		}
		return nil, err
	}
	return m, nil
}

// loadGuarded is load for the operations that walk many messages (Lease,
// the flushes): a record on a damaged page is skipped with a *DamageError
// naming the message, noted for OnDamaged, and the transaction goes on
// (the panic came from a read, which changed nothing).
func (w *wtx) loadGuarded(id ID) (*Message, error) {
	var m *Message
	err := w.s.guard("", func() error {
		var err error
		m, err = w.load(id)
		return err
	})
	var de *DamageError
	if errors.As(err, &de) {
		de.Cause = fmt.Sprintf("message %s: %s", id, de.Cause)
		w.damaged, w.derrs = append(w.damaged, id), append(w.derrs, de)
	}
	return m, err
}

// dueOf returns the due key a message must have, nil for none.
func dueOf(m *Message) []byte {
	if m == nil || (m.State != StateIncoming && m.State != StateDeferred) {
		return nil
	}
	return dueKey(m.Due, m.ID)
}

// pendingDomains lists the distinct domains of pending recipients for
// which keep(domain) is true.
func pendingDomains(m *Message, keep func(string) bool) []string {
	var out []string
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if r.State != RcptPending {
			continue
		}
		d := r.Domain()
		if d == "" || !keep(d) || contains(out, d) {
			continue
		}
		out = append(out, d)
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func all(string) bool { return true }

// indexed returns the flush-index domains m must have (the invariant).
func (w *wtx) indexed(m *Message) []string {
	eligible := w.s.currentPolicy().eligible
	if m == nil || m.State == StateHold || eligible == nil {
		return nil
	}
	return pendingDomains(m, eligible)
}

// save replaces old (the stored record, nil for a new message) with m
// (nil to delete the message) and moves every index entry accordingly.
// old's flush entries are taken over all its pending domains, eligible or
// not, so that a stale entry can never survive a change.
func (w *wtx) save(old, m *Message) error {
	id := ID("")
	if m != nil {
		id = m.ID
	} else {
		id = old.ID
	}
	k := msgKey(id)
	od, nd := dueOf(old), dueOf(m)
	if !bytes.Equal(od, nd) {
		if od != nil {
			if err := w.due.Delete(od); err != nil {
				return err
			}
		}
		if nd != nil {
			if err := w.due.Put(nd, nil); err != nil {
				return err
			}
		}
	}
	if err := w.reindex(old, m, id); err != nil {
		return err
	}
	if err := mark(w.hold, k, old != nil && old.State == StateHold, m != nil && m.State == StateHold); err != nil {
		return err
	}
	if err := mark(w.active, k, old != nil && old.State == StateActive, m != nil && m.State == StateActive); err != nil {
		return err
	}
	if old != nil {
		w.counts[old.State]--
	}
	if m == nil {
		w.bytes -= old.Size
		if err := deleteBody(w.body, old.ID); err != nil {
			return err
		}
		return w.msg.Delete(k)
	}
	w.counts[m.State]++
	return w.msg.Put(k, encodeMessage(m))
}

func (w *wtx) reindex(old, m *Message, id ID) error {
	var od []string
	if old != nil && old.State != StateHold {
		od = pendingDomains(old, all)
	}
	nd := w.indexed(m)
	for _, d := range od {
		if !contains(nd, d) {
			if err := w.flush.Delete(flushKey(d, id)); err != nil {
				return err
			}
		}
	}
	for _, d := range nd {
		fk := flushKey(d, id)
		// A new message has no entry yet: no need to look.
		if old == nil || w.flush.Get(fk) == nil {
			if err := w.flush.Put(fk, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// mark keeps a presence entry (hold, active) in step with a state; the
// bucket is opened only for a change.
func mark(b func() *bolt.Bucket, k []byte, had, want bool) error {
	switch {
	case want && !had:
		return b().Put(k, nil)
	case had && !want:
		return b().Delete(k)
	}
	return nil
}

// insert stores a new message with its body. m must be prepared.
func (w *wtx) insert(m *Message, body []byte) error {
	k := msgKey(m.ID)
	if w.msg.Get(k) != nil {
		return fmt.Errorf("duplicate queue id %s", m.ID)
	}
	if err := w.putBody(m.ID, body); err != nil {
		return err
	}
	return w.insertRecord(m)
}

// insertRecord stores a new message whose body is already in place.
func (w *wtx) insertRecord(m *Message) error {
	if w.msg.Get(msgKey(m.ID)) != nil {
		return fmt.Errorf("duplicate queue id %s", m.ID)
	}
	w.bytes += m.Size
	return w.save(nil, m)
}

// prepare fills in what Enqueue owns: ID, arrival, size, state and due.
// A message given with State StateHold is stored on hold. A message
// given with State StateActive is leased on arrival when it is due now
// (see Store.Enqueue), and otherwise stored as schedule says.
// State and due follow the recipients (schedule): a new message is
// incoming, due now, unless every pending recipient already has a later
// NextAttempt (deferred on arrival), in which case it is deferred until
// the earliest.
func prepare(m *Message, body []byte, now time.Time) error {
	if m.ID == "" {
		m.ID = NewID()
	} else {
		id, err := ParseID(string(m.ID))
		if err != nil {
			return err
		}
		m.ID = id
	}
	if !m.Pending() {
		return errors.New("message has no pending recipient")
	}
	if m.Arrival.IsZero() {
		m.Arrival = now
	}
	m.Size = int64(len(body))
	hold, lease := m.State == StateHold, m.State == StateActive
	m.HeldFrom = 0
	schedule(m, now)
	if lease && m.State == StateIncoming {
		m.State, m.Due = StateActive, time.Time{} // as Lease would
	}
	if hold {
		// Put on hold on arrival (an smtpd access table's HOLD): as
		// Hold would, remembering where a release returns it.
		m.HeldFrom, m.State, m.Due = m.State, StateHold, time.Time{}
	}
	return nil
}

// schedule sets State and Due of a message with pending recipients from
// their NextAttempt (zero = now): incoming when due by now, else deferred.
func schedule(m *Message, now time.Time) {
	var due time.Time
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if r.State != RcptPending {
			continue
		}
		t := r.NextAttempt
		if t.IsZero() {
			t = now
		}
		if due.IsZero() || t.Before(due) {
			due = t
		}
	}
	if due.IsZero() {
		due = now
	}
	m.Due = due
	if due.After(now) {
		m.State = StateDeferred
	} else {
		m.State = StateIncoming
	}
}

// quarantine moves an undecodable record and its body to the corrupt
// bucket and removes every index entry that names the ID. It cannot know
// the entries from the record, so it scans due and flush (rare, and
// exact). The state counters are recounted for the same reason.
func (w *wtx) quarantine(id ID, rec []byte, cause error) error {
	k := msgKey(id)
	rk, bk := corruptKeys(id)
	if err := w.corrupt().Put(rk, append([]byte(nil), rec...)); err != nil {
		return err
	}
	if b, ok := bodyBytes(w.body, id); ok {
		if err := w.corrupt().Put(bk, b); err != nil {
			return err
		}
	}
	if err := deleteBody(w.body, id); err != nil {
		return err
	}
	for _, b := range []*bolt.Bucket{w.msg, w.hold(), w.active()} {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	for _, b := range []*bolt.Bucket{w.due, w.flush} {
		if err := deleteSuffix(b, k); err != nil {
			return err
		}
	}
	w.ncorrupt++
	w.quarantined = append(w.quarantined, id)
	w.qerrs = append(w.qerrs, cause)
	return w.recount()
}

func deleteSuffix(b *bolt.Bucket, suffix []byte) error {
	var dead [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if bytes.HasSuffix(k, suffix) {
			dead = append(dead, append([]byte(nil), k...))
		}
	}
	for _, k := range dead {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// recount recomputes the state and byte counters from the records,
// setting the deltas so that commit writes the true values. Records that
// do not decode are skipped here; the next transaction that meets them
// quarantines them.
func (w *wtx) recount() error {
	var n [StateHold + 1]int64
	var size int64
	err := w.msg.ForEach(func(k, v []byte) error {
		m, err := decodeMessage(ID(k), v)
		if err != nil {
			return nil
		}
		n[m.State]++
		size += m.Size
		return nil
	})
	if err != nil {
		return err
	}
	for st := StateIncoming; st <= StateHold; st++ {
		w.counts[st] = n[st] - getInt(w.meta.Get(stateCounter(st)))
	}
	w.bytes = size - getInt(w.meta.Get(metaBytes))
	return nil
}

// recoverLeases returns messages left active by a crash to incoming, due
// now; a flush that arrived during the lost attempt is honoured. A
// message held while active gets HeldFrom incoming.
func (w *wtx) recoverLeases() (int, error) {
	ids := keys(w.active())
	n := 0
	for _, id := range ids {
		old, err := w.loadGuarded(id)
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrDamaged) {
			continue
		}
		if err != nil {
			// No record (ErrNotFound): the entry is stale.
			if err := w.active().Delete(msgKey(id)); err != nil {
				return n, err
			}
			continue
		}
		m := clone(old)
		consumeFlushPending(m, w.now)
		m.State, m.Due = StateIncoming, w.now
		if err := w.save(old, m); err != nil {
			return n, err
		}
		n++
	}
	for _, id := range keys(w.hold()) {
		old, err := w.loadGuarded(id)
		if err != nil || old.HeldFrom != StateActive {
			continue
		}
		m := clone(old)
		consumeFlushPending(m, w.now)
		m.HeldFrom = StateIncoming
		if err := w.save(old, m); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// consumeFlushPending turns a flush that arrived during an attempt into
// a forced, due-now recipient.
func consumeFlushPending(m *Message, now time.Time) {
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if !r.FlushPending {
			continue
		}
		r.FlushPending = false
		if r.State == RcptPending {
			r.Forced, r.NextAttempt = true, now
		}
	}
}

// keys copies the keys of a bucket of IDs.
func keys(b *bolt.Bucket) []ID {
	var ids []ID
	b.ForEach(func(k, _ []byte) error {
		ids = append(ids, ID(k))
		return nil
	})
	return ids
}
