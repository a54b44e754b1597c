package flush

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// Limits of Postfix's valid_hostname (util/valid_hostname.h).
const (
	maxHostnameLen = 255 // VALID_HOSTNAME_LEN
	maxLabelLen    = 63  // VALID_LABEL_LEN
)

// ValidSite reports whether arg is acceptable as an ETRN argument after
// the RFC 1985 '@' or '#' prefix has been removed: a host name as Postfix's
// valid_hostname accepts it, or an address literal "[192.0.2.1]" /
// "[IPv6:2001:db8::1]" (reference spec §1.4).
func ValidSite(arg string) bool {
	if strings.HasPrefix(arg, "[") {
		return validLiteral(arg)
	}
	return validHostname(arg)
}

// validHostname follows Postfix's valid_hostname: ASCII letters, digits,
// '-', '_' and '.'; labels of 1-63 characters that neither start nor end
// with '-'; no empty label and no trailing dot; at most 255 characters;
// not all-numeric (that would be an IPv4 address without brackets).
func validHostname(name string) bool {
	if name == "" || len(name) > maxHostnameLen {
		return false
	}
	labelLen := 0
	nonNumeric := false
	for i := 0; i < len(name); i++ {
		ch := name[i]
		switch {
		case isAlnum(ch) || ch == '_':
			labelLen++
			if labelLen > maxLabelLen {
				return false
			}
			if !isDigit(ch) {
				nonNumeric = true
			}
		case ch == '.':
			if labelLen == 0 || i == len(name)-1 {
				return false
			}
			labelLen = 0
		case ch == '-':
			nonNumeric = true
			labelLen++
			if labelLen == 1 || labelLen > maxLabelLen || i == len(name)-1 || name[i+1] == '.' {
				return false
			}
		default:
			return false // includes every non-ASCII byte
		}
	}
	return nonNumeric
}

// validLiteral accepts "[ipv4]" and "[IPv6:ipv6]" with nothing after the
// closing bracket (Postfix's valid_mailhost_literal; RFC 5321 sec 4.1.3).
func validLiteral(s string) bool {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return false
	}
	inner := s[1 : len(s)-1]
	if strings.ContainsAny(inner, "[]") {
		return false
	}
	if len(inner) > 5 && strings.EqualFold(inner[:5], "IPv6:") {
		return validIPv6(inner[5:])
	}
	return validIPv4(inner)
}

// validIPv4 is Postfix's valid_ipv4_hostaddr: four decimal bytes, each at
// most 255 (leading zeros allowed), and 0.x.y.z only as 0.0.0.0.
func validIPv4(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for i, p := range parts {
		if p == "" || len(p) > 3 {
			return false
		}
		v := 0
		for j := 0; j < len(p); j++ {
			if !isDigit(p[j]) {
				return false
			}
			v = v*10 + int(p[j]-'0')
		}
		if v > 255 {
			return false
		}
		if i == 0 && v == 0 && strings.Trim(s, "0.") != "" {
			return false
		}
	}
	return true
}

// validIPv6 accepts an IPv6 address in RFC 4291 text form (with an
// optional IPv4 tail), without a zone.
func validIPv6(s string) bool {
	if strings.ContainsAny(s, "%") {
		return false
	}
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6()
}

func isDigit(ch byte) bool { return ch >= '0' && ch <= '9' }

func isAlnum(ch byte) bool {
	return isDigit(ch) || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
}

// ErrBadDomain is returned by Normalize for a name that cannot be a
// destination (empty, or not convertible to an IDNA A-label).
var ErrBadDomain = errors.New("flush: bad domain name")

// idnaProfile maps U-labels for lookup (case folding, width mapping,
// RFC 5891 sec 5) and checks the Bidi rule, but allows '_', which Postfix's
// valid_hostname accepts and customers' names do contain.
var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false), idna.StrictDomainName(false))

// Normalize returns the destination form of a domain: lower-case, without
// a trailing dot, with non-ASCII labels converted to IDNA A-labels. An
// address literal is only lower-cased. This is the form store keys and
// fast_flush_domains matching use.
func Normalize(domain string) (string, error) {
	d := strings.TrimSuffix(domain, ".")
	if d == "" {
		return "", fmt.Errorf("%w: %q", ErrBadDomain, domain)
	}
	if isASCII(d) {
		return strings.ToLower(d), nil
	}
	a, err := idnaProfile.ToASCII(d)
	if err != nil || a == "" {
		return "", fmt.Errorf("%w: %q: %v", ErrBadDomain, domain, err)
	}
	return strings.ToLower(a), nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
