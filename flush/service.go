package flush

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/store"
)

// ErrNotEligible means the site is not in fast_flush_domains (or the
// service is off): ETRN answers "459 <site>: service unavailable",
// `holdfast flush DOMAIN` exits 69 (reference spec §2.9).
var ErrNotEligible = errors.New("flush: destination not eligible for fast flush")

// ErrClosed: the service is shutting down (Close) and starts no flush.
var ErrClosed = errors.New("flush: service closed")

// Events receives one call per flush request with its source ("cli" for
// the Service NewService returns, the event name for a copy made by As:
// "etrn", "cluster"), its result ("ok", "not_eligible", "invalid",
// "error") and the time it took to answer
// (holdfast_flush_requests_total, holdfast_flush_duration_seconds).
type Events interface {
	FlushRequest(source, result string, d time.Duration)
}

// Index is the part of the queue a flush needs (*store.Store): the
// chunked walk of a destination's index entries, the whole-queue and
// one-message flushes, and the index rebuild when the policy changes.
// Declared here, where it is used, so that another queue (a cluster's)
// can serve the same Service.
type Index interface {
	NewFlushRun(dest string, subtree bool) *store.FlushRun
	FlushAll() (store.FlushResult, error)
	FlushID(id store.ID) (store.FlushResult, error)
	SetPolicy(eligible func(domain string) bool, key string)
	ReindexChunk(after store.ID, n int, key string) (last store.ID, done bool, err error)
}

// Waker is the part of the delivery scheduler a flush needs: a
// non-blocking kick so that flushed mail is attempted at once.
type Waker interface{ Wake() }

// Deliverer is a Waker that also takes mail the flush leased itself
// (*delivery.Scheduler): Reserve grants up to n delivery slots, and
// Deliver starts the deliveries of the messages leased in them and gives
// the slots back. With one, each chunk of a flush leases what it makes
// due in its own transaction (store.FlushRun.NextLeased), so that the
// first delivery does not wait for a second commit.
type Deliverer interface {
	Waker
	Reserve(n int) int
	Deliver(msgs []*store.Message, reserved int)
}

// Predialer is a Deliverer that can open connections to a destination's
// next hop ahead (*delivery.Scheduler): before a chunk's commit the
// flush tells it how many messages for dest the chunk may hand over, so
// that the sessions open while the commit's fsyncs run. Predial must not
// block.
type Predialer interface {
	Predial(dest string, n int)
}

// Service turns flush requests into store transactions. Safe for
// concurrent use: concurrent requests for different destinations each
// run their own flush; a request for a destination whose flush is still
// running joins it (Flush); repeated requests for a destination whose
// mail is being delivered only mark it (store.Flush), never duplicate it.
type Service struct {
	// pol is the policy in force, shared by the copies As makes
	// (SetPolicy replaces it).
	pol   *atomic.Pointer[Policy]
	store Index
	waker Waker
	log   zerolog.Logger
	// event is the log event name: "flush" (operator) or "etrn" (SMTP).
	event string
	// callerLogs: the caller logs each request with its own context
	// (smtpd, with conn_id); the service logs only background runs.
	callerLogs bool
	// events is told of every request (SetEvents), as coming from
	// source ("cli"; As: its event name).
	events Events
	source string
	// early: Flush answers after reading the index, before any commit
	// (Early).
	early bool
	// runs is shared by the copies As makes.
	runs *runs
	// reindexN is the messages per transaction of an index rebuild
	// (reindexChunk; tests make it small).
	reindexN int
	// reindexed, when set, is called when an index rebuild ends (tests).
	reindexed func()
	// publish, when set, hands each destination flush carried out here
	// to the other hosts of a cluster (SetPublisher).
	publish Publisher
	// beforeStep, when set, is called before each background chunk
	// (tests hold a flush running with it).
	beforeStep func()
}

// runs are the flushes going on, by destination and subtree switch.
type runs struct {
	mu      sync.Mutex
	m       map[runKey]*run
	wg      sync.WaitGroup
	closing atomic.Bool
	// gen counts SetPolicy calls: an index rebuild stops when a later
	// one starts.
	gen atomic.Uint64
}

// run is one flush going on. ready is closed when its first chunk is
// committed (Early: when the index has been counted); res and err are set before and not changed after.
type run struct {
	ready chan struct{}
	res   store.FlushResult
	err   error
}

type runKey struct {
	dest    string
	subtree bool
}

// Publisher hands a flush carried out on this host to the other hosts of
// a cluster. Publish must not block: it is called on the request's path.
type Publisher interface {
	Publish(dest string, subtree bool)
}

// SetPublisher makes every destination flush that succeeds here (ETRN,
// flush DOMAIN, postqueue -s) published after it is carried out locally.
// Call it before As, whose copies keep the publisher they were made with.
func (s *Service) SetPublisher(p Publisher) { s.publish = p }

// SetEvents makes every request (Flush, FlushAll, FlushID) told to ev,
// the metrics (holdfast_flush_requests_total,
// holdfast_flush_duration_seconds). Call it before As, whose copies keep
// the events they were made with.
func (s *Service) SetEvents(ev Events) { s.events = ev }

// Local returns a Service that shares everything with s but publishes
// nothing and logs with the given event name: for the requests that come
// from the cluster.
func (s *Service) Local(event string) *Service {
	c := s.As(event)
	c.publish = nil
	return c
}

// published passes a flush on to the cluster, if any.
func (s *Service) published(dest string, subtree bool) {
	if s.publish != nil {
		s.publish.Publish(dest, subtree)
	}
}

// NewService returns a Service that logs with event=flush. w may be nil
// (no scheduler to wake, e.g. an off-line tool).
func NewService(p *Policy, s Index, w Waker, log zerolog.Logger) *Service {
	svc := &Service{pol: new(atomic.Pointer[Policy]), store: s, waker: w, log: log, event: "flush", source: "cli",
		runs: &runs{m: make(map[runKey]*run)}, reindexN: reindexChunk}
	svc.pol.Store(p)
	return svc
}

// policy is the policy in force.
func (s *Service) policy() *Policy { return s.pol.Load() }

// As returns a Service that shares everything with s but logs with the
// given event name (smtpd's is "etrn") and counts its requests under it
// as their source, for a caller that logs each request itself, with its
// own context: the service then logs only what happens after the answer
// (a background run's end or failure).
func (s *Service) As(event string) *Service {
	c := *s
	c.event, c.source, c.callerLogs = event, event, true
	return &c
}

// Invalid counts a request refused for the syntax of its site
// (ValidSite, which the caller checks: postqueue's "invalid
// destination"), with result "invalid".
func (s *Service) Invalid() {
	if s.events != nil {
		s.events.FlushRequest(s.source, "invalid", 0)
	}
}

// count reports a request to the Events.
func (s *Service) count(err error, start time.Time) {
	if s.events == nil {
		return
	}
	result := "ok"
	switch {
	case errors.Is(err, ErrNotEligible):
		result = "not_eligible"
	case errors.Is(err, store.ErrNotFound):
		// FlushID of a message no longer queued: nothing to do, as
		// postqueue -i answers.
	case err != nil:
		result = "error"
	}
	s.events.FlushRequest(s.source, result, time.Since(start))
}

// Early returns a Service that shares everything with s but whose Flush
// answers as soon as it has read the destination's flush index, before
// anything is committed: the whole run, its first chunk included, goes
// on in the background. smtpd's ETRN uses it. ETRN is idempotent, so the
// guarantee is weaker than after DATA and enough: the reply means the
// request was valid and the mail it counts was listed; a crash or
// shutdown before a chunk is committed leaves that chunk's mail at its
// old schedule (nothing is lost, nothing else changes) and the client's
// next ETRN flushes it. Without Early, Flush answers after the first
// chunk's commit (the operator's `holdfast flush`).
func (s *Service) Early() *Service {
	c := *s
	c.early = true
	return &c
}

// Enabled reports whether fast flush is configured (Policy.Enabled).
func (s *Service) Enabled() bool { return s.policy().Enabled() }

// Eligible reports whether a destination is covered (Policy.Eligible).
func (s *Service) Eligible(domain string) bool {
	d, err := addr.Domain(domain)
	return err == nil && s.policy().Eligible(d)
}

// Flush expedites the mail for site: that destination only, or with
// subtree (RFC 1985 "@site") the destination and all its sub-domains. The
// site is normalised first; it must be eligible (ErrNotEligible). The
// result counts the messages made due now and those that were active and
// will be retried when their attempt ends.
//
// The flush is a store.FlushRun, one transaction per store.FlushChunk
// messages. Flush returns when the first chunk is committed: for a
// destination of at most FlushChunk messages that is the whole flush;
// for a larger one the result counts the messages listed in the index at
// that moment (Pending of them not reached yet) and the rest of the run
// goes on in the background. A request for a destination (and subtree
// switch) whose flush is still running joins it: it returns at once with
// that flush's result and Joined set, and starts nothing (the running
// flush reaches mail queued after it started, store.FlushRun).
func (s *Service) Flush(site string, subtree bool) (store.FlushResult, error) {
	start := time.Now()
	res, err := s.flush(site, subtree)
	s.count(err, start)
	return res, err
}

// flush is Flush without the count. It holds the one eligibility check
// of a request (Policy.Match: a table error is an error, not "not
// eligible"); the syntax of the site is the caller's (ValidSite: smtpd's
// 501, postqueue's "invalid destination").
func (s *Service) flush(site string, subtree bool) (store.FlushResult, error) {
	dest, err := addr.Domain(site)
	if err != nil {
		return store.FlushResult{}, fmt.Errorf("%w: %s", ErrNotEligible, err)
	}
	ok, err := s.policy().Match(dest)
	if err != nil {
		return store.FlushResult{}, err
	}
	if !ok {
		return store.FlushResult{}, ErrNotEligible
	}
	key := runKey{dest, subtree}
	cur, joined, err := s.claim(key)
	if cur == nil {
		if err == nil {
			s.published(dest, subtree)
		}
		return joined, err
	}
	start := time.Now()
	r := s.store.NewFlushRun(dest, subtree)
	if s.early {
		return s.flushEarly(key, cur, r, start)
	}
	return s.firstChunk(key, cur, r, start)
}

// claim registers a run for key and returns it; when a run for key is
// going on already, it returns nil and that run's result (Joined), once
// its first answer is ready.
func (s *Service) claim(key runKey) (*run, store.FlushResult, error) {
	rs := s.runs
	rs.mu.Lock()
	if rs.closing.Load() {
		rs.mu.Unlock()
		return nil, store.FlushResult{}, fmt.Errorf("flush: %s: %w", key.dest, ErrClosed)
	}
	if cur, ok := rs.m[key]; ok {
		rs.mu.Unlock()
		<-cur.ready
		if cur.err != nil {
			return nil, store.FlushResult{}, cur.err
		}
		res := cur.res
		res.Joined = true
		s.log.Debug().Str("event", s.event).Str("site", key.dest).Bool("subtree", key.subtree).Msg("flush joined")
		return nil, res, nil
	}
	cur := &run{ready: make(chan struct{})}
	rs.m[key] = cur
	rs.wg.Add(1)
	rs.mu.Unlock()
	return cur, store.FlushResult{}, nil
}

// firstChunk commits the run's first chunk and answers with it (and the
// count of the rest); the rest goes on in the background.
func (s *Service) firstChunk(key runKey, cur *run, r *store.FlushRun, start time.Time) (store.FlushResult, error) {
	dest, subtree := key.dest, key.subtree
	res, err := s.next(r, dest, 0)
	if err == nil && !r.Done() {
		left, lerr := r.Remaining()
		if lerr != nil {
			s.log.Warn().Err(lerr).Str("site", dest).Msg("flush: counting the rest of the destination")
		}
		res.Messages += left
		res.Pending = left
	}
	if err != nil {
		err = fmt.Errorf("flush: %s: %w", dest, err)
	}
	cur.res, cur.err = res, err
	close(cur.ready)
	if err == nil {
		s.published(dest, subtree)
	}
	if err != nil || r.Done() {
		s.end(key)
		if err == nil {
			s.logDone(dest, subtree, res, start, "flush requested")
		}
		return res, err
	}
	go s.finish(key, r, res, start, -1)
	return res, nil
}

// flushEarly answers with the count of the destination's index entries
// (one read transaction) and runs the whole flush in the background.
func (s *Service) flushEarly(key runKey, cur *run, r *store.FlushRun, start time.Time) (store.FlushResult, error) {
	n, err := r.Remaining()
	res := store.FlushResult{Messages: n, Pending: n}
	if err != nil {
		err = fmt.Errorf("flush: %s: %w", key.dest, err)
		res = store.FlushResult{}
	}
	cur.res, cur.err = res, err
	close(cur.ready)
	if err == nil {
		s.published(key.dest, key.subtree) // other hosts may hold mail when this one has none
	}
	if err != nil || n == 0 {
		s.end(key)
		if err == nil {
			s.logDone(key.dest, key.subtree, res, start, "flush requested")
		}
		return res, err
	}
	// The first chunk's slots, and its sessions with the next hop, are
	// asked for before the answer: the connects are on their way while
	// the reply is written and the background run starts.
	first := s.reserve(key.dest, n)
	go s.finish(key, r, res, start, first)
	return res, nil
}

// finish runs the rest of a flush in the background, one chunk at a time,
// and stops early when the service closes. first is what reserve
// granted for the first chunk, when the caller asked already (-1: not).
func (s *Service) finish(key runKey, r *store.FlushRun, res store.FlushResult, start time.Time, first int) {
	defer s.end(key)
	defer s.unreserve(&first)
	reached := res.Messages - res.Pending
	left := res.Pending // listed and not reached yet: what a chunk may hand over
	for !r.Done() && !s.runs.closing.Load() {
		if s.beforeStep != nil {
			s.beforeStep()
		}
		n := first
		if n < 0 {
			n = s.reserve(key.dest, left)
		}
		first = -1
		step, err := s.step(r, n)
		reached += step.Messages
		left -= step.Messages
		if err != nil {
			s.log.Error().Err(err).Str("event", s.event).Str("site", key.dest).
				Int("reached", reached).Msg("flush stopped; the rest stays at its schedule")
			return
		}
	}
	res.Messages, res.Pending = reached, 0
	if !r.Done() {
		s.log.Info().Str("event", s.event).Str("site", key.dest).Int("reached", reached).
			Msg("flush stopped by shutdown; the rest stays at its schedule")
		return
	}
	s.logDone(key.dest, key.subtree, res, start, "flush done")
}

// next runs the next chunk of r and hands its mail to the scheduler
// (reserve, then step). left is how many of dest's messages the index
// listed that no chunk has reached yet (0: not counted).
func (s *Service) next(r *store.FlushRun, dest string, left int) (store.FlushResult, error) {
	return s.step(r, s.reserve(dest, left))
}

// reserve asks a Deliverer for the delivery slots of the next chunk and
// returns how many it granted (0 without one); with a Predialer, the
// sessions for up to left of dest's messages (and no more than the slots
// granted) are opened meanwhile, so that they are ready when the chunk's
// commit hands its mail over. The slots are the step's to use, or
// unreserve's to give back.
func (s *Service) reserve(dest string, left int) int {
	dl, ok := s.waker.(Deliverer)
	if !ok {
		return 0
	}
	n := dl.Reserve(store.FlushChunk)
	if pd, ok := dl.(Predialer); ok && left > 0 && n > 0 {
		pd.Predial(dest, min(n, left))
	}
	return n
}

// unreserve gives back slots reserve granted that no step used (*n > 0),
// when a run stops before its first chunk (Close).
func (s *Service) unreserve(n *int) {
	if dl, ok := s.waker.(Deliverer); ok && *n > 0 {
		dl.Deliver(nil, *n)
	}
}

// step runs the next chunk of r and hands its mail to the scheduler:
// with a Deliverer, the chunk leases what it makes due, within the n
// slots reserve granted, and the scheduler is woken for the rest only.
func (s *Service) step(r *store.FlushRun, n int) (store.FlushResult, error) {
	dl, ok := s.waker.(Deliverer)
	if !ok {
		res, err := r.Next()
		s.wake(res)
		return res, err
	}
	res, msgs, err := r.NextLeased(n)
	dl.Deliver(msgs, n)
	if len(msgs) < res.Messages-res.Active {
		s.wake(res)
	}
	return res, err
}

// end forgets a finished run.
func (s *Service) end(key runKey) {
	s.runs.mu.Lock()
	delete(s.runs.m, key)
	s.runs.mu.Unlock()
	s.runs.wg.Done()
}

func (s *Service) logDone(dest string, subtree bool, res store.FlushResult, start time.Time, msg string) {
	if s.callerLogs && msg == "flush requested" {
		return // the caller's line is the request's one
	}
	s.log.Info().Str("event", s.event).Str("site", dest).Bool("subtree", subtree).
		Int("messages", res.Messages).Int("active", res.Active).Int("pending", res.Pending).
		Dur("took", time.Since(start)).Msg(msg)
}

// Close stops the flushes running in the background at their next chunk
// and waits for them; later requests fail with ErrClosed. What they
// committed stays; the rest of their destinations' mail keeps its
// schedule. The daemon calls it before it closes the store.
func (s *Service) Close() {
	s.runs.mu.Lock()
	s.runs.closing.Store(true)
	s.runs.mu.Unlock()
	s.runs.wg.Wait()
}

// FlushAll expedites every deferred message, eligible destination or not
// (`holdfast flush --all`, sendmail -q).
func (s *Service) FlushAll() (store.FlushResult, error) {
	start := time.Now()
	res, err := s.flushAll()
	s.count(err, start)
	return res, err
}

func (s *Service) flushAll() (store.FlushResult, error) {
	start := time.Now()
	res, err := s.store.FlushAll()
	if err != nil {
		return res, fmt.Errorf("flush: all: %w", err)
	}
	s.wake(res)
	s.log.Info().Str("event", s.event).Str("site", "*").
		Int("messages", res.Messages).Int("active", res.Active).
		Dur("took", time.Since(start)).Msg("flush requested")
	return res, nil
}

// FlushID expedites one message whatever its destinations (postqueue -i).
func (s *Service) FlushID(id store.ID) (store.FlushResult, error) {
	start := time.Now()
	res, err := s.flushID(id)
	s.count(err, start)
	return res, err
}

func (s *Service) flushID(id store.ID) (store.FlushResult, error) {
	res, err := s.store.FlushID(id)
	if err != nil {
		return res, fmt.Errorf("flush: %s: %w", id, err)
	}
	s.wake(res)
	s.log.Info().Str("event", s.event).Str("queue_id", string(id)).
		Int("messages", res.Messages).Int("active", res.Active).Msg("flush requested")
	return res, nil
}

// wake kicks the scheduler when the flush listed something. A spurious
// kick costs one look at the schedule.
func (s *Service) wake(res store.FlushResult) {
	if s.waker != nil && res.Messages > 0 {
		s.waker.Wake()
	}
}
