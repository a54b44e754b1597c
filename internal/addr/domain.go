package addr

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrDomain is returned by Domain for a name that cannot be a destination:
// empty, malformed UTF-8, or a U-label that IDNA cannot convert to an
// A-label that Postfix's valid_hostname would accept.
var ErrDomain = errors.New("addr: bad domain name")

// Limits of Postfix's valid_hostname (util/valid_hostname.h).
const (
	maxHostnameLen = 255 // VALID_HOSTNAME_LEN
	maxLabelLen    = 63  // VALID_LABEL_LEN
	// maxUTF8Len bounds the input of the IDNA conversion (Postfix converts
	// into a 1024-byte buffer): longer names are refused before the
	// mapping, which can expand one character to eighteen, runs.
	maxUTF8Len = 1024
)

// profile converts U-labels to A-labels as Postfix does since 3.2
// (util/midna_domain.c with enable_idna2003_compatibility = no): UTS 46
// non-transitional processing (IDNA2008: "ß" stays "ß", RFC 5891 sec 5)
// with the lookup mapping (case folding, NFC, full-width forms and the
// ideographic full stop), hyphen and DNS length checks, and without the
// STD3 ASCII rules, so that '_', which valid_hostname allows and customers'
// names do contain, passes. Like ICU's default that Postfix uses, it does
// not apply the Bidi rule (RFC 5893): a name that breaks it cannot be
// registered and fails at the DNS, not here. The result must still pass
// ValidHostname, as Postfix requires of midna_domain_to_ascii.
var profile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.StrictDomainName(false),
	idna.VerifyDNSLength(true),
)

// Domain returns the destination form of a domain name: lower case, one
// trailing dot removed, non-ASCII labels converted to IDNA A-labels
// ("café.test." and "XN--CAF-DMA.test" both give "xn--caf-dma.test"). An
// ASCII name or address literal is only lower-cased: like Postfix, holdfast
// does not second-guess names that are already ASCII. This is the form of
// every flush-index key, dead-list entry, domain-list pattern and
// lookup-table key.
func Domain(d string) (string, error) {
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return "", fmt.Errorf("%w: empty", ErrDomain)
	}
	if IsASCII(d) {
		return strings.ToLower(d), nil
	}
	if len(d) > maxUTF8Len {
		return "", fmt.Errorf("%w: %d bytes", ErrDomain, len(d))
	}
	if !utf8.ValidString(d) {
		return "", fmt.Errorf("%w: malformed UTF-8", ErrDomain)
	}
	if d[0] == '[' {
		return "", fmt.Errorf("%w: %q: non-ASCII address literal", ErrDomain, d)
	}
	a, err := profile.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrDomain, d, err)
	}
	a = strings.ToLower(a)
	if !ValidHostname(a) {
		return "", fmt.Errorf("%w: %q: A-label form %q is not a valid host name", ErrDomain, d, a)
	}
	return a, nil
}

// Fold is Domain for names that must map to something: a name Domain
// rejects is only lower-cased, without a trailing dot. Domain lists and
// queued recipients use it, so that a name that cannot be converted still
// matches itself (and nothing else).
func Fold(d string) string {
	if n, err := Domain(d); err == nil {
		return n
	}
	return strings.TrimSuffix(strings.ToLower(d), ".")
}

// Key returns the form of a lookup-table key or query: lower case, and the
// domain part (after the last '@', after a leading '.', or the whole key)
// as Domain gives it when it is non-ASCII. Keys in a table and the names
// looked up in it go through Key, so `café.test` in a table finds
// `xn--caf-dma.test` and the other way round. A name with a trailing dot
// keeps it: Postfix matches keys exactly.
func Key(k string) string {
	if IsASCII(k) {
		return strings.ToLower(k)
	}
	local, dom := "", k
	if i := strings.LastIndexByte(k, '@'); i >= 0 {
		local, dom = k[:i+1], k[i+1:]
	}
	lead := ""
	if strings.HasPrefix(dom, ".") {
		lead, dom = ".", dom[1:]
	}
	if n, err := Domain(dom); err == nil && dom != "" && !strings.HasSuffix(dom, ".") {
		dom = n
	} else {
		dom = strings.ToLower(dom)
	}
	return strings.ToLower(local) + lead + dom
}

// ValidHostname follows Postfix's valid_hostname: ASCII letters, digits,
// '-', '_' and '.'; labels of 1-63 characters that neither start nor end
// with '-'; no empty label and no trailing dot; at most 255 characters;
// not all-numeric (that would be an IPv4 address without brackets).
func ValidHostname(name string) bool {
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

// ValidLiteral accepts "[ipv4]" and "[IPv6:ipv6]" with nothing after the
// closing bracket: Postfix's valid_mailhost_literal (RFC 5321 sec 4.1.3).
func ValidLiteral(s string) bool {
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

// IsASCII reports whether s has no byte above 0x7f (no SMTPUTF8 or IDN
// form needed).
func IsASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
