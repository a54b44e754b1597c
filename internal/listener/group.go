package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Group.Serve once Close was called.
var ErrClosed = errors.New("server closed")

// ServeError is what a server's Serve returns when Group.Serve ended
// with err: closed (the server's own ErrServerClosed) after Close, else
// the accept error under the server's name.
func ServeError(err, closed error, name string) error {
	if errors.Is(err, ErrClosed) {
		return closed
	}
	return fmt.Errorf("%s: accept: %w", name, err)
}

// Group is the bookkeeping a server (smtpd, odmr) shares between its
// accept loops, its sessions and its Shutdown: the listeners it accepts
// on, the connections being handled, the sessions in progress (S is the
// server's handle of one) and whether it is shutting down. The zero
// value is ready to use.
type Group[S comparable] struct {
	closing  atomic.Bool
	mu       sync.Mutex
	lns      map[net.Listener]struct{}
	sessions map[S]struct{}
	wg       sync.WaitGroup
}

// Closing reports whether Close was called.
func (g *Group[S]) Closing() bool { return g.closing.Load() }

// MaxIdleWorkers is how many goroutines that have handled a connection
// Serve keeps waiting for the next one, per listener.
const MaxIdleWorkers = 64

// Serve accepts connections on l and runs handle on each in a goroutine
// of its own until Close (ErrClosed) or an accept error that is not
// Temporary. Temporary failures (out of descriptors and the like) are
// retried as net/http does, 5 ms doubling to 1 s.
//
// A goroutine that has handled a connection waits for the next one
// (up to MaxIdleWorkers of them): a new goroutine's stack starts small
// and an SMTP session grows it several times (a commit runs on the
// session's goroutine), each growth a copy of the stack; a goroutine
// that is reused has the stack already.
func (g *Group[S]) Serve(l net.Listener, handle func(net.Conn)) error {
	g.mu.Lock()
	if g.closing.Load() {
		g.mu.Unlock()
		l.Close()
		return ErrClosed
	}
	if g.lns == nil {
		g.lns = map[net.Listener]struct{}{}
	}
	g.lns[l] = struct{}{}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.lns, l)
		g.mu.Unlock()
	}()
	w := &workers{handle: handle, done: g.wg.Done, next: make(chan net.Conn)}
	defer close(w.next) // idle workers end
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if g.closing.Load() {
				return ErrClosed
			}
			if Temporary(err) {
				delay = min(max(2*delay, MinDelay), MaxDelay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		// Counted under the lock Close takes: once Close has run, Wait
		// never sees a handler start.
		g.mu.Lock()
		if g.closing.Load() {
			g.mu.Unlock()
			c.Close()
			return ErrClosed
		}
		g.wg.Add(1)
		g.mu.Unlock()
		select {
		case w.next <- c: // an idle worker takes it
		default:
			go w.run(c)
		}
	}
}

// workers are the goroutines of one Serve that handle its connections.
type workers struct {
	handle func(net.Conn)
	done   func() // the Group's WaitGroup, once per connection
	next   chan net.Conn
	idle   atomic.Int32
}

// run handles c, then the connections Serve hands it while it waits,
// until MaxIdleWorkers others wait already or Serve returns.
func (w *workers) run(c net.Conn) {
	for {
		w.handle(c)
		w.done()
		if w.idle.Add(1) > MaxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		var ok bool
		c, ok = <-w.next
		w.idle.Add(-1)
		if !ok {
			return
		}
	}
}

// Add registers a session for Close and Wait; false when the group is
// closing (the session must not start). Remove unregisters it.
func (g *Group[S]) Add(s S) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing.Load() {
		return false
	}
	if g.sessions == nil {
		g.sessions = map[S]struct{}{}
	}
	g.sessions[s] = struct{}{}
	return true
}

// Remove unregisters a session Add registered.
func (g *Group[S]) Remove(s S) {
	g.mu.Lock()
	delete(g.sessions, s)
	g.mu.Unlock()
}

// Len is the number of sessions registered.
func (g *Group[S]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sessions)
}

// Each calls f on every session registered, under the group's lock (f
// must not call back into the group).
func (g *Group[S]) Each(f func(S)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for s := range g.sessions {
		f(s)
	}
}

// Close marks the group closing, closes its listeners and then calls
// wake (if not nil) on each session, so that one waiting for input
// notices.
func (g *Group[S]) Close(wake func(S)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closing.Store(true)
	for l := range g.lns {
		l.Close()
	}
	if wake != nil {
		for s := range g.sessions {
			wake(s)
		}
	}
}

// Wait waits until every connection Serve handed out is handled. When
// ctx ends first, it calls cut on each session still registered, waits
// for the handlers to return and returns ctx.Err().
func (g *Group[S]) Wait(ctx context.Context, cut func(S)) error {
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	g.Each(cut)
	<-done
	return ctx.Err()
}
