package delivery

import "context"

// Predial opens sessions ahead with the next hop of dest, for a flush
// that is about to hand up to n messages for dest to the workers
// (flush.Service calls it before the chunk's commit): the connect,
// greeting and EHLO then run while the commit's fsyncs do, and the
// sessions are waiting in the hop's pool when the leased messages reach
// their workers. At most min(n, the hop's destination concurrency limit)
// sessions are open then, those open already (idle or busy) included, so
// a warm pool dials nothing. A session no message takes stays in the
// connection cache and is closed after smtp_connection_cache_time_limit,
// like any; a commit that fails hands no message over, and the sessions
// are only closed that way.
//
// The next hop is the route of an address at dest (transport_maps by
// domain, relay_transport, relayhost): mail whose own route differs (a
// transport_maps entry for its full address, a sub-domain of a sub-tree
// flush) opens its own sessions, as without Predial. A connection that
// fails is only given up: the deliveries then dial and judge the hop
// themselves (the dead-host list is theirs). Predial never blocks: the
// lookup of the next hop (DNS for an MX hop) and the dials run in the
// background, under the deliveries' context, so a shutdown cuts them.
func (d *Scheduler) Predial(dest string, n int) {
	if n <= 0 {
		return
	}
	d.workMu.Lock()
	work := d.work
	d.workMu.Unlock()
	if work == nil {
		return
	}
	go d.cur.Load().predial(work, dest, n)
}

// predial is Predial's background part.
func (d *Scheduler) predial(ctx context.Context, dest string, n int) {
	rt, err := d.resolve("@" + dest)
	if err != nil || rt.Kind != routeSMTP {
		return // an error, discard or retry transport: no connection
	}
	p := d.pool(rt.Hop)
	k := p.claim(n)
	if k == 0 {
		return
	}
	targets, err := d.targets(ctx, rt.Hop)
	if err != nil || len(targets) == 0 {
		for range k {
			p.release()
		}
		return
	}
	for range k {
		go func() {
			cn, serr := d.connect(ctx, targets)
			if serr != nil {
				p.release()
				return
			}
			d.revive(rt.Hop.Key())
			cn.pool = p
			p.put(cn)
		}()
	}
}

// claim takes the slots of the sessions Predial opens: as many as bring
// the sessions open (idle, busy or being dialled) up to min(n, limit),
// none while callers wait for a slot or after closeIdle. The caller
// dials one session per slot and hands it over with put, or gives the
// slot back with release.
func (p *pool) claim(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := min(n, p.limit) - p.open
	if k <= 0 || p.closed || len(p.waiters) > 0 {
		return 0
	}
	p.open += k
	return k
}
