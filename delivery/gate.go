package delivery

import (
	"sync"
	"time"
)

// finishGate holds the end of an attempt (its store.Finish) while other
// attempts are still delivering, so that the outcomes of a burst (an
// ETRN's hundred messages over twenty sessions) share a few commits
// instead of one commit for every few messages: a commit's cost is
// mostly its own (bbolt's Commit, two fdatasyncs), not its messages'.
// The held attempts go together when the last attempt in progress
// reaches its end, when gateBatch of them are held, or gateHold after
// the first of them came, whichever is first. A delivery's outcome is
// never on its session's path (the session goes back to the pool, or on
// to the next attempt, before the Finish), so holding it costs no
// delivery time; it keeps the message leased up to gateHold longer,
// which a crash in that time turns into one more delivery
// (at-least-once, as for any attempt in flight).
type finishGate struct {
	mu sync.Mutex
	// busy counts the attempts between their start (enter) and their
	// end (wait).
	busy int
	// held counts the attempts waiting on batch; batch is closed to let
	// them go (nil: none waits).
	held  int
	batch chan struct{}
	timer *time.Timer
	// hold is gateHold (zero) or a test's own.
	hold time.Duration
}

// gateHold and gateBatch bound how long and how many attempts are held.
const (
	gateHold  = 10 * time.Millisecond
	gateBatch = 128
)

// enter counts an attempt that has started delivering.
func (g *finishGate) enter() {
	g.mu.Lock()
	g.busy++
	g.mu.Unlock()
}

// wait ends an attempt's delivering and returns when its Finish may go.
func (g *finishGate) wait() {
	g.mu.Lock()
	g.busy--
	if g.busy == 0 || g.held+1 >= gateBatch {
		g.release()
		g.mu.Unlock()
		return
	}
	if g.batch == nil {
		ch := make(chan struct{})
		g.batch = ch
		hold := g.hold
		if hold == 0 {
			hold = gateHold
		}
		g.timer = time.AfterFunc(hold, func() {
			g.mu.Lock()
			if g.batch == ch {
				g.release()
			}
			g.mu.Unlock()
		})
	}
	g.held++
	ch := g.batch
	g.mu.Unlock()
	<-ch
}

// release lets the held attempts go. g.mu is held.
func (g *finishGate) release() {
	if g.batch == nil {
		return
	}
	close(g.batch)
	g.timer.Stop()
	g.batch, g.held, g.timer = nil, 0, nil
}
