package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/store"
)

// TestATRNHoldfastToHoldfast: `holdfast atrn` at the customer's site
// pulls the provider's queued mail over ODMR into a second holdfast.
func TestATRNHoldfastToHoldfast(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	os.WriteFile(pw, []byte("alice:{PLAIN}secret\n"), 0o600)
	provider := newRelay(t, "odmr_listen = 127.0.0.1:0", "smtpd_sasl_type = passwd-file", "smtpd_sasl_path = "+pw,
		"etrn_login_maps = inline:{ customer.tld=alice }")
	customer := newRelay(t, "myhostname = customer.tld") // not the provider's name: that would be a loop
	for range 3 {
		provider.send("a@origin.test", "u@customer.tld")
	}
	provider.send("a@origin.test", "v@other.tld")
	provider.waitFor("4 deferred", 10*time.Second, func(s store.Stats) bool { return s.Deferred == 4 })

	cf := filepath.Join(dir, "customer.cf")
	os.WriteFile(cf, []byte("myhostname = customer.tld\n"), 0o644)
	cred := filepath.Join(dir, "cred")
	os.WriteFile(cred, []byte("alice:secret\n"), 0o600)
	var out, errb bytes.Buffer
	args := []string{"-c", cf, "--password-file", cred, "--forward", customer.addr, provider.d.odmrLns[0].Addr().String(), "customer.tld"}
	if code := runATRN(args, &out, &errb); code != 0 {
		t.Fatalf("holdfast atrn: exit %d: %s", code, errb.String())
	}
	if s := customer.stats(); s.Incoming+s.Deferred+s.Active != 3 {
		t.Errorf("customer queue %+v, want 3 messages", s)
	}
	provider.waitFor("other.tld's left", 10*time.Second, func(s store.Stats) bool { return s.Deferred == 1 && s.Active == 0 })
	out.Reset()
	if code := runATRN(args, &out, &errb); code != 0 || strings.TrimSpace(out.String()) != "no mail" {
		t.Errorf("second pull: exit %d, %q %q", code, out.String(), errb.String())
	}
}
