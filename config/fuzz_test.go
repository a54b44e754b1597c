package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary files to the parser. Parse must not panic; it
// either fails with an *Error or returns a configuration whose every value
// can be read without panicking, and whose values keep no line breaks.
func FuzzParse(f *testing.F) {
	f.Add([]byte("myhostname = mx.example\nrelay_domains = a.tld, b.tld\nfast_flush_domains = $relay_domains\n"))
	f.Add([]byte("a = $b\nb = ${a}\n"))
	f.Add([]byte("transport_maps = inline:{ a=b, { c = d e } }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.cf", data)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *config.Error: %v", err, err)
			}
			return
		}
		for _, name := range c.Explicit() {
			raw, ok := c.Raw(name)
			if !ok || strings.ContainsAny(raw, "\n") {
				t.Fatalf("%s: raw value %q, %v", name, raw, ok)
			}
		}
		for _, name := range c.Names() {
			_, _ = c.Expand(name)
			_, _ = c.List(name)
		}
		// Values were validated: the typed reads of known parameters succeed.
		if _, err := c.Time("queue_run_delay"); err != nil {
			t.Fatalf("validated queue_run_delay: %v", err)
		}
		// Syntax only: opening /file entries could read device files.
		if _, err := c.domainPatterns("fast_flush_domains", false); err != nil {
			t.Fatalf("validated fast_flush_domains: %v", err)
		}
		if _, err := c.netPatterns("mynetworks", false); err != nil {
			t.Fatalf("validated mynetworks: %v", err)
		}
	})
}
