package store

import "strings"

// DomainOf returns the destination of an address: the lower-cased part
// after the right-most '@' without a trailing dot, or "" when there is
// none (such a recipient gets no flush-index entry, reference spec §2.1).
func DomainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 || i == len(addr)-1 {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(addr[i+1:]), ".")
}
