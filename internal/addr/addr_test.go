package addr

import (
	"errors"
	"strings"
	"testing"
)

func TestParseArg(t *testing.T) {
	tests := []struct {
		arg, kw, path string
		params        []string
		err           error
	}{
		{arg: "FROM:<a@b.test>", kw: "FROM:", path: "a@b.test"},
		{arg: "from: <a@b.test> SIZE=10  BODY=8BITMIME", kw: "FROM:", path: "a@b.test", params: []string{"SIZE=10", "BODY=8BITMIME"}},
		{arg: "FROM:<>", kw: "FROM:", path: ""},
		{arg: "TO:a@b.test NOTIFY=NEVER", kw: "TO:", path: "a@b.test", params: []string{"NOTIFY=NEVER"}},
		{arg: `TO:<"a>b"@c.test>`, kw: "TO:", path: `"a>b"@c.test`},
		{arg: `TO:<a\>b@c.test>`, kw: "TO:", path: `a\>b@c.test`},
		{arg: "TO:<a@b.test>x", kw: "TO:", err: ErrSyntax},
		{arg: "TO:<a@b.test", kw: "TO:", err: ErrSyntax},
		{arg: "TO:<a<b@c.test>", kw: "TO:", err: ErrSyntax},
		{arg: "TO:", kw: "TO:", err: ErrCommand},
		{arg: "TO:  ", kw: "TO:", err: ErrCommand},
		{arg: "FROM:<a@b.test>", kw: "TO:", err: ErrCommand},
		{arg: "", kw: "TO:", err: ErrCommand},
	}
	for _, tt := range tests {
		path, params, err := ParseArg(tt.arg, tt.kw)
		if !errors.Is(err, tt.err) || (err == nil && (path != tt.path || strings.Join(params, "|") != strings.Join(tt.params, "|"))) {
			t.Errorf("ParseArg(%q, %q) = %q, %q, %v; want %q, %q, %v", tt.arg, tt.kw, path, params, err, tt.path, tt.params, tt.err)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		path, want, dest string
		utf8             bool
	}{
		{path: "user@customer.tld", want: "user@customer.tld", dest: "customer.tld"},
		{path: "User@Customer.TLD", want: "User@customer.tld", dest: "customer.tld"},
		{path: "first.last+tag@sub.customer.tld", want: "first.last+tag@sub.customer.tld", dest: "sub.customer.tld"},
		{path: `"quoted user"@sink.test`, want: `"quoted user"@sink.test`, dest: "sink.test"},
		{path: `"plain"@sink.test`, want: "plain@sink.test", dest: "sink.test"},
		{path: `"a\"b\\c"@sink.test`, want: `"a\"b\\c"@sink.test`, dest: "sink.test"},
		{path: `"a\xb"@sink.test`, want: "axb@sink.test", dest: "sink.test"},
		{path: "@r1.test,@r2.test:u@x.test", want: "u@x.test", dest: "x.test"},
		{path: "u@[192.0.2.1]", want: "u@[192.0.2.1]", dest: "[192.0.2.1]"},
		{path: "u@[IPv6:2001:DB8::1]", want: "u@[ipv6:2001:db8::1]", dest: "[ipv6:2001:db8::1]"},
		{path: "foo_bar@foo_bar.test", want: "foo_bar@foo_bar.test", dest: "foo_bar.test"},
		// RFC 6531: UTF-8 local parts and U-label domains.
		{path: "u@café.test", want: "u@café.test", dest: "xn--caf-dma.test", utf8: true},
		{path: "u@CAFÉ.Test", want: "u@café.test", dest: "xn--caf-dma.test", utf8: true},
		{path: "jörg@bücher.test", want: "jörg@bücher.test", dest: "xn--bcher-kva.test", utf8: true},
		{path: "δοκιμή@παράδειγμα.δοκιμή", want: "δοκιμή@παράδειγμα.δοκιμή", dest: "xn--hxajbheg2az3al.xn--jxalpdlp", utf8: true},
		{path: "u@xn--caf-dma.test", want: "u@xn--caf-dma.test", dest: "xn--caf-dma.test"},
		{path: "u@XN--CAF-DMA.TEST", want: "u@xn--caf-dma.test", dest: "xn--caf-dma.test"},
		{path: "jörg@example.test", want: "jörg@example.test", dest: "example.test", utf8: true},
		// Routed forms parse; Routed flags them.
		{path: "user%foreign.test@relay.test", want: "user%foreign.test@relay.test", dest: "relay.test"},
		{path: "foreign.test!user@relay.test", want: "foreign.test!user@relay.test", dest: "relay.test"},
		{path: `"user@foreign.test"@relay.test`, want: `"user@foreign.test"@relay.test`, dest: "relay.test"},
	}
	for _, tt := range tests {
		m, err := Parse(tt.path)
		if err != nil || m.String() != tt.want || m.Dest() != tt.dest || m.UTF8() != tt.utf8 {
			t.Errorf("Parse(%q) = %q dest %q utf8 %v, %v; want %q dest %q utf8 %v",
				tt.path, m, m.Dest(), m.UTF8(), err, tt.want, tt.dest, tt.utf8)
			continue
		}
		if d := DomainOf(m.String()); d != tt.dest {
			t.Errorf("DomainOf(%q) = %q, want %q", m, d, tt.dest)
		}
	}
}

func TestParseBad(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	for _, path := range []string{
		"", "user", "@", "user@", "@customer.tld", "user@customer.tld.", "user@.customer.tld",
		"user@bad..domain", "user@-foo.test", "user@foo-.test", "user@" + long63 + "a.test",
		"user@foreign.test@relay.test", "user@sink.test:25", "user@foreign.test ", "a b@c.test",
		"a..b@c.test", ".a@c.test", "a.@c.test", `"a@c.test`, `"a"b"@c.test`, `"a\"@c.test`,
		"\"a\x01\"@c.test", "u@[192.0.2.1", "u@[0.1.2.3]", "u@[256.1.1.1]", "u@[IPv6:192.0.2.1]",
		"u@[2001:db8::1]", "u@[sink.test]", "u@[IPv6:::1%eth0]", "@r1.test:u", "@r1.test,r2:u@x.test",
		"r1.test:u@x.test", "@r1..test:u@x.test", "u@caf\xe9.test", "\xff@x.test",
		"u@a\u200db.test",   // ZWJ outside its context (RFC 5892 A.2)
		"u@caf\u00e9-.test", // hyphen at label end
		"u@caf\u00e9.test.", // trailing dot
		"u@xn--café.test",   // mixed A-label prefix with U-label
		"u@" + strings.Repeat("é", 60) + ".test",
	} {
		if m, err := Parse(path); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %q, %v; want ErrSyntax", path, m, err)
		}
	}
}

func TestDomain(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "customer.test", want: "customer.test"},
		{in: "CUSTOMER.Test", want: "customer.test"},
		{in: "customer.test.", want: "customer.test"},
		{in: "café.test", want: "xn--caf-dma.test"},
		{in: "CAFÉ.test.", want: "xn--caf-dma.test"},
		{in: "cafe\u0301.test", want: "xn--caf-dma.test"}, // NFC
		{in: "ｃａｆé.test", want: "xn--caf-dma.test"},       // full-width
		{in: "café。test", want: "xn--caf-dma.test"},       // ideographic full stop
		{in: "Bücher.Example", want: "xn--bcher-kva.example"},
		{in: "XN--CAF-DMA.test", want: "xn--caf-dma.test"},
		{in: "straße.test", want: "xn--strae-oqa.test"}, // non-transitional: ß kept
		{in: "café_x.test", want: "xn--caf_x-dsa.test"}, // '_' allowed, as valid_hostname
		{in: "foo_bar.test", want: "foo_bar.test"},
		{in: "[IPv6:2001:DB8::1]", want: "[ipv6:2001:db8::1]"},
		{in: "[192.0.2.1]", want: "[192.0.2.1]"},
		{in: "", bad: true},
		{in: ".", bad: true},
		{in: "a\u200db.test", bad: true},
		{in: "café..test", bad: true},
		{in: "-café.test", bad: true},
		{in: "caf\xe9.test", bad: true},
		{in: "[café]", bad: true},
		{in: "café test", bad: true},
		{in: strings.Repeat("é", 60) + ".test", bad: true}, // A-label over 63
		{in: strings.Repeat("\ufdfa", 400), bad: true},     // over maxUTF8Len
	}
	for _, tt := range tests {
		got, err := Domain(tt.in)
		if tt.bad {
			if !errors.Is(err, ErrDomain) {
				t.Errorf("Domain(%q) = %q, %v; want ErrDomain", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Domain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestFoldAndKey(t *testing.T) {
	for _, tt := range []struct{ in, fold, key string }{
		{"café.test", "xn--caf-dma.test", "xn--caf-dma.test"},
		{"Café.Test.", "xn--caf-dma.test", "café.test."},
		{".café.test", ".café.test", ".xn--caf-dma.test"},
		{"U@Café.test", "u@café.test", "u@xn--caf-dma.test"},
		{"Jörg@", "jörg@", "jörg@"},
		{"JÖRG@CAFÉ.TEST", "jörg@café.test", "jörg@xn--caf-dma.test"},
		{"@café.test", "@café.test", "@xn--caf-dma.test"},
		{"a\u200db.test", "a\u200db.test", "a\u200db.test"},
		{"Example.COM", "example.com", "example.com"},
		{"*", "*", "*"},
		{"192.0.2", "192.0.2", "192.0.2"},
	} {
		if got := Fold(tt.in); got != tt.fold {
			t.Errorf("Fold(%q) = %q, want %q", tt.in, got, tt.fold)
		}
		if got := Key(tt.in); got != tt.key {
			t.Errorf("Key(%q) = %q, want %q", tt.in, got, tt.key)
		}
	}
}

func TestDomainOfAndRouted(t *testing.T) {
	for _, tt := range []struct {
		addr, dom string
		routed    bool
	}{
		{"user@customer.tld", "customer.tld", false},
		{"user@Customer.TLD.", "customer.tld", false},
		{"u@café.test", "xn--caf-dma.test", false},
		{"u@xn--caf-dma.test", "xn--caf-dma.test", false},
		{"first.last+tag@customer.tld", "customer.tld", false},
		{"user%foreign.test@customer.tld", "customer.tld", true},
		{"foreign.test!user@customer.tld", "customer.tld", true},
		{`"user@foreign.test"@customer.tld`, "customer.tld", true},
		{"user@foreign.test@customer.tld", "customer.tld", true},
		{"postmaster", "", false},
		{"user@", "", false},
	} {
		if got := DomainOf(tt.addr); got != tt.dom {
			t.Errorf("DomainOf(%q) = %q, want %q", tt.addr, got, tt.dom)
		}
		if got := Routed(tt.addr); got != tt.routed {
			t.Errorf("Routed(%q) = %v, want %v", tt.addr, got, tt.routed)
		}
	}
}

// The ETRN arguments of the Postfix 3.7 anchors 08 and 09, after smtpd
// removed the one '@'/'#' prefix, and valid_hostname's details.
func TestValidHostnameAndLiteral(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		arg  string
		want bool
	}{
		{"customer.test", true},
		{"somequeue", true},
		{"@customer.test", false},
		{"[127.0.0.1]", true},
		{"CUSTOMER.TEST", true},
		{"customer.test.", false},
		{"sub.customer.test", true},
		{"", false},
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
		{"localhost", true},
		{"a-b.example", true},
		{"xn--caf-dma.test", true},
		{"1a.2.3.4", true},
		{"a.b-.c", false},
		{"a b", false},
		{strings.Repeat("a.", 127) + "a", true},        // 255
		{strings.Repeat("a.", 127) + "ab", false},      // 256
		{strings.Repeat(long63+".", 4) + "abc", false}, // 259
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
		got := ValidHostname(tt.arg)
		if strings.HasPrefix(tt.arg, "[") {
			got = ValidLiteral(tt.arg)
		}
		if got != tt.want {
			t.Errorf("valid(%q) = %v, want %v", tt.arg, got, tt.want)
		}
	}
}

// BenchmarkDomainOf: the store computes the destination of every pending
// recipient on every state change; ASCII names must stay allocation-free.
func BenchmarkDomainOf(b *testing.B) {
	for _, a := range []string{"user@customer.tld", "u@café.test"} {
		b.Run(a, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				DomainOf(a)
			}
		})
	}
}
