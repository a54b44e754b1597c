package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNetworks(t *testing.T) {
	file := writeFile(t, "nets", "# office\n198.51.100.0/24\n\n[2001:db8:1::]/48\n")
	c := Default()
	c.Set("mynetworks", "127.0.0.0/8, [::1]/128 [2001:db8::]/32\t192.0.2.7 !10.1.2.3 10.0.0.0/8 [::ffff:172.16.0.0]/108 fd00::/8 "+file)
	n, err := c.Networks("mynetworks")
	if err != nil {
		t.Fatalf("Networks: %v", err)
	}
	tests := map[string]bool{
		"127.0.0.1":        true,
		"127.255.255.254":  true,
		"::1":              true,
		"::2":              false,
		"2001:db8::25":     true,
		"2001:db9::25":     false,
		"192.0.2.7":        true,
		"192.0.2.8":        false,
		"10.1.2.3":         false, // negated before the /8
		"10.1.2.4":         true,
		"172.16.5.5":       true, // from the 4-in-6 form
		"::ffff:127.0.0.1": true, // mapped address matches as IPv4
		"fd00::1":          true,
		"198.51.100.20":    true, // from the file
		"2001:db8:1::9":    true,
		"203.0.113.1":      false,
	}
	for addr, want := range tests {
		if got := n.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, want)
		}
	}
	// A cidr: table's keys are networks.
	table := writeFile(t, "cidr", "192.168.0.0/16 OK\n[2001:db8:5::]/48 OK\n")
	c.Set("mynetworks", "cidr:"+table)
	if n, err = c.Networks("mynetworks"); err != nil {
		t.Fatal(err)
	}
	if !n.Contains(netip.MustParseAddr("192.168.3.4")) || !n.Contains(netip.MustParseAddr("2001:db8:5::1")) || n.Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Error("cidr table entries do not match")
	}
	// The computed default holds loopback.
	d, err := Default().Networks("mynetworks")
	if err != nil || !d.Contains(netip.MustParseAddr("127.0.0.1")) || !d.Contains(netip.MustParseAddr("::1")) {
		t.Errorf("default mynetworks: %v", err)
	}
	for _, bad := range []string{"300.0.0.1", "[::1", "10.0.0.0/40", "[::1]/129", "fe80::1%eth0", "[::ffff:1.2.3.4]/64"} {
		c.Set("mynetworks", bad)
		if _, err := c.Networks("mynetworks"); err == nil {
			t.Errorf("mynetworks = %s accepted", bad)
		}
	}
}

func TestDomainMatching(t *testing.T) {
	names := writeFile(t, "customers", "# customers\nfile.tld, !bad.file2.tld\nfile2.tld\n")
	table := writeFile(t, "relay", "tab.tld OK\n.dot.tld OK\n")
	list := "Customer.TLD, .sub.tld " + names + " texthash:" + table + " !no.exact.tld exact.tld"
	tests := []struct {
		domain         string
		parent, noPrnt bool
	}{
		{"customer.tld", true, true},
		{"CUSTOMER.tld.", true, true}, // case and trailing dot do not matter
		{"mx.customer.tld", true, false},
		{"a.b.customer.tld", true, false},
		{"xcustomer.tld", false, false},
		{"sub.tld", false, false}, // .sub.tld matches sub-domains only
		{"a.sub.tld", true, true},
		{"file.tld", true, true},
		{"x.file.tld", true, false},
		{"bad.file2.tld", false, false}, // negated in the file
		{"ok.file2.tld", true, false},
		{"tab.tld", true, true},
		{"x.y.tab.tld", true, false}, // table: parent names tried as "tab.tld"
		{"dot.tld", false, false},
		{"x.dot.tld", false, true}, // table without parent style: ".dot.tld" tried
		{"no.exact.tld", false, false},
		{"exact.tld", true, true},
		{"[192.0.2.1]", false, false},
		{"", false, false},
	}
	for _, parent := range []bool{true, false} {
		c := Default()
		c.Set("relay_domains", list)
		if !parent {
			c.Set("parent_domain_matches_subdomains", "debug_peer_list fast_flush_domains")
		}
		d, err := c.Domains("relay_domains")
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			want := tt.noPrnt
			if parent {
				want = tt.parent
			}
			got, err := d.Match(tt.domain)
			if err != nil || got != want {
				t.Errorf("parent=%v Match(%q) = %v, %v; want %v", parent, tt.domain, got, err, want)
			}
		}
	}
}

func TestDomainListFollowsRelayDomains(t *testing.T) {
	c := mustParse(t, "relay_domains = customer.tld other.tld\n")
	d, err := c.Domains("fast_flush_domains")
	if err != nil || d.Empty() {
		t.Fatalf("fast_flush_domains: %v, empty %v", err, d.Empty())
	}
	if ok, _ := d.Match("mail.other.tld"); !ok {
		t.Error("fast_flush_domains does not match a sub-domain of a relay domain")
	}
	e, err := Default().Domains("fast_flush_domains")
	if err != nil || !e.Empty() {
		t.Errorf("default fast_flush_domains not empty: %v", err)
	}
	if ok, _ := e.Match("customer.tld"); ok {
		t.Error("empty list matched")
	}
	c.Set("relay_domains", "/nonexistent/file")
	if _, err := c.Domains("relay_domains"); err == nil {
		t.Error("missing /file accepted")
	}
}

func TestOpenTable(t *testing.T) {
	text := "# transport\n\nCustomer.TLD   etrn-only:[mx.customer.tld]\nlong.tld smtp:\n  [mx.long.tld]:2525\ndup.tld first\ndup.tld second\n"
	file := writeFile(t, "transport", text)
	for _, spec := range []string{"hash:" + file, "texthash:" + file, file, "lmdb:" + file} {
		tab, err := OpenTable(spec)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		for key, want := range map[string]string{
			"customer.tld": "etrn-only:[mx.customer.tld]",
			"CUSTOMER.tld": "etrn-only:[mx.customer.tld]",
			"long.tld":     "smtp: [mx.long.tld]:2525",
			"dup.tld":      "first",
		} {
			if v, ok, err := tab.Lookup(key); err != nil || !ok || v != want {
				t.Errorf("%s Lookup(%s) = %q, %v, %v; want %q", spec, key, v, ok, err, want)
			}
		}
		if _, ok, _ := tab.Lookup("other.tld"); ok {
			t.Errorf("%s: other.tld found", spec)
		}
	}
	inline, err := OpenTable("inline:{ a.tld=smtp:[x], { b.tld = relay:[y] with space }, C.tld=}")
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"a.tld": "smtp:[x]", "b.tld": "relay:[y] with space", "c.tld": ""} {
		if v, ok, _ := inline.Lookup(key); !ok || v != want {
			t.Errorf("inline Lookup(%s) = %q, %v; want %q", key, v, ok, want)
		}
	}
	static, err := OpenTable("static:{ all of it }")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := static.Lookup("anything"); !ok || v != "all of it" {
		t.Errorf("static = %q, %v", v, ok)
	}
	bad := writeFile(t, "bad", "ok.tld value\nlonely\n")
	for spec, want := range map[string]string{
		"hash:" + bad:       bad + `:2: expected format: key whitespace value, got "lonely"`,
		"inline:{ a=b, c }": `table inline:{ a=b, c }: bad entry "c" (want key=value)`,
		"inline:x":          `bad table "inline:x" (want inline:{ key=value, ... })`,
		"relative":          `bad table "relative" (want type:name or /path)`,
		"regexp:/etc/x":     `unsupported table type "regexp" in "regexp:/etc/x" (holdfast reads hash, texthash, btree, lmdb, cdb, dbm, sdbm, inline, static)`,
	} {
		if _, err := OpenTable(spec); err == nil || err.Error() != want {
			t.Errorf("OpenTable(%s) = %v\nwant %s", spec, err, want)
		}
	}
}

// TestRelativeTablePath: a relative table path is read from the working
// directory (examples/holdfast.cf uses hash:examples/transport).
func TestRelativeTablePath(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "examples"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "examples", "transport"), []byte("customer.tld etrn-only:[127.0.0.1]:2626\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	c := mustParse(t, "transport_maps = hash:examples/transport\n")
	tm, err := c.Transport()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := tm.Lookup("user@customer.tld"); err != nil || !ok || v != "etrn-only:[127.0.0.1]:2626" {
		t.Errorf("Lookup = %q, %v, %v", v, ok, err)
	}
}

func TestTransportSearchOrder(t *testing.T) {
	// Each key maps to itself so the result names the entry that matched.
	keys := []string{"user@a.b.example", "a.b.example", ".b.example", ".example", "*"}
	tests := []struct {
		addr    string
		entries []string // entries present
		want    string
	}{
		{"user@a.b.example", keys, "user@a.b.example"},
		{"User@A.B.Example", keys[1:], "a.b.example"},
		{"other@a.b.example", keys, "a.b.example"},
		{"user@x.a.b.example", keys[2:], ".b.example"},
		{"user@a.b.example", keys[2:], ".b.example"},
		{"user@b.example", keys[2:], ".example"}, // .b.example matches sub-domains only
		{"user@a.b.example", keys[3:], ".example"},
		{"user@elsewhere.org", keys, "*"},
		{"postmaster", keys, "*"},
		{"user@[192.0.2.1]", keys, "*"},
		{"user@a.b.example", nil, ""},
	}
	for _, tt := range tests {
		var text string
		for _, e := range tt.entries {
			text += e + " " + e + "\n"
		}
		file := writeFile(t, "transport", text)
		c := Default()
		c.Set("transport_maps", "hash:"+file)
		tm, err := c.Transport()
		if err != nil {
			t.Fatal(err)
		}
		v, ok, err := tm.Lookup(tt.addr)
		if err != nil || v != tt.want || ok != (tt.want != "") {
			t.Errorf("Lookup(%s) with %q = %q, %v, %v; want %q", tt.addr, tt.entries, v, ok, err, tt.want)
		}
	}
}

func TestTransportKeys(t *testing.T) {
	c := Default()
	c.Set("recipient_delimiter", "+")
	tm, err := c.Transport()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"user+ext@sub.example.com", "user@sub.example.com", "sub.example.com", ".example.com", ".com", "*"}
	if got := tm.keys("user+ext@sub.example.com"); !reflect.DeepEqual(got, want) {
		t.Errorf("keys = %q\nwant %q", got, want)
	}
	c.Set("parent_domain_matches_subdomains", "transport_maps")
	tm, _ = c.Transport()
	want = []string{"u@sub.example.com", "sub.example.com", "example.com", "com", "*"}
	if got := tm.keys("u@sub.example.com"); !reflect.DeepEqual(got, want) {
		t.Errorf("parent style keys = %q\nwant %q", got, want)
	}
	// Several tables: each key is asked of every table before the next key.
	first := writeFile(t, "t1", ".example.com first\n")
	second := writeFile(t, "t2", "sub.example.com second\n")
	c = Default()
	c.Set("transport_maps", "hash:"+first+", texthash:"+second)
	tm, _ = c.Transport()
	if v, _, _ := tm.Lookup("u@sub.example.com"); v != "second" {
		t.Errorf("multi-table lookup = %q, want second", v)
	}
	if tab, err := c.Table("transport_maps"); err != nil || tab == nil {
		t.Errorf("Table: %v", err)
	}
	if tab, err := Default().Table("transport_maps"); err != nil || tab != nil {
		t.Errorf("empty Table = %v, %v", tab, err)
	}
	empty, err := Default().Transport()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := empty.Lookup("u@x.example"); ok {
		t.Error("empty transport_maps found an entry")
	}
}
