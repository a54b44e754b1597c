package follow

import (
	"strings"

	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/store"
)

// MaxTracked bounds the recipients a Tracker notes.
const MaxTracked = 100000

// pageSize is the messages per listing page Track reads.
const pageSize = 500

// Queue is the part of the store a follower reads (*store.Store).
type Queue interface {
	Get(id store.ID) (*store.Message, error)
	List(f store.Filter, after store.ID, limit int) ([]*store.Message, store.ID, error)
}

// Tracker is the pending recipients a flush concerns, with the attempts
// each had before it.
type Tracker struct {
	q       Queue
	dest    string // "" for every destination
	subtree bool
	// rcpts: queue ID -> recipient address -> attempts before the flush.
	rcpts map[store.ID]map[string]int
	count int
}

// Track notes the pending recipients at dest (every destination when
// dest is ""; with subtree also its sub-domains, which costs a full
// scan), at most MaxTracked.
func Track(q Queue, dest string, subtree bool) *Tracker {
	t := &Tracker{q: q, dest: dest, subtree: subtree, rcpts: map[store.ID]map[string]int{}}
	f := store.Filter{Domain: dest}
	if subtree {
		f.Domain = ""
	}
	var after store.ID
	for t.count < MaxTracked {
		page, next, err := q.List(f, after, pageSize)
		if err != nil {
			break
		}
		for _, m := range page {
			t.add(m)
		}
		if next == "" {
			break
		}
		after = next
	}
	return t
}

// TrackID notes the pending recipients of one message.
func TrackID(q Queue, id store.ID) *Tracker {
	t := &Tracker{q: q, rcpts: map[store.ID]map[string]int{}}
	if m, err := q.Get(id); err == nil {
		t.add(m)
	}
	return t
}

func (t *Tracker) covers(a string) bool {
	if t.dest == "" {
		return true
	}
	d := addr.DomainOf(a)
	return d == t.dest || (t.subtree && strings.HasSuffix(d, "."+t.dest))
}

func (t *Tracker) add(m *store.Message) {
	if m.State == store.StateHold {
		return
	}
	for _, r := range m.Recipients {
		if r.State != store.RcptPending || !t.covers(r.Addr) {
			continue
		}
		if t.rcpts[m.ID] == nil {
			t.rcpts[m.ID] = map[string]int{}
		}
		t.rcpts[m.ID][r.Addr] = r.Attempts
		t.count++
	}
}
