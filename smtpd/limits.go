package smtpd

import (
	"net/netip"
	"sync"
	"time"
)

// Limits are the session limits that Postfix's stress-adaptive defaults
// change (STRESS_README): a session uses Options.Limits normally and
// Options.Stress while the server is under stress, that is while
// StressThreshold percent of its connection slots are busy. Stress is
// read at the start of every command, and a session that waits for input
// when stress begins is woken to take the stress limits at once.
type Limits struct {
	// Timeout is smtpd_timeout (300s; 10s under stress).
	Timeout time.Duration
	// StartTLSTimeout is smtpd_starttls_timeout (300s; 10s under
	// stress): the TLS handshake after STARTTLS.
	StartTLSTimeout time.Duration
	// PerRequestDeadline is smtpd_per_request_deadline: Timeout limits
	// the time spent waiting to receive a whole request (a command, or
	// the content of DATA or BDAT) and to send its reply, instead of
	// each read or write. Postfix 3.7 semantics: only time spent waiting
	// in reads and writes is counted.
	PerRequestDeadline bool
	// MinDataRate is smtpd_min_data_rate (500 bytes/s): with
	// PerRequestDeadline, every n bytes of DATA or BDAT content add
	// n/MinDataRate seconds to the deadline, never beyond Timeout.
	MinDataRate int
	// TransactionDeadline is smtpd_transaction_deadline (ours; 0 =
	// none): the time from an accepted MAIL to the end of the content's
	// last read. Replies are not cut by it.
	TransactionDeadline time.Duration
	// HardErrorLimit and JunkCommandLimit are smtpd_hard_error_limit (20;
	// 1 under stress) and smtpd_junk_command_limit (100; 1 under stress).
	HardErrorLimit   int
	JunkCommandLimit int

	// Per-client limits (Postfix's anvil(8)) for clients outside
	// EventLimitExceptions, counted per RateTimeUnit; 0 = no limit.
	//
	// ClientConnectionLimit is smtpd_client_connection_count_limit:
	// simultaneous sessions.
	ClientConnectionLimit int
	// ClientConnectionRateLimit is smtpd_client_connection_rate_limit.
	ClientConnectionRateLimit int
	// ClientMessageRateLimit is smtpd_client_message_rate_limit (MAIL
	// commands).
	ClientMessageRateLimit int
	// ClientRecipientRateLimit is smtpd_client_recipient_rate_limit.
	ClientRecipientRateLimit int
	// ClientNewTLSRateLimit is smtpd_client_new_tls_session_rate_limit:
	// TLS handshakes that did not resume a session.
	ClientNewTLSRateLimit int
	// ClientETRNRateLimit is smtpd_client_etrn_rate_limit (ours; Postfix
	// has no ETRN rate limit).
	ClientETRNRateLimit int
}

// stressAt is the number of busy slots from which the server is under
// stress: StressThreshold percent of MaxConnections, rounded up, at least
// one; 0 = never. stressEnd is the number below which stress ends: a
// tenth of stressAt lower (at least one), so that a server hovering at
// the threshold does not flap between the two sets of limits.
func stressAt(o *Options) (at, end int) {
	if o.StressThreshold <= 0 || o.StressThreshold > 100 {
		return 0, 0
	}
	at = max((o.MaxConnections*o.StressThreshold+99)/100, 1)
	return at, at - max(at/10, 1)
}

// stressed reports whether the server is under stress now.
func (s *Server) stressed() bool { return s.inStress.Load() }

// limits returns the limits of the configuration under stress or not.
func (s *conf) limits(stressed bool) *Limits {
	if stressed {
		return &s.opts.Stress
	}
	return &s.opts.Limits
}

// limits returns the session's limits in force now (stress is the
// server's state, the limits the session's configuration).
func (s *session) limits() *Limits { return s.cfg.limits(s.srv.stressed()) }

// noteStress updates the stress state after a slot was taken or freed,
// logs a change and, when stress begins, wakes every session that waits
// for input so that it takes the stress limits at once (a session
// already under a longer deadline would hold its slot for smtpd_timeout
// otherwise).
func (s *Server) noteStress() {
	c := s.cfg.Load()
	limit := c.opts.MaxConnections
	busy := int(s.busy.Load())
	switch {
	case c.stressAt != 0 && busy >= c.stressAt:
		if !s.inStress.CompareAndSwap(false, true) {
			return
		}
	case c.stressAt == 0 || busy < c.stressEnd:
		// A reload that turns stress off (smtpd_stress_threshold)
		// ends it too.
		if s.inStress.CompareAndSwap(true, false) {
			s.limitEvents(func(ev LimitEvents) { ev.Stress(false) })
			s.log.Info().Str("event", "stress").Int("busy", busy).Int("limit", limit).
				Msgf("%d of %d connection slots busy: normal limits in force", busy, limit)
		}
		return
	default:
		return
	}
	s.limitEvents(func(ev LimitEvents) { ev.Stress(true) })
	s.log.Warn().Str("event", "stress").Int("busy", busy).Int("limit", limit).
		Msgf("%d of %d connection slots busy: stress-adaptive limits in force (smtpd_timeout %v)",
			busy, limit, c.opts.Stress.Timeout)
	s.sessions.Each(func(sess *session) { sess.io.kick() })
}

// LimitEvents, when Options.Events also implements it, is told of the
// stress state and of commands refused by a per-client rate limit
// (*metrics.Set satisfies it). event is one of eventNames.
type LimitEvents interface {
	Stress(on bool)
	RateLimited(event string)
}

// eventNames name the counted events for LimitEvents.
var eventNames = [numEvents]string{"connect", "mail", "rcpt", "newtls", "etrn", "auth"}

// Client events counted per time unit (anvil's rates).
const (
	evConnect = iota
	evMail
	evRcpt
	evNewTLS
	evETRN
	evAuth
	numEvents
)

// anvil counts per-client events as Postfix's anvil(8) does: sessions in
// progress, and connections, messages, recipients, new TLS sessions, ETRN
// requests and AUTH commands in the current time unit. A client's rates start a new
// unit at its first event after the last unit ended; a client without
// sessions is forgotten once its unit has ended. Clients are grouped by
// address prefix (smtpd_client_ipv4/ipv6_prefix_length).
type anvil struct {
	unit       time.Duration
	bits4      int
	bits6      int
	mu         sync.Mutex
	clients    map[netip.Addr]*anvilClient
	lastSweep  time.Time
	sweepEvery time.Duration
}

type anvilClient struct {
	count int // sessions in progress
	start time.Time
	rate  [numEvents]int
}

func newAnvil(unit time.Duration, bits4, bits6 int) *anvil {
	if unit <= 0 {
		unit = time.Minute
	}
	if bits4 <= 0 || bits4 > 32 {
		bits4 = 32
	}
	if bits6 <= 0 || bits6 > 128 {
		bits6 = 128
	}
	return &anvil{unit: unit, bits4: bits4, bits6: bits6, clients: map[netip.Addr]*anvilClient{}, sweepEvery: unit}
}

// key is the client's address range.
func (a *anvil) key(ip netip.Addr) netip.Addr {
	bits := a.bits6
	if ip.Is4() {
		bits = a.bits4
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return ip
	}
	return p.Addr()
}

// get returns the client's record, its rates reset when a unit ended.
// Callers hold mu.
func (a *anvil) get(ip netip.Addr, now time.Time) *anvilClient {
	k := a.key(ip)
	c := a.clients[k]
	if c == nil {
		c = &anvilClient{start: now}
		a.clients[k] = c
	} else if now.Sub(c.start) > a.unit {
		c.start, c.rate = now, [numEvents]int{}
	}
	return c
}

// connect counts a new session; it returns the client's sessions in
// progress and its connection rate, this one included.
func (a *anvil) connect(ip netip.Addr, now time.Time) (count, rate int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sweep(now)
	c := a.get(ip, now)
	c.count++
	c.rate[evConnect]++
	return c.count, c.rate[evConnect]
}

// disconnect ends a session counted by connect.
func (a *anvil) disconnect(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.clients[a.key(ip)]; c != nil && c.count > 0 {
		c.count--
	}
}

// incr counts an event and returns the client's rate of it, this one
// included.
func (a *anvil) incr(ip netip.Addr, ev int, now time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.get(ip, now)
	c.rate[ev]++
	return c.rate[ev]
}

// rate returns the client's current rate of an event without counting.
func (a *anvil) rate(ip netip.Addr, ev int, now time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.get(ip, now).rate[ev]
}

// sweep forgets clients without sessions whose unit has ended, at most
// once a unit, so that the table holds the clients of the last unit only.
// Callers hold mu.
func (a *anvil) sweep(now time.Time) {
	if now.Sub(a.lastSweep) < a.sweepEvery {
		return
	}
	a.lastSweep = now
	for k, c := range a.clients {
		if c.count == 0 && now.Sub(c.start) > a.unit {
			delete(a.clients, k)
		}
	}
}

// size is the number of clients tracked (tests).
func (a *anvil) size() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.clients)
}

// overRate counts one event of a client outside the exceptions and
// reports whether its rate is now over limit (0 = no limit, and the
// event is not counted, as in Postfix). what names the limit in the
// warning, with Postfix's words.
func (s *session) overRate(ev, limit int, what string) bool {
	if s.exempt || limit <= 0 {
		return false
	}
	rate := s.srv.anvil.incr(s.client, ev, time.Now())
	if rate <= limit {
		return false
	}
	s.log.Warn().Str("event", "rate_limit").Int("rate", rate).
		Msgf("%s rate limit exceeded: %d from %s for service smtp", what, rate, s.namaddr)
	s.srv.limitEvents(func(e LimitEvents) { e.RateLimited(eventNames[ev]) })
	return true
}

// limitEvents calls f with Options.Events if it is a LimitEvents.
func (s *Server) limitEvents(f func(LimitEvents)) {
	if ev, ok := s.cfg.Load().opts.Events.(LimitEvents); ok {
		f(ev)
	}
}
