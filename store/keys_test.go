package store

import (
	"bytes"
	"testing"
	"time"
)

func TestReverseDomain(t *testing.T) {
	for in, want := range map[string]string{
		"customer.tld": "tld.customer", "sub.customer.tld": "tld.customer.sub",
		"tld": "tld", "[192.0.2.1]": "[192.0.2.1]", "": "",
	} {
		if got := reverseDomain(in); got != want {
			t.Errorf("reverseDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFlushPrefixes(t *testing.T) {
	id := ID("0123456789ab")
	type tc struct {
		key     string
		exact   bool
		subtree bool
	}
	for _, c := range []tc{
		{"customer.tld", true, true},
		{"sub.customer.tld", false, true},
		{"a.sub.customer.tld", false, true},
		{"xcustomer.tld", false, false},
		{"customerx.tld", false, false},
		{"customer.tldx", false, false},
		{"tld", false, false},
	} {
		k := flushKey(c.key, id)
		match := func(subtree bool) bool {
			for _, p := range flushPrefixes("customer.tld", subtree) {
				if bytes.HasPrefix(k, p) {
					return true
				}
			}
			return false
		}
		if match(false) != c.exact || match(true) != c.subtree {
			t.Errorf("%s: exact %v subtree %v, want %v %v", c.key, match(false), match(true), c.exact, c.subtree)
		}
		rd, gid, ok := parseFlushKey(k)
		if !ok || gid != id || reverseDomain(rd) != c.key {
			t.Errorf("parseFlushKey(%q) = %q %q %v", k, rd, gid, ok)
		}
	}
}

func TestDueKeyOrder(t *testing.T) {
	t0 := time.Unix(1700000000, 5)
	a, b := dueKey(t0, "zzzzzzzzzzzz"), dueKey(t0.Add(time.Nanosecond), "000000000000")
	if bytes.Compare(a, b) >= 0 {
		t.Fatal("due keys not in time order")
	}
	got, id, ok := parseDueKey(a)
	if !ok || !got.Equal(t0) || id != "zzzzzzzzzzzz" {
		t.Fatalf("parseDueKey = %v %q %v", got, id, ok)
	}
}
