package flush

import (
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// reindexChunk is how many messages one transaction of an index rebuild
// covers: acceptance and delivery commit between two chunks, so a new
// message waits at most one chunk (a few ms; 256 doubled the wait in
// TestSetPolicyAcceptance, for a rebuild half as long).
const reindexChunk = 64

// SetPolicy puts p in force (a reload): ETRN and `holdfast flush` answer
// by it at once, and mail queued from now on is indexed by it. When its
// Key differs from the policy in force, the store's flush index is rebuilt
// in the background, reindexChunk messages per transaction, without
// stopping acceptance; rebuilding reports whether that started. A rebuild
// still running for an earlier policy stops at its next chunk; Close
// stops it too (the next Open then rebuilds the index in full).
func (s *Service) SetPolicy(p *Policy) (rebuilding bool) {
	old := s.pol.Swap(p)
	if old.Key() == p.Key() {
		return false
	}
	rs := s.runs
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.closing.Load() {
		return false
	}
	gen := rs.gen.Add(1)
	s.store.SetPolicy(p.Eligible, p.Key())
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		s.reindex(gen, p.Key())
		if s.reindexed != nil {
			s.reindexed()
		}
	}()
	return true
}

// reindex runs the rebuild for the policy of generation gen.
func (s *Service) reindex(gen uint64, key string) {
	start := time.Now()
	var last store.ID
	n := 0
	for {
		if s.runs.closing.Load() || s.runs.gen.Load() != gen {
			s.log.Info().Str("event", "flush_index").Int("chunks", n).
				Msg("flush index rebuild stopped (shutdown or a newer fast_flush_domains)")
			return
		}
		next, done, err := s.store.ReindexChunk(last, s.reindexN, key)
		if err != nil {
			s.log.Error().Err(err).Str("event", "flush_index").
				Msg("flush index rebuild failed; the next start rebuilds it")
			return
		}
		n++
		if done {
			s.log.Info().Str("event", "flush_index").Int("chunks", n).Dur("took", time.Since(start)).
				Msg("flush index rebuilt for the new fast_flush_domains")
			return
		}
		last = next
	}
}
