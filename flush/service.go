package flush

import (
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/store"
)

// ErrNotEligible means the site is not in fast_flush_domains (or the
// service is off): ETRN answers "459 <site>: service unavailable",
// `holdfast flush DOMAIN` exits 69 (reference spec §2.9).
var ErrNotEligible = errors.New("flush: destination not eligible for fast flush")

// Waker is the part of the delivery scheduler a flush needs: a
// non-blocking kick so that flushed mail is attempted at once.
type Waker interface{ Wake() }

// Service turns flush requests into store transactions. Safe for
// concurrent use: concurrent requests for different destinations each
// cost one bbolt commit; repeated requests for a destination whose mail
// is being delivered only mark it (store.Flush), never duplicate it.
type Service struct {
	policy *Policy
	store  *store.Store
	waker  Waker
	log    zerolog.Logger
	// event is the log event name: "flush" (operator) or "etrn" (SMTP).
	event string
}

// NewService returns a Service that logs with event=flush. w may be nil
// (no scheduler to wake, e.g. an off-line tool).
func NewService(p *Policy, s *store.Store, w Waker, log zerolog.Logger) *Service {
	return &Service{policy: p, store: s, waker: w, log: log, event: "flush"}
}

// As returns a Service that shares everything with s but logs its
// requests with the given event name (smtpd's is "etrn").
func (s *Service) As(event string) *Service {
	c := *s
	c.event = event
	return &c
}

// Enabled reports whether fast flush is configured (Policy.Enabled).
func (s *Service) Enabled() bool { return s.policy.Enabled() }

// Eligible reports whether a destination is covered (Policy.Eligible).
func (s *Service) Eligible(domain string) bool {
	d, err := addr.Domain(domain)
	return err == nil && s.policy.Eligible(d)
}

// Flush expedites the mail for site: that destination only, or with
// subtree (RFC 1985 "@site") the destination and all its sub-domains. The
// site is normalised first; it must be eligible (ErrNotEligible). The
// result counts the messages made due now and those that were active and
// will be retried when their attempt ends.
func (s *Service) Flush(site string, subtree bool) (store.FlushResult, error) {
	dest, err := addr.Domain(site)
	if err != nil {
		return store.FlushResult{}, fmt.Errorf("%w: %s", ErrNotEligible, err)
	}
	ok, err := s.policy.Match(dest)
	if err != nil {
		return store.FlushResult{}, err
	}
	if !ok {
		return store.FlushResult{}, ErrNotEligible
	}
	start := time.Now()
	res, err := s.store.Flush(dest, subtree)
	if err != nil {
		return res, fmt.Errorf("flush: %s: %w", dest, err)
	}
	s.wake(res)
	s.log.Info().Str("event", s.event).Str("site", dest).Bool("subtree", subtree).
		Int("messages", res.Messages).Int("active", res.Active).
		Dur("took", time.Since(start)).Msg("flush requested")
	return res, nil
}

// FlushAll expedites every deferred message, eligible destination or not
// (`holdfast flush --all`, sendmail -q).
func (s *Service) FlushAll() (store.FlushResult, error) {
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
