package delivery

import "time"

// The final dot and the next transaction in one write. RFC 2920 sec 3.1
// lets a client with PIPELINING send the next transaction's MAIL FROM,
// RCPT TO and DATA after the final dot without waiting for its reply.
// When an attempt has buffered its content's final dot and another
// attempt waits at that moment for a session of the same hop, the
// session goes to the waiter (pool.handOff) with the dot unflushed and
// its reply owed: the waiter's commands join the dot in the buffer, one
// write carries them all, and the waiter reads the owed reply first
// (settle) and passes its outcome to the attempt that sent the dot,
// which goes on as if it had read the reply itself. A session with a
// reply owed is never parked in the pool: with nobody waiting (and
// without PIPELINING, over LMTP, on an ODMR session), the attempt flushes
// the dot and reads its own reply.

// owed is an end-of-data reply a session owes the attempt that sent the
// dot; done carries its outcome (buffered: settle never blocks).
type owed struct{ done chan result }

// handOff gives cn, with an end-of-data reply owed, to the first
// attempt waiting for a session of p; false when none waits. The
// session stays counted as open, as when it is put back.
func (p *pool) handOff(cn *conn) bool {
	p.mu.Lock()
	if len(p.waiters) == 0 {
		p.mu.Unlock()
		return false
	}
	ch := p.waiters[0]
	p.waiters = p.waiters[1:]
	p.mu.Unlock()
	ch <- grant{cn}
	return true
}

// settle flushes what cn buffered (the final dot, and the commands
// after it) and reads the end-of-data reply it owes, whose outcome goes
// to the attempt owed it: what that attempt's own read would have given
// (content, endOfData). It returns the error that broke the session
// there, nil when the session goes on (or nothing was owed).
func (d *Scheduler) settle(cn *conn) error {
	o := cn.owed
	if o == nil {
		return nil
	}
	cn.owed = nil
	cn.netc.SetWriteDeadline(time.Now().Add(cn.t.cf.Timeouts.DataXfer))
	if err := cn.w.Flush(); err != nil {
		o.done <- d.dotLost(cn, err)
		return err
	}
	r, err := d.dataReply(cn)
	o.done <- r
	return err
}
