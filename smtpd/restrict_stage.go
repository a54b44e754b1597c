package smtpd

import (
	"strings"

	"github.com/emersion/go-smtp"
)

// The restriction stages, applied where Postfix applies them
// (smtpd_check.c smtpd_check_*, smtpd.c). With smtpd_delay_reject = yes
// (the default) the client, helo and sender stages answer at RCPT (and
// the client and helo stages at ETRN); with "no" they answer at connect,
// HELO/EHLO and MAIL.

// newCheck starts an evaluation for the session's current state.
func (s *session) newCheck(where string) *check {
	c := &check{cfg: s.cfg, s: s, tx: s.tx, where: where, helo: s.helo}
	if s.tx != nil {
		c.sender, c.hasSender = s.tx.from, true
	}
	return c
}

// early runs the client, helo and sender stages that smtpd_delay_reject
// postpones to RCPT and ETRN; upto is the last stage to run.
func (c *check) early(upto string) (verdict, *smtp.SMTPError) {
	srv := c.cfg
	if v, r := c.stage(srv.client, "Client host", c.s.namaddr); v == reject {
		return v, r
	}
	if c.helo != "" {
		if v, r := c.stage(srv.helo, "Helo command", c.helo); v == reject {
			return v, r
		}
	}
	if upto == "MAIL" && c.hasSender {
		if v, r := c.stage(srv.sender, "Sender address", c.sender); v == reject {
			return v, r
		}
	}
	return dunno, nil
}

// checkConnect: smtpd_client_restrictions at connect when
// smtpd_delay_reject = no. The reply replaces the greeting.
func (s *session) checkConnect() *smtp.SMTPError {
	if s.cfg.opts.DelayReject {
		return nil
	}
	c := s.newCheck("CONNECT")
	if v, r := c.stage(s.cfg.client, "Client host", s.namaddr); v == reject {
		return r
	}
	s.deferClient = c.permitDefer
	return nil
}

// checkHelo: smtpd_helo_restrictions at HELO/EHLO when
// smtpd_delay_reject = no.
func (s *session) checkHelo(helo string) *smtp.SMTPError {
	if s.cfg.opts.DelayReject {
		return nil
	}
	c := s.newCheck("HELO")
	c.helo, c.permitDefer = helo, s.deferClient
	if v, r := c.stage(s.cfg.helo, "Helo command", helo); v == reject {
		return r
	}
	s.deferHelo = c.permitDefer
	return nil
}

// checkMail: smtpd_sender_restrictions at MAIL when smtpd_delay_reject
// = no; tx is the transaction MAIL is about to start.
func (s *session) checkMail(tx *transaction) *smtp.SMTPError {
	if s.cfg.opts.DelayReject {
		return nil
	}
	c := s.newCheck("MAIL")
	c.sender, c.hasSender, c.permitDefer = tx.from, true, s.early()
	if v, r := c.stage(s.cfg.sender, "Sender address", tx.from); v == reject {
		return r
	}
	tx.deferSender = c.permitDefer
	return nil
}

// early is the defer_if_permit left by the client and helo stages when
// they ran at connect and HELO (smtpd_delay_reject = no).
func (s *session) early() *smtp.SMTPError {
	if s.deferClient != nil {
		return s.deferClient
	}
	return s.deferHelo
}

// checkRcpt evaluates a recipient (RCPT, VRFY): the delayed stages, then
// smtpd_relay_restrictions and smtpd_recipient_restrictions, a pending
// defer_if_permit, and relay_recipient_maps
// (smtpd_reject_unlisted_recipient).
func (s *session) checkRcpt(where, rcpt string) *smtp.SMTPError {
	c := s.newCheck(where)
	c.rcpt = rcpt
	if s.cfg.opts.DelayReject {
		if v, r := c.early("MAIL"); v == reject {
			return r
		}
	} else if c.permitDefer = s.early(); c.tx != nil && c.tx.deferSender != nil {
		c.permitDefer = c.tx.deferSender
	}
	v, r := c.stage(s.cfg.relay, "Recipient address", rcpt)
	if v != reject {
		v, r = c.stage(s.cfg.recipient, "Recipient address", rcpt)
	}
	if r := c.finish(v, r); r != nil {
		return r
	}
	discarding := c.tx != nil && c.tx.discard
	if s.cfg.opts.RejectUnlistedRecipient && !discarding {
		c.class, c.name, c.warnLevel = "Recipient address", rcpt, 0
		if v, r := c.relayRecipient(); v == reject {
			return r
		}
	}
	return nil
}

// checkEtrn: the delayed client and helo stages, then owner
// (etrn_login_maps: an owner skips the ETRN restrictions), then
// smtpd_etrn_restrictions.
func (s *session) checkEtrn(site string, owner func(string) (bool, *smtp.SMTPError)) *smtp.SMTPError {
	c := s.newCheck("ETRN")
	c.etrn = site
	if s.cfg.opts.DelayReject {
		if v, r := c.early("HELO"); v == reject {
			return r
		}
	} else {
		c.permitDefer = s.early()
	}
	own, r := owner(site)
	if r != nil {
		return r
	}
	v := dunno
	if !own {
		v, r = c.stage(s.cfg.etrn, "Etrn command", site)
	}
	return c.finish(v, r)
}

// checkData: smtpd_data_restrictions at DATA (and at the first BDAT);
// the recipient is known only when there is exactly one.
func (s *session) checkData() *smtp.SMTPError {
	return s.checkMessage(s.tx, "DATA", s.cfg.data, "Data command", "DATA")
}

// checkEOD: smtpd_end_of_data_restrictions after the content of tx,
// before it is committed.
func (s *session) checkEOD(tx *transaction) *smtp.SMTPError {
	return s.checkMessage(tx, "END-OF-MESSAGE", s.cfg.eod, "End-of-data", "END-OF-MESSAGE")
}

func (s *session) checkMessage(tx *transaction, where string, l ruleList, class, name string) *smtp.SMTPError {
	if len(l) == 0 || tx == nil {
		return nil
	}
	c := s.newCheck(where)
	c.tx, c.sender, c.hasSender = tx, tx.from, true
	if len(tx.rcpts) == 1 {
		c.rcpt = tx.rcpts[0].Addr
	}
	v, r := c.stage(l, class, name)
	return c.finish(v, r)
}

// accessDenied answers every command but QUIT after smtpd_client_restrictions
// rejected the connection (smtpd_delay_reject = no), as Postfix does.
func (s *session) accessDenied(verb string) *smtp.SMTPError {
	if s.denied == nil || strings.EqualFold(verb, "QUIT") {
		return nil
	}
	if s.denied.Code == 421 {
		return s.denied
	}
	return replyAccessDeniedFor(s.namaddr)
}
