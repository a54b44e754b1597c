// Package follow follows the recipients of a flush to their outcomes:
// the feed of delivery outcomes (Feed, which the scheduler tells of each
// recipient outcome after its commit) and the follower behind `holdfast
// flush --wait` (Watch.Follow, from the control API) and each node's
// share of `holdfast flush --cluster --wait` (Flush, from package
// cluster).
//
// # Basics
//
// Before the flush, Track notes the pending recipients it concerns and
// Feed.Watch starts listening, so that no outcome is missed. Follow then
// settles each tracked recipient: from the store while its message is
// queued (delivered, bounced, or deferred again: an attempt more, no
// longer forced), and from the feed once the message is gone. It reports
// the counts about once a second and a last time when every recipient
// has an outcome or the wait ends.
//
// # Caveats
//
//   - A slow follower loses feed events (Watch buffers 1024); it still
//     polls the store, and a finished message whose outcomes it did not
//     hear counts as Done (left the queue, outcome not reported), as it
//     does without a feed.
//   - At most MaxTracked recipients are followed.
package follow

import (
	"sync"

	"github.com/holdfast-mta/holdfast/store"
)

// Feed passes delivery outcomes on to the Watches that follow a flush.
// Its methods are safe on a nil *Feed (no outcomes: Follow polls only).
type Feed struct {
	mu       sync.Mutex
	watchers map[*Watch]struct{}
}

// NewFeed returns a Feed without watchers.
func NewFeed() *Feed { return &Feed{watchers: map[*Watch]struct{}{}} }

// Outcome passes one recipient outcome to every Watch ("sent",
// "deferred", "bounced" or "expired"; delivery.Outcomes: the scheduler,
// once per recipient after store.Finish returned). It never blocks.
func (f *Feed) Outcome(id store.ID, addr, status string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	for w := range f.watchers {
		w.notify(event{id, addr, status})
	}
	f.mu.Unlock()
}

// Watch receives the feed's outcomes from Feed.Watch until Close.
type Watch struct {
	f  *Feed
	ch chan event // nil for a nil Feed
}

type event struct {
	id     store.ID
	addr   string
	status string
}

// Watch starts receiving outcomes; call it before the flush, and Close
// when done following.
func (f *Feed) Watch() *Watch {
	if f == nil {
		return &Watch{}
	}
	w := &Watch{f: f, ch: make(chan event, 1024)}
	f.mu.Lock()
	f.watchers[w] = struct{}{}
	f.mu.Unlock()
	return w
}

// Close stops the Watch receiving outcomes.
func (w *Watch) Close() {
	if w.f == nil {
		return
	}
	w.f.mu.Lock()
	delete(w.f.watchers, w)
	w.f.mu.Unlock()
}

func (w *Watch) notify(ev event) {
	select {
	case w.ch <- ev:
	default: // a slow follower loses events; it still polls the store
	}
}
