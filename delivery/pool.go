package delivery

import (
	"context"
	"sync"
	"time"
)

// pool is the connection cache and concurrency limit of one hop: at most
// limit sessions are open at once (in use or idle), an idle session is
// handed to the next message for the hop (connection reuse, Postfix's
// scache), and one that stays idle for ConnCacheTime is closed.
type pool struct {
	d         *Scheduler
	transport string // the hop's transport, for its limit after a reload
	limit     int    // under mu: a reload changes it (setLimit)

	mu      sync.Mutex
	open    int          // sessions open or being dialled
	idle    []*conn      // most recently used last
	waiters []chan grant // FIFO of callers waiting for a slot
	closed  bool
}

// grant is what a waiter receives: an idle session, or (cn == nil) the
// right to dial a new one.
type grant struct{ cn *conn }

// get returns an idle session, or nil with the right to dial one (the
// caller then calls put or release), waiting while limit sessions are busy.
func (p *pool) get(ctx context.Context) (*conn, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		cn := p.idle[n-1]
		p.idle = p.idle[:n-1]
		cn.idle.Stop()
		p.mu.Unlock()
		return cn, nil
	}
	if p.open < p.limit {
		p.open++
		p.mu.Unlock()
		return nil, nil
	}
	ch := make(chan grant, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()
	select {
	case g := <-ch:
		return g.cn, nil
	case <-ctx.Done():
		p.mu.Lock()
		for i, w := range p.waiters {
			if w == ch {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				p.mu.Unlock()
				return nil, ctx.Err()
			}
		}
		p.mu.Unlock()
		g := <-ch // granted meanwhile: pass it on
		if g.cn != nil {
			p.giveBack(g.cn)
		} else {
			p.release()
		}
		return nil, ctx.Err()
	}
}

// giveBack returns a session its user is done with: the end-of-data
// reply it still owes (handoff.go) is read first, then it goes back to
// the pool, or is closed when it broke.
func (p *pool) giveBack(cn *conn) {
	p.d.settle(cn)
	if cn.broken {
		p.drop(cn)
	} else {
		p.put(cn)
	}
}

// put returns a usable session: to the first waiter, else to the idle list.
func (p *pool) put(cn *conn) {
	p.mu.Lock()
	if len(p.waiters) > 0 {
		ch := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		ch <- grant{cn}
		return
	}
	if p.closed {
		p.open--
		p.mu.Unlock()
		p.d.closeConn(cn)
		return
	}
	if cn.idle == nil {
		cn.idle = time.AfterFunc(p.d.o.ConnCacheTime, func() { p.expire(cn) })
	} else {
		cn.idle.Reset(p.d.o.ConnCacheTime)
	}
	p.idle = append(p.idle, cn)
	p.mu.Unlock()
}

// expire closes a session that stayed idle too long.
func (p *pool) expire(cn *conn) {
	p.mu.Lock()
	for i, c := range p.idle {
		if c == cn {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.mu.Unlock()
			p.d.closeConn(cn)
			p.release()
			return
		}
	}
	p.mu.Unlock()
}

// release gives back a slot whose session was closed or never opened.
// Above a limit a reload lowered, the slot is not passed on.
func (p *pool) release() {
	p.mu.Lock()
	if len(p.waiters) > 0 && p.open <= p.limit {
		ch := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		ch <- grant{}
		return
	}
	p.open--
	p.mu.Unlock()
}

// drop closes a session that must not be reused and frees its slot.
func (p *pool) drop(cn *conn) {
	cn.broken = true
	p.d.closeConn(cn)
	p.release()
}

// closeIdle closes every idle session; after it, put closes sessions
// instead of keeping them (shutdown).
func (p *pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.open -= len(idle)
	for _, cn := range idle {
		cn.idle.Stop()
	}
	p.mu.Unlock()
	for _, cn := range idle {
		p.d.closeConn(cn)
	}
}

// pools maps hop keys to their pools.
type pools struct {
	mu sync.Mutex
	m  map[string]*pool
}

func (d *Scheduler) pool(h hop) *pool {
	d.pools.mu.Lock()
	defer d.pools.mu.Unlock()
	p := d.pools.m[h.Key()]
	if p == nil {
		p = &pool{d: d, transport: h.Transport, limit: d.o.destLimit(h.Transport)}
		d.pools.m[h.Key()] = p
	}
	return p
}

// setLimit changes the concurrency limit (a reload); a higher one lets
// waiters dial at once, a lower one takes effect as sessions end.
func (p *pool) setLimit(n int) {
	p.mu.Lock()
	p.limit = n
	var grants []chan grant
	for p.open < p.limit && len(p.waiters) > 0 {
		grants = append(grants, p.waiters[0])
		p.waiters = p.waiters[1:]
		p.open++
	}
	p.mu.Unlock()
	for _, ch := range grants {
		ch <- grant{}
	}
}

// setLimits applies the destination concurrency limits of d's
// configuration to the hops already contacted.
func (d *Scheduler) setLimits() {
	for _, p := range d.allPools() {
		p.setLimit(d.o.destLimit(p.transport))
	}
}

// closeAllPools closes every idle session of every hop.
func (d *Scheduler) closeAllPools() {
	for _, p := range d.allPools() {
		p.closeIdle()
	}
}

// allPools is the hops contacted so far, copied out of the map so that
// the caller works on them without holding d.pools.mu.
func (d *Scheduler) allPools() []*pool {
	d.pools.mu.Lock()
	defer d.pools.mu.Unlock()
	ps := make([]*pool, 0, len(d.pools.m))
	for _, p := range d.pools.m {
		ps = append(ps, p)
	}
	return ps
}
