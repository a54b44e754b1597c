package smtpd

import (
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// addressRestrictions check the envelope sender and recipient.
func addressRestrictions() map[string]restriction {
	return map[string]restriction{
		"reject_non_fqdn_sender": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			return c.nonFQDN(c.sender, "Sender address")
		}},
		"reject_non_fqdn_recipient": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			return c.nonFQDN(c.rcpt, "Recipient address")
		}},
		"reject_unknown_sender_domain": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			return c.unknownDomain(c.sender, "Sender address")
		}},
		"reject_unknown_recipient_domain": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			return c.unknownDomain(c.rcpt, "Recipient address")
		}},
		"permit_auth_destination": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			return c.authDestination(permit, func() (verdict, *smtp.SMTPError) { return dunno, nil })
		}},
		"reject_unauth_destination": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			return c.unauthDestination(c.codes().RelayDomains, ec(5, 7, 1))
		}},
		"defer_unauth_destination": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			return c.unauthDestination(c.codes().RelayDomains-100, ec(4, 7, 1))
		}},
		"reject_unlisted_recipient": {fn: listedRecipient},
		"check_recipient_maps":      {fn: listedRecipient},
	}
}

// nonFQDN: the address has no domain or the domain has no dot.
func (c *check) nonFQDN(a, class string) (verdict, *smtp.SMTPError) {
	if a == "" || fqdnAddress(a) {
		return dunno, nil
	}
	return c.as(class, a, func() (verdict, *smtp.SMTPError) {
		return c.deny(c.codes().NonFQDN, ec(5, 5, 2), "need fully-qualified address")
	})
}

// fqdnAddress: the domain has a dot (or is an address literal).
func fqdnAddress(a string) bool {
	d := domainOf(a)
	if strings.HasPrefix(d, "[") {
		return true
	}
	return strings.Contains(d, ".") && !strings.HasSuffix(d, ".")
}

// unauthDestination is reject_unauth_destination / defer_unauth_destination.
func (c *check) unauthDestination(code int, enh smtp.EnhancedCode) (verdict, *smtp.SMTPError) {
	return c.authDestination(dunno, func() (verdict, *smtp.SMTPError) {
		return c.decide(replyRelayDenied(code, enh, c.rcpt))
	})
}

// authDestination answers for the recipient by its destination
// (relay_domains, mydestination and the other address classes): ifOK
// when we accept mail for it, what otherwise returns when we do not, and
// a temporary lookup failure when that cannot be told. No recipient
// (a check at another stage) is dunno.
func (c *check) authDestination(ifOK verdict, otherwise func() (verdict, *smtp.SMTPError)) (verdict, *smtp.SMTPError) {
	if c.rcpt == "" {
		return dunno, nil
	}
	ok, err := c.cfg.relayAllowed(c.rcpt)
	if err != nil {
		return c.decide(replyLookupFailure(c.rcpt))
	}
	if ok {
		return ifOK, nil
	}
	return otherwise()
}

// listedRecipient is reject_unlisted_recipient and check_recipient_maps
// (one check in holdfast: relay_recipient_maps); no recipient is dunno.
func listedRecipient(c *check, _ *rule) (verdict, *smtp.SMTPError) {
	if c.rcpt == "" {
		return dunno, nil
	}
	return c.relayRecipient()
}

// relayRecipientKeys: user+ext@domain, user@domain (the extension
// removed at the first recipient_delimiter character), @domain, as
// Postfix's mail_addr_find for a domain that is not local.
func relayRecipientKeys(a, delim string) []string {
	keys := []string{a}
	i := strings.LastIndexByte(a, '@')
	if i < 0 {
		return keys
	}
	local, domain := a[:i], a[i:]
	if delim != "" {
		if j := strings.IndexAny(local, delim); j > 0 {
			keys = append(keys, local[:j]+domain)
		}
	}
	return append(keys, domain)
}

// relayRecipient is relay_recipient_maps (check_rcpt_maps for the relay
// address class): a recipient in relay_domains must be listed, as
// user@domain or by the @domain catch-all. The map is consulted once per
// recipient.
func (c *check) relayRecipient() (verdict, *smtp.SMTPError) {
	t := c.cfg.opts.RelayRecipients
	if t == nil || c.rcptChecked {
		return dunno, nil
	}
	if c.warnLevel == 0 {
		c.rcptChecked = true
	}
	ok, err := c.cfg.relayAllowed(c.rcpt)
	if err != nil {
		return c.decide(replyLookupFailure(c.rcpt))
	}
	if !ok {
		return dunno, nil // not the relay address class
	}
	keys := relayRecipientKeys(addr.Key(c.rcpt), c.cfg.opts.RecipientDelimiter)
	for _, k := range keys {
		_, found, err := t.Lookup(k)
		if err != nil {
			return c.decide(replyLookupFailure(c.rcpt))
		}
		if found {
			return dunno, nil
		}
	}
	text := "User unknown"
	if c.cfg.opts.ShowUnknownTable {
		text += " in relay recipient table"
	}
	return c.as("Recipient address", c.rcpt, func() (verdict, *smtp.SMTPError) {
		return c.deny(c.codes().RelayRecipient, ec(5, 1, 1), text)
	})
}
