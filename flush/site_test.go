package flush

import (
	"strings"
	"testing"

	"github.com/holdfast-mta/holdfast/internal/addr"
)

// The ETRN arguments of the Postfix 3.7 anchors 08 and 09, after smtpd
// removed the one '@'/'#' prefix: true where Postfix did not answer 501.
func TestValidSite(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		arg  string
		want bool
	}{
		// anchor 08
		{"customer.test", true},
		{"somequeue", true},
		{"@customer.test", false},
		{"[127.0.0.1]", true},
		{"CUSTOMER.TEST", true},
		{"customer.test.", false},
		{"sub.customer.test", true},
		{"", false},
		// anchor 09
		{"bad..domain", false},
		{long63 + "a.test", false},
		{long63 + ".test", true},
		{"-foo.test", false},
		{"foo-.test", false},
		{"foo_bar.test", true},
		{".customer.test", false},
		{"customer.test..", false},
		{"1.2.3.4", false},
		{"12345", false},
		{"café.test", true}, // holdfast: the A-label form is valid (Postfix: 501)
		{"café.test.", false},
		{"a\u200db.test", false},
		{"caf\xe9.test", false},
		// valid_hostname details
		{"localhost", true},
		{"a-b.example", true},
		{"xn--caf-dma.test", true},
		{"1a.2.3.4", true},
		{"a.b-.c", false},
		{"a b", false},
		{strings.Repeat("a.", 127) + "a", true},        // 255
		{strings.Repeat("a.", 127) + "ab", false},      // 256
		{strings.Repeat(long63+".", 4) + "abc", false}, // 259
		// address literals
		{"[192.0.2.1]", true},
		{"[0.0.0.0]", true},
		{"[0.1.2.3]", false},
		{"[010.1.2.3]", true},
		{"[256.1.2.3]", false},
		{"[1.2.3]", false},
		{"[1.2.3.4.5]", false},
		{"[1.2.3.4]x", false},
		{"[1.2.3.4", false},
		{"[]", false},
		{"[IPv6:2001:db8::1]", true},
		{"[ipv6:2001:db8::1]", true},
		{"[IPv6:::ffff:192.0.2.1]", true},
		{"[IPv6:2001:db8::1%eth0]", false},
		{"[IPv6:192.0.2.1]", false},
		{"[2001:db8::1]", false},
		{"[IPv6:]", false},
		{"[[1.2.3.4]]", false},
	}
	for _, tt := range tests {
		if got := ValidSite(tt.arg); got != tt.want {
			t.Errorf("ValidSite(%q) = %v, want %v", tt.arg, got, tt.want)
		}
	}
}

func FuzzValidSite(f *testing.F) {
	for _, s := range []string{"customer.test", "[127.0.0.1]", "[IPv6:::1]", "a-.b", "12345"} {
		f.Add(s)
	}
	f.Add("café.test")
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidSite(s) {
			return
		}
		// Whatever ValidSite accepts must normalise to a destination
		// that is a valid host name or literal itself.
		d, err := addr.Domain(s)
		if err != nil || !ValidSite(d) || !addr.IsASCII(d) {
			t.Fatalf("ValidSite(%q) but addr.Domain: %q, %v", s, d, err)
		}
		if len(s) > 4*255 {
			t.Fatalf("ValidSite accepted %d bytes", len(s))
		}
	})
}
