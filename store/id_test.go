package store

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNewIDOrderedUnique(t *testing.T) {
	seen := make(map[ID]bool)
	var last ID
	for i := 0; i < 20000; i++ {
		id := NewID()
		if len(id) != 12 || seen[id] {
			t.Fatalf("bad or duplicate id %q", id)
		}
		if id < last && id.Time().Sub(last.Time()) < -time.Millisecond {
			t.Fatalf("id %s (%v) before %s (%v)", id, id.Time(), last, last.Time())
		}
		if _, err := ParseID(string(id)); err != nil {
			t.Fatal(err)
		}
		seen[id] = true
		last = id
	}
	if d := time.Since(last.Time()); d < 0 || d > time.Minute {
		t.Fatalf("id time %v is not now", last.Time())
	}
}

func TestIDsSortByTime(t *testing.T) {
	a := NewID()
	time.Sleep(2 * time.Millisecond)
	b := NewID()
	if !(a < b) {
		t.Fatalf("%s !< %s", a, b)
	}
}

func TestParseID(t *testing.T) {
	id := NewID()
	up, err := ParseID(strings.ToUpper(string(id)))
	if err != nil || up != id {
		t.Fatalf("ParseID(upper) = %q, %v", up, err)
	}
	for _, bad := range []string{"", "abc", "0123456789ab0", "0123456789aw", "0123456789a-", "0123456789a ", "0123456789aé"} {
		if _, err := ParseID(bad); !errors.Is(err, ErrBadID) {
			t.Errorf("ParseID(%q) = %v", bad, err)
		}
	}
}

func FuzzParseID(f *testing.F) {
	f.Add("0123456789ab")
	f.Add(string(NewID()))
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		if !strings.EqualFold(string(id), s) || len(id) != 12 {
			t.Fatalf("ParseID(%q) = %q", s, id)
		}
	})
}
