package smtpd

import (
	"strings"

	"github.com/emersion/go-smtp"
)

// check is one evaluation of restriction stages (Postfix's SMTPD_STATE
// fields that smtpd_check.c reads and writes). With smtpd_delay_reject
// the client, helo and sender stages run inside the RCPT or ETRN check,
// so one check carries defer_if_permit across them.
type check struct {
	cfg *conf // the session's configuration
	s   *session
	tx  *transaction // the mail transaction checked, if any (HOLD, DISCARD)

	where string // "CONNECT", "HELO", "MAIL", "RCPT", "VRFY", "DATA", "END-OF-MESSAGE", "ETRN"
	class string // reply class: "Client host", "Helo command", ...
	name  string // the bracketed subject of a reply

	helo      string // HELO/EHLO argument, "" before
	sender    string // envelope sender ("" for <>)
	hasSender bool   // MAIL was given
	rcpt      string // recipient (RCPT, VRFY; DATA with one recipient)
	etrn      string // ETRN domain

	depth       int             // restriction class recursion
	warnLevel   int             // warn_if_reject is active up to this depth; 0 = off
	permitDefer *smtp.SMTPError // defer_if_permit: the reply if the stage permits
	rejectDefer *smtp.SMTPError // defer_if_reject: the reply instead of a 5XX
	rcptChecked bool            // relay_recipient_maps consulted
}

// codes are the configured reply codes.
func (c *check) codes() *ReplyCodes { return &c.cfg.opts.Codes }

// stage runs one restriction list as one of Postfix's smtpd_check_*
// stages: warn_if_reject and defer_if_reject do not outlive it.
func (c *check) stage(l ruleList, class, name string) (verdict, *smtp.SMTPError) {
	c.class, c.name = class, name
	c.depth, c.warnLevel, c.rejectDefer = 0, 0, nil
	if len(l) == 0 {
		return dunno, nil
	}
	return c.run(l)
}

// run evaluates a list (generic_checks): the first permit or reject ends
// it. warn_if_reject applies to the one restriction after it.
func (c *check) run(l ruleList) (verdict, *smtp.SMTPError) {
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > 100 {
		c.s.log.Warn().Msg("restriction class recursion too deep")
		return reject, replyConfigError
	}
	for i := range l {
		r := &l[i]
		if r.name == "warn_if_reject" {
			if c.warnLevel == 0 {
				c.warnLevel = c.depth
			}
			continue
		}
		v, rep := r.do.fn(c, r)
		if c.warnLevel >= c.depth {
			c.warnLevel = 0
		}
		if v != dunno {
			return v, rep
		}
		if c.permitDefer != nil && c.rejectDefer != nil {
			break // both outcomes are now a deferral
		}
	}
	if c.warnLevel >= c.depth {
		c.warnLevel = 0
	}
	return dunno, nil
}

// deny rejects with "<name>: Class rejected: text" (smtpd_check_reject).
func (c *check) deny(code int, enh smtp.EnhancedCode, text string) (verdict, *smtp.SMTPError) {
	return c.decide(c.rejected(code, enh, text))
}

// rejected formats a restriction reply without deciding anything.
func (c *check) rejected(code int, enh smtp.EnhancedCode, text string) *smtp.SMTPError {
	return replyRejected(code, enh, c.name, c.class, text)
}

// decide is smtpd_check_reject: the DSN class follows the reply code;
// under warn_if_reject a policy rejection is only logged; an earlier
// defer_if_reject turns a 5XX into its 4XX; soft_bounce turns 5XX into
// 4XX. Software and lookup errors (451 4.3.x) are never warnings.
func (c *check) decide(rep *smtp.SMTPError) (verdict, *smtp.SMTPError) {
	r := *rep
	if r.Code < 400 || r.Code > 599 {
		c.s.log.Warn().Int("code", r.Code).Msg("SMTP reply code configuration error")
		r = *rep450Unavailable
	}
	if r.EnhancedCode != none {
		r.EnhancedCode[0] = r.Code / 100
	}
	software := r.Code == 451 && r.EnhancedCode[1] == 3
	if c.warnLevel > 0 && !software {
		c.s.log.Info().Str("event", "reject_warning").Str("reply", formatReplyLine(&r)).
			Str("client", c.s.namaddr).Str("stage", c.where).Msg("reject_warning")
		return dunno, nil
	}
	if c.rejectDefer != nil && r.Code >= 500 {
		d := c.rejectDefer
		c.rejectDefer, c.warnLevel = nil, 0
		return c.decide(d)
	}
	if c.cfg.opts.SoftBounce && r.Code >= 500 {
		r.Code -= 100
		if r.EnhancedCode != none {
			r.EnhancedCode[0] = 4
		}
	}
	return reject, &r
}

// deferIfPermit remembers the first reply to give if the stage ends in
// permit (Postfix's DEFER_IF_PERMIT); under warn_if_reject it is only
// logged.
func (c *check) deferIfPermit(rep *smtp.SMTPError) {
	if c.warnLevel > 0 {
		c.decide(rep)
		return
	}
	if c.permitDefer == nil {
		c.permitDefer = rep
	}
}

// deferIfReject remembers the first reply that replaces a later 5XX.
func (c *check) deferIfReject(rep *smtp.SMTPError) {
	if c.rejectDefer == nil {
		c.rejectDefer = rep
	}
}

// finish ends a stage that answers (RCPT, ETRN, DATA, END-OF-MESSAGE): a
// pending defer_if_permit is the reply unless the stage rejected.
func (c *check) finish(v verdict, rep *smtp.SMTPError) *smtp.SMTPError {
	if v == reject {
		return rep
	}
	if d := c.permitDefer; d != nil {
		c.permitDefer, c.warnLevel = nil, 0
		_, r := c.decide(d)
		return r
	}
	return nil
}

// formatReplyLine is a reply on one line, for logs.
func formatReplyLine(r *smtp.SMTPError) string {
	return strings.TrimRight(formatReply(r), "\r\n")
}
