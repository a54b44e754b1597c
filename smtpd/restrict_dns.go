package smtpd

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/holdfast-mta/holdfast/dnsr"
	"github.com/holdfast-mta/holdfast/internal/addr"
)

// dnsTimeout bounds the DNS questions of one restriction.
const dnsTimeout = 30 * time.Second

func (c *check) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), dnsTimeout)
}

// unknownHost is reject_unknown_helo_hostname: the name has no A, AAAA or
// MX record (a null MX is fine for an MTA name). A DNS failure defers
// (defer_if_permit), never passes.
func (c *check) unknownHost(name string) (verdict, *smtp.SMTPError) {
	ctx, cancel := c.ctx()
	defer cancel()
	r := c.cfg.resolver
	_, err := r.LookupIP(ctx, name)
	if err == nil {
		return dunno, nil
	}
	temp := dnsr.IsTemporary(err)
	if _, err := r.LookupMX(ctx, name); err == nil {
		return dunno, nil
	} else if dnsr.IsTemporary(err) {
		temp = true
	}
	if temp {
		c.deferIfPermit(c.rejected(450, ec(4, 7, 1), "Host not found"))
		return dunno, nil
	}
	return c.deny(c.codes().UnknownHostname, ec(4, 7, 1), "Host not found")
}

// unknownDomain is reject_unknown_sender_domain and
// reject_unknown_recipient_domain (reject_unknown_mailhost): the domain
// has no MX and no address record, or a null MX (RFC 7505).
func (c *check) unknownDomain(a, class string) (verdict, *smtp.SMTPError) {
	d := domainOf(a)
	if a == "" || d == "" || strings.HasPrefix(d, "[") {
		return dunno, nil
	}
	sender := class == "Sender address"
	enh := ec(4, 1, 2)
	if sender {
		enh = ec(4, 1, 8)
	}
	return c.as(class, a, func() (verdict, *smtp.SMTPError) {
		st, err := c.mailhost(d)
		switch {
		case err == nil && st == "":
			return dunno, nil
		case st == "nullmx" && sender:
			return c.deny(550, ec(5, 7, 27), "Domain "+d+" does not accept mail (nullMX)")
		case st == "nullmx":
			return c.deny(556, ec(5, 1, 10), "Domain "+d+" does not accept mail (nullMX)")
		case dnsr.IsTemporary(err):
			c.deferIfPermit(c.rejected(450, enh, "Domain not found"))
			return dunno, nil
		}
		return c.deny(c.codes().UnknownAddress, enh, "Domain not found")
	})
}

// mailhost looks a mail domain up: MX first, then addresses. It returns
// "nullmx" for a null MX, else the error of the failed lookups
// (temporary if either was).
func (c *check) mailhost(d string) (string, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	r := c.cfg.resolver
	mxs, err := r.LookupMX(ctx, d)
	if err == nil {
		if len(mxs) == 1 && mxs[0].Host == "" {
			return "nullmx", nil
		}
		return "", nil
	}
	_, err2 := r.LookupIP(ctx, d)
	if err2 == nil {
		return "", nil
	}
	if dnsr.IsTemporary(err) {
		return "", err
	}
	return "", err2
}

// dnsRestrictions are the DNS block and allow lists.
func dnsRestrictions() map[string]restriction {
	rbl := restriction{arg: argDomain, fn: func(c *check, r *rule) (verdict, *smtp.SMTPError) {
		return c.rblAddr(r)
	}}
	rhsbl := func(what func(*check) (string, string)) restriction {
		return restriction{arg: argDomain, fn: func(c *check, r *rule) (verdict, *smtp.SMTPError) {
			name, class := what(c)
			return c.rblDomain(r, name, class)
		}}
	}
	return map[string]restriction{
		"reject_rbl_client":   rbl,
		"reject_rbl":          rbl,
		"permit_dnswl_client": {arg: argDomain, fn: permitDNSWL},
		"reject_rhsbl_client": rhsbl(func(c *check) (string, string) {
			return skipUnknown(c.s.name), "Client host"
		}),
		"reject_rhsbl_reverse_client": rhsbl(func(c *check) (string, string) {
			return skipUnknown(c.s.reverseName), "Unverified Client host"
		}),
		"reject_rhsbl_helo":      rhsbl(func(c *check) (string, string) { return c.helo, "Helo command" }),
		"reject_rhsbl_sender":    rhsbl(func(c *check) (string, string) { return c.sender, "Sender address" }),
		"reject_rhsbl_recipient": rhsbl(func(c *check) (string, string) { return c.rcpt, "Recipient address" }),
	}
}

func skipUnknown(name string) string {
	if strings.EqualFold(name, "unknown") {
		return ""
	}
	return name
}

// dnsxl is the result of one DNS list lookup.
type dnsxl struct {
	listed bool
	soft   bool   // the lookup failed: not listed, with a warning
	txt    string // TXT records joined by " / ", at most 500 bytes
}

// lookupList asks a DNS list about query (reversed address or domain
// followed by the list's domain): listed when an A record exists that
// the rule's filter (if any) accepts. A failure counts as not listed,
// as in Postfix ("we can't block all email simply because an RBL server
// is unavailable"), and is logged.
func (c *check) lookupList(r *rule, query string) dnsxl {
	ctx, cancel := c.ctx()
	defer cancel()
	res := c.cfg.resolver
	addrs, err := res.LookupA(ctx, query)
	if err != nil {
		if dnsr.IsTemporary(err) {
			c.s.log.Warn().Err(err).Str("query", query).Msg("RBL lookup error")
			return dnsxl{soft: true}
		}
		return dnsxl{}
	}
	if r.filter != nil && !r.filter.matchAny(addrs) {
		return dnsxl{}
	}
	out := dnsxl{listed: true}
	if txts, err := res.LookupTXT(ctx, query); err == nil {
		out.txt = strings.Join(txts, " / ")
		if len(out.txt) > 500 {
			out.txt = out.txt[:500]
		}
	}
	return out
}

// reverseQuery is the client address reversed for a DNS list: 4.3.2.1
// for IPv4, nibbles for IPv6.
func reverseQuery(a netip.Addr) string {
	rev, err := dns.ReverseAddr(a.Unmap().String())
	if err != nil {
		return ""
	}
	rev = strings.TrimSuffix(rev, "in-addr.arpa.")
	return strings.TrimSuffix(rev, "ip6.arpa.")
}

// rblAddr is reject_rbl_client.
func (c *check) rblAddr(r *rule) (verdict, *smtp.SMTPError) {
	if !c.s.client.IsValid() {
		return dunno, nil
	}
	res := c.lookupList(r, reverseQuery(c.s.client)+r.domain)
	if !res.listed {
		return dunno, nil
	}
	return c.rblReject(r, res, c.s.client.String(), "Client host")
}

// permitDNSWL is permit_dnswl_client: never for a recipient that may not
// be relayed to; a failed lookup makes a later rejection a deferral.
func permitDNSWL(c *check, r *rule) (verdict, *smtp.SMTPError) {
	if c.where == "RCPT" && c.rcpt != "" {
		if ok, err := c.cfg.relayAllowed(c.rcpt); err != nil || !ok {
			return dunno, nil
		}
	}
	if !c.s.client.IsValid() {
		return dunno, nil
	}
	a := c.s.client.String()
	res := c.lookupList(r, reverseQuery(c.s.client)+r.domain)
	switch {
	case res.listed:
		return permit, nil
	case res.soft:
		c.deferIfReject(replyRejected(450, ec(4, 7, 1), a, "Client host", "Service unavailable"))
	}
	return dunno, nil
}

// rblDomain is reject_rhsbl_*: the domain of name (after '@' if any),
// skipped for address literals and numeric names.
func (c *check) rblDomain(r *rule, what, class string) (verdict, *smtp.SMTPError) {
	d := what
	if i := strings.LastIndexByte(what, '@'); i >= 0 {
		d = what[i+1:]
	}
	if d == "" || strings.HasPrefix(d, "[") {
		return dunno, nil
	}
	if last := d[strings.LastIndexByte(d, '.')+1:]; allDigits(last) {
		return dunno, nil
	}
	ad, err := addr.Domain(d)
	if err != nil || !addr.ValidHostname(ad) {
		return dunno, nil
	}
	res := c.lookupList(r, ad+"."+r.domain)
	if !res.listed {
		return dunno, nil
	}
	return c.rblReject(r, res, what, class)
}

// rblReject formats the reply of a listed client or domain from
// rbl_reply_maps (keyed by the list's domain, with then without its
// filter) or default_rbl_reply, expanding $rbl_* and the client
// attributes (rbl_reject_reply).
func (c *check) rblReject(r *rule, res dnsxl, what, class string) (verdict, *smtp.SMTPError) {
	o := &c.cfg.opts
	tmpl := ""
	if t := o.RBLReplyMaps; t != nil {
		keys := []string{r.domain}
		if r.filter != nil {
			keys = []string{r.domain + "=" + r.filter.text, r.domain}
		}
		for _, k := range keys {
			v, found, err := t.Lookup(k)
			if err != nil {
				return c.decide(replyConfigError)
			}
			if found {
				tmpl = v
				break
			}
		}
	}
	if tmpl == "" {
		tmpl = o.DefaultRBLReply
	}
	vars := c.expandVars()
	vars["rbl_code"] = strconv.Itoa(o.Codes.MapsRBL)
	vars["rbl_domain"] = r.domain
	vars["rbl_reason"], vars["rbl_txt"] = res.txt, res.txt
	vars["rbl_what"], vars["rbl_class"] = what, class
	text := expandTemplate(tmpl, vars)
	if len(text) < 4 || (text[0] != '4' && text[0] != '5') || !allDigits(text[:3]) || text[3] != ' ' {
		c.s.log.Warn().Str("reply", text).Msg("rbl response code configuration error")
		return c.decide(rep450Unavailable)
	}
	code, _ := strconv.Atoi(text[:3])
	enh, t := splitDSN(text[4:], ec(4, 7, 1))
	return c.as(class, what, func() (verdict, *smtp.SMTPError) {
		return c.decide(rep(code, c.fixDSN(enh), orDefault(t, "Service unavailable")))
	})
}

// expandVars are the attributes a reply template may name
// (smtpd_expand_lookup).
func (c *check) expandVars() map[string]string {
	s := c.s
	return map[string]string{
		"client_address":      s.client.String(),
		"client_name":         s.name,
		"reverse_client_name": s.reverseName,
		"client_port":         s.port,
		"helo_name":           c.helo,
		"sender":              c.sender,
		"recipient":           c.rcpt,
		"sender_name":         localPart(c.sender),
		"sender_domain":       domainOf(c.sender),
		"recipient_name":      localPart(c.rcpt),
		"recipient_domain":    domainOf(c.rcpt),
	}
}

func localPart(a string) string {
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		return a[:i]
	}
	return a
}

// expandTemplate expands $name, ${name}, ${name?text} (text when name
// is not empty), ${name:text} (text when it is) and $$, as Postfix's
// mac_expand does for reply templates; unknown names are empty.
func expandTemplate(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch {
		case s[i] == '$':
			b.WriteByte('$')
		case s[i] == '{' || s[i] == '(':
			end := matchClose(s, i)
			if end < 0 {
				b.WriteString(s[i-1:])
				return b.String()
			}
			b.WriteString(expandBraced(s[i+1:end], vars))
			i = end
		default:
			j := i
			for j < len(s) && (isAlnumByte(s[j]) || s[j] == '_') {
				j++
			}
			b.WriteString(vars[s[i:j]])
			i = j - 1
		}
	}
	return b.String()
}

// expandBraced expands the inside of ${...}.
func expandBraced(in string, vars map[string]string) string {
	j := 0
	for j < len(in) && (isAlnumByte(in[j]) || in[j] == '_') {
		j++
	}
	name, rest := in[:j], in[j:]
	v := vars[name]
	switch {
	case strings.HasPrefix(rest, "?"):
		if v == "" {
			return ""
		}
		return expandTemplate(rest[1:], vars)
	case strings.HasPrefix(rest, ":"):
		if v != "" {
			return ""
		}
		return expandTemplate(rest[1:], vars)
	}
	return v
}

// matchClose finds the brace or parenthesis closing the one at i.
func matchClose(s string, i int) int {
	open, close := s[i], byte('}')
	if open == '(' {
		close = ')'
	}
	depth := 0
	for k := i; k < len(s); k++ {
		switch s[k] {
		case open:
			depth++
		case close:
			if depth--; depth == 0 {
				return k
			}
		}
	}
	return -1
}

func isAlnumByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// replyMask is a DNS list reply filter, Postfix's ip_match syntax: four
// octets, each a number or a bracketed set of numbers and ranges
// ("127.0.0.2", "127.0.0.[2..11]", "127.0.[0;1].[2;4..6]").
type replyMask struct {
	text   string
	octets [4][]octetRange
}

type octetRange struct{ lo, hi int }

func parseReplyMask(s string) (*replyMask, error) {
	m := &replyMask{text: s}
	parts := splitOctets(s)
	if len(parts) != 4 {
		return nil, fmt.Errorf("bad reply filter %q: want four octets", s)
	}
	for i, p := range parts {
		set := p
		if strings.HasPrefix(p, "[") && strings.HasSuffix(p, "]") {
			set = p[1 : len(p)-1]
		} else if strings.ContainsAny(p, "[];") || strings.Contains(p, "..") {
			return nil, fmt.Errorf("bad reply filter %q", s)
		}
		for _, el := range strings.Split(set, ";") {
			lo, hi, isRange := strings.Cut(el, "..")
			if !isRange {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil || a < 0 || b > 255 || a > b {
				return nil, fmt.Errorf("bad reply filter %q", s)
			}
			m.octets[i] = append(m.octets[i], octetRange{a, b})
		}
	}
	return m, nil
}

// splitOctets splits at the dots outside brackets.
func splitOctets(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case '.':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func (m *replyMask) matchAny(addrs []netip.Addr) bool {
	for _, a := range addrs {
		if !a.Is4() {
			continue
		}
		b := a.As4()
		ok := true
		for i, rs := range m.octets {
			in := false
			for _, r := range rs {
				if int(b[i]) >= r.lo && int(b[i]) <= r.hi {
					in = true
				}
			}
			ok = ok && in
		}
		if ok {
			return true
		}
	}
	return false
}

// domainOf is the domain of an address as given ("" without '@').
func domainOf(a string) string {
	_, d := addr.Split(a)
	return d
}
