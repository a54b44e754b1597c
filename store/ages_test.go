package store

import (
	"testing"
	"time"
)

// idAt makes an ID that arrived at t.
func idAt(t time.Time) ID { return encodeID(uint64(t.UnixMilli()) << idRandBits) }

func TestAges(t *testing.T) {
	f := open(t)
	at := func(h, m int) time.Time { return time.Date(2026, 3, 1, h, m, 0, 0, time.UTC) }
	add := func(when time.Time, rcpt string) ID {
		m := newMsg(rcpt)
		m.ID = idAt(when)
		if err := f.s.Enqueue(m, []byte("x\r\n")); err != nil {
			t.Fatal(err)
		}
		return m.ID
	}
	held := add(at(9, 0), "d@z.tld")
	if _, err := f.s.Hold(held); err != nil {
		t.Fatal(err)
	}
	add(at(11, 0), "c@x.tld")
	for _, m := range f.lease() {
		f.deferAll(m, time.Hour)
	}
	add(at(10, 30), "b@y.tld")
	if n := len(f.lease()); n != 1 {
		t.Fatalf("leased %d, want 1", n)
	}
	add(at(10, 0), "a@x.tld")

	a, err := f.s.Ages(10)
	if err != nil {
		t.Fatal(err)
	}
	want := map[State]time.Time{StateHold: at(9, 0), StateIncoming: at(10, 0),
		StateActive: at(10, 30), StateDeferred: at(11, 0)}
	for st, w := range want {
		if got := a.Oldest[st]; !got.Equal(w) {
			t.Errorf("oldest %s = %v, want %v", st, got, w)
		}
	}
	if a.OldestPartial {
		t.Error("partial scan on a small queue")
	}
	// The held message left the flush index; x.tld's oldest is a, not c.
	d := a.Destinations
	if len(d) != 2 || d[0].Destination != "x.tld" || !d[0].Oldest.Equal(at(10, 0)) ||
		d[1].Destination != "y.tld" || !d[1].Oldest.Equal(at(10, 30)) {
		t.Errorf("destinations %+v", a.Destinations)
	}
	if a, _ := f.s.Ages(1); len(a.Destinations) != 1 || a.Destinations[0].Destination != "x.tld" {
		t.Errorf("limit 1: %+v", a.Destinations)
	}
}
