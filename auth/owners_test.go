package auth

import (
	"slices"
	"testing"

	"github.com/holdfast-mta/holdfast/config"
)

func TestOwners(t *testing.T) {
	tab, err := config.OpenTable("inline:{ customer.example=alice, {@example.net = bob, alice}, shop.example.net=carol, café.example=dave }")
	if err != nil {
		t.Fatal(err)
	}
	o := NewOwners(tab)
	for _, c := range []struct {
		login, site   string
		owned, listed bool
	}{
		{"alice", "customer.example", true, true},
		{"alice", "CUSTOMER.example.", true, true},
		{"bob", "customer.example", false, true},
		{"alice", "sub.customer.example", false, false}, // no @ entry
		{"bob", "example.net", true, true},
		{"bob", "a.b.example.net", true, true},
		{"bob", "shop.example.net", false, true}, // the more specific entry decides
		{"carol", "shop.example.net", true, true},
		{"", "customer.example", false, true},
		{"alice", "other.example", false, false},
		{"dave", "xn--caf-dma.example", true, true}, // one destination, either form
		{"dave", "CAFÉ.example.", true, true},
	} {
		owned, listed, err := o.Owns(c.login, c.site)
		if err != nil || owned != c.owned || listed != c.listed {
			t.Errorf("Owns(%q, %q) = %v, %v, %v; want %v, %v", c.login, c.site, owned, listed, err, c.owned, c.listed)
		}
	}
	if d, _ := o.Domains("alice"); !slices.Equal(d, []string{"customer.example", "example.net"}) {
		t.Errorf("Domains(alice) = %v", d)
	}
	if d, _ := o.Domains("carol"); !slices.Equal(d, []string{"shop.example.net"}) {
		t.Errorf("Domains(carol) = %v", d)
	}
	if NewOwners(nil) != nil {
		t.Error("NewOwners(nil) not nil")
	}
}

func TestOpen(t *testing.T) {
	b, err := Open("dovecot", "private/auth", "/var/spool/holdfast", "h")
	if err != nil || b.(*Dovecot).path != "/var/spool/holdfast/private/auth" {
		t.Errorf("relative dovecot path: %v %v", b, err)
	}
	if _, err := Open("cyrus", "smtpd", "/q", "h"); err == nil {
		t.Error("cyrus accepted")
	}
	if _, err := Open("passwd-file", "/nonexistent/passwd", "/q", "h"); err == nil {
		t.Error("missing passwd-file accepted")
	}
}
