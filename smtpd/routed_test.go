package smtpd

import "testing"

func TestSenderRouted(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"user@customer.tld", false},
		{"first.last+tag@customer.tld", false},
		{"user%foreign.test@customer.tld", true},
		{"foreign.test!user@customer.tld", true},
		{`"user@foreign.test"@customer.tld`, true},
		{"user@foreign.test@customer.tld", true},
		{"postmaster", false},
	} {
		if got := senderRouted(tc.addr); got != tc.want {
			t.Errorf("senderRouted(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
