// Package odmr is holdfast's On-Demand Mail Relay provider (RFC 2645):
// a customer on a changing address connects (port 366), authenticates
// with SMTP AUTH, says ATRN with the domains it owns (etrn_login_maps),
// and the queued mail for them is delivered back over the same
// connection, the roles swapped. Delivery goes through the scheduler's
// own client and commit (delivery.Scheduler.Turnaround) on messages
// leased from the flush index (store.LeaseDest), so ODMR and the
// scheduler never deliver the same message at once.
//
// The customer side, pulling mail into a holdfast at the customer's
// site, is Client (holdfast atrn).
package odmr

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/auth"
	"github.com/holdfast-mta/holdfast/delivery"
	"github.com/holdfast-mta/holdfast/internal/listener"
	"github.com/holdfast-mta/holdfast/store"
)

// Leaser leases the queued mail of destinations (*store.Store).
type Leaser interface {
	LeaseDest(dests []string, n int, skip func(store.ID) bool) ([]*store.Message, error)
}

// Deliverer delivers leased mail over the customer's connection
// (*delivery.Scheduler).
type Deliverer interface {
	Turnaround(ctx context.Context, nc net.Conn, name string, msgs []*store.Message, more func() ([]*store.Message, error), match func(string) bool) (delivery.TurnResult, error)
}

// Options configure the provider.
type Options struct {
	// Listen are the addresses (odmr_listen; empty = off).
	Listen []string
	// WrapperTLS, when set, makes every connection start with TLS
	// (odmr_tls_wrappermode = yes): fetchmail's ODMR mode cannot
	// STARTTLS.
	WrapperTLS *tls.Config
	// Hostname is $myhostname (greeting, EHLO).
	Hostname string
	// Backend checks credentials (smtpd_sasl_type, smtpd_sasl_path).
	Backend auth.Backend
	// Security and TLSSecurity filter the mechanisms offered without and
	// with TLS (smtpd_sasl_security_options, smtpd_sasl_tls_security_options).
	Security, TLSSecurity auth.Security
	// Owners is etrn_login_maps: the only source of what a login may ATRN.
	Owners *auth.Owners
	// Timeout is smtpd_timeout for each command.
	Timeout time.Duration
	// LineLengthLimit bounds command lines (line_length_limit).
	LineLengthLimit int
	// MaxConnections bounds the sessions (maxConnections).
	MaxConnections int
	// MaxDomains bounds the domains of one ATRN (maxDomains).
	MaxDomains int
	// Batch is how many messages are leased at a time (leaseBatch).
	Batch int
	// Events, if set, counts ATRN requests (*metrics.Set).
	Events Events
	// Publish, if set, is called with each domain of an accepted ATRN,
	// after the local lease, so that the other hosts of a cluster flush
	// their share (package cluster). It must not block.
	Publish func(domain string)
	// AuthRateLimit is smtpd_client_auth_rate_limit for ODMR: AUTH
	// commands per client address and RateTimeUnit
	// (anvil_rate_time_unit); 0 = no limit.
	AuthRateLimit int
	RateTimeUnit  time.Duration
}

// Events receives one call per ATRN: source "atrn"; result "ok" (turned
// around, d is the whole transfer), "no_mail", "refused" or "error".
type Events interface {
	FlushRequest(source, result string, d time.Duration)
}

// Server is the ODMR provider. Create it with New.
type Server struct {
	// cur is the options in force; Reload replaces them for the sessions
	// that start after it.
	cur   atomic.Pointer[Options]
	o     Options // the options New was given (Listen, MaxConnections)
	lease Leaser
	dlv   Deliverer
	log   zerolog.Logger

	slots  chan struct{}
	conns  listener.Group[net.Conn] // listeners, connections, closing
	ctx    context.Context
	cancel context.CancelFunc
	auths  rates
}

// rates counts events per client address and time unit (the part of
// Postfix's anvil(8) that ODMR needs).
type rates struct {
	mu    sync.Mutex
	m     map[netip.Addr]*rate
	sweep time.Time
}

type rate struct {
	start time.Time
	n     int
}

// add counts one event and returns the client's count in this unit.
func (r *rates) add(ip netip.Addr, unit time.Duration, now time.Time) int {
	if unit <= 0 {
		unit = time.Minute
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[netip.Addr]*rate{}
	}
	if now.Sub(r.sweep) > unit {
		for k, v := range r.m {
			if now.Sub(v.start) > unit {
				delete(r.m, k)
			}
		}
		r.sweep = now
	}
	c := r.m[ip]
	if c == nil || now.Sub(c.start) > unit {
		c = &rate{start: now}
		r.m[ip] = c
	}
	c.n++
	return c.n
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("odmr: server closed")

// New returns a provider. It needs a back-end: ODMR requires AUTH.
func New(o Options, l Leaser, d Deliverer, log zerolog.Logger) (*Server, error) {
	if o.Backend == nil {
		return nil, errors.New("odmr: odmr_listen needs smtpd_sasl_auth_enable = yes and a SASL back-end")
	}
	if l == nil || d == nil {
		return nil, errors.New("odmr: no queue or scheduler")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{o: o, lease: l, dlv: d, log: log, slots: make(chan struct{}, o.MaxConnections), ctx: ctx, cancel: cancel}
	s.cur.Store(&o)
	return s, nil
}

// Reload puts o in force for the sessions that start from now on; a
// session in progress keeps the options it began with. Listen and
// MaxConnections keep the values New was given until a restart, and
// Events stays when o leaves it unset.
func (s *Server) Reload(o Options) error {
	if o.Backend == nil {
		return errors.New("odmr: odmr_listen needs smtpd_sasl_auth_enable = yes and a SASL back-end")
	}
	if o.Events == nil {
		o.Events = s.cur.Load().Events
	}
	o.Listen, o.MaxConnections = s.o.Listen, s.o.MaxConnections
	s.cur.Store(&o)
	return nil
}

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	return listener.ServeError(s.conns.Serve(l, s.handle), ErrServerClosed, "odmr")
}

// Shutdown stops accepting and cuts the sessions when ctx ends; a
// transfer in progress commits the message in flight, the rest stay
// queued.
func (s *Server) Shutdown(ctx context.Context) error {
	s.conns.Close(nil)
	defer s.cancel()
	return s.conns.Wait(ctx, func(c net.Conn) {
		s.cancel()
		c.SetDeadline(time.Now())
	})
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	o := s.cur.Load()
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "421 4.7.0 %s Error: too many connections\r\n", o.Hostname)
		return
	}
	if !s.conns.Add(c) {
		return // shutting down
	}
	defer s.conns.Remove(c)
	ip := listener.RemoteIP(c)
	sess := &session{srv: s, o: o, raw: c, conn: c, client: ip, log: s.log.With().Str("remote", ip.String()).Str("service", "odmr").Logger()}
	if o.WrapperTLS != nil {
		tc := tls.Server(c, o.WrapperTLS)
		tc.SetDeadline(time.Now().Add(o.Timeout))
		if err := tc.Handshake(); err != nil {
			sess.log.Info().Err(err).Msg("TLS handshake failed")
			return
		}
		tc.SetDeadline(time.Time{})
		sess.conn, sess.tls = tc, true
	}
	sess.r = bufio.NewReaderSize(sess.conn, 1024)
	sess.w = bufio.NewWriterSize(sess.conn, 1024)
	sess.run()
}
