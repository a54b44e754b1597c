package store

import (
	"encoding/binary"
	"strings"
	"time"
)

// Bucket names. They are also created by migrations/0001_initial.go,
// which keeps its own frozen copy.
var (
	bktMeta    = []byte("meta")
	bktMsg     = []byte("msg")
	bktBody    = []byte("body")
	bktDue     = []byte("due")
	bktFlush   = []byte("flush")
	bktHold    = []byte("hold")
	bktActive  = []byte("active")
	bktDest    = []byte("dest")
	bktCorrupt = []byte("corrupt")
	bktSpool   = []byte("spool") // schema 2: IDs of bodies being written (Spool)
)

// Keys in bucket meta. Counters are 8-byte big-endian signed integers.
var (
	metaPolicy   = []byte("policy")
	metaIncoming = []byte("n.incoming")
	metaActive   = []byte("n.active")
	metaDeferred = []byte("n.deferred")
	metaHold     = []byte("n.hold")
	metaCorrupt  = []byte("n.corrupt")
	metaBytes    = []byte("n.bytes")
)

// stateCounter maps a state to its meta counter key.
func stateCounter(s State) []byte {
	switch s {
	case StateIncoming:
		return metaIncoming
	case StateActive:
		return metaActive
	case StateDeferred:
		return metaDeferred
	case StateHold:
		return metaHold
	}
	return nil
}

// msgKey is the key in buckets msg, body, hold and active: the ID bytes.
func msgKey(id ID) []byte { return []byte(id) }

// bodyKey is the key of chunk seq of a body in bucket body: the ID bytes
// ‖ big-endian seq, so a body's chunks are adjacent and in order.
// Salvage (salvage.go) recognises body chunks by this layout.
func bodyKey(id ID, seq uint32) []byte {
	k := make([]byte, idLen+4)
	copy(k, id)
	binary.BigEndian.PutUint32(k[idLen:], seq)
	return k
}

// timeKey encodes t as big-endian Unix nanoseconds (times before 1970
// are clamped to 0), so byte order is time order.
func timeKey(t time.Time) []byte {
	var b [8]byte
	n := t.UnixNano()
	if t.IsZero() || n < 0 {
		n = 0
	}
	binary.BigEndian.PutUint64(b[:], uint64(n))
	return b[:]
}

// dueKey is the key in bucket due: timeKey(t) ‖ id.
func dueKey(t time.Time, id ID) []byte {
	return append(timeKey(t), id...)
}

// parseDueKey splits a due key; ok is false for a malformed key.
func parseDueKey(k []byte) (time.Time, ID, bool) {
	if len(k) != 8+idLen {
		return time.Time{}, "", false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k))), ID(k[8:]), true
}

// reverseDomain writes the labels of a domain in reverse order
// ("sub.customer.tld" -> "tld.customer.sub") so that a domain and its
// sub-domains are adjacent in key order. Address literals ("[192.0.2.1]")
// have no labels and stay as they are.
func reverseDomain(d string) string {
	if d == "" || d[0] == '[' {
		return d
	}
	labels := strings.Split(d, ".")
	for i, j := 0, len(labels)-1; i < j; i, j = i+1, j-1 {
		labels[i], labels[j] = labels[j], labels[i]
	}
	return strings.Join(labels, ".")
}

// flushKey is the key in bucket flush: reversed domain ‖ 0x00 ‖ id.
func flushKey(domain string, id ID) []byte {
	r := reverseDomain(domain)
	k := make([]byte, 0, len(r)+1+idLen)
	k = append(k, r...)
	k = append(k, 0)
	return append(k, id...)
}

// flushPrefixes returns the key prefixes that select a destination: the
// exact domain ("tld.customer\x00") and, for a subtree, its sub-domains
// ("tld.customer."). The separator after the last label keeps
// "xcustomer.tld" and "customerx.tld" out of "customer.tld"'s subtree.
func flushPrefixes(domain string, subtree bool) [][]byte {
	r := reverseDomain(domain)
	p := [][]byte{append([]byte(r), 0)}
	if subtree && r != "" && r[0] != '[' {
		p = append(p, append([]byte(r), '.'))
	}
	return p
}

// parseFlushKey splits a flush key into domain (not reversed back) and ID.
func parseFlushKey(k []byte) (rdomain string, id ID, ok bool) {
	if len(k) < idLen+2 || k[len(k)-idLen-1] != 0 {
		return "", "", false
	}
	return string(k[:len(k)-idLen-1]), ID(k[len(k)-idLen:]), true
}

// corruptKeys are the keys under which a quarantined message's record
// and body are kept in bucket corrupt.
func corruptKeys(id ID) (rec, body []byte) {
	return []byte(string(id) + "/msg"), []byte(string(id) + "/body")
}

func putInt(v int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return b[:]
}

func getInt(b []byte) int64 {
	if len(b) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}
