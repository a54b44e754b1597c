package store

import (
	"bytes"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ageScanLimit bounds how many records Ages walks to find the oldest
// incoming and deferred messages behind older held or active ones.
const ageScanLimit = 100_000

// Ages is how old the oldest message is, per state and per flush
// destination: the figures an operator alerts on (postfix_exporter's
// message age). IDs sort by arrival time, so each oldest message is the
// first key of an ordered range.
type Ages struct {
	// Oldest is the arrival time of the oldest message in each state that
	// has one. The oldest incoming and deferred messages are looked for
	// among the first ageScanLimit messages of the queue; past that the
	// figure is a lower bound (OldestPartial).
	Oldest map[State]time.Time
	// OldestPartial is set when the scan for incoming and deferred stopped
	// at its limit.
	OldestPartial bool
	// Destinations is the oldest message per destination of the flush
	// index (the destinations ETRN can reach), oldest first, at most the
	// limit passed to Ages.
	Destinations []DestinationAge
}

// DestinationAge is the arrival time of a flush destination's oldest
// message.
type DestinationAge struct {
	Destination string
	Oldest      time.Time
}

// Ages reads the oldest message's arrival per state, and per flush
// destination (at most limit destinations, the ones with the oldest
// mail). It takes one read transaction and decodes few records: hold and
// active have their own buckets, and the flush index is visited one seek
// per destination.
func (s *Store) Ages(limit int) (Ages, error) {
	a := Ages{Oldest: map[State]time.Time{}}
	err := s.view(func(tx *bolt.Tx) error {
		for st, b := range map[State][]byte{StateHold: bktHold, StateActive: bktActive} {
			if k, _ := tx.Bucket(b).Cursor().First(); k != nil {
				a.Oldest[st] = ID(k).Time()
			}
		}
		a.OldestPartial = oldestWaiting(tx, a.Oldest)
		a.Destinations = destinationAges(tx, limit)
		return nil
	})
	return a, err
}

// oldestWaiting walks the queue in arrival order, skipping held and
// active messages, until it has met an incoming and a deferred one. It
// reports whether it stopped at ageScanLimit instead.
func oldestWaiting(tx *bolt.Tx, out map[State]time.Time) bool {
	hold, active := tx.Bucket(bktHold), tx.Bucket(bktActive)
	c := tx.Bucket(bktMsg).Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if n++; n > ageScanLimit {
			return true
		}
		if hold.Get(k) != nil || active.Get(k) != nil {
			continue
		}
		m, err := decodeMessage(ID(k), v)
		if err != nil {
			continue
		}
		if _, seen := out[m.State]; !seen {
			out[m.State] = m.ID.Time()
		}
		_, in := out[StateIncoming]
		_, def := out[StateDeferred]
		if in && def {
			return false
		}
	}
	return false
}

// destinationAges visits each destination of the flush index once: the
// first key after a destination's prefix is its oldest message, and a
// seek past the prefix reaches the next destination.
func destinationAges(tx *bolt.Tx, limit int) []DestinationAge {
	if limit <= 0 {
		return nil
	}
	var out []DestinationAge
	c := tx.Bucket(bktFlush).Cursor()
	for k, _ := c.First(); k != nil; {
		rdomain, id, ok := parseFlushKey(k)
		if !ok {
			k, _ = c.Next()
			continue
		}
		out = append(out, DestinationAge{Destination: reverseDomain(rdomain), Oldest: id.Time()})
		// The separator 0x00 follows the domain: seek to domain ‖ 0x01.
		k, _ = c.Seek(append([]byte(rdomain), 1))
	}
	slices.SortFunc(out, func(a, b DestinationAge) int {
		if c := a.Oldest.Compare(b.Oldest); c != 0 {
			return c
		}
		return bytes.Compare([]byte(a.Destination), []byte(b.Destination))
	})
	return out[:min(limit, len(out))]
}
