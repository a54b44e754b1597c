// Package printable makes text from a peer safe to log or to put in a
// header: Postfix's printable() (util/printable.c), the one home of what
// smtpd (HELO names, SASL logins) and auth (Dovecot's replies) each did.
package printable

import "strings"

// String replaces each control character (below 0x20, and DEL) with '?'.
// A HELO name made safe this way cannot break the Received: header, nor
// a login a log line.
func String(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
