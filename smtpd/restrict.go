package smtpd

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// A restriction list (smtpd_*_restrictions) is parsed once, at New, into
// a slice of rules; an unknown name is a start-up error. Evaluation
// follows Postfix's smtpd_check.c: the first rule that decides ends the
// list; "permit" ends it without a reply.

type ruleKind int

const (
	rulePermit ruleKind = iota
	ruleReject
	ruleDefer
	rulePermitMynetworks
	rulePermitSASL
	ruleRejectUnauthDest
	ruleDeferUnauthDest
	ruleRejectNonFQDNRcpt
	ruleCheckClient
	ruleCheckSender
	ruleCheckRecipient
	ruleCheckETRN
)

var ruleNames = map[string]ruleKind{
	"permit":                    rulePermit,
	"reject":                    ruleReject,
	"defer":                     ruleDefer,
	"permit_mynetworks":         rulePermitMynetworks,
	"permit_sasl_authenticated": rulePermitSASL,
	"reject_unauth_destination": ruleRejectUnauthDest,
	"defer_unauth_destination":  ruleDeferUnauthDest,
	"reject_non_fqdn_recipient": ruleRejectNonFQDNRcpt,
	"check_client_access":       ruleCheckClient,
	"check_sender_access":       ruleCheckSender,
	"check_recipient_access":    ruleCheckRecipient,
	"check_etrn_access":         ruleCheckETRN,
}

type rule struct {
	kind  ruleKind
	table Table
}

type ruleList []rule

// parseRules parses one restriction parameter.
func parseRules(param string, items []string, open func(string) (Table, error)) (ruleList, error) {
	var l ruleList
	for i := 0; i < len(items); i++ {
		name := strings.ToLower(strings.TrimSpace(items[i]))
		if name == "" {
			continue
		}
		kind, ok := ruleNames[name]
		if !ok {
			return nil, fmt.Errorf("%s: unknown restriction %q", param, items[i])
		}
		r := rule{kind: kind}
		switch kind {
		case ruleCheckClient, ruleCheckSender, ruleCheckRecipient, ruleCheckETRN:
			if i+1 >= len(items) {
				return nil, fmt.Errorf("%s: %s needs a type:table argument", param, name)
			}
			if open == nil {
				return nil, fmt.Errorf("%s: %s: no table opener configured", param, name)
			}
			i++
			t, err := open(items[i])
			if err != nil {
				return nil, fmt.Errorf("%s: %s %s: %w", param, name, items[i], err)
			}
			r.table = t
		}
		l = append(l, r)
	}
	return l, nil
}

// check is what a restriction list is evaluated against.
type check struct {
	class string // "Client host", "Sender address", "Recipient address", "Etrn command"
	name  string // the bracketed subject of a reply
	// inputs
	client  netip.Addr
	namaddr string // unknown[192.0.2.1]
	sender  string // envelope sender, "" for <> or none
	rcpt    string // recipient address (RCPT, VRFY)
	etrn    string // ETRN domain
	srv     *Server
	s       *session // the session (its AUTH state)
}

// eval runs a list. It returns the reply that rejects, or nil when the
// list permits or ends without a decision.
func (l ruleList) eval(c *check) *smtp.SMTPError {
	for _, r := range l {
		permit, reply := r.eval(c)
		if reply != nil {
			return reply
		}
		if permit {
			return nil
		}
	}
	return nil
}

func (r rule) eval(c *check) (permit bool, reply *smtp.SMTPError) {
	o := &c.srv.opts
	switch r.kind {
	case rulePermit:
		return true, nil
	case ruleReject: // reject_code 554
		return false, replyRejected(554, ec(5, 7, 1), c.name, c.class, "Access denied")
	case ruleDefer: // defer_code 450
		return false, replyRejected(450, ec(4, 3, 2), c.name, c.class, "Try again later")
	case rulePermitMynetworks:
		return o.MyNetworks != nil && c.client.IsValid() && o.MyNetworks.Contains(c.client.Unmap()), nil
	case rulePermitSASL:
		return c.s != nil && c.s.authenticated(), nil
	case ruleRejectUnauthDest, ruleDeferUnauthDest:
		if c.rcpt == "" {
			return false, nil
		}
		ok, err := c.srv.relayAllowed(c.rcpt)
		if err != nil {
			return false, replyLookupFailure(c.rcpt)
		}
		if ok {
			return false, nil
		}
		if r.kind == ruleRejectUnauthDest { // relay_domains_reject_code 554
			return false, replyRelayDenied(554, ec(5, 7, 1), c.rcpt)
		}
		return false, replyRelayDenied(454, ec(4, 7, 1), c.rcpt)
	case ruleRejectNonFQDNRcpt:
		if c.rcpt == "" || fqdnAddress(c.rcpt) {
			return false, nil
		}
		return false, replyRejected(504, ec(5, 5, 2), c.rcpt, "Recipient address", "need fully-qualified address")
	case ruleCheckClient:
		return accessClient(r.table, c)
	case ruleCheckSender:
		if c.sender == "" {
			return false, nil
		}
		return accessAddress(r.table, c.sender, c.sender, "Sender address")
	case ruleCheckRecipient:
		if c.rcpt == "" {
			return false, nil
		}
		return accessAddress(r.table, c.rcpt, c.rcpt, "Recipient address")
	case ruleCheckETRN:
		if c.etrn == "" {
			return false, nil
		}
		return accessKeys(r.table, domainKeys(strings.ToLower(c.etrn)), c.etrn, "Etrn command")
	}
	return false, nil
}

// fqdnAddress: the domain has a dot (or is an address literal).
func fqdnAddress(a string) bool {
	_, d := addr.Split(a)
	if strings.HasPrefix(d, "[") {
		return true
	}
	return strings.Contains(d, ".") && !strings.HasSuffix(d, ".")
}

// accessClient looks up the client address, then its network prefixes
// (1.2.3.4, 1.2.3, 1.2, 1), as check_client_access does. The client's
// name is always "unknown" (no reverse lookup), so it is not looked up.
func accessClient(t Table, c *check) (bool, *smtp.SMTPError) {
	if !c.client.IsValid() {
		return false, nil
	}
	ip := c.client.Unmap()
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
	return accessKeys(t, keys, c.namaddr, "Client host")
}

// accessAddress looks up user@domain, then domain and its parents, then
// user@ (Postfix's check_*_access order for addresses).
func accessAddress(t Table, addr, name, class string) (bool, *smtp.SMTPError) {
	a := strings.ToLower(addr)
	keys := []string{a}
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		keys = append(keys, domainKeys(a[i+1:])...)
		keys = append(keys, a[:i+1])
	}
	return accessKeys(t, keys, name, class)
}

// domainKeys: the domain and its parent domains (parent_domain_matches_subdomains
// includes smtpd_access_maps by default).
func domainKeys(d string) []string {
	var keys []string
	for d != "" {
		keys = append(keys, d)
		i := strings.IndexByte(d, '.')
		if i < 0 || strings.HasPrefix(d, "[") {
			break
		}
		d = d[i+1:]
	}
	return keys
}

// accessKeys looks up keys in order and applies the first result.
func accessKeys(t Table, keys []string, name, class string) (bool, *smtp.SMTPError) {
	for _, k := range keys {
		v, found, err := t.Lookup(k)
		if err != nil {
			return false, replyLookupFailure(name)
		}
		if found {
			return accessAction(v, name, class)
		}
	}
	return false, nil
}

// accessAction interprets an access(5) result.
func accessAction(v, name, class string) (bool, *smtp.SMTPError) {
	v = strings.TrimSpace(v)
	word, text, _ := strings.Cut(v, " ")
	text = strings.TrimSpace(text)
	switch strings.ToUpper(word) {
	case "OK", "PERMIT":
		return true, nil
	case "DUNNO":
		return false, nil
	case "REJECT": // access_map_reject_code 554
		if text == "" {
			text = "Access denied"
		}
		return false, replyRejected(554, ec(5, 7, 1), name, class, text)
	case "HOLD", "DISCARD", "FILTER", "REDIRECT":
		if class == "Etrn command" {
			// Reference spec §1.5: cannot apply to ETRN; Postfix warns
			// and ignores them.
			return false, nil
		}
	case "DEFER": // access_map_defer_code 450
		if text == "" {
			text = "Access denied"
		}
		return false, replyRejected(450, ec(4, 7, 1), name, class, text)
	}
	if allDigits(word) && len(word) != 3 {
		return true, nil // a number means OK (access(5))
	}
	if len(word) == 3 && allDigits(word) && (word[0] == '4' || word[0] == '5') {
		code, _ := strconv.Atoi(word)
		enh := ec(int(word[0]-'0'), 7, 1)
		if e, rest, ok := parseEnhanced(text); ok && e[0] == int(word[0]-'0') {
			enh, text = e, rest
		}
		if text == "" {
			text = "Access denied"
		}
		return false, replyRejected(code, enh, name, class, text)
	}
	if allDigits(word) {
		return true, nil
	}
	// An action this server does not implement (HOLD, FILTER, ...):
	// Postfix's answer to a broken access map.
	return false, replyRejected(451, ec(4, 3, 5), name, class, "Server configuration error")
}

// parseEnhanced splits "5.7.1 text" into the code and the text.
func parseEnhanced(s string) (smtp.EnhancedCode, string, bool) {
	first, rest, _ := strings.Cut(s, " ")
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
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
