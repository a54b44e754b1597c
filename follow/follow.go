package follow

import (
	"context"
	"errors"
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// Status is one report of a follower: what the flush found, and the
// tracked recipients' outcomes so far (control's FlushStatus, one line
// of a flush --wait reply).
type Status struct {
	Messages  int    `json:"messages"`
	Active    int    `json:"active"`
	Tracked   int    `json:"tracked,omitempty"`
	Delivered int    `json:"delivered,omitempty"`
	Deferred  int    `json:"deferred,omitempty"`
	Bounced   int    `json:"bounced,omitempty"`
	Done      int    `json:"done,omitempty"` // left the queue, outcome not reported
	Pending   int    `json:"pending,omitempty"`
	TimedOut  bool   `json:"timed_out,omitempty"`
	End       bool   `json:"end,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Limits of a wait.
const (
	DefaultWait = 10 * time.Minute
	MaxWait     = 24 * time.Hour
)

// Wait is the wait a request asks for, bounded: DefaultWait for 0 (or
// less), at most MaxWait.
func Wait(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultWait
	}
	return min(d, MaxWait)
}

// Follow reports to send, until every recipient t tracks has an outcome
// or the wait ends (0: ten minutes; at most a day), how many were
// delivered, deferred again or bounced: st first, then about once a
// second, and a last time with End set (and TimedOut if the wait ended).
// A recipient's outcome comes from the store while its message is
// queued, and from the feed once the message is gone; without a feed a
// finished message counts as Done. It returns when ctx ends or send
// fails (nil), or with the last send's error.
func (w *Watch) Follow(ctx context.Context, t *Tracker, st Status, wait time.Duration, send func(Status) error) error {
	wait = Wait(wait)
	st.Tracked, st.Pending = t.count, t.count
	heard := map[store.ID]map[string]string{} // outcomes from the hook
	gone := map[store.ID]time.Time{}          // when a message was first seen gone
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	poll := time.NewTicker(pollInterval(t.count))
	defer poll.Stop()
	report := time.NewTicker(time.Second)
	defer report.Stop()
	events := w.ch // nil without a feed: never ready
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
			t.poll(heard, gone, w.ch != nil, &st)
		case <-report.C:
			if err := send(st); err != nil {
				return nil
			}
		}
	}
	st.End = true
	return send(st)
}

// Flush is one host's share of `holdfast flush --cluster --wait`
// (package cluster calls it on each node, as its Follower): it notes the
// pending recipients at dest (with subtree also its sub-domains), calls
// flush, and then follows them in the background as flush --wait does,
// calling report about once a second and a last time with End set. It
// returns flush's error, and then reports nothing.
func Flush(ctx context.Context, q Queue, feed *Feed, dest string, subtree bool, wait time.Duration,
	flush func() (store.FlushResult, error), report func(Status)) error {
	w := feed.Watch()
	t := Track(q, dest, subtree)
	res, err := flush()
	if err != nil {
		w.Close()
		return err
	}
	go func() {
		defer w.Close()
		w.Follow(ctx, t, Status{Messages: res.Messages, Active: res.Active}, wait,
			func(st Status) error { report(st); return nil })
	}()
	return nil
}

// hookGrace is how long a finished message waits for its feed events.
const hookGrace = time.Second

func pollInterval(n int) time.Duration {
	if n > 1000 {
		return time.Second
	}
	return 100 * time.Millisecond
}

// poll looks up each message with unresolved recipients and settles
// those that have an outcome. The feed hears outcomes after the store
// commit, so a message seen gone gets a grace period for its events
// before it counts as Done.
func (t *Tracker) poll(heard map[store.ID]map[string]string,
	gone map[store.ID]time.Time, hooked bool, st *Status) {
	for id, rcpts := range t.rcpts {
		m, err := t.q.Get(id)
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
