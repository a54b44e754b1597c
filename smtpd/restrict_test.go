package smtpd

import (
	"net/netip"
	"strings"
	"testing"
)

// default_rbl_reply and rbl_reply_maps templates (Postfix's mac_expand).
func TestExpandTemplate(t *testing.T) {
	vars := map[string]string{"rbl_code": "554", "rbl_class": "Client host", "rbl_what": "192.0.2.1", "rbl_domain": "zen.test", "rbl_reason": "", "client_name": "unknown"}
	def := DefaultOptions().DefaultRBLReply
	for in, want := range map[string]string{
		def:                                 "554 Service unavailable; Client host [192.0.2.1] blocked using zen.test",
		"$rbl_code ${rbl_reason:none}":      "554 none",
		"${client_name?named $client_name}": "named unknown",
		"$$x $(rbl_domain) $nosuch.":        "$x zen.test .",
		"unclosed ${rbl_code":               "unclosed ${rbl_code",
	} {
		if got := expandTemplate(in, vars); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
	vars["rbl_reason"] = "see url"
	if got := expandTemplate(def, vars); !strings.HasSuffix(got, "zen.test; see url") {
		t.Errorf("with a reason: %q", got)
	}
}

// DNS list reply filters (Postfix's ip_match syntax).
func TestReplyMask(t *testing.T) {
	a := func(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }
	cases := []struct {
		mask, addr string
		match      bool
	}{
		{"127.0.0.2", "127.0.0.2", true},
		{"127.0.0.2", "127.0.0.3", false},
		{"127.0.0.[2..11]", "127.0.0.11", true},
		{"127.0.0.[2..11]", "127.0.0.12", false},
		{"127.0.[0;1].[2;4..6]", "127.0.1.5", true},
		{"127.0.[0;1].[2;4..6]", "127.0.1.3", false},
	}
	for _, c := range cases {
		m, err := parseReplyMask(c.mask)
		if err != nil {
			t.Fatalf("%s: %v", c.mask, err)
		}
		if got := m.matchAny(a(c.addr)); got != c.match {
			t.Errorf("%s ~ %s: %v, want %v", c.mask, c.addr, got, c.match)
		}
	}
	for _, bad := range []string{"127.0.0", "127.0.0.256", "127.0.0.[5..2]", "127.0.0.x", "127.0.0.2..3"} {
		if _, err := parseReplyMask(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Unknown restrictions, a missing argument and an undefined class are
// start-up errors, never ignored.
func TestParseRulesErrors(t *testing.T) {
	open := func(string) (Table, error) { return nil, nil }
	for _, items := range [][]string{
		{"reject_unknown_foo"},
		{"reject_rbl_client"},
		{"check_client_access"},
		{"sleep", "x"},
		{"reject_rbl_client", "zen.test=1.2.3"},
	} {
		if _, err := parseRules("p", items, open, nil); err == nil {
			t.Errorf("%v accepted", items)
		}
	}
	if _, err := parseRules("p", []string{"myclass"}, open, map[string]bool{"myclass": true}); err != nil {
		t.Errorf("class name refused: %v", err)
	}
}

// DNS list queries: IPv4 octets reversed, IPv6 nibbles reversed.
func TestReverseQuery(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":   "1.2.0.192.",
		"2001:db8::1": "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.",
	} {
		if got := reverseQuery(netip.MustParseAddr(in)); got != want {
			t.Errorf("%s: %q, want %q", in, got, want)
		}
	}
}
