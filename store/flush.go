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
}

// Flush expedites the mail for one destination (dest is a normalised
// domain; subtree also covers its sub-domains) in one transaction: a
// prefix seek in the flush index, then per listed message the matching
// pending recipients become Forced and due now (FlushPending when the
// message is active). Cost is set by the destination, not the queue.
func (s *Store) Flush(dest string, subtree bool) (FlushResult, error) {
	dest = addr.Fold(dest)
	match := func(d string) bool {
		return d == dest || subtree && strings.HasSuffix(d, "."+dest)
	}
	var res FlushResult
	err := s.update("flush "+dest, func(w *wtx) error {
		res = FlushResult{}
		var ids []ID
		var orphans [][]byte
		for _, p := range flushPrefixes(dest, subtree) {
			c := w.flush.Cursor()
			for k, _ := c.Seek(p); k != nil && hasPrefix(k, p); k, _ = c.Next() {
				_, id, ok := parseFlushKey(k)
				if !ok || w.msg.Get(msgKey(id)) == nil {
					orphans = append(orphans, append([]byte(nil), k...))
					continue
				}
				if !containsID(ids, id) {
					ids = append(ids, id)
				}
			}
		}
		for _, k := range orphans {
			if err := w.flush.Delete(k); err != nil {
				return err
			}
		}
		return w.expediteAll(ids, match, &res)
	})
	return res, err
}

func hasPrefix(k, p []byte) bool { return len(k) >= len(p) && string(k[:len(p)]) == string(p) }

func containsID(l []ID, id ID) bool {
	for _, x := range l {
		if x == id {
			return true
		}
	}
	return false
}

func (w *wtx) expediteAll(ids []ID, match func(string) bool, res *FlushResult) error {
	for _, id := range ids {
		old, err := w.load(id)
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
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
	}
	return nil
}

// expedite makes the pending recipients of old that match due now and
// Forced, or FlushPending when old is active. Held messages are left.
func (w *wtx) expedite(old *Message, match func(string) bool) (done, active bool, err error) {
	m := clone(old)
	switch m.State {
	case StateHold:
		return false, false, nil
	case StateActive:
		for i := range m.Recipients {
			r := &m.Recipients[i]
			if r.State == RcptPending && match(r.Domain()) {
				r.FlushPending, done = true, true
			}
		}
		if !done {
			return false, false, nil
		}
		return true, true, w.save(old, m)
	}
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if r.State == RcptPending && match(r.Domain()) {
			r.Forced, r.NextAttempt, done = true, w.now, true
		}
	}
	if !done {
		return false, false, nil
	}
	m.State = StateIncoming
	if m.Due.IsZero() || m.Due.After(w.now) {
		m.Due = w.now
	}
	return true, false, w.save(old, m)
}

// FlushAll (sendmail -q) expedites every pending recipient of every
// message not on hold, in one transaction. It walks the queue in chunks
// so that memory stays bounded whatever the queue size.
func (s *Store) FlushAll() (FlushResult, error) {
	var res FlushResult
	err := s.update("flush all", func(w *wtx) error {
		res = FlushResult{}
		return w.eachChunk(func(ids []ID) error {
			return w.expediteAll(ids, all, &res)
		})
	})
	return res, err
}

// eachChunk calls fn with the message IDs in ID order, 1000 at a time,
// re-seeking between chunks so that fn may change the msg bucket.
func (w *wtx) eachChunk(fn func(ids []ID) error) error {
	var after []byte
	for {
		ids := make([]ID, 0, 1000)
		c := w.msg.Cursor()
		k, _ := c.First()
		if after != nil {
			k, _ = c.Seek(after)
			if k != nil && string(k) == string(after) {
				k, _ = c.Next()
			}
		}
		for ; k != nil && len(ids) < cap(ids); k, _ = c.Next() {
			ids = append(ids, ID(k))
		}
		if len(ids) == 0 {
			return nil
		}
		after = []byte(ids[len(ids)-1])
		if err := fn(ids); err != nil {
			return err
		}
	}
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
			return w.dest.Delete([]byte(dest))
		}
		b := []byte{1}
		b = appendTime(b, d.DeadUntil)
		b = appendTime(b, d.LastFlush)
		b = appendString(b, d.Reason)
		return w.dest.Put([]byte(dest), b)
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
