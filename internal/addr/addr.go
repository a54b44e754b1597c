// Package addr is holdfast's one home for mail addresses and domain
// names: it parses SMTP paths (RFC 5321 sec 4.1.2, with the UTF-8 local
// parts and domains of RFC 6531) and turns a domain into its destination
// form — lower case, no trailing dot, IDNA A-labels — so that the SMTP
// server, the flush index, the delivery router, domain lists and lookup
// tables all agree that `café.test` and `xn--caf-dma.test` are one
// destination.
//
// It imports nothing of holdfast's and keeps no state.
//
// # Basics
//
// ParseArg splits the argument of MAIL FROM: or RCPT TO: into the path
// and its ESMTP parameters; Parse checks the path and returns the Mailbox
// as it is queued: the local part as given (quoted only where it must be),
// the domain as given but lower-cased. Dest (or DomainOf for a stored
// address) gives the destination; Routed says whether the local part
// carries sender-specified routing that relay control must not trust.
//
// Domain is the destination normaliser; Key normalises lookup-table keys
// and queries; ValidHostname and ValidLiteral are Postfix's syntax checks
// for names and address literals.
//
// # Caveats
//
//   - ASCII names are only lower-cased, never checked for well-formed
//     "xn--" labels, as in Postfix. U-labels are converted with UTS 46
//     non-transitional processing (Postfix's default since 3.2); see
//     profile for the exact rules.
//   - The queued address keeps a U-label domain as the client sent it
//     (lower-cased): the envelope is the client's, only the destination is
//     normalised.
package addr

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// Errors of ParseArg and Parse.
var (
	// ErrCommand: the keyword ("FROM:", "TO:") or the path is missing;
	// smtpd answers 501 with the command's syntax.
	ErrCommand = errors.New("addr: missing keyword or path")
	// ErrSyntax: the path is malformed (unbalanced brackets, bad local
	// part or domain); smtpd answers 501 5.1.7 or 5.1.3.
	ErrSyntax = errors.New("addr: bad address syntax")
)

// Mailbox is an RFC 5321 Mailbox in the form holdfast queues it.
type Mailbox struct {
	// Local is the local part: a dot-string as given, or a quoted string
	// when its content is not a valid dot-string (then with only '"' and
	// '\' escaped). It may hold UTF-8 (RFC 6531 sec 3.3).
	Local string
	// Domain is the domain as given, lower-cased, or an address literal.
	// Dest gives the destination form.
	Domain string
}

// String returns local@domain.
func (m Mailbox) String() string { return m.Local + "@" + m.Domain }

// UTF8 reports whether the mailbox has non-ASCII text, which needs the
// SMTPUTF8 parameter on MAIL FROM (RFC 6531 sec 3.4).
func (m Mailbox) UTF8() bool { return !IsASCII(m.Local) || !IsASCII(m.Domain) }

// Dest is the destination of the mailbox (Domain's form).
func (m Mailbox) Dest() string { return Fold(m.Domain) }

// ParseArg parses the argument of MAIL ("FROM:") or RCPT ("TO:"): the
// keyword, then the path in angle brackets or bare (Postfix accepts both
// unless strict_rfc821_envelopes), then ESMTP parameters. The path is
// returned without the brackets and is not checked (Parse does that);
// "<>" gives "". ErrCommand when the keyword or the path is missing,
// ErrSyntax when the brackets do not balance or are followed by junk.
func ParseArg(arg, keyword string) (path string, params []string, err error) {
	arg = strings.TrimLeft(arg, " \t")
	if len(arg) < len(keyword) || !strings.EqualFold(arg[:len(keyword)], keyword) {
		return "", nil, ErrCommand
	}
	rest := strings.TrimLeft(arg[len(keyword):], " \t")
	if rest == "" {
		return "", nil, ErrCommand
	}
	var tail string
	if rest[0] == '<' {
		end := closingBracket(rest)
		if end < 0 {
			return "", nil, ErrSyntax
		}
		path, tail = rest[1:end], rest[end+1:]
		if tail != "" && tail[0] != ' ' && tail[0] != '\t' {
			return "", nil, ErrSyntax
		}
	} else {
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			path = rest
		} else {
			path, tail = rest[:i], rest[i:]
		}
	}
	return path, strings.Fields(tail), nil
}

// closingBracket finds the '>' that closes s[0]=='<', skipping quoted
// strings and backslash escapes; -1 if none.
func closingBracket(s string) int {
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
		case c == '"':
			inQuote = !inQuote
		case c == '>' && !inQuote:
			return i
		case c == '<' && !inQuote:
			return -1
		}
	}
	return -1
}

// Parse checks an RFC 5321 Mailbox (sec 4.1.2), with an optional source
// route "@a,@b:" that is checked and dropped (sec 4.1.1.3 and appendix C:
// receivers should ignore it). Local parts and domains may be UTF-8 (RFC
// 6531 sec 3.3); a non-ASCII domain must convert to an A-label (Domain).
// The split is at the last '@' outside quotes, so `"a@b"@c` has the local
// part `"a@b"` (see Routed).
func Parse(path string) (Mailbox, error) {
	if strings.HasPrefix(path, "@") {
		i := strings.IndexByte(path, ':')
		if i < 0 {
			return Mailbox{}, ErrSyntax
		}
		for _, hop := range strings.Split(path[:i], ",") {
			if !strings.HasPrefix(hop, "@") || !validDomain(hop[1:]) {
				return Mailbox{}, ErrSyntax
			}
		}
		path = path[i+1:]
	}
	if !utf8.ValidString(path) {
		return Mailbox{}, ErrSyntax
	}
	at := strings.LastIndexByte(path, '@')
	if at <= 0 || at == len(path)-1 {
		return Mailbox{}, ErrSyntax
	}
	local, ok := parseLocal(path[:at])
	if !ok {
		return Mailbox{}, ErrSyntax
	}
	domain := path[at+1:]
	if strings.HasPrefix(domain, "[") {
		if !ValidLiteral(domain) {
			return Mailbox{}, ErrSyntax
		}
	} else if !validDomain(domain) {
		return Mailbox{}, ErrSyntax
	}
	return Mailbox{Local: local, Domain: strings.ToLower(domain)}, nil
}

// parseLocal accepts a dot-string or a quoted string. A quoted string
// whose content is a valid dot-string is returned unquoted.
func parseLocal(l string) (string, bool) {
	if len(l) > 0 && l[0] == '"' {
		if len(l) < 2 || l[len(l)-1] != '"' {
			return "", false
		}
		var b strings.Builder
		for i := 1; i < len(l)-1; i++ {
			c := l[i]
			if c == '\\' {
				if i+1 >= len(l)-1 {
					return "", false
				}
				i++
				c = l[i]
			} else if c == '"' {
				return "", false
			}
			if c < 0x20 && c != '\t' || c == 0x7f {
				return "", false
			}
			b.WriteByte(c)
		}
		s := b.String()
		if validDotString(s) {
			return s, true
		}
		return quoteLocal(s), true
	}
	if !validDotString(l) {
		return "", false
	}
	return l, true
}

// isAtext: atext of RFC 5322 sec 3.2.3, plus UTF-8 (RFC 6531 sec 3.3).
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func validDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && !isAtext(s[i]) {
			return false
		}
	}
	return true
}

func quoteLocal(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// validDomain checks the domain of a mailbox: an ASCII name of letters,
// digits, '-' and '_' (Postfix is liberal about '_'), labels of 1-63
// characters not starting or ending with '-', at most 255 characters, no
// trailing dot; a non-ASCII name must convert to an A-label (Domain).
func validDomain(d string) bool {
	if d == "" || len(d) > maxHostnameLen {
		return false
	}
	if !IsASCII(d) {
		if strings.HasSuffix(d, ".") {
			return false
		}
		_, err := Domain(d)
		return err == nil
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > maxLabelLen || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// Split splits a queued address at its last '@'; domain is "" when there
// is none.
func Split(address string) (local, domain string) {
	i := strings.LastIndexByte(address, '@')
	if i < 0 {
		return address, ""
	}
	return address[:i], address[i+1:]
}

// DomainOf returns the destination of a queued address: its domain as
// Fold gives it, or "" when it has none (such a recipient gets no
// flush-index entry, reference spec §2.1).
func DomainOf(address string) string {
	_, d := Split(address)
	if d == "" {
		return ""
	}
	return Fold(d)
}

// Routed reports sender-specified routing in the local part of a queued
// address: user@elsewhere@relay (quoted or not), user%elsewhere@relay (the
// percent hack) and elsewhere!user@relay (a bang path). A next hop may act
// on such routing, so Postfix never counts these as authorized
// destinations (allow_untrusted_routing = no; RESOLVE_FLAG_ROUTED in
// trivial-rewrite).
func Routed(address string) bool {
	i := strings.LastIndexByte(address, '@')
	if i < 0 {
		return false
	}
	return strings.ContainsAny(address[:i], "@%!")
}
