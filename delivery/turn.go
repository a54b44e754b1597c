package delivery

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// TurnResult counts what Turnaround did.
type TurnResult struct {
	// Messages were attempted (their outcome committed by Finish);
	// Returned were given back to the queue untouched (Unlease) after
	// the session failed.
	Messages, Returned int
	// Recipient outcomes.
	Delivered, Deferred, Bounced int
}

// Turnaround is the ODMR provider's delivery (RFC 2645 sec 4.2): after
// ATRN's 250 the roles swap on the same connection nc, so holdfast reads
// the customer's 220, sends EHLO and delivers each leased message's
// pending recipients for which match(domain) holds, with the same SMTP
// client and the same commit as a scheduled attempt (delivered, deferred
// with backoff, bounced with a DSN; one Finish per message). Recipients
// of other domains stay pending. The msgs must be leased (store.LeaseDest)
// by the caller; when they are done, more is called for the next leased
// batch until it returns none (more may be nil). When the session fails, the message in flight gets the
// outcome of a failed attempt and the rest are unleased, so nothing is
// lost and at most the one in flight is delivered twice. name is the
// customer's name for logs and DSNs. The session ends with QUIT; nc is
// not closed.
func (d *Scheduler) Turnaround(ctx context.Context, nc net.Conn, name string, msgs []*store.Message, more func() ([]*store.Message, error), match func(domain string) bool) (TurnResult, error) {
	d = d.cur.Load() // the configuration in force for the whole turnaround
	var res TurnResult
	cf := *d.o.builtinClient()
	cf.TLSLevel = TLSNone // nc is what the customer connected with
	t := target{Name: name, cf: &cf, turn: true}
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			t.Addr, t.Port = a.Unmap(), ta.Port
		}
	}
	cn, err := d.handshake(nc, t, nil)
	if err != nil {
		res.Returned = d.unleaseAll(msgs)
		return res, err
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stop()
	var commits sync.WaitGroup
	for len(msgs) > 0 && !cn.broken {
		d.turnBatch(ctx, cn, name, msgs, match, &res, &commits)
		if cn.broken || ctx.Err() != nil || more == nil {
			break
		}
		if msgs, err = more(); err != nil {
			d.log.Error().Err(err).Str("odmr", name).Msg("lease failed")
			break
		}
	}
	// Every outcome is committed before the customer hears QUIT: a
	// customer that ends the ODMR session then finds the queue settled.
	commits.Wait()
	d.closeConn(cn)
	return res, nil
}

// turnBatch delivers one leased batch over cn.
// Each message's outcome is committed by its own goroutine while the
// next message is sent, so that the commits share fsyncs (the store's
// group commit), as the scheduler's parallel workers do; Turnaround
// waits for them before it returns.
func (d *Scheduler) turnBatch(ctx context.Context, cn *conn, name string, msgs []*store.Message, match func(string) bool, res *TurnResult, commits *sync.WaitGroup) {
	for k, m := range msgs {
		if cn.broken || ctx.Err() != nil {
			res.Returned += d.unleaseAll(msgs[k:])
			return
		}
		a := &attempt{m: m, now: d.o.Clock.Now(), results: map[int]result{},
			log: d.log.With().Str("queue_id", string(m.ID)).Str("odmr", name).Logger()}
		var rcpts []int
		for i := range m.Recipients {
			if r := &m.Recipients[i]; r.State == store.RcptPending && match(r.Domain()) {
				rcpts = append(rcpts, i)
			}
		}
		if len(rcpts) > 0 {
			body, err := d.s.Body(m.ID)
			if err != nil {
				a.log.Error().Err(err).Msg("read body failed")
				res.Returned += d.unleaseAll(msgs[k : k+1])
				continue
			}
			start := time.Now()
			out, _ := d.send(cn, m, rcpts, body) // never handed: an ODMR session has no pool
			if d.o.Events != nil {
				d.o.Events.ObserveDelivery(time.Since(start))
			}
			for j, i := range rcpts {
				a.results[i] = out[j]
				switch out[j].State {
				case store.RcptDelivered:
					res.Delivered++
				case store.RcptBounced:
					res.Bounced++
				default:
					res.Deferred++
				}
			}
		}
		res.Messages++
		// The outcome is committed even when ctx ends now.
		commits.Add(1)
		go func() { defer commits.Done(); d.finish(context.Background(), a) }()
	}
}

// unleaseAll returns leased messages to the queue without an attempt.
func (d *Scheduler) unleaseAll(msgs []*store.Message) int {
	for _, m := range msgs {
		if err := d.s.Unlease(m.ID); err != nil {
			d.log.Error().Err(err).Str("queue_id", string(m.ID)).Msg("unlease failed")
		}
	}
	return len(msgs)
}
