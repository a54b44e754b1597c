package store

import bolt "go.etcd.io/bbolt"

// DestCounts counts the messages listed in the flush index per
// destination (fast-flush destinations only), for at most limit
// destinations in index order. It walks the whole index in one read
// transaction: meant for a summary taken at a bounded rate (the cluster
// view), not for every request.
func (s *Store) DestCounts(limit int) (map[string]int, error) {
	out := map[string]int{}
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktFlush).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			rd, _, ok := parseFlushKey(k)
			if !ok {
				continue
			}
			d := reverseDomain(rd)
			if _, seen := out[d]; !seen && len(out) >= limit {
				break
			}
			out[d]++
		}
		return nil
	})
	return out, err
}
