package flush

import "github.com/holdfast-mta/holdfast/internal/addr"

// ValidSite reports whether arg is acceptable as an ETRN argument after
// the RFC 1985 '@' or '#' prefix has been removed: a host name as Postfix's
// valid_hostname accepts it, an address literal "[192.0.2.1]" /
// "[IPv6:2001:db8::1]" (reference spec §1.4), or, unlike Postfix, which
// answers 501, a name with U-labels whose A-label form is such a host name
// ("café.test"), so that either form of an internationalised destination
// can be flushed.
func ValidSite(arg string) bool {
	if len(arg) > 0 && arg[0] == '[' {
		return addr.ValidLiteral(arg)
	}
	if addr.ValidHostname(arg) {
		return true
	}
	if arg == "" || arg[len(arg)-1] == '.' {
		return false
	}
	a, err := addr.Domain(arg)
	return err == nil && addr.ValidHostname(a)
}
