package smtpd

import (
	"errors"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/flush"
)

// etrn serves RFC 1985's ETRN with Postfix's checks and replies in
// Postfix's order (reference spec §1.2). The dispatcher has already
// applied rows 1 (smtpd_helo_required) and 3 (transaction in progress).
//
// Differences from Postfix (DESIGN.md): "@domain" also flushes the
// sub-domains (RFC 1985 sec 5), and with etrn_reply_counts the reply is
// RFC 1985's 251/253 with the number of messages started.
func (s *session) etrn(arg string) *smtp.SMTPError {
	// Row 4: exactly one argument.
	args := strings.Fields(arg)
	if len(args) != 1 {
		return replyEtrnSyntax
	}
	// Ours: a per-client ETRN rate (smtpd_client_etrn_rate_limit), checked
	// where Postfix checks its other rates: after the command's shape.
	if s.overRate(evETRN, s.io.lim.ClientETRNRateLimit, "ETRN request") {
		return replyTooManyEtrn(s.client.String())
	}
	// Row 5: one leading '@' or '#' removed, then a host name or an
	// address literal.
	site, subtree := args[0], false
	switch site[0] {
	case '@':
		site, subtree = site[1:], true
	case '#':
		site = site[1:]
	}
	if !flush.ValidSite(site) {
		return replyEtrnBadParam
	}
	// Row 7: the client and helo restrictions (smtpd_delay_reject =
	// yes), then etrn_login_maps (ownership decides before
	// smtpd_etrn_restrictions), then smtpd_etrn_restrictions.
	if r := s.checkEtrn(site, s.etrnOwner); r != nil {
		return r
	}
	// Rows 8-11. The flush service checks eligibility (row 8: not
	// eligible, the domain echoed as typed; a table error is 458).
	f := s.srv.flush
	if f == nil {
		return s.etrnDenied(site)
	}
	res, err := f.Flush(site, subtree)
	if errors.Is(err, flush.ErrNotEligible) {
		return s.etrnDenied(site)
	}
	if err != nil {
		s.log.Error().Err(err).Str("event", "etrn").Str("site", site).Msg("unable to queue messages")
		return replyEtrnCantQueue
	}
	s.log.Info().Str("event", "etrn").Str("site", site).Bool("subtree", subtree).
		Int("messages", res.Messages).Int("active", res.Active).Int("pending", res.Pending).
		Bool("joined", res.Joined).Msg("flush started")
	if s.cfg.opts.ETRNReplyCounts {
		if res.Messages == 0 {
			return replyEtrnNone(site)
		}
		return replyEtrnCount(res.Messages, site)
	}
	return replyEtrnStarted
}

// etrnDenied logs and answers an ETRN for a destination the fast-flush
// service does not cover (459).
func (s *session) etrnDenied(site string) *smtp.SMTPError {
	s.log.Warn().Str("event", "etrn").Str("site", site).Msgf("reject: ETRN %.100s... from %s", site, s.namaddr)
	return replyEtrnDenied(site)
}
