package smtpd

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// Access tables (access(5)): check_*_access look up keys in Postfix's
// order and apply the first result found (check_table_result).

func accessRestrictions() map[string]restriction {
	return map[string]restriction{
		"check_client_access": {arg: argTable, fn: func(c *check, r *rule) (verdict, *smtp.SMTPError) {
			return c.as("Client host", c.s.namaddr, func() (verdict, *smtp.SMTPError) {
				return c.access(r.table, append(domainKeys(c.s.name), addrKeys(c.s.client)...))
			})
		}},
		"check_reverse_client_hostname_access": {arg: argTable, fn: func(c *check, r *rule) (verdict, *smtp.SMTPError) {
			return c.as("Unverified Client host", c.s.reverseName, func() (verdict, *smtp.SMTPError) {
				return c.access(r.table, append(domainKeys(c.s.reverseName), addrKeys(c.s.client)...))
			})
		}},
		"check_helo_access": {arg: argTable, fn: func(c *check, r *rule) (verdict, *smtp.SMTPError) {
			if c.helo == "" {
				return dunno, nil
			}
			return c.as("Helo command", c.helo, func() (verdict, *smtp.SMTPError) {
				return c.access(r.table, domainKeys(strings.ToLower(c.helo)))
			})
		}},
		"check_sender_access": {arg: argTable, fn: func(c *check, r *rule) (verdict, *smtp.SMTPError) {
			if !c.hasSender {
				return dunno, nil
			}
			keys := addressKeys(c.sender)
			if c.sender == "" {
				keys = []string{c.cfg.opts.NullAccessKey}
			}
			return c.as("Sender address", c.sender, func() (verdict, *smtp.SMTPError) { return c.access(r.table, keys) })
		}},
		"check_recipient_access": {arg: argTable, fn: func(c *check, r *rule) (verdict, *smtp.SMTPError) {
			if c.rcpt == "" {
				return dunno, nil
			}
			return c.as("Recipient address", c.rcpt, func() (verdict, *smtp.SMTPError) { return c.access(r.table, addressKeys(c.rcpt)) })
		}},
		"check_etrn_access": {arg: argTable, fn: func(c *check, r *rule) (verdict, *smtp.SMTPError) {
			if c.etrn == "" {
				return dunno, nil
			}
			return c.as("Etrn command", c.etrn, func() (verdict, *smtp.SMTPError) {
				return c.access(r.table, domainKeys(strings.ToLower(c.etrn)))
			})
		}},
	}
}

// as evaluates f with another reply class and name (a restriction's own
// subject, also used by the restrictions an access result names).
func (c *check) as(class, name string, f func() (verdict, *smtp.SMTPError)) (verdict, *smtp.SMTPError) {
	oc, on := c.class, c.name
	c.class, c.name = class, name
	defer func() { c.class, c.name = oc, on }()
	return f()
}

// addrKeys: the client address, then its network prefixes (1.2.3.4,
// 1.2.3, 1.2, 1), as check_client_access does.
func addrKeys(ip netip.Addr) []string {
	if !ip.IsValid() {
		return nil
	}
	ip = ip.Unmap()
	s := ip.String()
	keys := []string{s}
	sep := "."
	if ip.Is6() {
		sep = ":"
	}
	for {
		i := strings.LastIndex(s, sep)
		if i <= 0 {
			break
		}
		s = s[:i]
		keys = append(keys, s)
	}
	return keys
}

// addressKeys: user@domain, then domain and its parents, then user@
// (Postfix's check_*_access order for addresses).
func addressKeys(address string) []string {
	a := addr.Key(address)
	keys := []string{a}
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		keys = append(keys, domainKeys(a[i+1:])...)
		keys = append(keys, a[:i+1])
	}
	return keys
}

// domainKeys: the domain and its parent domains
// (parent_domain_matches_subdomains includes smtpd_access_maps by
// default); an address literal or numeric name only as is.
func domainKeys(d string) []string {
	var keys []string
	d = addr.Key(d)
	for d != "" {
		keys = append(keys, d)
		i := strings.IndexByte(d, '.')
		if i < 0 || strings.HasPrefix(d, "[") || isNumericAddr(d) {
			break
		}
		d = d[i+1:]
	}
	return keys
}

func isNumericAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// access looks up keys in order; the first found decides (even DUNNO).
func (c *check) access(t Table, keys []string) (verdict, *smtp.SMTPError) {
	for _, k := range keys {
		v, found, err := t.Lookup(k)
		if err != nil {
			return c.decide(replyLookupFailure(c.name))
		}
		if found {
			return c.accessResult(v)
		}
	}
	return dunno, nil
}

// accessResult interprets an access(5) result (check_table_result).
func (c *check) accessResult(value string) (verdict, *smtp.SMTPError) {
	value = strings.TrimSpace(value)
	word, text, _ := strings.Cut(value, " ")
	text = strings.TrimSpace(text)
	o := &c.cfg.opts
	switch strings.ToUpper(word) {
	case "OK", "RELAY":
		return permit, nil
	case "DUNNO":
		return dunno, nil
	case "REJECT":
		return c.denyText(o.Codes.AccessReject, ec(5, 7, 1), text, "Access denied")
	case "DEFER":
		return c.denyText(o.Codes.AccessDefer, ec(4, 7, 1), text, "Access denied")
	case "DEFER_IF_PERMIT":
		enh, t := splitDSN(text, ec(4, 7, 1))
		c.deferIfPermit(c.rejected(o.Codes.AccessDefer, c.fixDSN(enh), orDefault(t, "Service unavailable")))
		return dunno, nil
	case "DEFER_IF_REJECT":
		enh, t := splitDSN(text, ec(4, 7, 1))
		c.deferIfReject(c.rejected(o.Codes.AccessDefer, c.fixDSN(enh), orDefault(t, "Service unavailable")))
		return dunno, nil
	case "WARN", "INFO":
		c.s.log.Info().Str("event", strings.ToLower(word)).Str("client", c.s.namaddr).
			Msgf("%s: <%s>: %s %s", strings.ToLower(word), c.name, c.class, text)
		return dunno, nil
	case "HOLD":
		return c.delegate("hold", text, "triggers HOLD action")
	case "DISCARD":
		return c.delegate("discard", text, "triggers DISCARD action")
	case "FILTER", "REDIRECT", "BCC", "PREPEND", "HANGUP":
		if c.where == "ETRN" && word != "HANGUP" {
			// ETRN receives no mail: Postfix warns and ignores these
			// (can_delegate_action; reference spec §1.5).
			c.s.log.Warn().Str("action", word).Msg("access table action is unavailable in smtpd_etrn_restrictions")
			return dunno, nil
		}
		// Actions holdfast does not implement: a configuration error,
		// never a silent pass (Postfix's answer to a broken table).
		c.s.log.Error().Str("action", word).Msg("access table action not supported by holdfast")
		return c.decide(replyConfigError)
	}
	return c.accessOther(value, word, text)
}

// accessOther: "NNN text", all-digit (OK), or a restriction list.
func (c *check) accessOther(value, word, text string) (verdict, *smtp.SMTPError) {
	if allDigits(value) {
		return permit, nil // all-numeric: OK (access(5))
	}
	if len(word) == 3 && text != "" && (word[0] == '4' || word[0] == '5') && allDigits(word) {
		code, _ := strconv.Atoi(word)
		enh, t := splitDSN(text, ec(int(word[0]-'0'), 7, 1))
		return c.denyText(code, enh, t, "Access denied")
	}
	if strings.Contains(value, ":") {
		c.s.log.Warn().Str("value", value).Msg("do not specify lookup tables inside SMTPD access maps; define a restriction class")
		return c.decide(replyConfigError)
	}
	l, err := parseValueRules(value, c.cfg.classNames)
	if err != nil || len(l) == 0 {
		c.s.log.Warn().Str("value", value).Msg("access table result is not a restriction")
		return c.decide(replyConfigError)
	}
	return c.run(l)
}

// denyText rejects with an optional "X.Y.Z text" from the table.
func (c *check) denyText(code int, def smtp.EnhancedCode, text, deflt string) (verdict, *smtp.SMTPError) {
	enh, t := splitDSN(text, def)
	return c.deny(code, c.fixDSN(enh), orDefault(t, deflt))
}

// delegate records HOLD or DISCARD on the mail transaction; neither can
// apply to ETRN or outside a transaction (can_delegate_action). DISCARD
// also permits, as in Postfix.
func (c *check) delegate(action, text, deflt string) (verdict, *smtp.SMTPError) {
	tx := c.tx
	if tx == nil || c.where == "ETRN" || c.where == "VRFY" {
		c.s.log.Warn().Str("action", action).Str("stage", c.where).Msg("access table action is unavailable here")
		return dunno, nil
	}
	c.s.log.Info().Str("event", action).Str("client", c.s.namaddr).
		Msgf("%s: <%s>: %s %s", action, c.name, c.class, orDefault(text, deflt))
	if action == "hold" {
		tx.hold = true
		return dunno, nil
	}
	tx.discard = true
	return permit, nil
}

// fixDSN is smtpd_dsn_fix for classes that are not addresses: an
// address status (X.1.Y) becomes X.0.0 outside sender/recipient checks.
func (c *check) fixDSN(e smtp.EnhancedCode) smtp.EnhancedCode {
	if e[1] == 1 && c.class != "Sender address" && c.class != "Recipient address" {
		return smtp.EnhancedCode{e[0], 0, 0}
	}
	return e
}

// splitDSN splits "5.7.1 text" into the code and the text (dsn_split);
// without a leading code, def.
func splitDSN(s string, def smtp.EnhancedCode) (smtp.EnhancedCode, string) {
	if e, rest, ok := parseEnhanced(s); ok {
		return e, rest
	}
	return def, s
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// parseEnhanced splits "5.7.1 text" into the code and the text.
func parseEnhanced(s string) (smtp.EnhancedCode, string, bool) {
	first, rest, _ := strings.Cut(s, " ")
	parts := strings.Split(first, ".")
	if len(parts) != 3 || (parts[0] != "4" && parts[0] != "5" && parts[0] != "2") {
		return smtp.EnhancedCode{}, s, false
	}
	var e smtp.EnhancedCode
	for i, p := range parts {
		if p == "" || len(p) > 3 || !allDigits(p) {
			return smtp.EnhancedCode{}, s, false
		}
		e[i], _ = strconv.Atoi(p)
	}
	return e, strings.TrimSpace(rest), true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
