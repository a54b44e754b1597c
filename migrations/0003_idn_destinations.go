package migrations

import (
	"bytes"
	"strings"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/net/idna"
)

// Frozen with schema 3: destinations are keyed by their IDNA A-label form.
// Up to schema 2 a destination was its domain lower-cased, so mail for
// u@café.test was indexed under "café.test" and `ETRN xn--caf-dma.test`
// found nothing. This step rewrites the keys that hold a non-ASCII
// destination:
//
//   - bucket flush: reversed domain ‖ 0x00 ‖ id -> empty. "test.café" ‖ 0
//     ‖ id becomes "test.xn--caf-dma" ‖ 0 ‖ id.
//   - bucket dest: "transport:nexthop" -> state, where nexthop is host,
//     [host], host:port or [host]:port. "smtp:café.test" becomes
//     "smtp:xn--caf-dma.test"; when the A-label key exists already, that
//     (newer) entry is kept.
//
// A name the conversion rejects is left as it is: the store still derives
// the same lower-cased key for it. Records (bucket msg) keep the addresses
// as the client sent them and need no change.
var (
	idnFlushBucket = []byte("flush")
	idnDestBucket  = []byte("dest")
)

// idnProfile is a frozen copy of the conversion holdfast used when this
// step was written (UTS 46 non-transitional, lookup mapping, no STD3
// rules, DNS length checks), followed by idnHostname.
var idnProfile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.StrictDomainName(false),
	idna.VerifyDNSLength(true),
)

func init() {
	Default.Register(Step{Version: 3, Name: "IDN destinations as A-labels", Apply: idnDestinations})
}

func idnDestinations(tx *bolt.Tx) error {
	if err := idnFlushKeys(tx); err != nil {
		return err
	}
	return idnDestKeys(tx)
}

// idnFlushKeys rewrites the flush index. Keys are collected first: a
// bucket must not be changed while a cursor walks it.
func idnFlushKeys(tx *bolt.Tx) error {
	b := tx.Bucket(idnFlushBucket)
	if b == nil {
		return nil
	}
	type move struct{ old, new []byte }
	var moves []move
	err := b.ForEach(func(k, _ []byte) error {
		i := bytes.IndexByte(k, 0)
		if i <= 0 || idnASCII(k[:i]) {
			return nil
		}
		a, ok := idnToASCII(idnReverse(string(k[:i])))
		if !ok {
			return nil
		}
		nk := append([]byte(idnReverse(a)), k[i:]...)
		moves = append(moves, move{append([]byte(nil), k...), nk})
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range moves {
		if err := b.Delete(m.old); err != nil {
			return err
		}
		if err := b.Put(m.new, nil); err != nil {
			return err
		}
	}
	return nil
}

// idnDestKeys rewrites the dead-destination list.
func idnDestKeys(tx *bolt.Tx) error {
	b := tx.Bucket(idnDestBucket)
	if b == nil {
		return nil
	}
	type move struct{ old, new, val []byte }
	var moves []move
	err := b.ForEach(func(k, v []byte) error {
		if idnASCII(k) {
			return nil
		}
		nk, ok := idnHopKey(string(k))
		if !ok {
			return nil
		}
		moves = append(moves, move{append([]byte(nil), k...), []byte(nk), append([]byte(nil), v...)})
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range moves {
		if err := b.Delete(m.old); err != nil {
			return err
		}
		if b.Get(m.new) != nil {
			continue
		}
		if err := b.Put(m.new, m.val); err != nil {
			return err
		}
	}
	return nil
}

// idnHopKey converts the host of "transport:nexthop".
func idnHopKey(k string) (string, bool) {
	transport, nexthop, ok := strings.Cut(k, ":")
	if !ok {
		return "", false
	}
	lb, rb := "", ""
	host, port := nexthop, ""
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", false
		}
		host, port = host[1:end], host[end+1:]
		lb, rb = "[", "]"
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host, port = host[:i], host[i:]
	}
	a, ok := idnToASCII(host)
	if !ok {
		return "", false
	}
	return transport + ":" + lb + a + rb + port, true
}

// idnToASCII converts a non-ASCII domain to its lower-case A-label form,
// which must be a host name as Postfix's valid_hostname accepts it.
func idnToASCII(d string) (string, bool) {
	a, err := idnProfile.ToASCII(d)
	if err != nil {
		return "", false
	}
	a = strings.ToLower(a)
	return a, idnHostname(a)
}

// idnHostname: letters, digits, '-', '_'; labels of 1-63 characters not
// starting or ending with '-'; at most 255 characters.
func idnHostname(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// idnReverse reverses the order of the labels ("test.café" <->
// "café.test"), as the flush index stores them.
func idnReverse(d string) string {
	l := strings.Split(d, ".")
	for i, j := 0, len(l)-1; i < j; i, j = i+1, j-1 {
		l[i], l[j] = l[j], l[i]
	}
	return strings.Join(l, ".")
}

func idnASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
