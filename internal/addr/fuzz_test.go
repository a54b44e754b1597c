package addr

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse feeds MAIL/RCPT arguments to ParseArg and Parse. Whatever is
// accepted is valid UTF-8 with a lower-case domain, parses again to
// itself, has an ASCII destination that is itself a fixed point of
// Domain, and a U-label domain and its A-label form are one destination.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"FROM:<a@b.test> SIZE=10 BODY=8BITMIME", "TO:<@r1,@r2:u@x.test> NOTIFY=NEVER", `FROM:<"a b"@x.test>`,
		"FROM:<>", "TO:u@[IPv6:2001:db8::1]", "FROM:<jörg@bücher.test> SMTPUTF8", "TO:<a@[1.2.3.4]> ORCPT=rfc822;a+40b",
		"TO:<u@café.test>", "TO:<u@xn--caf-dma.test>", `TO:<"user@foreign.test"@relay.test>`,
		"TO:<user%foreign.test@relay.test>", "TO:<foreign.test!user@relay.test>", "TO:<u@ｃａｆé。test>",
		"TO:<u@a\u200db.test>", "TO:<δοκιμή@παράδειγμα.δοκιμή>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		for _, kw := range []string{"FROM:", "TO:"} {
			path, _, err := ParseArg(arg, kw)
			if err != nil {
				continue
			}
			m, err := Parse(path)
			if err != nil {
				continue
			}
			s := m.String()
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 %q", s)
			}
			if m.Domain != strings.ToLower(m.Domain) {
				t.Fatalf("domain not lower-cased: %q", s)
			}
			again, err := Parse(s)
			if err != nil || again != m {
				t.Fatalf("not idempotent: %q -> %q -> %q (%v)", path, s, again, err)
			}
			d := m.Dest()
			if d == "" || !IsASCII(d) || DomainOf(s) != d {
				t.Fatalf("destination of %q: %q (DomainOf %q)", s, d, DomainOf(s))
			}
			if n, err := Domain(d); err != nil || n != d {
				t.Fatalf("destination %q of %q is not a fixed point: %q, %v", d, s, n, err)
			}
			if !strings.HasPrefix(d, "[") {
				a, err := Parse(m.Local + "@" + d)
				if err != nil || a.Dest() != d {
					t.Fatalf("A-label form of %q: %q, %v", s, a.Dest(), err)
				}
			}
			if Key(s) != Key(m.Local+"@"+d) {
				t.Fatalf("Key(%q) = %q but Key of its A-label form %q", s, Key(s), Key(m.Local+"@"+d))
			}
		}
	})
}
