package smtpd

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// splitCommand splits a command line into the verb and the rest.
func splitCommand(line string) (verb, arg string) {
	line = strings.TrimLeft(line, " \t")
	i := strings.IndexAny(line, " \t")
	if i < 0 {
		return line, ""
	}
	return line[:i], line[i+1:]
}

// parsePath parses the argument of MAIL ("FROM:") or RCPT ("TO:"): the
// path, in angle brackets or bare (Postfix accepts both unless
// strict_rfc821_envelopes), then ESMTP parameters. okSyntax is false when
// the keyword or the path is missing.
func parsePath(arg, keyword string) (path string, params []string, okSyntax, okPath bool) {
	arg = strings.TrimLeft(arg, " \t")
	if len(arg) < len(keyword) || !strings.EqualFold(arg[:len(keyword)], keyword) {
		return "", nil, false, false
	}
	rest := strings.TrimLeft(arg[len(keyword):], " \t")
	if rest == "" {
		return "", nil, false, false
	}
	var tail string
	if rest[0] == '<' {
		end := closingBracket(rest)
		if end < 0 {
			return "", nil, true, false
		}
		path, tail = rest[1:end], rest[end+1:]
		if tail != "" && tail[0] != ' ' && tail[0] != '\t' {
			return "", nil, true, false
		}
	} else {
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			path = rest
		} else {
			path, tail = rest[:i], rest[i:]
		}
	}
	return path, strings.Fields(tail), true, true
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

// parseMailbox checks an RFC 5321 mailbox (sec 4.1.2), with an optional
// source route (stripped, sec 4.1.1.3 / appendix C). It returns the
// address as it will be stored: local part as given (quoting kept only
// where needed), domain lower-cased. utf8Addr reports non-ASCII text,
// which needs SMTPUTF8 (RFC 6531).
func parseMailbox(path string) (addr string, utf8Addr, ok bool) {
	if strings.HasPrefix(path, "@") {
		i := strings.IndexByte(path, ':')
		if i < 0 {
			return "", false, false
		}
		for _, hop := range strings.Split(path[:i], ",") {
			if !strings.HasPrefix(hop, "@") || !validDomain(hop[1:], true) {
				return "", false, false
			}
		}
		path = path[i+1:]
	}
	if !utf8.ValidString(path) {
		return "", false, false
	}
	at := strings.LastIndexByte(path, '@')
	if at <= 0 || at == len(path)-1 {
		return "", false, false
	}
	local, domain := path[:at], path[at+1:]
	local, ok = parseLocal(local)
	if !ok {
		return "", false, false
	}
	if strings.HasPrefix(domain, "[") {
		if !validLiteral(domain) {
			return "", false, false
		}
	} else if !validDomain(domain, true) {
		return "", false, false
	}
	addr = local + "@" + strings.ToLower(domain)
	return addr, !isASCII(addr), true
}

// parseLocal accepts a dot-string or a quoted string. A quoted string
// whose content is a valid dot-string is stored unquoted.
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

// atext of RFC 5322 sec 3.2.3, plus UTF-8 (RFC 6531 sec 3.3).
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

// validDomain checks a domain of letters, digits, '-' and '_' (Postfix is
// liberal about '_'), labels of 1-63 characters not starting or ending
// with '-', at most 255 characters, no trailing dot. With allowUTF8,
// non-ASCII labels are allowed (checked for SMTPUTF8 by the caller).
func validDomain(d string, allowUTF8 bool) bool {
	if d == "" || len(d) > 255 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			case c >= 0x80 && allowUTF8:
			default:
				return false
			}
		}
	}
	return true
}

// validLiteral checks an address literal: [IPv4] or [IPv6:addr]
// (RFC 5321 sec 4.1.3).
func validLiteral(s string) bool {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return false
	}
	in := s[1 : len(s)-1]
	if len(in) > 5 && strings.EqualFold(in[:5], "IPv6:") {
		a, err := netip.ParseAddr(in[5:])
		return err == nil && a.Is6() && a.Zone() == ""
	}
	a, err := netip.ParseAddr(in)
	return err == nil && a.Is4()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// domainPart returns the lower-cased part after the last '@'.
func domainPart(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(addr[i+1:])
}

// decodeXtext decodes RFC 3461 sec 4 xtext; ok is false on bad syntax.
func decodeXtext(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) {
				return "", false
			}
			v, ok := unhex(s[i+1], s[i+2])
			if !ok {
				return "", false
			}
			b.WriteByte(v)
			i += 2
		case c < '!' || c > '~' || c == '=':
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

func unhex(a, b byte) (byte, bool) {
	h := func(c byte) (byte, bool) {
		switch {
		case c >= '0' && c <= '9':
			return c - '0', true
		case c >= 'A' && c <= 'F':
			return c - 'A' + 10, true
		}
		return 0, false
	}
	x, ok1 := h(a)
	y, ok2 := h(b)
	return x<<4 | y, ok1 && ok2
}
