package listener

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// ConnCap keeps at most max connections open on an http.Server (its
// ConnState hook, State): a connection over the cap makes room by closing
// the connection idle the longest; when none is idle, the new connection
// is closed. net/http itself retries accept errors and closes idle
// keep-alives only after IdleTimeout; without a cap, clients that open
// keep-alives faster than that exhaust the descriptors. The control
// socket and the metrics listener each have one.
type ConnCap struct {
	max  int
	mu   sync.Mutex
	open map[net.Conn]time.Time // idle since; zero = new or busy
}

// NewConnCap returns a cap of max connections.
func NewConnCap(max int) *ConnCap {
	return &ConnCap{max: max, open: make(map[net.Conn]time.Time)}
}

// State is the http.Server's ConnState hook.
func (c *ConnCap) State(nc net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateNew:
		if len(c.open) >= c.max {
			victim := c.oldestIdle()
			if victim == nil {
				nc.Close() // net/http's goroutine for it ends on the read error
				return
			}
			victim.Close()
			delete(c.open, victim)
		}
		c.open[nc] = time.Time{}
	case http.StateActive:
		if _, ok := c.open[nc]; ok {
			c.open[nc] = time.Time{}
		}
	case http.StateIdle:
		if _, ok := c.open[nc]; ok {
			c.open[nc] = time.Now()
		}
	case http.StateClosed, http.StateHijacked:
		delete(c.open, nc)
	}
}

// oldestIdle is the connection idle the longest, nil if none is idle.
func (c *ConnCap) oldestIdle() net.Conn {
	var victim net.Conn
	var since time.Time
	for nc, t := range c.open {
		if !t.IsZero() && (victim == nil || t.Before(since)) {
			victim, since = nc, t
		}
	}
	return victim
}
