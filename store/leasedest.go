package store

import (
	"slices"
	"time"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// LeaseDest leases, in one transaction, up to n messages that have
// pending recipients at one of dests (exact domains), found through the
// flush index: incoming and deferred messages become active whatever
// their due time, since the destination's server is connected now (ODMR,
// RFC 2645). Active messages (being delivered elsewhere) and held ones
// are left alone, as are those skip reports (already tried by the
// caller). The returned messages are copies owned by the caller; end each
// with Finish or Unlease, as a scheduler lease.
func (s *Store) LeaseDest(dests []string, n int, skip func(ID) bool) ([]*Message, error) {
	if n <= 0 || len(dests) == 0 {
		return nil, nil
	}
	var out []*Message
	err := s.update("lease-dest", func(w *wtx) error {
		out = out[:0]
		for _, id := range w.destIDs(dests, 10*n, skip) {
			if len(out) >= n {
				break
			}
			old, err := w.loadGuarded(id)
			if passedOver(err) {
				continue
			}
			if err != nil {
				return err
			}
			if old.State != StateIncoming && old.State != StateDeferred {
				continue
			}
			m := clone(old)
			m.State, m.Due = StateActive, time.Time{}
			if err := w.save(old, m); err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// destIDs lists up to limit IDs from the flush index entries of dests,
// each once, leaving out those skip names.
func (w *wtx) destIDs(dests []string, limit int, skip func(ID) bool) []ID {
	var ids []ID
	for _, d := range dests {
		p := flushPrefixes(addr.Fold(d), false)[0]
		c := w.flush.Cursor()
		for k, _ := c.Seek(p); k != nil && hasPrefix(k, p) && len(ids) < limit; k, _ = c.Next() {
			if _, id, ok := parseFlushKey(k); ok && !slices.Contains(ids, id) && (skip == nil || !skip(id)) {
				ids = append(ids, id)
			}
		}
	}
	return ids
}
