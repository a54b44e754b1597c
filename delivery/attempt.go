package delivery

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/dsn"
	"github.com/holdfast-mta/holdfast/store"
)

// attempt is one delivery attempt of one leased message.
type attempt struct {
	m       *store.Message
	now     time.Time
	log     zerolog.Logger
	results map[int]result // by recipient index
	// head is the content's header section (at most headLimit bytes),
	// read once; the content itself is streamed from the store.
	head []byte
	// whole is the content, read only for a failure notice when it is
	// within bounce_size_limit.
	whole []byte
}

// headLimit bounds the header section an attempt keeps in memory (for
// the SMTPUTF8 check and notices); it is header_size_limit's order.
const headLimit = 256 << 10

// loadHead reads the header section of a's message once.
func (d *Scheduler) loadHead(a *attempt) error {
	if a.head != nil {
		return nil
	}
	h, err := d.s.BodyHead(a.m.ID, headLimit)
	if err != nil {
		return err
	}
	a.head = h
	return nil
}

// group is the recipients of a message for one hop: one SMTP transaction.
type group struct {
	hop    hop
	rcpts  []int
	forced bool
}

// attempt delivers what is due of m and ends the attempt with one
// store.Finish (or Unlease when the shutdown cut it before any outcome).
func (d *Scheduler) attempt(ctx context.Context, m *store.Message) {
	d.gate.enter()
	a := &attempt{m: m, now: d.o.Clock.Now(), results: map[int]result{},
		log: d.log.With().Str("queue_id", string(m.ID)).Logger()}
	a.log.Info().Str("queue", "active").Str("from", m.Sender).Int64("size", m.Size).
		Int("nrcpt", pendingCount(m)).Msg("leased")
	var groups []*group
	if !m.Expired {
		groups = d.plan(a)
	}
	for _, g := range groups {
		res := d.deliverGroup(ctx, a, g)
		if ctx.Err() != nil {
			break // cut by shutdown: this group's outcome is not trusted
		}
		for k, i := range g.rcpts {
			a.results[i] = res[k]
		}
	}
	d.gate.wait()
	d.finish(ctx, a)
}

func pendingCount(m *store.Message) int {
	n := 0
	for i := range m.Recipients {
		if m.Recipients[i].State == store.RcptPending {
			n++
		}
	}
	return n
}

// isDue: a recipient is attempted when its time has come or a flush
// forced it; the others of the message wait (DESIGN.md: a flush expedites
// only the flushed destination's recipients).
func (d *Scheduler) isDue(a *attempt, i int) bool {
	r := &a.m.Recipients[i]
	return r.Forced || !r.NextAttempt.After(a.now)
}

// plan decides every due recipient: error and discard transports,
// defer_transports and dead hops are settled here without a connection;
// the rest are grouped by hop, in order of first appearance.
func (d *Scheduler) plan(a *attempt) []*group {
	var groups []*group
	byKey := map[string]*group{}
	for i := range a.m.Recipients {
		r := &a.m.Recipients[i]
		if r.State != store.RcptPending || !d.isDue(a, i) {
			continue
		}
		rt, err := d.resolve(r.Addr)
		if err != nil {
			a.log.Error().Err(err).Str("to", r.Addr).Msg("transport lookup failed")
			a.results[i] = local(store.RcptPending, "4.3.0", "mail transport unavailable")
			continue
		}
		key := rt.Hop.Key()
		if res, ok := d.decideLocally(a, r, rt, key); ok {
			a.results[i] = res
			continue
		}
		g := byKey[key]
		if g == nil || len(g.rcpts) >= d.o.rcptLimit(rt.Hop.Transport) {
			// A full group: the next recipients go in a transaction of
			// their own (<transport>_destination_recipient_limit).
			g = &group{hop: rt.Hop}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.rcpts = append(g.rcpts, i)
		g.forced = g.forced || r.Forced
	}
	return groups
}

// decideLocally is the result of a recipient that needs no connection:
// the error, discard, retry and unavailable transports, a transport in
// defer_transports and a dead next hop (both unless a flush forced the
// recipient). ok is false when the recipient goes to its next hop, whose
// key (hop.Key) is key.
func (d *Scheduler) decideLocally(a *attempt, r *store.Recipient, rt route, key string) (result, bool) {
	switch rt.Kind {
	case routeError:
		code, text := splitDSN(rt.Text, "5.0.0")
		code = "5" + code[1:] // error(8) always bounces
		if text == "" {
			text = "mail for " + r.Domain() + " is not deliverable"
		}
		return local(store.RcptBounced, code, text), true
	case routeDiscard:
		text := rt.Text
		if text == "" {
			text = "discarded"
		}
		return local(store.RcptDelivered, "2.0.0", text), true
	case routeRetry:
		code, text := splitDSN(rt.Text, "4.0.0")
		code = "4" + code[1:] // retry always defers (error(8) as retry)
		if text == "" {
			text = "mail for " + r.Domain() + " is deferred"
		}
		return local(store.RcptPending, code, text), true
	case routeUnavailable:
		// qmgr(8) defers mail for a transport it cannot reach with
		// "4.3.0 mail transport unavailable"; the reason says why.
		return local(store.RcptPending, "4.3.0", "mail transport unavailable: "+rt.Text), true
	}
	if d.deferred[rt.Hop.Transport] && !r.Forced {
		// reference spec §3.5: wait for a flush, no connection.
		return local(store.RcptPending, "4.3.2", "deferred transport"), true
	}
	if dh, dead := d.isDead(key, a.now); dead && !r.Forced {
		return local(store.RcptPending, dh.DSN, "delivery temporarily suspended: "+dh.Reason), true
	}
	return result{}, false
}

// local is an outcome decided without talking to a next hop.
func local(state store.RcptState, dsn, text string) result {
	status := map[store.RcptState]string{store.RcptPending: "deferred", store.RcptDelivered: "sent", store.RcptBounced: "bounced"}[state]
	return result{State: state, Status: status, DSN: dsn, Reply: text, Diag: "X-Postfix; " + text, Relay: "none"}
}

// deliverGroup delivers one group over a session from the hop's pool and
// returns one result per recipient of the group.
func (d *Scheduler) deliverGroup(ctx context.Context, a *attempt, g *group) []result {
	all := func(r result) []result {
		out := make([]result, len(g.rcpts))
		for i := range out {
			out[i] = r
		}
		return out
	}
	targets, err := d.targets(ctx, g.hop)
	if err != nil {
		return all(lookupFailed(err))
	}
	p := d.pool(g.hop)
	for try := 0; ; try++ {
		cn, fail, err := d.session(ctx, p, g, targets)
		if err != nil {
			return nil // shutdown
		}
		if fail != nil {
			return all(*fail)
		}
		res, ok, handed := d.transaction(ctx, a, g, cn)
		if handed {
			return res // the session is the next attempt's
		}
		retry := ok && cn.uses > 1 && cn.lostAtMail && try == 0 && ctx.Err() == nil
		p.giveBack(cn) // with a reply owed still read first
		if !ok {
			return res
		}
		// A cached session the server closed while idle: once more on a
		// new one (Postfix does the same with its connection cache).
		if retry {
			continue
		}
		return res
	}
}

// lookupFailed is the result of a group whose next hop could not be
// looked up: a permanent lookup error bounces, the rest defer.
func lookupFailed(err error) result {
	var le *lookupError
	if !errors.As(err, &le) {
		return local(store.RcptPending, "4.4.3", err.Error())
	}
	state := store.RcptPending
	if le.perm {
		state = store.RcptBounced
	}
	code, text := splitDSN(le.text, "4.4.3")
	return local(state, code, text)
}

// session takes a session to the group's next hop from its pool, or
// opens one within the pool's limit. fail is the group's result when
// there is none to have: the hop is dead (unless the group is forced) or
// the connection failed (the hop is then marked dead). err means
// shutdown.
func (d *Scheduler) session(ctx context.Context, p *pool, g *group, targets []target) (cn *conn, fail *result, err error) {
	cn, err = p.get(ctx)
	if err != nil || cn != nil {
		return cn, nil, err
	}
	key := g.hop.Key()
	if dh, dead := d.isDead(key, d.o.Clock.Now()); dead && !g.forced {
		p.release()
		r := local(store.RcptPending, dh.DSN, "delivery temporarily suspended: "+dh.Reason)
		return nil, &r, nil
	}
	cn, serr := d.connect(ctx, targets)
	if serr != nil {
		p.release()
		if ctx.Err() == nil {
			d.markDead(key, d.o.Clock.Now(), serr.res)
		}
		return nil, &serr.res, nil
	}
	d.revive(key)
	cn.pool = p
	return cn, nil, nil
}

// transaction runs one mail transaction on cn within the global limit.
// The content is read from the store on first use. ok is false when the
// transaction did not start (shutdown, unreadable content); cn is then
// unused. handed: cn went to the next attempt (handoff.go).
func (d *Scheduler) transaction(ctx context.Context, a *attempt, g *group, cn *conn) (res []result, ok, handed bool) {
	if !d.take(ctx, cn, d.slots) {
		return nil, false, false
	}
	defer func() { <-d.slots }()
	if procs := d.procs[g.hop.Transport]; procs != nil { // master.cf maxproc
		if !d.take(ctx, cn, procs) {
			return nil, false, false
		}
		defer func() { <-procs }()
	}
	if err := d.loadHead(a); err != nil {
		a.log.Error().Err(err).Msg("read body failed")
		out := make([]result, len(g.rcpts))
		for i := range out {
			out[i] = local(store.RcptPending, "4.3.0", "queue file read error")
		}
		return out, false, false
	}
	stop := context.AfterFunc(ctx, func() { cn.netc.Close() })
	defer stop()
	start := time.Now()
	res, handed = d.sendWithin(cn, a.m, g.rcpts, a.head)
	info := cn.tls
	if info == nil {
		info = &tlsInfo{}
	}
	for i := range res {
		res[i].TLS = info
	}
	if d.o.Events != nil {
		d.o.Events.ObserveDelivery(time.Since(start))
	}
	return res, true, handed
}

// take takes a slot of the limit slots, waiting while all are taken.
// Before waiting, the end-of-data reply cn owes is read (settle): the
// attempt owed it holds a slot, which it gives back only once it has
// its outcome.
func (d *Scheduler) take(ctx context.Context, cn *conn, slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
	}
	d.settle(cn)
	select {
	case slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// connect opens a session with the first target that answers, trying
// them in order, each under its TLS policy; with TLS level may a failed
// handshake is retried in plaintext (Postfix's fallback), with no other
// level. The last failure is returned.
func (d *Scheduler) connect(ctx context.Context, targets []target) (*conn, *sessionError) {
	var last *sessionError
	for _, t := range targets {
		var se *sessionError
		p, err := d.policyFor(ctx, t)
		if err != nil {
			errors.As(err, &se)
			last = se
			continue
		}
		cn, err := d.dial(ctx, t, p)
		if errors.As(err, &se) && se.res.DSN == "4.7.5" && p.level == TLSMay {
			cn, err = d.dial(ctx, t, nil)
		}
		if err == nil {
			return cn, nil
		}
		if !errors.As(err, &se) {
			se = &sessionError{transient(t, "4.4.2", err.Error())}
		}
		last = se
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// finish applies expiry and the delay warning, logs one event per
// outcome and ends the attempt in one store transaction.
func (d *Scheduler) finish(ctx context.Context, a *attempt) {
	m, cut := a.m, ctx.Err() != nil
	if cut && len(a.results) == 0 {
		if err := d.s.Unlease(m.ID); err != nil {
			a.log.Error().Err(err).Msg("unlease failed")
		}
		d.Wake()
		return
	}
	expired := !cut && d.expired(a)
	var f store.Finish
	var k kinds
	f.Outcomes, k = d.outcomes(a, expired)
	if expired {
		a.log.Info().Str("from", m.Sender).Str("status", "expired").Msg("returned to sender")
	}
	f.Bounces, f.WarnSent = d.notices(a, k, !expired && !cut)
	if err := d.record(ctx, a, f); err != nil {
		// The lease stays in the store; the next start returns the
		// message to the queue (at-least-once).
		return
	}
	d.report(a, f)
	gone := removed(m, f)
	if gone {
		a.log.Info().Str("event", "removed").Msg("removed")
	}
	// The message back in the queue (a deferral, a flush that came
	// during the attempt: due now) or notices queued: Run looks at the
	// schedule again. A finished worker does not wake it otherwise.
	if !gone || len(f.Bounces) > 0 {
		d.Wake()
	}
}

// kinds are the recipients of an attempt by the notice they may be owed.
type kinds struct{ failed, delayed, relayed []int }

// outcomes turns the attempt's results into the store's outcomes, in
// recipient order, with the next attempt of each deferred recipient;
// past the queue lifetime (expired) a pending recipient bounces. Each
// outcome is logged.
func (d *Scheduler) outcomes(a *attempt, expired bool) ([]store.Outcome, kinds) {
	m := a.m
	idx := make([]int, 0, len(m.Recipients))
	for i := range m.Recipients {
		if m.Recipients[i].State == store.RcptPending {
			idx = append(idx, i)
		}
	}
	sort.Ints(idx)
	var out []store.Outcome
	var k kinds
	for _, i := range idx {
		r := &m.Recipients[i]
		res, attempted := a.results[i]
		if expired && (!attempted || res.State == store.RcptPending) {
			res = expire(r, res, attempted)
			a.results[i], attempted = res, true
		}
		if !attempted {
			continue
		}
		o := store.Outcome{Rcpt: i, Result: res.State, Reply: res.Reply, DSN: res.DSN, RemoteMTA: res.Remote}
		switch {
		case res.State == store.RcptPending:
			o.NextAttempt = a.now.Add(d.o.backoff(r.Attempts + 1))
			k.delayed = append(k.delayed, i)
		case res.State == store.RcptBounced:
			k.failed = append(k.failed, i)
		case res.State == store.RcptDelivered && res.Relayed:
			k.relayed = append(k.relayed, i)
		}
		out = append(out, o)
		d.logResult(a, i, res, o.NextAttempt)
	}
	return out, k
}

// notices are the notices owed for an attempt: non-delivery and success
// notices, and with mayWarn (not expired, not cut short) the delay
// warning once Message.WarnAt has passed (warned: WarnSent).
func (d *Scheduler) notices(a *attempt, k kinds, mayWarn bool) (out []store.NewMessage, warned bool) {
	if b := d.bounce(a, k.failed, dsn.Failed); b != nil {
		out = append(out, *b)
	}
	if b := d.bounce(a, k.relayed, dsn.Relayed); b != nil {
		out = append(out, *b)
	}
	if mayWarn && len(k.delayed) > 0 && !a.m.WarnAt.IsZero() && !a.now.Before(a.m.WarnAt) {
		if b := d.bounce(a, k.delayed, dsn.Delayed); b != nil {
			out = append(out, *b)
		}
		warned = true
	}
	return out, warned
}

// report tells Options.Events and Feed each committed outcome (and
// Events its TLS).
func (d *Scheduler) report(a *attempt, f store.Finish) {
	te, _ := d.o.Events.(TLSEvents)
	for _, o := range f.Outcomes {
		res := a.results[o.Rcpt]
		d.o.outcome(a.m.ID, a.m.Recipients[o.Rcpt].Addr, res.Status)
		if te != nil && res.TLS != nil {
			te.TLSOutcome(res.TLS.outcome(), res.Status)
		}
	}
}

// removed reports whether the outcomes f leave no recipient of m to be
// delivered: the store then removed the message (Postfix's qmgr logs
// "QUEUEID: removed").
func removed(m *store.Message, f store.Finish) bool {
	done := make(map[int]bool, len(f.Outcomes))
	for _, o := range f.Outcomes {
		done[o.Rcpt] = o.Result != store.RcptPending
	}
	for i := range m.Recipients {
		if m.Recipients[i].State == store.RcptPending && !done[i] {
			return false
		}
	}
	return true
}

// record commits the outcome of an attempt. A failure (a full disk:
// store.ErrNoSpace; not a damaged file, which retrying cannot mend) is
// retried with backoff while the scheduler runs: the
// message stays leased, so nothing else touches it, and the outcome — a
// delivery already made — is kept instead of being repeated. After
// shutdown the lease is left for the next start to return to the queue.
func (d *Scheduler) record(ctx context.Context, a *attempt, f store.Finish) error {
	wait := 100 * time.Millisecond
	for try := 1; ; try++ {
		err := d.s.Finish(a.m.ID, f)
		if err == nil {
			if try > 1 {
				a.log.Info().Int("tries", try).Msg("attempt outcome recorded")
			}
			return nil
		}
		if try == 1 {
			a.log.Error().Err(err).Msg("finish failed; retrying")
		}
		if errors.Is(err, store.ErrClosed) || errors.Is(err, store.ErrNotActive) ||
			errors.Is(err, store.ErrNotFound) {
			return err
		}
		if errors.Is(err, store.ErrDamaged) {
			// A page the commit needs cannot be read: retrying cannot help
			// and would hold a delivery slot for ever.
			a.log.Error().Err(err).Msg("outcome not recorded: queue.db is damaged; the message stays leased until the next start (holdfast db salvage)")
			return err
		}
		select {
		case <-ctx.Done():
			a.log.Error().Err(err).Msg("finish failed; the lease returns to the queue at the next start")
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// expired: force-expired, or older than the lifetime (bounce_queue_lifetime
// for the null sender). Lifetime 0 means a single attempt.
func (d *Scheduler) expired(a *attempt) bool {
	return a.m.Expired || !a.now.Before(a.m.Arrival.Add(d.lifetime(a.m)))
}

// expire turns a pending recipient into a returned one; the status keeps
// the deferral's 4.x.x code (reference spec §3.9).
func expire(r *store.Recipient, res result, attempted bool) result {
	if !attempted {
		res = result{Reply: r.Reply, DSN: r.DSN, Remote: r.RemoteMTA, Relay: "none"}
		if res.Remote != "" {
			res.Diag = "X-Postfix; " + r.Reply
		}
	}
	if res.DSN == "" {
		res.DSN = "4.4.7"
	}
	if res.Reply == "" {
		res.Reply = "message expired"
	}
	if res.Diag == "" {
		res.Diag = "X-Postfix; " + res.Reply
	}
	res.State, res.Status = store.RcptBounced, "expired"
	return res
}

// logResult writes the maillog line of one recipient outcome.
func (d *Scheduler) logResult(a *attempt, i int, res result, next time.Time) {
	logOutcome(&a.log, a.m, i, res, d.o.Clock.Now(), next)
}
