package store

import (
	"reflect"
	"sort"
	"testing"
)

// SetPolicy and ReindexChunk: the index is rebuilt in bounded chunks
// while mail goes on being queued (indexed under the new policy at once);
// the last chunk stores the fingerprint, so a reopen rebuilds nothing. A
// stale rebuild (a later SetPolicy) does not store its key.
func TestReindexInChunks(t *testing.T) {
	f := open(t)
	var old []ID
	for range 5 {
		old = append(old, f.enqueue("u@customer.tld", "v@other.example"))
	}
	other := func(d string) bool { return d == "other.example" }
	f.s.SetPolicy(other, "other")
	var last ID
	chunks := 0
	for done := false; !done; chunks++ {
		var err error
		if last, done, err = f.s.ReindexChunk(last, 2, "other"); err != nil {
			t.Fatal(err)
		}
		if chunks == 0 {
			// Queued during the rebuild: indexed under the new policy.
			m := newMsg("w@customer.tld", "x@other.example")
			if err := f.s.Enqueue(m, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
				t.Fatal(err)
			}
			old = append(old, m.ID)
		}
	}
	if chunks != 3 {
		t.Fatalf("%d chunks for 6 messages by 2, want 3", chunks)
	}
	var want []string
	for _, id := range old {
		want = append(want, "other.example "+string(id))
	}
	sort.Strings(want)
	if got := f.flushKeys(); !reflect.DeepEqual(got, want) {
		t.Fatalf("index after rebuild:\n got %v\nwant %v", got, want)
	}
	f.check()

	// A rebuild overtaken by another SetPolicy stores no key.
	f.s.SetPolicy(eligibleTLD, "tld")
	if _, done, err := f.s.ReindexChunk("", 100, "other"); err != nil || !done {
		t.Fatalf("ReindexChunk: %v %v", done, err)
	}
	f.o.Eligible, f.o.PolicyKey = other, "other"
	f.reopen()
	if !f.s.Report().Rebuilt {
		t.Fatal("the stale rebuild's key was stored")
	}
	f.check()
}
