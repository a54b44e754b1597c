package store

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// ID is a queue ID: 12 characters of base32 (RFC 4648 "extended hex"
// alphabet, lower case, so that byte order is numeric order) over 60
// bits: 42 bits of Unix milliseconds (good until the year 2109) and 18
// random bits. IDs sort by arrival time, are unique within a process
// (NewID never repeats one), and are not guessable from a neighbour.
type ID string

const (
	idLen      = 12
	idAlphabet = "0123456789abcdefghijklmnopqrstuv"
	idRandBits = 18
	idTimeBits = 60 - idRandBits
)

var idDecode = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(idAlphabet); i++ {
		t[idAlphabet[i]] = byte(i)
		if c := idAlphabet[i]; c >= 'a' {
			t[c-'a'+'A'] = byte(i)
		}
	}
	return t
}()

var idGen struct {
	sync.Mutex
	ms   uint64
	used map[uint32]struct{}
}

// NewID returns a fresh ID. Within one millisecond it draws random bits
// until it finds unused ones; if the clock steps back it keeps using the
// last millisecond, so IDs from one process never go back in time.
func NewID() ID {
	ms := uint64(time.Now().UnixMilli()) & (1<<idTimeBits - 1)
	idGen.Lock()
	defer idGen.Unlock()
	if ms > idGen.ms || idGen.used == nil {
		idGen.ms = ms
		idGen.used = make(map[uint32]struct{})
	}
	if len(idGen.used) >= 1<<idRandBits/2 {
		idGen.ms++ // more than 131072 IDs in a millisecond: borrow the next one
		idGen.used = make(map[uint32]struct{})
	}
	var r uint32
	for {
		var b [4]byte
		rand.Read(b[:])
		r = binary.BigEndian.Uint32(b[:]) & (1<<idRandBits - 1)
		if _, dup := idGen.used[r]; !dup {
			break
		}
	}
	idGen.used[r] = struct{}{}
	return encodeID(idGen.ms<<idRandBits | uint64(r))
}

func encodeID(v uint64) ID {
	var b [idLen]byte
	for i := idLen - 1; i >= 0; i-- {
		b[i] = idAlphabet[v&31]
		v >>= 5
	}
	return ID(b[:])
}

// ParseID accepts exactly 12 characters of the ID alphabet (either case)
// and returns the ID in its canonical lower-case form.
func ParseID(s string) (ID, error) {
	if len(s) != idLen {
		return "", fmt.Errorf("%w: %q", ErrBadID, s)
	}
	var v uint64
	for i := 0; i < idLen; i++ {
		d := idDecode[s[i]]
		if d == 0xff {
			return "", fmt.Errorf("%w: %q", ErrBadID, s)
		}
		v = v<<5 | uint64(d)
	}
	return encodeID(v), nil
}

// Time returns the arrival millisecond encoded in the ID (zero time for
// a malformed ID).
func (id ID) Time() time.Time {
	p, err := ParseID(string(id))
	if err != nil {
		return time.Time{}
	}
	var v uint64
	for i := 0; i < idLen; i++ {
		v = v<<5 | uint64(idDecode[p[i]])
	}
	return time.UnixMilli(int64(v >> idRandBits))
}
