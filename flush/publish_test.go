package flush

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

// published records what a Service hands to the cluster.
type published struct {
	mu  sync.Mutex
	got []string
}

func (p *published) Publish(dest string, subtree bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := dest
	if subtree {
		s = "@" + dest
	}
	p.got = append(p.got, s)
}

// Every destination flush accepted here is published after the local
// flush, with or without local mail and in both answer modes (ETRN's
// Early and the operator's); a refused one and those that came from the
// cluster (Local) are not.
func TestPublishAfterLocalFlush(t *testing.T) {
	svc, s, _ := newService(t)
	var p published
	svc.SetPublisher(&p)
	etrn := svc.As("etrn").Early()
	deferred(t, s, "a@customer.tld")
	if _, err := etrn.Flush("Customer.TLD", false); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Flush("other.tld", true); err != nil { // no local mail
		t.Fatal(err)
	}
	if _, err := svc.Flush("elsewhere.test", false); !errors.Is(err, ErrNotEligible) {
		t.Fatalf("ineligible: %v", err)
	}
	if _, err := svc.Local("cluster").Flush("customer.tld", false); err != nil {
		t.Fatal(err)
	}
	svc.Close()
	if want := []string{"customer.tld", "@other.tld"}; !slices.Equal(p.got, want) {
		t.Fatalf("published %v, want %v", p.got, want)
	}
}
