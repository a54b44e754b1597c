package store

import (
	"bytes"
	"fmt"
)

// policy is the fast-flush policy in force: Options.Eligible and
// Options.PolicyKey at Open, replaced by SetPolicy.
type policy struct {
	eligible func(domain string) bool
	key      string
}

// rebuildingKey is the stored fingerprint while ReindexChunk runs: no
// policy has it.
const rebuildingKey = "\x00rebuilding"

// currentPolicy is the policy in force.
func (s *Store) currentPolicy() *policy { return s.pol.Load() }

// SetPolicy replaces the fast-flush policy (a reload changed
// fast_flush_domains): messages written from now on are indexed under
// eligible. It starts no transaction; the caller then brings the entries
// of the messages already queued into line with ReindexChunk, from the
// first ID until it reports done, while acceptance and delivery go on.
// Until then an ETRN for a newly eligible domain may find only part of
// its mail, and Check reports the entries not yet rebuilt. From the first
// chunk to the last the stored fingerprint matches no policy: if the
// process stops meanwhile, the next Open rebuilds the whole index.
func (s *Store) SetPolicy(eligible func(domain string) bool, key string) {
	s.pol.Store(&policy{eligible: eligible, key: key})
}

// ReindexChunk brings the flush-index entries of up to n messages after
// the ID after ("" = from the first) into line with the policy in force,
// in one transaction, and returns the last ID it reached. done is true
// when no message is left after it; that last chunk stores the policy's
// fingerprint, when key is still the one in force (a later SetPolicy
// starts a rebuild of its own), and every other chunk a fingerprint that
// matches none.
func (s *Store) ReindexChunk(after ID, n int, key string) (last ID, done bool, err error) {
	if n <= 0 {
		n = 1
	}
	err = s.update("reindex", func(w *wtx) error {
		last, done = after, true
		c := w.msg.Cursor()
		k, v := c.First()
		if after != "" {
			start := msgKey(after)
			k, v = c.Seek(start)
			if k != nil && bytes.Equal(k, start) {
				k, v = c.Next()
			}
		}
		for i := 0; k != nil; k, v = c.Next() {
			if i == n {
				done = false
				break
			}
			i++
			id := ID(k)
			last = id
			m, err := decodeMessage(id, v)
			if err != nil {
				continue // Check and Open's rebuild report it; its entries stay
			}
			if err := w.reindex(m, m, id); err != nil {
				return err
			}
		}
		if done && key == s.currentPolicy().key {
			return w.meta.Put(metaPolicy, []byte(key))
		}
		// Until the last chunk the index matches no policy: a stop now
		// makes the next Open rebuild it, whatever its configuration.
		return w.meta.Put(metaPolicy, []byte(rebuildingKey))
	})
	if err != nil {
		return after, false, fmt.Errorf("store: reindex: %w", err)
	}
	return last, done, nil
}
