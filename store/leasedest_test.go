package store

import "testing"

// TestLeaseDest: the destination's incoming and deferred messages are
// leased whatever their due time; active ones, held ones, skipped ones
// and other destinations' are not; the lease survives a crash as any.
func TestLeaseDest(t *testing.T) {
	f := open(t)
	a1 := f.enqueue("u@a.tld")
	a2 := f.enqueue("v@a.tld", "w@b.tld")
	b := f.enqueue("x@b.tld")
	for _, m := range f.lease() { // all active, then deferred by an hour
		f.deferAll(m, 3600e9)
	}
	a3 := f.enqueue("y@a.tld") // incoming
	held := f.enqueue("z@a.tld")
	if _, err := f.s.Hold(held); err != nil {
		t.Fatal(err)
	}
	got, err := f.s.LeaseDest([]string{"A.tld"}, 10, func(id ID) bool { return id == a3 })
	if err != nil {
		t.Fatal(err)
	}
	f.check()
	ids := map[ID]bool{}
	for _, m := range got {
		ids[m.ID] = true
		if m.State != StateActive {
			t.Errorf("%s returned %v", m.ID, m.State)
		}
	}
	if len(got) != 2 || !ids[a1] || !ids[a2] {
		t.Fatalf("leased %v, want %s and %s", ids, a1, a2)
	}
	if st := f.get(b).State; st != StateDeferred {
		t.Errorf("b.tld message is %v", st)
	}
	// Already active: not leased twice.
	if again, _ := f.s.LeaseDest([]string{"a.tld"}, 10, nil); len(again) != 1 || again[0].ID != a3 {
		t.Errorf("second lease %v, want only %s", again, a3)
	}
	f.crash() // leases return to the queue at open
	if st := f.stats(); st.Active != 0 {
		t.Errorf("after crash %+v", st)
	}
}
