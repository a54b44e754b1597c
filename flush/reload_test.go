package flush

import (
	"errors"
	"testing"
	"time"
)

// SetPolicy with a new fast_flush_domains: ETRN answers by it at once and
// the index is rebuilt in the background, in chunks, while mail goes on
// being queued; afterwards every message of the new domain is flushed.
func TestSetPolicyRebuildsIndex(t *testing.T) {
	svc, s, _ := newService(t)
	svc.reindexN = 2
	var ids []string
	for range 5 {
		ids = append(ids, string(deferred(t, s, "u@new.tld", "v@customer.tld")))
	}
	if _, err := svc.Flush("new.tld", false); !errors.Is(err, ErrNotEligible) {
		t.Fatalf("before: %v", err)
	}
	p := policyFrom(t, map[string]string{"relay_domains": "customer.tld, other.tld, new.tld"})
	if !svc.SetPolicy(p) {
		t.Fatal("no rebuild started")
	}
	deferred(t, s, "w@new.tld") // during the rebuild
	if svc.SetPolicy(p) {
		t.Fatal("the same policy started a second rebuild")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := svc.Flush("new.tld", false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Messages+res.Active == len(ids)+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flush after the rebuild: %+v, want %d messages", res, len(ids)+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	svc.Close()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
