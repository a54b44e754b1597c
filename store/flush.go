package store

import (
	"errors"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// FlushResult counts what a flush did.
type FlushResult struct {
	// Messages is the number of messages expedited: made due now, or,
	// when active, marked to be retried when the attempt ends.
	Messages int
	// Active is how many of Messages were being delivered.
	Active int
	// Pending is how many of Messages the flush had not reached when it
	// answered: flush.Service answers after the first chunk of a large
	// destination and goes on in the background; Messages then counts
	// the messages listed in the index at that moment.
	Pending int
	// Joined: a flush of the same destination was already running, and
	// the request joined it; the counts are that flush's.
	Joined bool
}

// FlushChunk is how many flush-index entries one flush transaction
// takes. A flush of a large destination is a series of such transactions,
// each shared with concurrent Enqueues (Store.batch), so that no
// transaction holds bbolt's single write lock for a time proportional to
// the destination's queue (BenchmarkFlushFlood in package flush).
const FlushChunk = 256

// Flush expedites the mail for one destination (dest is a normalised
// domain; subtree also covers its sub-domains): per message listed in the
// flush index, the matching pending recipients become Forced and due now
// (FlushPending when the message is active). It runs the whole FlushRun,
// one transaction per FlushChunk index entries, and returns when the last
// one is committed. Cost is set by the destination, not the queue.
func (s *Store) Flush(dest string, subtree bool) (FlushResult, error) {
	r := s.NewFlushRun(dest, subtree)
	var res FlushResult
	for !r.Done() {
		step, err := r.Next()
		res.Messages += step.Messages
		res.Active += step.Active
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// FlushRun is one flush of a destination walked in chunks: each Next is
// one transaction over the next FlushChunk entries of the destination's
// flush index, in key order (for one destination that is arrival order).
// What each Next committed is durable on its own; a crash between two
// leaves the rest of the destination's mail at its old schedule (nothing
// else changes), and a new flush picks it up. Mail queued for the
// destination while the run goes on is reached when its index key sorts
// after the run's position, which holds for every message queued after
// the run started (queue IDs are time-ordered) unless it shares the
// millisecond of the last message of a chunk. A FlushRun is not safe for
// concurrent use.
type FlushRun struct {
	s        *Store
	dest     string
	subtree  bool
	prefixes [][]byte
	// after is the last index key a committed Next handled, nil before
	// the first.
	after []byte
	done  bool
}

// NewFlushRun prepares a chunked flush of dest; nothing is read yet.
func (s *Store) NewFlushRun(dest string, subtree bool) *FlushRun {
	dest = addr.Fold(dest)
	return &FlushRun{s: s, dest: dest, subtree: subtree, prefixes: flushPrefixes(dest, subtree)}
}

// Done reports whether the run has passed the last index entry.
func (r *FlushRun) Done() bool { return r.done }

// Next expedites the messages of the next FlushChunk index entries in one
// transaction, shared (Store.batch: it shares the commit, and the fsync, of
// concurrent Enqueues, Leases and Finishes). Index entries whose record
// is gone are deleted. A message with entries for several sub-domains of
// a subtree flush is expedited once, at its first entry.
func (r *FlushRun) Next() (FlushResult, error) {
	res, _, err := r.NextLeased(0)
	return res, err
}

// NextLeased is Next that also leases, in the same transaction, up to n
// of the chunk's messages that are due by now once expedited (in index
// order), as Lease would have in a transaction of its own: they are
// active, and the copies returned are owned by the caller, who must end
// each with Finish or Unlease. It saves the lease's commit (and its
// fsyncs) before a flushed destination's first delivery. A crash leaves
// them active in the file; Open returns them to the queue, due now and
// still forced (recoverLeases), as any lease.
func (r *FlushRun) NextLeased(n int) (FlushResult, []*Message, error) {
	if r.done {
		return FlushResult{}, nil, nil
	}
	dest := r.dest
	match := func(d string) bool {
		return d == dest || r.subtree && strings.HasSuffix(d, "."+dest)
	}
	var res FlushResult
	var last []byte
	var more bool
	var leased []*Message
	err := r.s.batch("flush "+dest, func(w *wtx) (err error) {
		// bbolt may run this closure again: start from r's state.
		res, last, more, leased = FlushResult{}, nil, false, leased[:0]
		var ks [][]byte
		ks, more = w.flushKeys(r.prefixes, r.after, FlushChunk)
		if len(ks) > 0 {
			last = ks[len(ks)-1]
		}
		for _, k := range ks {
			_, id, ok := parseFlushKey(k)
			var m *Message
			if ok {
				ok, m, err = w.expediteAt(k, id, match, &res, len(leased) < n)
				if err != nil {
					return err
				}
			}
			if !ok {
				if err := w.flush.Delete(k); err != nil {
					return err
				}
				continue
			}
			if m != nil {
				leased = append(leased, m)
			}
		}
		return nil
	})
	if err != nil {
		return res, nil, err
	}
	if last != nil {
		r.after = last
	}
	r.done = !more
	return res, leased, nil
}

// Remaining counts the messages listed in the index after the run's
// position, in one read transaction (writers go on meanwhile): what the
// rest of the run will expedite, unless the queue changes before. A
// subtree count keeps the IDs it has seen, to count a message with
// entries for several sub-domains once.
func (r *FlushRun) Remaining() (int, error) {
	if r.done {
		return 0, nil
	}
	n := 0
	err := r.s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktFlush)
		var seen map[ID]bool
		if len(r.prefixes) > 1 {
			seen = make(map[ID]bool)
		}
		return eachFlushKey(b, r.prefixes, r.after, func(k []byte) bool {
			_, id, ok := parseFlushKey(k)
			switch {
			case !ok:
			case seen == nil:
				n++
			case !seen[id]:
				seen[id] = true
				n++
			}
			return true
		})
	})
	return n, err
}

// flushKeys copies up to n flush keys under prefixes (in order) after the
// key after; more reports whether any key follows them.
func (w *wtx) flushKeys(prefixes [][]byte, after []byte, n int) (ks [][]byte, more bool) {
	eachFlushKey(w.flush, prefixes, after, func(k []byte) bool {
		if len(ks) == n {
			more = true
			return false
		}
		ks = append(ks, append([]byte(nil), k...))
		return true
	})
	return ks, more
}

// eachFlushKey calls fn with each key of b under prefixes (sorted, as
// flushPrefixes returns them) that sorts after after, in key order, until
// fn returns false.
func eachFlushKey(b *bolt.Bucket, prefixes [][]byte, after []byte, fn func(k []byte) bool) error {
	c := b.Cursor()
	for _, p := range prefixes {
		k, _ := c.Seek(p)
		if after != nil && string(after) >= string(p) {
			k, _ = c.Seek(after)
			if k != nil && string(k) == string(after) {
				k, _ = c.Next()
			}
		}
		for ; k != nil && hasPrefix(k, p); k, _ = c.Next() {
			if !fn(k) {
				return nil
			}
		}
	}
	return nil
}

func hasPrefix(k, p []byte) bool { return len(k) >= len(p) && string(k[:len(p)]) == string(p) }

// expediteAt expedites the message id listed at flush key k, unless k is
// not its first key in the walk (a subtree flush reaches a message with
// recipients in several sub-domains once per sub-domain). A corrupt
// record is quarantined by load and skipped; a record on a damaged page
// is skipped (loadGuarded). found is false when there is no record: the
// key is an orphan. With lease, a message that is queued and due by now
// once expedited is also made active, as Lease would, in the same write
// of its record (one save, not one to expedite and one to lease); leased
// is then a copy the caller owns.
func (w *wtx) expediteAt(k []byte, id ID, match func(string) bool, res *FlushResult, lease bool) (found bool, leased *Message, err error) {
	old, err := w.loadGuarded(id)
	if errors.Is(err, ErrNotFound) {
		return false, nil, nil
	}
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrDamaged) {
		return true, nil, nil
	}
	if err != nil {
		return true, nil, err
	}
	for _, d := range w.indexed(old) {
		if match(d) && string(flushKey(d, id)) < string(k) {
			return true, nil, nil
		}
	}
	m, done, active, changed := expedited(old, match, w.now)
	if done {
		res.Messages++
	}
	if active {
		res.Active++
	}
	if lease && m.State == StateIncoming && !m.Due.After(w.now) {
		m.State, m.Due = StateActive, time.Time{}
		return true, m, w.save(old, m)
	}
	if !changed {
		return true, nil, nil
	}
	return true, nil, w.save(old, m)
}

func (w *wtx) expediteAll(ids []ID, match func(string) bool, res *FlushResult) error {
	return w.eachLoaded(ids, func(old *Message) error {
		done, active, err := w.expedite(old, match)
		if err != nil {
			return err
		}
		if done {
			res.Messages++
		}
		if active {
			res.Active++
		}
		return nil
	})
}

// expedite makes the pending recipients of old that match due now and
// Forced, or FlushPending when old is active, and writes the record when
// that changed it (expedited).
func (w *wtx) expedite(old *Message, match func(string) bool) (done, active bool, err error) {
	m, done, active, changed := expedited(old, match, w.now)
	if !changed {
		return done, active, nil
	}
	return done, active, w.save(old, m)
}

// expedited is old with the pending recipients that match due now and
// Forced (the message queued, due now at the latest), or FlushPending
// when old is active. Held messages are left. A message the flush finds
// already expedited counts as done but is not changed, so that repeated
// flushes of mail not yet attempted cost reads only. m is a copy of old
// (changed: it differs from old and must be written).
func expedited(old *Message, match func(string) bool, now time.Time) (m *Message, done, active, changed bool) {
	m = clone(old)
	switch m.State {
	case StateHold:
		return m, false, false, false
	case StateActive:
		done, changed := markFlushPending(m, match)
		return m, done, done, changed
	}
	done, changed = force(m, match, now)
	if !done {
		return m, false, false, false
	}
	changed = changed || m.State != StateIncoming || m.Due.IsZero() || m.Due.After(now)
	if !changed {
		return m, true, false, false
	}
	m.State = StateIncoming
	if m.Due.IsZero() || m.Due.After(now) {
		m.Due = now
	}
	return m, true, false, true
}

// markFlushPending marks the matching pending recipients of an active
// message FlushPending (Finish makes them forced and due now); found: there
// were some, changed: one was not marked yet.
func markFlushPending(m *Message, match func(string) bool) (found, changed bool) {
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if r.State == RcptPending && match(r.Domain()) {
			found = true
			changed = changed || !r.FlushPending
			r.FlushPending = true
		}
	}
	return found, changed
}

// force makes the matching pending recipients of a queued message forced
// and due at now at the latest; found: there were some, changed: one of
// them changed.
func force(m *Message, match func(string) bool, now time.Time) (found, changed bool) {
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if r.State == RcptPending && match(r.Domain()) {
			found = true
			changed = changed || !r.Forced || r.NextAttempt.After(now)
			r.Forced = true
			if r.NextAttempt.After(now) || r.NextAttempt.IsZero() {
				r.NextAttempt = now
			}
		}
	}
	return found, changed
}

// FlushAll (sendmail -q) expedites every pending recipient of every
// message not on hold. It walks the queue in ID order, FlushChunk
// messages per transaction (shared, as FlushRun.Next), so that
// neither memory nor the time it holds the write lock grows with the
// queue; it returns when the last chunk is committed.
func (s *Store) FlushAll() (FlushResult, error) {
	var res FlushResult
	var after []byte
	for {
		var step FlushResult
		var last []byte
		err := s.batch("flush all", func(w *wtx) error {
			step, last = FlushResult{}, nil
			ids := w.idsAfter(after, FlushChunk)
			if len(ids) > 0 {
				last = []byte(ids[len(ids)-1])
			}
			return w.expediteAll(ids, all, &step)
		})
		res.Messages += step.Messages
		res.Active += step.Active
		if err != nil || last == nil {
			return res, err
		}
		after = last
	}
}

// idsAfter lists up to n message IDs after the key after (nil: from the
// first), in ID order.
func (w *wtx) idsAfter(after []byte, n int) []ID {
	ids := make([]ID, 0, n)
	c := w.msg.Cursor()
	k, _ := c.First()
	if after != nil {
		k, _ = c.Seek(after)
		if k != nil && string(k) == string(after) {
			k, _ = c.Next()
		}
	}
	for ; k != nil && len(ids) < n; k, _ = c.Next() {
		ids = append(ids, ID(k))
	}
	return ids
}

// FlushID (postqueue -i) expedites every pending recipient of one message.
func (s *Store) FlushID(id ID) (FlushResult, error) {
	var res FlushResult
	err := s.update("flush "+string(id), func(w *wtx) error {
		res = FlushResult{}
		if w.msg.Get(msgKey(id)) == nil {
			return ErrNotFound
		}
		return w.expediteAll([]ID{id}, all, &res)
	})
	return res, err
}

// DestState is what the store keeps about a destination.
type DestState struct {
	// DeadUntil: the destination is skipped until then (dead list).
	DeadUntil time.Time
	// Reason is why it is dead (the connection error).
	Reason string
	// LastFlush is when it was last flushed (ETRN, flush DOMAIN).
	LastFlush time.Time
}

// PutDest records a destination's state; the zero DestState deletes it.
func (s *Store) PutDest(dest string, d DestState) error {
	return s.update("put dest "+dest, func(w *wtx) error {
		if d == (DestState{}) {
			return w.dest().Delete([]byte(dest))
		}
		b := []byte{1}
		b = appendTime(b, d.DeadUntil)
		b = appendTime(b, d.LastFlush)
		b = appendString(b, d.Reason)
		return w.dest().Put([]byte(dest), b)
	})
}

// Dests returns every recorded destination. Entries that do not decode
// are left out.
func (s *Store) Dests() (map[string]DestState, error) {
	out := make(map[string]DestState)
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktDest).ForEach(func(k, v []byte) error {
			if len(v) < 1 || v[0] != 1 {
				return nil
			}
			r := &reader{b: v[1:]}
			d := DestState{DeadUntil: r.time(), LastFlush: r.time(), Reason: r.string()}
			if r.err == nil {
				out[string(k)] = d
			}
			return nil
		})
	})
	return out, err
}
