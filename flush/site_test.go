package flush

import (
	"errors"
	"strings"
	"testing"
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
		{"café.test", false},
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

func TestNormalize(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "customer.test", want: "customer.test"},
		{in: "CUSTOMER.Test", want: "customer.test"},
		{in: "customer.test.", want: "customer.test"},
		{in: "café.test", want: "xn--caf-dma.test"},
		{in: "CAFÉ.test.", want: "xn--caf-dma.test"},
		{in: "Bücher.Example", want: "xn--bcher-kva.example"},
		{in: "XN--CAF-DMA.test", want: "xn--caf-dma.test"},
		{in: "foo_bar.test", want: "foo_bar.test"},
		{in: "[IPv6:2001:DB8::1]", want: "[ipv6:2001:db8::1]"},
		{in: "[192.0.2.1]", want: "[192.0.2.1]"},
		{in: "", bad: true},
		{in: ".", bad: true},
		{in: "a\u200db.test", bad: true}, // ZWJ outside its context (RFC 5892 A.2)
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in)
		if tt.bad {
			if !errors.Is(err, ErrBadDomain) {
				t.Errorf("Normalize(%q) = %q, %v; want ErrBadDomain", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func FuzzValidSite(f *testing.F) {
	for _, s := range []string{"customer.test", "[127.0.0.1]", "[IPv6:::1]", "a-.b", "12345"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidSite(s) {
			return
		}
		// Whatever ValidSite accepts must normalise to a destination.
		if _, err := Normalize(s); err != nil {
			t.Fatalf("ValidSite(%q) but Normalize: %v", s, err)
		}
		if len(s) > maxHostnameLen+8 {
			t.Fatalf("ValidSite accepted %d bytes", len(s))
		}
	})
}
