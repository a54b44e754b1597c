package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's on-disk meta page (go.etcd.io/bbolt internal/common/meta.go):
// a 16-byte page header, then magic, version, page size, flags (uint32
// each), the root bucket (root pgid, sequence), the freelist pgid, the
// high-water pgid, the txid and an FNV-64a checksum of the fields before
// it, all in the machine's byte order (little-endian on every platform
// Go's bbolt supports in practice).
const (
	boltMagic        = 0xED0CDAED
	boltPageHeader   = 16
	boltMetaChecked  = 56 // bytes of meta covered by the checksum
	boltMetaSize     = boltMetaChecked + 8
	boltPgidOffset   = 40
	boltTxidOffset   = 48
	boltPageSizeOffs = 8
)

// checkFileSize refuses a queue file shorter than its newest valid meta
// page says it is. bbolt trusts that figure: opened with NoFreelistSync it
// walks every page up to it in a goroutine of its own, and a truncated
// file then crashes the process with an assertion no caller can recover.
// A missing or empty file is fine (Open creates it); a file whose meta
// pages are both unreadable is left to bbolt, which reports ErrInvalid.
func checkFileSize(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return err
	}
	var pgid, txid uint64
	var psize uint32
	found := false
	first := make([]byte, boltPageHeader+boltMetaSize)
	if _, err := io.ReadFull(f, first); err != nil {
		return nil // too short to hold a meta page: bbolt says so itself
	}
	m0, ok0 := parseMeta(first[boltPageHeader:])
	size := uint32(4096)
	if ok0 {
		size = m0.psize
	}
	second := make([]byte, boltPageHeader+boltMetaSize)
	_, err1 := f.ReadAt(second, int64(size))
	m1, ok1 := parseMeta(second[boltPageHeader:])
	for _, m := range []struct {
		meta
		ok bool
	}{{m0, ok0}, {m1, ok1 && err1 == nil}} {
		if m.ok && (!found || m.txid > txid) {
			pgid, txid, psize, found = m.pgid, m.txid, m.psize, true
		}
	}
	if !found {
		return nil
	}
	if want := int64(pgid) * int64(psize); fi.Size() < want {
		return fmt.Errorf("%w: %s is %d bytes, its meta page says %d (truncated?)",
			ErrDamaged, path, fi.Size(), want)
	}
	return nil
}

type meta struct {
	psize      uint32
	pgid, txid uint64
}

func parseMeta(b []byte) (meta, bool) {
	le := binary.LittleEndian
	if len(b) < boltMetaSize || le.Uint32(b) != boltMagic {
		return meta{}, false
	}
	h := fnv.New64a()
	h.Write(b[:boltMetaChecked])
	if h.Sum64() != le.Uint64(b[boltMetaChecked:]) {
		return meta{}, false
	}
	m := meta{psize: le.Uint32(b[boltPageSizeOffs:]), pgid: le.Uint64(b[boltPgidOffset:]), txid: le.Uint64(b[boltTxidOffset:])}
	return m, m.psize >= 512
}
