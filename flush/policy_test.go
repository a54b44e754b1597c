package flush

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/holdfast-mta/holdfast/config"
)

func policyFrom(t *testing.T, set map[string]string) *Policy {
	t.Helper()
	c := config.Default()
	for k, v := range set {
		c.Set(k, v)
	}
	p, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func TestPolicyEligible(t *testing.T) {
	tests := []struct {
		name    string
		set     map[string]string
		enabled bool
		yes, no []string
	}{
		{
			name:    "default is $relay_domains with parent matching",
			set:     map[string]string{"relay_domains": "customer.tld, other.tld"},
			enabled: true,
			yes:     []string{"customer.tld", "other.tld", "sub.customer.tld", "a.b.other.tld"},
			no:      []string{"not.a.customer.domain", "tld", "xcustomer.tld", "[127.0.0.1]", ""},
		},
		{
			name: "empty relay_domains disables",
			set:  map[string]string{"relay_domains": ""},
			no:   []string{"customer.tld"},
		},
		{
			name: "explicit empty fast_flush_domains disables",
			set:  map[string]string{"relay_domains": "customer.tld", "fast_flush_domains": ""},
			no:   []string{"customer.tld"},
		},
		{
			name:    "fast_flush_domains extends relay_domains",
			set:     map[string]string{"relay_domains": "customer.tld", "fast_flush_domains": "$relay_domains, some.other.domain"},
			enabled: true,
			yes:     []string{"customer.tld", "some.other.domain"},
			no:      []string{"other.domain"},
		},
		{
			name: "without parent matching only .pattern covers sub-domains",
			set: map[string]string{
				"fast_flush_domains":               "customer.tld, .wild.tld",
				"parent_domain_matches_subdomains": "relay_domains",
			},
			enabled: true,
			yes:     []string{"customer.tld", "x.wild.tld"},
			no:      []string{"sub.customer.tld"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policyFrom(t, tt.set)
			if p.Enabled() != tt.enabled {
				t.Errorf("Enabled = %v, want %v", p.Enabled(), tt.enabled)
			}
			for _, d := range tt.yes {
				if !p.Eligible(d) {
					t.Errorf("Eligible(%q) = false, want true", d)
				}
			}
			for _, d := range tt.no {
				if p.Eligible(d) {
					t.Errorf("Eligible(%q) = true, want false", d)
				}
			}
		})
	}
}

func TestPolicyKey(t *testing.T) {
	base := map[string]string{"relay_domains": "customer.tld"}
	k1 := policyFrom(t, base).Key()
	if k1 == "" {
		t.Fatal("empty key")
	}
	if k := policyFrom(t, base).Key(); k != k1 {
		t.Errorf("same settings, different keys %q %q", k, k1)
	}
	// Same expanded value through a different spelling: same key.
	if k := policyFrom(t, map[string]string{"relay_domains": "customer.tld", "fast_flush_domains": "$relay_domains"}).Key(); k != k1 {
		t.Errorf("explicit $relay_domains changed the key")
	}
	if k := policyFrom(t, map[string]string{"relay_domains": "customer.tld, new.tld"}).Key(); k == k1 {
		t.Errorf("new domain did not change the key")
	}
	if k := policyFrom(t, map[string]string{"relay_domains": "customer.tld", "parent_domain_matches_subdomains": ""}).Key(); k == k1 {
		t.Errorf("parent matching switch did not change the key")
	}

	// A table file's content is part of the key.
	f := filepath.Join(t.TempDir(), "flush_domains")
	if err := os.WriteFile(f, []byte("customer.tld OK\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	set := map[string]string{"fast_flush_domains": "hash:" + f}
	p := policyFrom(t, set)
	if !p.Eligible("customer.tld") {
		t.Errorf("table entry not eligible")
	}
	kt := p.Key()
	if err := os.WriteFile(f, []byte("customer.tld OK\nnew.tld OK\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k := policyFrom(t, set).Key(); k == kt {
		t.Errorf("table change did not change the key")
	}
}

func TestTablePath(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/x":            "/etc/x",
		"!/etc/z":           "/etc/z",
		"hash:/etc/x":       "/etc/x",
		"texthash:/etc/y":   "/etc/y",
		"customer.tld":      "",
		"inline:{a.tld=OK}": "",
	} {
		if got := tablePath(in); got != want {
			t.Errorf("tablePath(%q) = %q, want %q", in, got, want)
		}
	}
}
