package delivery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/dnsr"
	"github.com/holdfast-mta/holdfast/store"
)

// Scheduler is the queue manager: one goroutine (Run) leases due messages
// (at most ActiveLimit at once) and starts one delivery worker per message;
// workers deliver within the per-destination connection limit and the
// global transaction limit.
//
// A Scheduler value is one configuration (Options and the transports built
// from them) over the state all configurations share (the store, the
// worker and transaction slots, the connection pools, the dead hops).
// Reload makes a new value current; a delivery keeps the value it was
// started with to its end.
// Queue is the part of the store the scheduler needs (*store.Store):
// leasing due mail, reading its content, ending attempts, and the dead
// next hops kept across restarts. Declared here, where it is used, so
// that another queue (a cluster's) can slot in.
type Queue interface {
	Lease(now time.Time, n int) ([]*store.Message, error)
	NextDue() (time.Time, bool, error)
	Body(id store.ID) ([]byte, error)
	BodyHead(id store.ID, limit int) ([]byte, error)
	BodyReader(id store.ID) *store.BodyReader
	Finish(id store.ID, f store.Finish) error
	Unlease(id store.ID) error
	PutDest(dest string, d store.DestState) error
	Dests() (map[string]store.DestState, error)
}

type Scheduler struct {
	o        Options
	deferred map[string]bool // defer_transports
	// transports are the transports by name (built in and TransportDefs);
	// procs limits the deliveries in progress of those with a maxproc.
	transports map[string]*Transport
	procs      map[string]chan struct{}
	*shared
}

// shared is the scheduler's state that outlives a reload.
type shared struct {
	cur      atomic.Pointer[Scheduler] // the configuration in force
	s        Queue
	log      zerolog.Logger
	resolver *dnsr.Resolver
	wake     chan struct{}
	done     chan struct{} // a token per finished worker while wantDone: wakes Run (none when full)
	// wantDone is set while Run waits for a worker slot (every slot is
	// taken) and from shutdown on: only then does a finished worker send
	// its token. Otherwise Run has nothing to do when a worker ends, and
	// waking it for every delivered message cost two read transactions
	// (Lease finding nothing due, NextDue) and a timer per message.
	wantDone atomic.Bool
	slots    chan struct{} // global transaction limit (Concurrency)
	pools    pools

	// jobs hands a leased message to a worker that waits for one (idle
	// counts them).
	jobs chan job
	idle atomic.Int32
	// spawned counts the workers started (tests).
	spawned atomic.Int64

	// running counts the delivery workers, those Run started and those
	// Deliver started; reserved the worker slots Reserve promised and
	// Deliver has not used yet. Both count against ActiveLimit.
	running, reserved atomic.Int64
	// workMu guards work: the deliveries' context while Run runs, nil
	// before and after (Deliver then starts nothing).
	workMu sync.Mutex
	work   context.Context

	deadMu sync.Mutex
	dead   map[string]deadHop // by hop key

	// gate lets the Finishes of a burst of attempts share commits.
	gate finishGate
}

// deadHop is a next hop whose connection failed: its mail is deferred
// without a connection until Until (reference spec §3.5).
type deadHop struct {
	Until  time.Time
	Reason string
	DSN    string
}

// New builds a scheduler for the store s. The dead-destination list is
// loaded from the store.
func New(o Options, s Queue, log zerolog.Logger) (*Scheduler, error) {
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	sh := &shared{
		s:     s,
		log:   log,
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}, o.ActiveLimit),
		slots: make(chan struct{}, o.Concurrency),
		jobs:  make(chan job),
		pools: pools{m: map[string]*pool{}},
		dead:  map[string]deadHop{},
	}
	var err error
	if sh.resolver, err = resolverFor(&o); err != nil {
		return nil, fmt.Errorf("delivery: %w", err)
	}
	o.Resolver = sh.resolver
	d := sh.with(o)
	sh.cur.Store(d)
	dests, err := s.Dests()
	if err != nil {
		return nil, fmt.Errorf("delivery: load dead destinations: %w", err)
	}
	now := o.Clock.Now()
	for k, v := range dests {
		if !strings.Contains(k, ":") || v.DeadUntil.IsZero() {
			continue // not a hop (hop keys are transport:nexthop)
		}
		if !now.Before(v.DeadUntil) {
			if err := s.PutDest(k, store.DestState{}); err != nil { // revived while we were down
				return nil, fmt.Errorf("delivery: clear dead destination %s: %w", k, err)
			}
			continue
		}
		d.dead[k] = deadHop{Until: v.DeadUntil, Reason: v.Reason, DSN: "4.4.1"}
	}
	return d, nil
}

// with returns the scheduler value of configuration o (defaults applied).
func (sh *shared) with(o Options) *Scheduler {
	d := &Scheduler{o: o, shared: sh, deferred: map[string]bool{}}
	for _, t := range o.DeferTransports {
		d.deferred[t] = true
	}
	d.transports = completeTransports(&o)
	d.procs = map[string]chan struct{}{}
	for name, t := range d.transports {
		if t.MaxProc > 0 {
			d.procs[name] = make(chan struct{}, t.MaxProc)
		}
	}
	return d
}

// Reload makes o the configuration of the deliveries started from now on
// and of new mail's admission; deliveries in progress finish under the
// one they began with. What o leaves unset of the wiring (Self, Events,
// Feed, Resolver, Clock) stays as it was. ActiveLimit and
// Concurrency size the scheduler's slots and keep their values until a
// restart. A master.cf maxproc applies to the deliveries started under
// it: just after a reload, deliveries of both configurations may run.
// The destination concurrency limits apply to the connection pools of
// next hops already contacted too (a lower one as sessions end); the
// idle sessions they cache and the dead-hop list stay.
func (d *Scheduler) Reload(o Options) {
	old := d.cur.Load()
	if o.Self == nil {
		o.Self = old.o.Self
	}
	if o.Events == nil {
		o.Events = old.o.Events
	}
	if o.Feed == nil {
		o.Feed = old.o.Feed
	}
	if o.Clock == nil {
		o.Clock = old.o.Clock
	}
	o.Resolver = d.resolver
	o.ActiveLimit, o.Concurrency = old.o.ActiveLimit, old.o.Concurrency
	nd := d.shared.with(o)
	d.cur.Store(nd)
	nd.setLimits()
	d.Wake() // a changed defer_transports or relayhost applies now
}

// Wake makes the scheduler look at the queue at once (new mail, a flush,
// a release). It never blocks.
func (d *Scheduler) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run schedules deliveries until ctx ends. Then it stops leasing, lets
// in-flight deliveries finish for up to ShutdownGrace, cuts the rest
// (their messages are returned to the queue, never left leased), closes
// cached connections and returns nil. It returns an error only when the
// store fails for good (closed).
func (d *Scheduler) Run(ctx context.Context) error {
	work, cut := context.WithCancel(context.Background())
	defer cut()
	d.setWork(work)
	var runErr error
	for ctx.Err() == nil && runErr == nil {
		d := d.cur.Load()
		d.drain()
		free := d.free()
		leased := 0
		if free > 0 {
			n := min(free, d.o.LeaseBatch)
			msgs, err := d.s.Lease(d.o.Clock.Now(), n)
			d.startLeased(work, msgs)
			if err != nil {
				if errors.Is(err, store.ErrClosed) {
					runErr = err
					break
				}
				d.log.Error().Err(err).Msg("lease failed")
			}
			leased = len(msgs)
			if leased == n && err == nil {
				continue // more may be due
			}
		}
		d.sleep(ctx, d.free() > 0, leased)
	}
	d.endWork()
	d.cur.Load().shutdown(cut)
	return runErr
}

// startLeased starts a worker for each of msgs, messages Run leased, for
// which a slot is left. Run takes its slots through Reserve, as a flush
// and Admit take theirs, so that together they never start more than
// ActiveLimit; it reserves after the lease, not before, so that a lease
// that finds nothing holds no slot from Admit. A message a slot is no
// longer left for (Admit or a flush took it meanwhile) goes back to the
// queue, due now.
func (d *Scheduler) startLeased(work context.Context, msgs []*store.Message) {
	k := d.Reserve(len(msgs))
	for _, m := range msgs[:k] {
		d.start(work, m)
	}
	d.reserved.Add(-int64(k))
	for _, m := range msgs[k:] {
		if err := d.s.Unlease(m.ID); err != nil {
			d.log.Error().Err(err).Str("queue_id", string(m.ID)).Msg("unlease failed")
		}
	}
}

// free is the number of messages that may be leased now: ActiveLimit
// less the workers running and the slots reserved.
func (d *Scheduler) free() int {
	return d.o.ActiveLimit - int(d.running.Load()+d.reserved.Load())
}

// start runs one delivery worker for the leased message m under work:
// a worker that waits for its next message takes it, or a new one.
func (d *Scheduler) start(work context.Context, m *store.Message) {
	d.running.Add(1)
	j := job{d: d, work: work, m: m}
	select {
	case d.jobs <- j:
	default:
		d.spawned.Add(1)
		go d.worker(j)
	}
}

// job is a leased message for a worker, with the configuration it is
// delivered under and the deliveries' context.
type job struct {
	d    *Scheduler
	work context.Context
	m    *store.Message
}

// maxIdleWorkers is how many workers wait for the next message after
// their own: a new goroutine's stack starts small and an attempt grows
// it several times (bbolt's reads, the client), each growth a copy of
// the stack (runtime.morestack 6.8 % of the daemon's CPU during ETRN
// rounds of 100 messages); a worker that is reused has its stack grown
// already. It covers a flush chunk's burst of most destinations.
const maxIdleWorkers = 128

// worker delivers j, then the messages start hands it while it waits,
// until maxIdleWorkers others wait already or the deliveries' context
// of its last message ends (Run returned).
func (sh *shared) worker(j job) {
	for {
		j.d.attempt(j.work, j.m)
		sh.running.Add(-1)
		if sh.wantDone.Load() {
			select { // wake Run; a full channel wakes it already
			case sh.done <- struct{}{}:
			default:
			}
		}
		if sh.idle.Add(1) > maxIdleWorkers {
			sh.idle.Add(-1)
			return
		}
		select {
		case j = <-sh.jobs:
			sh.idle.Add(-1)
		case <-j.work.Done():
			sh.idle.Add(-1)
			return
		}
	}
}

func (d *Scheduler) setWork(work context.Context) {
	d.workMu.Lock()
	d.work = work
	d.workMu.Unlock()
}

// endWork makes Reserve grant nothing and Deliver start nothing: Run
// has stopped leasing. Workers Deliver started before are counted in
// running, which shutdown waits for.
func (d *Scheduler) endWork() {
	d.workMu.Lock()
	d.work = nil
	d.workMu.Unlock()
}

// Reserve promises up to n worker slots to a caller that leases mail in
// a transaction of its own (a flush: flush.Service) and hands it to
// Deliver, which must follow with the number granted. It grants none
// while Run is not running.
func (d *Scheduler) Reserve(n int) int {
	d.workMu.Lock()
	defer d.workMu.Unlock()
	if d.work == nil {
		return 0
	}
	k := max(0, min(n, d.free()))
	d.reserved.Add(int64(k))
	return k
}

// Deliver starts a delivery worker for each of msgs, messages the caller
// leased after Reserve granted it reserved slots (at least len(msgs)),
// and gives the slots back; slots given back unused wake Run, which may
// have gone to sleep for want of them. When Run has stopped meanwhile,
// the messages are returned to the queue (Unlease).
func (d *Scheduler) Deliver(msgs []*store.Message, reserved int) {
	cur := d.cur.Load() // the configuration in force, as Run's workers get
	d.workMu.Lock()
	work := d.work
	if work != nil {
		for _, m := range msgs {
			cur.start(work, m)
		}
	}
	d.reserved.Add(-int64(reserved))
	d.workMu.Unlock()
	if work != nil {
		if reserved > len(msgs) {
			d.Wake()
		}
		return
	}
	for _, m := range msgs {
		if err := d.s.Unlease(m.ID); err != nil {
			d.log.Error().Err(err).Str("queue_id", string(m.ID)).Msg("unlease failed")
		}
	}
}

// drain takes the tokens of finished workers without blocking.
func (d *Scheduler) drain() {
	for {
		select {
		case <-d.done:
		default:
			return
		}
	}
}

// sleep waits for the next due time (at most queue_run_delay), a Wake, a
// finished worker or the end of ctx. With no free worker it waits for a
// worker (or a Wake) only.
func (d *Scheduler) sleep(ctx context.Context, canLease bool, leased int) {
	if !canLease {
		// Ask the workers for their tokens, then look again: a worker
		// that ended before it saw wantDone freed its slot before this
		// free() (sequentially consistent atomics), so no wake-up is lost.
		d.wantDone.Store(true)
		defer d.wantDone.Store(false)
		if d.free() > 0 {
			return
		}
	}
	wait := d.o.QueueRunDelay
	if canLease {
		if next, ok, err := d.s.NextDue(); err == nil && ok {
			wait = min(wait, next.Sub(d.o.Clock.Now()))
		}
		if wait <= 0 && leased == 0 {
			// Due now but not leased: it came due just after Lease, or
			// Lease skips it (an unreadable record). Look again, but at
			// most 100 times a second.
			time.Sleep(10 * time.Millisecond)
		}
	}
	t := d.o.Clock.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-d.wake:
	case <-t.C():
	case <-d.done: // a finished worker freed a slot
	}
}

// shutdown waits up to ShutdownGrace for the running workers, then cuts
// their sessions (the workers return their messages with Unlease), waits
// for them, and closes the connection cache.
func (d *Scheduler) shutdown(cut context.CancelFunc) {
	d.wantDone.Store(true) // every ending worker sends its token now
	grace := time.NewTimer(d.o.ShutdownGrace)
	defer grace.Stop()
	for d.running.Load() > 0 {
		select {
		case <-d.done:
		case <-grace.C:
			d.log.Warn().Int64("active", d.running.Load()).Msg("shutdown: cutting deliveries in progress")
			cut()
			for d.running.Load() > 0 {
				<-d.done
			}
		}
	}
	d.closeAllPools()
}

// isDead reports whether hop is on the dead list at now.
func (d *Scheduler) isDead(key string, now time.Time) (deadHop, bool) {
	d.deadMu.Lock()
	defer d.deadMu.Unlock()
	h, ok := d.dead[key]
	if ok && !now.Before(h.Until) {
		delete(d.dead, key)
		ok = false
	}
	return h, ok
}

// markDead puts hop on the dead list for minimal_backoff_time and records
// it in the store so that a restart does not forget it.
func (d *Scheduler) markDead(key string, now time.Time, r result) {
	h := deadHop{Until: now.Add(d.o.MinBackoff), Reason: r.Reply, DSN: r.DSN}
	d.deadMu.Lock()
	d.dead[key] = h
	d.deadMu.Unlock()
	if err := d.s.PutDest(key, store.DestState{DeadUntil: h.Until, Reason: h.Reason}); err != nil {
		d.log.Error().Err(err).Str("relay", key).Msg("record dead destination failed")
	}
}

// revive takes hop off the dead list after a good session.
func (d *Scheduler) revive(key string) {
	d.deadMu.Lock()
	_, ok := d.dead[key]
	delete(d.dead, key)
	d.deadMu.Unlock()
	if ok {
		if err := d.s.PutDest(key, store.DestState{}); err != nil {
			d.log.Error().Err(err).Str("relay", key).Msg("clear dead destination failed")
		}
	}
}
