// Package smtpd is holdfast's SMTP server: an ESMTP engine with Postfix's
// replies, relay control, durable acceptance into the store, SMTP AUTH
// (auth.go, with the back-ends of package auth), and the ETRN command
// served by the fast-flush index, limited to each login's own
// destinations by etrn_login_maps.
//
// One goroutine per connection runs one loop that reads a command,
// dispatches it through the command table, writes the reply, counts
// errors and does what the command's action says: read DATA's content,
// carry an AUTH exchange on, start TLS, hang up (session.go). Handlers
// return a reply and an action; they never write to the socket. Replies
// are declared once in replies.go.
package smtpd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/accept"
	"github.com/holdfast-mta/holdfast/dnsr"
	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/internal/listener"
	"github.com/holdfast-mta/holdfast/store"
)

// Queue is where accepted mail goes (*store.Store satisfies it). Spool
// starts a message's content, which the session writes as it arrives
// (the store commits it in bounded chunks); its Enqueue returns only
// after the message is durable. Spool fails with store.ErrBusy when the
// in-flight content budget stays used up (452 4.3.1).
type Queue interface {
	Spool(id store.ID) (store.Content, error)
}

// Flusher serves ETRN: the fast-flush policy and the flush request
// (*flush.Service with its Policy).
type Flusher interface {
	// Enabled reports whether fast flush is configured (ETRN in EHLO).
	Enabled() bool
	// Flush makes the destination's deferred mail due now; subtree
	// includes its sub-domains (ETRN @domain). It fails with
	// flush.ErrNotEligible for a destination fast flush does not cover
	// (the one eligibility check: 459).
	Flush(site string, subtree bool) (store.FlushResult, error)
}

// Server is an SMTP server. Create it with New.
//
// Its configuration (the Options and what is derived from them) is one
// value behind an atomic pointer that Reload swaps: a session takes the
// value in force when it starts and keeps it to its end, so a reload
// never changes the rules in the middle of a dialogue. The runtime state
// (connection slots, anvil counts, sessions, listeners) stays.
type Server struct {
	cfg atomic.Pointer[conf]
	// accept queues the messages received (package accept: the path
	// local submission takes too) into the Queue given to New.
	accept *accept.Acceptor
	flush  Flusher
	log    zerolog.Logger

	busy     atomic.Int64             // sessions holding a connection slot (smtpd_connection_limit)
	inStress atomic.Bool              // under stress (Postfix: stress = yes)
	anvil    *anvil                   // per-client counts and rates
	sessions listener.Group[*session] // listeners, sessions, closing
	nextID   atomic.Uint64
}

// conf is a configuration of the server: the Options with everything
// parsed from them. It is never changed once built.
type conf struct {
	opts Options
	// The restriction stages, and smtpd_restriction_classes by name.
	client, helo, sender, relay, recipient, data, eod, etrn ruleList
	classes                                                 map[string]ruleList
	classNames                                              map[string]bool
	// pipeCheck: some list uses reject_unauth_pipelining.
	pipeCheck bool
	resolver  Resolver
	stressAt  int // busy slots from which the server is under stress; 0 = never
	stressEnd int // busy slots below which stress ends
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("smtpd: server closed")

// New checks the options (restriction lists are parsed here; an unknown
// restriction is an error) and returns a server. f may be nil: no fast
// flush, every ETRN gets 459.
func New(o Options, q Queue, f Flusher, log zerolog.Logger) (*Server, error) {
	if q == nil {
		return nil, errors.New("smtpd: no queue")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Resolver == nil {
		r, err := dnsr.New(dnsr.Options{})
		if err != nil {
			return nil, fmt.Errorf("smtpd: %w", err)
		}
		o.Resolver = r
	}
	c, err := newConf(o)
	if err != nil {
		return nil, err
	}
	// Accepted messages are told to Events when it counts them
	// (accept.Events): the metrics.
	ev, _ := o.Events.(accept.Events)
	s := &Server{
		accept: accept.New(q, ev), flush: f, log: log,
		anvil: newAnvil(o.RateTimeUnit, o.ClientIPv4Prefix, o.ClientIPv6Prefix),
	}
	s.cfg.Store(c)
	return s, nil
}

// Reload puts a new configuration in force for the sessions that start
// from now on; sessions in progress keep the one they started with. o is
// checked as New checks it: on error nothing changes. What o leaves
// unset of the wiring (Events, Resolver, Now) stays as it was. The anvil's
// rate unit and prefix lengths, and Listen (the daemon's listeners), take
// effect only on a restart; the caller names them. The connection limit
// and the stress threshold apply at once: a smaller
// smtpd_connection_limit refuses new connections until enough sessions
// end.
func (s *Server) Reload(o Options) error {
	old := s.cfg.Load()
	if o.Events == nil {
		o.Events = old.opts.Events
	}
	if o.Resolver == nil {
		o.Resolver = old.opts.Resolver
	}
	if o.Now == nil {
		o.Now = old.opts.Now
	}
	c, err := newConf(o)
	if err != nil {
		return err
	}
	s.cfg.Store(c)
	s.noteStress()
	return nil
}

// newConf parses o (defaults applied, Resolver set) into a conf.
func newConf(o Options) (*conf, error) {
	c := &conf{opts: o, resolver: o.Resolver}
	c.stressAt, c.stressEnd = stressAt(&c.opts)
	if err := c.parseRestrictions(); err != nil {
		return nil, fmt.Errorf("smtpd: %w", err)
	}
	return c, nil
}

// parseRestrictions parses the restriction classes, then every stage's
// list; an unknown restriction is an error.
func (s *conf) parseRestrictions() error {
	o := &s.opts
	s.classes, s.classNames = map[string]ruleList{}, map[string]bool{}
	for name := range o.RestrictionClasses {
		s.classNames[strings.ToLower(name)] = true
	}
	for name, items := range o.RestrictionClasses {
		l, err := parseRules(name, items, o.OpenTable, s.classNames)
		if err != nil {
			return err
		}
		s.classes[strings.ToLower(name)] = l
	}
	lists := []struct {
		param string
		items []string
		dst   *ruleList
	}{
		{"smtpd_client_restrictions", o.ClientRestrictions, &s.client},
		{"smtpd_helo_restrictions", o.HeloRestrictions, &s.helo},
		{"smtpd_sender_restrictions", o.SenderRestrictions, &s.sender},
		{"smtpd_relay_restrictions", o.RelayRestrictions, &s.relay},
		{"smtpd_recipient_restrictions", o.RecipientRestrictions, &s.recipient},
		{"smtpd_data_restrictions", o.DataRestrictions, &s.data},
		{"smtpd_end_of_data_restrictions", o.EODRestrictions, &s.eod},
		{"smtpd_etrn_restrictions", o.ETRNRestrictions, &s.etrn},
	}
	for _, l := range lists {
		r, err := parseRules(l.param, l.items, o.OpenTable, s.classNames)
		if err != nil {
			return err
		}
		*l.dst = r
		for _, items := range append([][]string{l.items}, mapValues(o.RestrictionClasses)...) {
			for _, it := range items {
				s.pipeCheck = s.pipeCheck || strings.EqualFold(strings.TrimSpace(it), "reject_unauth_pipelining")
			}
		}
	}
	return nil
}

func mapValues(m map[string][]string) [][]string {
	var out [][]string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// Serve accepts connections on l until Shutdown (ErrServerClosed) or an
// accept error. Out of descriptors (EMFILE, ENFILE) and the like pass:
// it retries as net/http does (the daemon's listeners also retry
// themselves, internal/listener, and log it).
func (s *Server) Serve(l net.Listener) error {
	return listener.ServeError(s.sessions.Serve(l, s.handle), ErrServerClosed, "smtpd")
}

// handle runs one connection: limits, then the session, under the
// configuration in force when it was accepted.
func (s *Server) handle(c net.Conn) {
	defer c.Close()
	cfg := s.cfg.Load()
	o := &cfg.opts
	ip := listener.RemoteIP(c)
	exempt := o.ConnectionLimitExceptions != nil && o.ConnectionLimitExceptions.Contains(ip)
	busy, ok := s.takeSlot(o.MaxConnections)
	if !ok {
		s.refuse(c, ip, replyTooManyConns(o.Hostname), "too many connections")
		s.rejected("too_many_connections")
		return
	}
	defer func() { s.busy.Add(-1); s.noteStress() }()
	// The last tenth of the slots is kept for the exempt clients
	// (mynetworks), so that a flood from outside cannot lock them out.
	if !exempt && o.ConnectionLimitExceptions != nil && busy > o.MaxConnections-o.MaxConnections/10 {
		s.refuse(c, ip, replyTooManyConns(o.Hostname), "too many connections (the rest is kept for smtpd_client_event_limit_exceptions)")
		s.rejected("too_many_connections")
		return
	}
	s.noteStress()
	if !exempt {
		defer s.anvil.disconnect(ip)
		if !s.admit(c, ip, cfg) {
			return
		}
	}
	sess := newSession(s, cfg, c, ip)
	defer sess.release()
	sess.exempt = exempt
	if !s.sessions.Add(sess) {
		s.refuse(c, ip, replyShutdown, "shutting down")
		return
	}
	defer s.sessions.Remove(sess)
	if ev := o.Events; ev != nil {
		ev.SessionOpened()
		defer ev.SessionClosed()
	}
	sess.run()
	if sess.rejected != "" {
		s.rejected(sess.rejected)
	}
}

// admit applies the per-client connection count and rate limits to a
// new connection from a client outside smtpd_client_event_limit_exceptions
// (Postfix's anvil_clnt_connect; the connection is counted either way).
func (s *Server) admit(c net.Conn, ip netip.Addr, cfg *conf) bool {
	lim := cfg.limits(s.stressed())
	count, rate := s.anvil.connect(ip, time.Now())
	r := replyTooManyConnsFrom(cfg.opts.Hostname, ip.String())
	switch {
	case lim.ClientConnectionLimit > 0 && count > lim.ClientConnectionLimit:
		s.refuse(c, ip, r, fmt.Sprintf("Connection concurrency limit exceeded: %d from unknown[%s] for service smtp", count, ip))
		s.rejected("too_many_connections_from_client")
		return false
	case lim.ClientConnectionRateLimit > 0 && rate > lim.ClientConnectionRateLimit:
		s.refuse(c, ip, r, fmt.Sprintf("Connection rate limit exceeded: %d from unknown[%s] for service smtp", rate, ip))
		s.rejected("connection_rate_from_client")
		return false
	}
	return true
}

// rejected reports a connection refused or a session ended by policy.
func (s *Server) rejected(reason string) {
	if ev := s.cfg.Load().opts.Events; ev != nil {
		ev.SessionRejected(reason)
	}
}

// takeSlot takes one of max connection slots; busy is the number taken,
// this one included. max is the limit in force now: a reload that lowers
// it leaves the sessions above it running and refuses new ones until
// enough have ended.
func (s *Server) takeSlot(max int) (busy int, ok bool) {
	for {
		n := s.busy.Load()
		if n >= int64(max) {
			return int(n), false
		}
		if s.busy.CompareAndSwap(n, n+1) {
			return int(n + 1), true
		}
	}
}

// refuse answers a connection that is not served with a 421 and closes it.
func (s *Server) refuse(c net.Conn, ip netip.Addr, r *smtp.SMTPError, why string) {
	s.log.Warn().Str("remote", ip.String()).Str("reply", formatReply(r)).Msg(why)
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte(formatReply(r)))
}

// Shutdown stops accepting, lets every session finish its current command
// and then answers 421 4.3.2; sessions still busy when ctx ends are cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.sessions.Close((*session).interruptIdle)
	// The cut closes the TCP connection, which STARTTLS never replaces
	// (sess.conn it does, on the session's own goroutine).
	return s.sessions.Wait(ctx, func(sess *session) { sess.raw.Close() })
}

// relayAllowed: reject_unauth_destination's test. Recipients in
// relay_domains may be relayed for anyone.
func (s *conf) relayAllowed(rcpt string) (bool, error) {
	if s.opts.RelayDomains == nil {
		return false, nil
	}
	d := addr.DomainOf(rcpt)
	if d == "" || addr.Routed(rcpt) {
		return false, nil
	}
	return s.opts.RelayDomains.Match(d)
}

// storeReply is the one place that turns an internal (store) error into
// a reply (STYLE §15): no space -> 452 4.3.1; anything else -> 451 4.3.0,
// logged with the session id. Internals never reach the client.
func storeReply(err error, log zerolog.Logger) *smtp.SMTPError {
	if errors.Is(err, store.ErrNoSpace) {
		log.Warn().Err(err).Msg("queue file write error: insufficient system storage")
		return replyNoSpace
	}
	if errors.Is(err, store.ErrBusy) {
		log.Warn().Err(err).Msg("in-flight content limit reached: insufficient system storage")
		return replyNoSpace
	}
	log.Error().Err(err).Msg("queue file write error")
	return replyWriteError
}

func (s *Server) newID() string {
	return "s" + strconv.FormatUint(s.nextID.Add(1), 36)
}
