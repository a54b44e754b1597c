package store

import (
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// byIDs runs op on each existing message of ids in one transaction and
// counts those op changed. Unknown IDs are skipped (as postsuper does).
func (s *Store) byIDs(name string, ids []ID, op func(w *wtx, old *Message) (bool, error)) (int, error) {
	n := 0
	err := s.update(name, func(w *wtx) error {
		n = 0
		return w.eachLoaded(ids, func(old *Message) error {
			ok, err := op(w, old)
			if err != nil {
				return err
			}
			if ok {
				n++
			}
			return nil
		})
	})
	return n, err
}

// eachLoaded runs fn on each message of ids that loads, passing over
// those gone, corrupt or on a damaged page (passedOver); an error of fn
// or of a load ends it.
func (w *wtx) eachLoaded(ids []ID, fn func(old *Message) error) error {
	for _, id := range ids {
		old, err := w.loadGuarded(id)
		if passedOver(err) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(old); err != nil {
			return err
		}
	}
	return nil
}

// Hold puts messages on hold (postsuper -h): no due entry, no flush
// entries. An active message keeps its lease; Finish records the outcome
// and leaves it held.
func (s *Store) Hold(ids ...ID) (int, error) {
	return s.byIDs("hold", ids, func(w *wtx, old *Message) (bool, error) {
		if old.State == StateHold {
			return false, nil
		}
		m := clone(old)
		m.HeldFrom, m.State, m.Due = old.State, StateHold, time.Time{}
		return true, w.save(old, m)
	})
}

// Release takes messages off hold (postsuper -H): due at their
// recipients' next attempt, or back to active if the lease taken before
// the hold is still out.
func (s *Store) Release(ids ...ID) (int, error) {
	return s.byIDs("release", ids, func(w *wtx, old *Message) (bool, error) {
		if old.State != StateHold {
			return false, nil
		}
		return true, w.save(old, released(old, w.now))
	})
}

func released(old *Message, now time.Time) *Message {
	m := clone(old)
	if old.HeldFrom == StateActive {
		m.State = StateActive
	} else {
		schedule(m, now)
	}
	m.HeldFrom = 0
	return m
}

// Requeue (postsuper -r) makes every pending recipient due now, keeping
// attempts; held messages are released; an active one is marked
// FlushPending, so it is retried (forced, as after a flush) as soon as
// its attempt ends.
func (s *Store) Requeue(ids ...ID) (int, error) {
	return s.byIDs("requeue", ids, func(w *wtx, old *Message) (bool, error) {
		m := old
		if old.State == StateHold {
			m = released(old, w.now)
		}
		m = clone(m)
		for i := range m.Recipients {
			r := &m.Recipients[i]
			if r.State != RcptPending {
				continue
			}
			if m.State == StateActive {
				r.FlushPending = true
			} else {
				r.NextAttempt = w.now
			}
		}
		if m.State != StateActive {
			schedule(m, w.now)
		}
		return true, w.save(old, m)
	})
}

// Delete removes messages with everything that refers to them
// (postsuper -d). A lease still out then finds ErrNotFound at Finish.
// Records moved to the corrupt bucket can be deleted by ID too.
func (s *Store) Delete(ids ...ID) (int, error) {
	n := 0
	err := s.update("delete", func(w *wtx) error {
		n = 0
		for _, id := range ids {
			rk, bk := corruptKeys(id)
			if w.corrupt().Get(rk) != nil {
				if err := w.corrupt().Delete(rk); err != nil {
					return err
				}
				if err := w.corrupt().Delete(bk); err != nil {
					return err
				}
				w.ncorrupt--
				n++
				continue
			}
			old, err := w.loadGuarded(id)
			if err != nil {
				continue
			}
			if err := w.save(old, nil); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// HoldAll, ReleaseAll, RequeueAll and DeleteAll apply the operation to
// every message that f selects ("ALL"), a page at a time: each page is
// one transaction, so a huge queue is never one huge transaction.
func (s *Store) HoldAll(f Filter) (int, error)    { return s.all(f, s.Hold) }
func (s *Store) ReleaseAll(f Filter) (int, error) { return s.all(f, s.Release) }
func (s *Store) RequeueAll(f Filter) (int, error) { return s.all(f, s.Requeue) }
func (s *Store) DeleteAll(f Filter) (int, error)  { return s.all(f, s.Delete) }

func (s *Store) all(f Filter, op func(...ID) (int, error)) (int, error) {
	total := 0
	var after ID
	for {
		page, next, err := s.List(f, after, 1000)
		if err != nil {
			return total, err
		}
		ids := make([]ID, len(page))
		for i, m := range page {
			ids[i] = m.ID
		}
		n, err := op(ids...)
		total += n
		if err != nil || next == "" {
			return total, err
		}
		after = next
	}
}

// Filter selects messages for List and the *All operations. Zero fields
// select everything.
type Filter struct {
	// States: any of these (empty: all).
	States []State
	// Domain: a recipient whose domain is exactly this.
	Domain string
	// Sender, Recipient: case-insensitive substrings.
	Sender, Recipient string
	// OlderThan: arrived before this time.
	OlderThan time.Time
}

func (f *Filter) match(m *Message) bool {
	if len(f.States) > 0 {
		ok := false
		for _, st := range f.States {
			ok = ok || st == m.State
		}
		if !ok {
			return false
		}
	}
	if !f.OlderThan.IsZero() && !m.Arrival.Before(f.OlderThan) {
		return false
	}
	if f.Sender != "" && !strings.Contains(strings.ToLower(m.Sender), strings.ToLower(f.Sender)) {
		return false
	}
	if f.Domain == "" && f.Recipient == "" {
		return true
	}
	dom, rcpt := addr.Fold(f.Domain), strings.ToLower(f.Recipient)
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if (dom == "" || r.Domain() == dom) &&
			(rcpt == "" || strings.Contains(strings.ToLower(r.Addr), rcpt)) {
			return true
		}
	}
	return false
}

// List returns up to limit messages that f selects, in ID (arrival)
// order, after the ID after ("" = from the start), and the ID to pass
// next time ("" at the end). It reads one cursor position at a time and
// never loads the queue. Undecodable records are skipped (the next write
// transaction that meets them moves them aside).
func (s *Store) List(f Filter, after ID, limit int) ([]*Message, ID, error) {
	if limit <= 0 {
		limit = 100
	}
	var out []*Message
	var next ID
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktMsg).Cursor()
		k, v := c.First()
		if after != "" {
			k, v = c.Seek(msgKey(after))
			if k != nil && string(k) == string(after) {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			if len(out) == limit {
				next = out[len(out)-1].ID
				return nil
			}
			m, err := decodeMessage(ID(k), v)
			if err != nil || !f.match(m) {
				continue
			}
			out = append(out, m)
		}
		return nil
	})
	return out, next, err
}

// Stats are the queue's counters.
type Stats struct {
	// Messages per state.
	Incoming, Active, Deferred, Hold int64
	// Corrupt counts records in the corrupt bucket.
	Corrupt int64
	// Bytes is the total content size of queued messages.
	Bytes int64
}

// Stats reads the counters kept in meta: O(1).
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.view(func(tx *bolt.Tx) error {
		m := tx.Bucket(bktMeta)
		st = Stats{
			Incoming: getInt(m.Get(metaIncoming)), Active: getInt(m.Get(metaActive)),
			Deferred: getInt(m.Get(metaDeferred)), Hold: getInt(m.Get(metaHold)),
			Corrupt: getInt(m.Get(metaCorrupt)), Bytes: getInt(m.Get(metaBytes)),
		}
		return nil
	})
	return st, err
}
