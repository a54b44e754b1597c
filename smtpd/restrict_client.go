package smtpd

import (
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// clientRestrictions look at the client's address and names.
func clientRestrictions() map[string]restriction {
	m := map[string]restriction{
		"permit_mynetworks": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			o := &c.cfg.opts
			if o.MyNetworks != nil && c.s.client.IsValid() && o.MyNetworks.Contains(c.s.client.Unmap()) {
				return permit, nil
			}
			return dunno, nil
		}},
		"reject_unknown_client_hostname":         {fn: rejectUnknownClient},
		"reject_unknown_client":                  {fn: rejectUnknownClient},
		"reject_unknown_reverse_client_hostname": {fn: rejectUnknownReverse},
	}
	for k, v := range accessRestrictions() {
		m[k] = v
	}
	return m
}

// rejectUnknownClient: the client name is not forward-confirmed
// (RFC 7372's 4.7.25).
func rejectUnknownClient(c *check, _ *rule) (verdict, *smtp.SMTPError) {
	return c.unknownPeer(c.s.nameStatus, ec(4, 7, 25), "cannot find your hostname")
}

// rejectUnknownReverse: the client address has no name at all.
func rejectUnknownReverse(c *check, _ *rule) (verdict, *smtp.SMTPError) {
	return c.unknownPeer(c.s.reverseStatus, ec(4, 7, 1), "cannot find your reverse hostname")
}

// unknownPeer rejects the client when status (of its name or of its
// reverse name) is not peerOK: with unknown_client_reject_code when the
// failure is permanent, with 450 when it is temporary.
func (c *check) unknownPeer(status peerStatus, enh smtp.EnhancedCode, text string) (verdict, *smtp.SMTPError) {
	if status == peerOK {
		return dunno, nil
	}
	code := 450
	if status >= peerPerm {
		code = c.codes().UnknownClient
	}
	return c.decide(rep(code, enh, "Client host rejected: "+text+", ["+c.s.client.String()+"]"))
}

// rejectUnauthPipelining: the client sent commands ahead of a reply
// where RFC 2920 does not allow it (SMTPD_FLAG_ILL_PIPELINING).
func rejectUnauthPipelining(c *check, _ *rule) (verdict, *smtp.SMTPError) {
	if !c.s.illPipelining {
		return dunno, nil
	}
	return c.deny(503, ec(5, 5, 0), "Improper use of SMTP command pipelining")
}

// rejectMultiRecipientBounce: a null sender with more than one
// recipient (counting the one being checked at RCPT).
func rejectMultiRecipientBounce(c *check, _ *rule) (verdict, *smtp.SMTPError) {
	if c.tx == nil || !c.hasSender || c.sender != "" {
		return dunno, nil
	}
	n := len(c.tx.rcpts)
	if c.where == "RCPT" {
		n++ // this recipient
	}
	if n <= 1 {
		return dunno, nil
	}
	return c.deny(c.codes().MultiRecipientBounce, ec(5, 5, 3), "Multi-recipient bounce")
}

// sleepRule pauses, as a tarpit for clients that do not wait.
func sleepRule(c *check, r *rule) (verdict, *smtp.SMTPError) {
	c.s.sleep(r.secs)
	return dunno, nil
}

// heloRestrictions check the HELO/EHLO argument; none applies before it.
func heloRestrictions() map[string]restriction {
	invalid := restriction{fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
		return c.heloCheck(func(h string) (verdict, *smtp.SMTPError) {
			if addr.ValidHostname(h) || isNumericAddr(h) {
				return dunno, nil
			}
			return c.deny(c.codes().InvalidHostname, ec(5, 5, 2), "Invalid name")
		})
	}}
	nonFQDN := restriction{fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
		return c.heloCheck(func(h string) (verdict, *smtp.SMTPError) {
			if validUTF8Hostname(h) && strings.Contains(h, ".") {
				return dunno, nil
			}
			return c.deny(c.codes().NonFQDN, ec(5, 5, 2), "need fully-qualified hostname")
		})
	}}
	unknown := restriction{fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
		return c.heloCheck(func(h string) (verdict, *smtp.SMTPError) { return c.unknownHost(h) })
	}}
	return map[string]restriction{
		"reject_invalid_helo_hostname":  invalid,
		"reject_invalid_hostname":       invalid,
		"reject_non_fqdn_helo_hostname": nonFQDN,
		"reject_non_fqdn_hostname":      nonFQDN,
		"reject_unknown_helo_hostname":  unknown,
		"reject_unknown_hostname":       unknown,
	}
}

// heloCheck runs f on the HELO name with one trailing dot removed; an
// address literal is only checked for syntax (reject_invalid_hostaddr).
func (c *check) heloCheck(f func(string) (verdict, *smtp.SMTPError)) (verdict, *smtp.SMTPError) {
	if c.helo == "" {
		return dunno, nil
	}
	return c.as("Helo command", c.helo, func() (verdict, *smtp.SMTPError) {
		h := c.helo
		if strings.HasPrefix(h, "[") {
			if addr.ValidLiteral(h) || isNumericAddr(strings.Trim(h, "[]")) {
				return dunno, nil
			}
			return c.deny(c.codes().InvalidHostname, ec(5, 5, 2), "invalid ip address")
		}
		if strings.HasSuffix(h, ".") && !strings.HasSuffix(h, "..") {
			h = h[:len(h)-1]
		}
		return f(h)
	})
}

// validUTF8Hostname is valid_utf8_hostname: an A-label form of the name
// is a valid host name.
func validUTF8Hostname(h string) bool {
	d, err := addr.Domain(h)
	return err == nil && addr.ValidHostname(d)
}
