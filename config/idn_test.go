package config

import "testing"

// A U-label name and its A-label are one name in domain lists (patterns,
// /file entries, tables), lookup tables and the transport search order,
// whichever form the configuration and the query use.
func TestIDNForms(t *testing.T) {
	forms := []string{"café.test", "xn--caf-dma.test", "CAFÉ.test"}
	for _, pat := range forms[:2] {
		names := writeFile(t, "names", "."+pat+"\n")
		table := writeFile(t, "table", "sub."+pat+" OK\n")
		c := Default()
		c.Set("relay_domains", pat+" "+names+" texthash:"+table)
		c.Set("parent_domain_matches_subdomains", "")
		d, err := c.Domains("relay_domains")
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range forms {
			for _, name := range []string{q, "mx." + q, "sub." + q + "."} {
				if ok, err := d.Match(name); !ok || err != nil {
					t.Errorf("relay_domains = %s (pattern, .file, table): Match(%q) = %v, %v", pat, name, ok, err)
				}
			}
		}

		file := writeFile(t, "transport", pat+" relay:[mx."+pat+"]\n.parent."+pat+" p\nu@"+pat+" user\n")
		c.Set("transport_maps", "texthash:"+file)
		tm, err := c.Transport()
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range forms {
			for addr, want := range map[string]string{"v@" + q: "relay:[mx." + pat + "]", "u@" + q: "user", "v@x.parent." + q: "p"} {
				if v, ok, err := tm.Lookup(addr); !ok || err != nil || v != want {
					t.Errorf("transport_maps keyed %s: Lookup(%q) = %q, %v, %v; want %q", pat, addr, v, ok, err, want)
				}
			}
		}

		tab, err := OpenTable("inline:{ @" + pat + "=catchall, jörg@" + pat + "=jorg }")
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range forms {
			for key, want := range map[string]string{"@" + q: "catchall", "JÖRG@" + q: "jorg"} {
				if v, ok, _ := tab.Lookup(key); !ok || v != want {
					t.Errorf("inline table keyed %s: Lookup(%q) = %q, %v; want %q", pat, key, v, ok, want)
				}
			}
		}
	}
}
