package control

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Bounds of the control socket's HTTP server. Request bodies are bounded
// in size by each endpoint; these bound time and descriptors, so that
// idle or stalled clients cannot hold the daemon's descriptors.
const (
	// controlHeaderTimeout bounds reading a request's header.
	controlHeaderTimeout = 30 * time.Second
	// controlBodyTimeout bounds reading a request's body (a local
	// submission's message, a list of queue IDs): a per-request read
	// deadline, lifted once the body is read so that long replies
	// (flush --wait, listings) are not cut.
	controlBodyTimeout = 5 * time.Minute
	// controlIdleTimeout closes a keep-alive connection idle this long.
	controlIdleTimeout = 60 * time.Second
	// controlMaxConns caps the open connections (connCap).
	controlMaxConns = 256
	// maxHeaderBytes bounds a request header (control and metrics).
	maxHeaderBytes = 64 << 10
)

// Bounds of the metrics server: a scrape is a small GET.
const (
	metricsHeaderTimeout = 10 * time.Second
	metricsReadTimeout   = 30 * time.Second
	metricsWriteTimeout  = 30 * time.Second
	metricsIdleTimeout   = 60 * time.Second
	// metricsMaxConns caps the open connections (connCap): Prometheus
	// needs one or two.
	metricsMaxConns = 64
)

// connCap keeps at most max connections open on an http.Server (its
// ConnState hook): a connection over the cap makes room by closing the
// connection idle the longest; when none is idle, the new connection is
// closed. net/http itself retries accept errors and closes idle
// keep-alives only after IdleTimeout; without a cap, clients that open
// keep-alives faster than that exhaust the descriptors.
type connCap struct {
	max  int
	mu   sync.Mutex
	open map[net.Conn]time.Time // idle since; zero = new or busy
}

func newConnCap(max int) *connCap {
	return &connCap{max: max, open: make(map[net.Conn]time.Time)}
}

func (c *connCap) state(nc net.Conn, st http.ConnState) {
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
func (c *connCap) oldestIdle() net.Conn {
	var victim net.Conn
	var since time.Time
	for nc, t := range c.open {
		if !t.IsZero() && (victim == nil || t.Before(since)) {
			victim, since = nc, t
		}
	}
	return victim
}

// bodyRead lifts the per-request read deadline (controlBodyTimeout) once
// the handler has read the request body.
func bodyRead(w http.ResponseWriter) {
	http.NewResponseController(w).SetReadDeadline(time.Time{})
}
