package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// A page walk of the queue file that does not go through bbolt: every read
// is bounds-checked against the file, so a damaged page is reported (its
// number, the bucket it belongs to, what is wrong) instead of crashing
// the process, as bbolt's own walk can (an assertion, or a memory fault
// on a wild page number, in a goroutine of its own). `holdfast db check`
// runs it before bbolt's check; the store runs it to name the page and
// bucket of damage that bbolt panicked on; salvage uses it to read what
// bbolt cannot.
//
// bbolt's on-disk pages (go.etcd.io/bbolt internal/common/page.go): a
// 16-byte header (id uint64, flags uint16, count uint16, overflow uint32)
// then count elements of 16 bytes. A branch element is pos, ksize (uint32)
// and the child's pgid; a leaf element is flags, pos, ksize, vsize
// (uint32), the key at the element's address + pos and the value after
// it. A leaf value with flag 1 is a bucket: its root pgid and sequence,
// and for an inline bucket (root 0) a page of its own after them.
const (
	pgBranch     = 0x01
	pgLeaf       = 0x02
	pgMeta       = 0x04
	pgFreelist   = 0x10
	pgElemSize   = 16
	leafIsBucket = 0x01
	bucketHeader = 16
	boltRootOffs = 16
	boltFreeOffs = 32
)

// PageProblem is one damaged page found by the walk.
type PageProblem struct {
	Page   uint64
	Bucket string // "root" for the page that lists the buckets
	What   string
}

func (p PageProblem) String() string {
	return fmt.Sprintf("page %d (bucket %s): %s", p.Page, p.Bucket, p.What)
}

// pageWalk reads one snapshot of the file: the meta page with the highest
// valid transaction ID.
type pageWalk struct {
	f        io.ReaderAt
	size     int64
	psize    uint64
	hwm      uint64 // first page ID past the tree
	root     uint64
	freelist uint64
	seen     map[uint64]string // page -> bucket, for cycles and locate
	problems []PageProblem
	limit    int
	// leaf, when set, is called with each key/value of a bucket's leaf
	// pages (salvage reads records through it).
	leaf func(bucket string, k, v []byte)
}

// openWalk reads the meta pages of f.
func openWalk(f io.ReaderAt, size int64, limit int) (*pageWalk, error) {
	w := &pageWalk{f: f, size: size, seen: make(map[uint64]string), limit: limit}
	var best []byte
	var bestTx uint64
	for _, off := range []int64{0, -1} {
		if off < 0 {
			if best == nil {
				off = 4096
			} else {
				off = int64(binary.LittleEndian.Uint32(best[boltPageSizeOffs:]))
			}
		}
		b := make([]byte, boltPageHeader+boltMetaSize)
		if _, err := f.ReadAt(b, off); err != nil {
			continue
		}
		m, ok := parseMeta(b[boltPageHeader:])
		if ok && (best == nil || m.txid > bestTx) {
			best, bestTx = b[boltPageHeader:], m.txid
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: neither meta page is valid", ErrDamaged)
	}
	le := binary.LittleEndian
	w.psize = uint64(le.Uint32(best[boltPageSizeOffs:]))
	w.root = le.Uint64(best[boltRootOffs:])
	w.freelist = le.Uint64(best[boltFreeOffs:])
	w.hwm = le.Uint64(best[boltPgidOffset:])
	return w, nil
}

func (w *pageWalk) fail(id uint64, bucket, format string, a ...any) {
	if len(w.problems) < w.limit {
		w.problems = append(w.problems, PageProblem{Page: id, Bucket: bucket, What: fmt.Sprintf(format, a...)})
	}
}

func (w *pageWalk) full() bool { return len(w.problems) >= w.limit }

// page reads page id with its overflow, checking its header; nil when it
// is damaged (the problem is recorded).
func (w *pageWalk) page(id uint64, bucket string) []byte {
	if id < 2 || id >= w.hwm {
		w.fail(id, bucket, "page number outside the file's %d pages", w.hwm)
		return nil
	}
	if prev, ok := w.seen[id]; ok {
		w.fail(id, bucket, "page reached twice (also from bucket %s)", prev)
		return nil
	}
	w.seen[id] = bucket
	hdr := make([]byte, boltPageHeader)
	if _, err := w.f.ReadAt(hdr, int64(id*w.psize)); err != nil {
		w.fail(id, bucket, "cannot read: %v", err)
		return nil
	}
	le := binary.LittleEndian
	if got := le.Uint64(hdr); got != id {
		w.fail(id, bucket, "page says it is page %d", got)
		return nil
	}
	over := uint64(le.Uint32(hdr[12:]))
	if id+over >= w.hwm || int64((id+over+1)*w.psize) > w.size {
		w.fail(id, bucket, "overflow of %d pages runs past the end of the file", over)
		return nil
	}
	for i := uint64(1); i <= over; i++ {
		w.seen[id+i] = bucket
	}
	p := make([]byte, (over+1)*w.psize)
	if _, err := w.f.ReadAt(p, int64(id*w.psize)); err != nil {
		w.fail(id, bucket, "cannot read: %v", err)
		return nil
	}
	return p
}

// readPage reads page id with its overflow, checking only that it is
// within the file and says it is page id (salvage re-reads pages it has
// seen); nil otherwise.
func (w *pageWalk) readPage(id uint64) []byte {
	if id < 2 || id >= w.hwm {
		return nil
	}
	hdr := make([]byte, boltPageHeader)
	if _, err := w.f.ReadAt(hdr, int64(id*w.psize)); err != nil || binary.LittleEndian.Uint64(hdr) != id {
		return nil
	}
	over := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if id+over >= w.hwm || int64((id+over+1)*w.psize) > w.size {
		return nil
	}
	p := make([]byte, (over+1)*w.psize)
	if _, err := w.f.ReadAt(p, int64(id*w.psize)); err != nil {
		return nil
	}
	return p
}

// elems returns the elements of a branch or leaf page, or false with the
// problem recorded when an element points outside the page or the keys
// are out of order.
func (w *pageWalk) elems(id uint64, bucket string, p []byte) (flags uint16, keys, vals [][]byte, kids []uint64, lflags []uint32, ok bool) {
	le := binary.LittleEndian
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	if flags != pgBranch && flags != pgLeaf {
		w.fail(id, bucket, "not a branch or leaf page (flags %#x)", flags)
		return
	}
	if (count == 0 && flags == pgBranch) || boltPageHeader+count*pgElemSize > len(p) {
		w.fail(id, bucket, "%d elements do not fit the page", count)
		return
	}
	for i := 0; i < count; i++ {
		e := boltPageHeader + i*pgElemSize
		var pos, ks, vs uint64
		if flags == pgBranch {
			pos, ks = uint64(le.Uint32(p[e:])), uint64(le.Uint32(p[e+4:]))
			kids = append(kids, le.Uint64(p[e+8:]))
		} else {
			lflags = append(lflags, le.Uint32(p[e:]))
			pos, ks, vs = uint64(le.Uint32(p[e+4:])), uint64(le.Uint32(p[e+8:])), uint64(le.Uint32(p[e+12:]))
		}
		start := uint64(e) + pos
		if ks == 0 || start+ks+vs > uint64(len(p)) {
			w.fail(id, bucket, "element %d lies outside the page", i)
			return
		}
		k := p[start : start+ks]
		if len(keys) > 0 && bytes.Compare(keys[len(keys)-1], k) >= 0 {
			w.fail(id, bucket, "keys out of order at element %d", i)
			return
		}
		keys = append(keys, k)
		vals = append(vals, p[start+ks:start+ks+vs])
	}
	return flags, keys, vals, kids, lflags, true
}

// bucket walks the tree of one bucket from its root page (or its inline
// page). Leaves holding sub-buckets are followed.
func (w *pageWalk) bucket(name string, root uint64, inline []byte) {
	if w.full() {
		return
	}
	var p []byte
	id := root
	if root == 0 {
		if len(inline) < boltPageHeader {
			w.fail(0, name, "inline bucket too short")
			return
		}
		p = inline
	} else if p = w.page(root, name); p == nil {
		return
	}
	w.node(name, id, p)
}

func (w *pageWalk) node(bucket string, id uint64, p []byte) {
	flags, keys, vals, kids, lflags, ok := w.elems(id, bucket, p)
	if !ok {
		return
	}
	if flags == pgBranch {
		for _, kid := range kids {
			if w.full() {
				return
			}
			if c := w.page(kid, bucket); c != nil {
				w.node(bucket, kid, c)
			}
		}
		return
	}
	for i, k := range keys {
		if lflags[i]&leafIsBucket == 0 {
			if w.leaf != nil {
				w.leaf(bucket, k, vals[i])
			}
			continue
		}
		v := vals[i]
		if len(v) < bucketHeader {
			w.fail(id, bucket, "bucket header of %q too short", k)
			continue
		}
		sub := string(k)
		if bucket != "root" {
			sub = bucket + "/" + sub
		}
		w.bucket(sub, binary.LittleEndian.Uint64(v), v[bucketHeader:])
	}
}

// walk checks the whole tree and the freelist page.
func (w *pageWalk) walk() {
	if w.freelist != 0 && w.freelist != ^uint64(0) {
		if p := w.page(w.freelist, "freelist"); p != nil && binary.LittleEndian.Uint16(p[8:]) != pgFreelist {
			w.fail(w.freelist, "freelist", "not a freelist page (flags %#x)", binary.LittleEndian.Uint16(p[8:]))
		}
	}
	w.bucket("root", w.root, nil)
}

// CheckPages walks every page of the queue file at path without bbolt and
// returns the damaged ones (at most limit). The file must not be open by
// a writer. An error means the file could not be read at all.
func CheckPages(path string, limit int) ([]PageProblem, error) {
	w, err := walkFile(path, limit)
	if err != nil {
		return nil, err
	}
	return w.problems, nil
}

// walkFile walks the pages of the queue file at path, noting at most
// limit problems.
func walkFile(path string, limit int) (*pageWalk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	w, err := openWalk(f, fi.Size(), limit)
	if err != nil {
		return nil, err
	}
	w.walk()
	return w, nil
}

// locate fills in the page and bucket of a damage error from a walk of
// the file: the bucket of e.Page when the walk reaches it, or else the
// first damaged page the walk finds. It reads the file as it is on disk,
// which a concurrent commit may be changing: the answer is a diagnosis,
// not a proof. Done once per store; the result is kept.
func (s *Store) locate(e *DamageError) {
	s.walkOnce.Do(func() {
		w, err := walkFile(s.path, 10)
		if err != nil {
			return
		}
		s.walkSeen, s.walkProblems = w.seen, w.problems
	})
	if e.Page != 0 {
		for _, p := range s.walkProblems {
			if p.Page == e.Page {
				e.Bucket = p.Bucket
				return
			}
		}
		if b, ok := s.walkSeen[e.Page]; ok {
			e.Bucket = b
			return
		}
	}
	if len(s.walkProblems) > 0 {
		p := s.walkProblems[0]
		e.Page, e.Bucket = p.Page, p.Bucket
		e.Cause += "; " + p.What
	}
}

// PageBuckets maps every page reached from the root of the queue file at
// path to its bucket ("root" for the page listing the buckets), for
// diagnosis (and the damage tests, which garble chosen pages).
func PageBuckets(path string) (map[uint64]string, error) {
	w, err := walkFile(path, 1)
	if err != nil {
		return nil, err
	}
	return w.seen, nil
}
