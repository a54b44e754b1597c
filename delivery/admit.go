package delivery

import (
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// Enqueuer is where new mail is queued: the store. Admit's result is
// the accept.Queue that package accept commits to, for smtpd and local
// submission alike. Spool is the bounded path (content written as it
// arrives); Enqueue takes a content already in memory.
type Enqueuer interface {
	Enqueue(m *store.Message, body []byte) error
	Spool(id store.ID) (store.Content, error)
}

// Admit wraps q so that new mail is deferred on arrival where DESIGN.md
// says so ("mail whose transport is listed is deferred on arrival,
// without a connection, and indexed for flush"): before the commit, each
// recipient whose transport is in defer_transports gets the outcome the
// first attempt would have given it (attempt 1, "4.3.2 deferred
// transport", next attempt after the first backoff). A message with only
// such recipients is stored deferred, in its one commit, instead of
// being leased and finished by the scheduler (two more commits); a mixed
// message stays due now for the others. After the commit Admit logs one
// deferral per such recipient, as an attempt would. A recipient whose
// transport cannot be resolved (table lookup failure) is left to the
// scheduler.
//
// A message due now (not held, not deferred on arrival) is leased in
// the commit that stores it when the scheduler grants a worker slot
// (Reserve), and handed to Deliver after the commit: its first delivery
// follows one commit, not the Enqueue's then a Lease's; when the store
// journals it (store.Spool.Enqueue, a message of one chunk), none: it is
// journaled leased, and a Finish that ends it before the store's applier
// files it leaves it unfiled. With no slot free
// (or Run not running) it is stored incoming, the scheduler is woken,
// and Run leases it in its turn.
func (d *Scheduler) Admit(q Enqueuer) Enqueuer { return admitter{d: d, q: q} }

type admitter struct {
	d *Scheduler
	q Enqueuer
}

func (a admitter) Enqueue(m *store.Message, body []byte) error {
	return a.admit(m, func() error { return a.q.Enqueue(m, body) })
}

// Spool wraps the queue's spool so that its Enqueue is admitted.
func (a admitter) Spool(id store.ID) (store.Content, error) {
	sp, err := a.q.Spool(id)
	if err != nil {
		return nil, err
	}
	return admitted{Content: sp, a: a}, nil
}

type admitted struct {
	store.Content
	a admitter
}

func (c admitted) Enqueue(m *store.Message) error {
	return c.a.admit(m, func() error { return c.Content.Enqueue(m) })
}

// admit runs enqueue (which commits m) with defer_transports applied.
func (a admitter) admit(m *store.Message, enqueue func() error) error {
	d := a.d.cur.Load() // the configuration in force
	now := d.o.Clock.Now()
	deferred := d.deferOnArrival(m, now)
	var saved []store.Recipient
	if len(deferred) > 0 {
		saved = append(saved, m.Recipients...)
		next := now.Add(d.o.backoff(1))
		res := local(store.RcptPending, "4.3.2", "deferred transport")
		for _, i := range deferred {
			r := &m.Recipients[i]
			r.Attempts, r.NextAttempt = 1, next
			r.Reply, r.DSN = res.Reply, res.DSN
		}
	}
	// Due now and a worker slot free: lease it in its commit (Enqueue of
	// a message given StateActive) and deliver it from here.
	state, reserved := m.State, 0
	if len(deferred) < pendingCount(m) && m.State != store.StateHold {
		if reserved = a.d.Reserve(1); reserved > 0 {
			m.State = store.StateActive
		}
	}
	if err := enqueue(); err != nil {
		if saved != nil {
			copy(m.Recipients, saved) // the caller's message as it was
		}
		m.State = state
		if reserved > 0 {
			a.d.Deliver(nil, reserved)
		}
		return err
	}
	if len(deferred) > 0 {
		log := d.log.With().Str("queue_id", string(m.ID)).Logger()
		res := local(store.RcptPending, "4.3.2", "deferred transport")
		for _, i := range deferred {
			r := &m.Recipients[i]
			logOutcome(&log, m, i, res, d.o.Clock.Now(), r.NextAttempt)
			d.o.outcome(m.ID, r.Addr, res.Status)
		}
	}
	switch {
	case reserved > 0 && m.State == store.StateActive:
		// The worker gets its own copy, as Lease's: the caller keeps m.
		c := *m
		c.Recipients = append([]store.Recipient(nil), m.Recipients...)
		a.d.Deliver([]*store.Message{&c}, reserved)
		return nil
	case reserved > 0:
		a.d.Deliver(nil, reserved)
	}
	if len(deferred) < pendingCount(m) {
		d.Wake()
	}
	return nil
}

// deferOnArrival lists the recipients of a new message that an attempt
// now would defer for their transport without a connection: pending, not
// forced, resolved to a transport in defer_transports. A message that an
// attempt would expire (a queue lifetime of 0) is left to the scheduler.
func (d *Scheduler) deferOnArrival(m *store.Message, now time.Time) []int {
	if len(d.deferred) == 0 || m.Expired {
		return nil
	}
	arrival := m.Arrival
	if arrival.IsZero() {
		arrival = now
	}
	if !now.Before(arrival.Add(d.lifetime(m))) {
		return nil
	}
	var out []int
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if r.State != store.RcptPending || r.Forced || r.NextAttempt.After(now) {
			continue
		}
		rt, err := d.resolve(r.Addr)
		if err != nil || rt.Kind != routeSMTP || !d.deferred[rt.Hop.Transport] {
			continue
		}
		out = append(out, i)
	}
	return out
}
