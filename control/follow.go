package control

import (
	"context"
	"errors"
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// Limits of flush --wait.
const (
	defaultWait = 10 * time.Minute
	maxWait     = 24 * time.Hour
)

// follow reports, until every tracked recipient has an outcome or the
// wait ends, how many were delivered, deferred again or bounced. A
// recipient's outcome comes from the store while its message is queued,
// and from the delivery outcome hook (Metrics.Outcome) once the message
// is gone; without that hook a finished message counts as Done.
func (s *Server) follow(ctx context.Context, send func(FlushStatus) error, t *tracker, watch *watcher,
	st FlushStatus, wait time.Duration) error {
	if wait <= 0 {
		wait = defaultWait
	}
	wait = min(wait, maxWait)
	st.Tracked, st.Pending = t.count, t.count
	heard := map[store.ID]map[string]string{} // outcomes from the hook
	gone := map[store.ID]time.Time{}          // when a message was first seen gone
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	poll := time.NewTicker(pollInterval(t.count))
	defer poll.Stop()
	report := time.NewTicker(time.Second)
	defer report.Stop()
	var events <-chan outcomeEvent
	if watch != nil {
		events = watch.ch
	}
	if err := send(st); err != nil {
		return nil
	}
	for st.Pending > 0 {
		select {
		case <-ctx.Done():
			return nil
		case <-deadline.C:
			st.TimedOut = true
			st.End = true
			return send(st)
		case ev := <-events:
			if _, ok := t.rcpts[ev.id][ev.addr]; ok {
				if heard[ev.id] == nil {
					heard[ev.id] = map[string]string{}
				}
				heard[ev.id][ev.addr] = ev.status
			}
		case <-poll.C:
			s.pollTracked(t, heard, gone, watch != nil, &st)
		case <-report.C:
			if err := send(st); err != nil {
				return nil
			}
		}
	}
	st.End = true
	return send(st)
}

// FollowFlush is one host's share of `holdfast flush --cluster --wait`
// (package cluster calls it on each node): it notes the pending
// recipients at dest (with subtree also its sub-domains), calls flush,
// and then follows them in the background as flush --wait does, calling
// report about once a second and a last time with End set. It returns
// flush's error, and then reports nothing.
func FollowFlush(ctx context.Context, st *store.Store, m *Metrics, dest string, subtree bool, wait time.Duration,
	flush func() (store.FlushResult, error), report func(FlushStatus)) error {
	s := &Server{o: Options{Store: st, Metrics: m}}
	watch := m.watch()
	t := s.newTracker(dest, subtree)
	res, err := flush()
	if err != nil {
		m.unwatch(watch)
		return err
	}
	go func() {
		defer m.unwatch(watch)
		s.follow(ctx, func(fs FlushStatus) error { report(fs); return nil }, t, watch,
			FlushStatus{Messages: res.Messages, Active: res.Active}, wait)
	}()
	return nil
}

// hookGrace is how long a finished message waits for its outcome events.
const hookGrace = time.Second

func pollInterval(n int) time.Duration {
	if n > 1000 {
		return time.Second
	}
	return 100 * time.Millisecond
}

// pollTracked looks up each message with unresolved recipients and
// settles those that have an outcome.
// The outcome hook runs after the store commit, so a message seen gone
// gets a grace period for its events before it counts as Done.
func (s *Server) pollTracked(t *tracker, heard map[store.ID]map[string]string,
	gone map[store.ID]time.Time, hooked bool, st *FlushStatus) {
	for id, rcpts := range t.rcpts {
		m, err := s.o.Store.Get(id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			continue
		}
		if m == nil && hooked && len(heard[id]) < len(rcpts) {
			if gone[id].IsZero() {
				gone[id] = time.Now()
			}
			if time.Since(gone[id]) < hookGrace {
				continue
			}
		}
		for addr, before := range rcpts {
			outcome := ""
			if m == nil {
				outcome = "done"
				if h := heard[id][addr]; h != "" {
					outcome = h
				}
			} else {
				outcome = rcptOutcome(m, addr, before)
			}
			if outcome == "" {
				continue
			}
			delete(rcpts, addr)
			st.Pending--
			switch outcome {
			case "sent":
				st.Delivered++
			case "bounced", "expired":
				st.Bounced++
			case "deferred":
				st.Deferred++
			default:
				st.Done++
			}
		}
		if len(rcpts) == 0 {
			delete(t.rcpts, id)
		}
	}
}

// rcptOutcome is a queued recipient's outcome since the flush: "" while
// the flushed attempt has not ended (or another is owed).
func rcptOutcome(m *store.Message, addr string, before int) string {
	for _, r := range m.Recipients {
		if r.Addr != addr {
			continue
		}
		switch {
		case r.State == store.RcptDelivered:
			return "sent"
		case r.State == store.RcptBounced:
			return "bounced"
		case r.Attempts > before && !r.Forced && !r.FlushPending && m.State != store.StateActive:
			return "deferred"
		}
		return ""
	}
	return "done"
}
