package testutil

import (
	"testing"

	"github.com/holdfast-mta/holdfast/config"
)

// Config returns the default configuration with the given name, value
// pairs set (Postfix syntax, as in main.cf), validated; a bad value fails
// the test. Example:
//
//	c := testutil.Config(t, "relay_domains", "customer.tld",
//		"defer_transports", "etrn-only")
func Config(t testing.TB, kv ...string) *config.Config {
	t.Helper()
	if len(kv)%2 != 0 {
		t.Fatalf("testutil: Config needs name, value pairs, got %d strings", len(kv))
	}
	c := config.Default()
	for i := 0; i < len(kv); i += 2 {
		c.Set(kv[i], kv[i+1])
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("testutil: config: %v", err)
	}
	return c
}
