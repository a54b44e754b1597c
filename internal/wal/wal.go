package wal

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Record is one entry of the log.
type Record struct {
	// Seq numbers the records 1, 2, ... in the order they were written.
	Seq uint64
	// Data is the caller's bytes, as appended.
	Data []byte
}

var (
	// ErrFull is returned by Append when the record fits neither in the
	// rest of the current half nor in the other half, which still holds
	// records not released. The caller may store the data another way.
	ErrFull = errors.New("wal: journal full") // no room until records are released
	// ErrTooBig is returned by Append for a record (header and data)
	// larger than half the log: it could never be written.
	ErrTooBig = errors.New("wal: record larger than half the journal")
	// ErrGap is returned, in a *GapError, by Open when the valid
	// records after the applied Seq do not follow it without a hole: a
	// record that was acknowledged is missing (damage, or a caller that
	// released records it had not applied).
	ErrGap = errors.New("wal: gap in the journal")
	// ErrSize is returned by Open for a file whose size no Log makes
	// (not a multiple of 8 KiB up to 4 GiB): truncated or not a log.
	ErrSize = errors.New("wal: open: bad size")
	// ErrClosed is returned by Append after Close.
	ErrClosed = errors.New("wal: journal closed")
)

const (
	// DefaultSize is the size of a log made for the queue: two halves of
	// 8 MiB, each room for 32 of the largest journaled messages
	// (store.BodyChunk, 256 KiB).
	DefaultSize = 16 << 20
	// unit is what a size is rounded up to: two halves of whole pages.
	unit = 8 << 10
	// maxHalf keeps a record's length within its uint32.
	maxHalf = 1 << 31
	// hdrLen is the size of a record's header.
	hdrLen = 20
	magic  = 'w'
	format = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Log is an open journal. Its methods are safe for concurrent use.
type Log struct {
	f    *os.File
	fd   int
	half int64
	// syncData is unix.Fdatasync; tests put a failure in its place.
	syncData func(fd int) error

	// OnCommit, when set before the first Append, is called after each
	// batch is on disk with the time the batch's writes and fdatasyncs
	// took and its number of records (metrics). It runs before the
	// batch's callers are answered: it must be quick.
	OnCommit func(d time.Duration, records int)

	mu sync.Mutex
	// running: a leader is writing a batch; Appends that arrive queue in
	// pending, and the first of them leads the next batch.
	running bool
	pending []*call
	idle    *sync.Cond // signalled when running turns false
	closed  bool
	// released is the highest Seq released (Open's applied at first).
	released uint64

	// The writer's state, used only by the leader.
	cur  int       // the half being written
	pos  int64     // where the next record goes in it
	next uint64    // the next Seq
	top  [2]uint64 // the highest Seq in each half's chain, 0 for none
	sum  uint32    // the CRC of the last record in half cur, 0 for none
	err  error     // a failed write or sync: the log is unusable
	buf  []byte

	syncs atomic.Uint64 // fdatasyncs done (tests and benchmarks)
}

type call struct {
	data []byte
	done chan result
}

type result struct {
	seq  uint64
	err  error
	lead bool // the call now leads the next batch
}

// Open opens or creates the log file at path, of size bytes (two halves of
// size/2). A new file is written with zeros and fsync'd (file and its
// directory) so that later appends overwrite allocated blocks: an
// fdatasync then flushes data only. It returns, in order, the records with
// Seq > applied that form an unbroken chain applied+1, applied+2, ...
// (a torn or stale record ends the chain). It fails only when the file
// cannot be read, created or locked (another Log has it), when its size
// is not a multiple of 8 KiB up to 4 GiB, or with ErrGap. size is
// rounded up to a multiple of 8 KiB (at most 4 GiB); 0 means
// DefaultSize. A file of another size is read
// with its own halves and then rewritten at the new size, holding the
// returned records, when they fit in a half of it (else it keeps its
// size until an Open at which they do).
func Open(path string, size int64, applied uint64) (*Log, []Record, error) {
	if size <= 0 {
		size = DefaultSize
	}
	size = min((size+unit-1)/unit*unit, 2*maxHalf)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = create(path, size, nil)
	}
	if err == nil {
		err = lock(f)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("wal: open: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("wal: open: %w", err)
	}
	if fi.Size() == 0 {
		// Never a file this package made (create renames a whole one
		// into place): nothing in it to keep.
		f.Close()
		if f, err = create(path, size, nil); err == nil {
			err = lock(f)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("wal: open: %w", err)
		}
		fi = nil
	} else if fi.Size()%unit != 0 || fi.Size() > 2*maxHalf {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s: size %d is not a multiple of %d up to %d", ErrSize, path, fi.Size(), unit, 2*maxHalf)
	}
	have := size
	if fi != nil {
		have = fi.Size()
	}
	l, recs, err := load(f, have, applied)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if have != size && recordsLen(recs) <= size/2 {
		if err := l.resize(path, size, recs); err != nil {
			f.Close()
			return nil, nil, err
		}
	}
	return l, recs, nil
}

// load reads the log from f, of the given size, and sets the writer up
// after the last record.
func load(f *os.File, size int64, applied uint64) (*Log, []Record, error) {
	l := &Log{f: f, fd: int(f.Fd()), half: size / 2, released: applied, syncData: unix.Fdatasync}
	l.idle = sync.NewCond(&l.mu)
	var recs []Record
	var end [2]int64
	var sum [2]uint32
	for h := range 2 {
		// Read through a small buffer, up to the end of the chain only:
		// a whole half in memory would stay in the daemon's heap.
		r := bufio.NewReaderSize(io.NewSectionReader(f, int64(h)*l.half, l.half), 64<<10)
		var rs []Record
		var err error
		rs, l.top[h], end[h], sum[h], err = chain(r, l.half, applied)
		if err != nil {
			return nil, nil, fmt.Errorf("wal: read: %w", err)
		}
		recs = append(recs, rs...)
	}
	slices.SortFunc(recs, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
	for i, r := range recs {
		if want := applied + 1 + uint64(i); r.Seq != want {
			return nil, nil, &GapError{Missing: want, Applied: applied, Next: r.Seq, Before: recs[:i]}
		}
	}
	l.cur = 0
	if l.top[1] > l.top[0] {
		l.cur = 1
	}
	l.pos, l.sum = end[l.cur], sum[l.cur]
	l.next = max(applied, l.top[l.cur]) + 1
	if l.top[l.cur] != l.next-1 {
		// Everything in the log is applied, the caller says, up to a Seq
		// past its last record: both halves are released, and a chain
		// must start at a half's first byte. (Its stale records have
		// Seqs below the new ones.)
		l.cur = 1 - l.cur
		l.pos, l.top[l.cur], l.sum = 0, 0, 0
	}
	return l, recs, nil
}

// GapError is Open's ErrGap with its Seqs: record Missing is not in the
// log, Next is the lowest valid record after it. A reader that does not
// know the applied Seq (the caller's record of it is lost) may Open again
// with Next-1 to read the records from there.
type GapError struct {
	Missing, Applied, Next uint64
	// Before holds the records read before the hole (Applied+1 up to
	// Missing-1), for a reader that salvages what it can.
	Before []Record
}

func (e *GapError) Error() string {
	return fmt.Sprintf("%v: record %d is missing (applied %d, next found %d)", ErrGap, e.Missing, e.Applied, e.Next)
}

func (e *GapError) Unwrap() error { return ErrGap }

// lock takes an exclusive flock on f, or fails at once: two Logs
// writing one file would overwrite each other's records. (The queue's
// journal is also under bbolt's lock on the queue file.)
func lock(f *os.File) error {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if f.Close(); err == unix.EWOULDBLOCK {
			return fmt.Errorf("%s is in use by another process or Log", f.Name())
		}
		return err
	}
	return nil
}

// chain reads the valid records at the start of a half of size bytes
// from r and
// returns those with Seq > applied (their data copied), the Seq of the
// last valid record, the offset of the first byte after it and its CRC.
// Only a read error other than the half's end is an error.
func chain(r io.Reader, size int64, applied uint64) (rs []Record, top uint64, off int64, prev uint32, err error) {
	var hdr [hdrLen]byte
	var data []byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return rs, top, off, prev, eof(err)
		}
		if hdr[0] != magic || hdr[1] != format || hdr[2] != 0 || hdr[3] != 0 {
			return rs, top, off, prev, nil
		}
		n := int64(binary.LittleEndian.Uint32(hdr[4:]))
		seq := binary.LittleEndian.Uint64(hdr[8:])
		if seq == 0 || top > 0 && seq != top+1 || n > size-off-hdrLen {
			return rs, top, off, prev, nil
		}
		if int64(cap(data)) < n {
			data = make([]byte, n)
		}
		data = data[:n]
		if _, err := io.ReadFull(r, data); err != nil {
			return rs, top, off, prev, eof(err) // runs past the half's end
		}
		sum := checksum(prev, hdr[:16], data)
		if sum != binary.LittleEndian.Uint32(hdr[16:]) {
			return rs, top, off, prev, nil
		}
		if seq > applied {
			rs = append(rs, Record{Seq: seq, Data: append([]byte(nil), data...)})
		}
		top, off, prev = seq, off+hdrLen+n, sum
	}
}

// eof is err, or nil at the end of the half (a chain that fills it).
func eof(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return nil
	}
	return err
}

// checksum is a record's CRC: CRC-32C continued from prev, the CRC of
// the record before it in its half (0 for the first), over the header's
// first 16 bytes and the data. Chained so, a record is valid only after
// the very record it was written after: neither a record left by a torn
// batch past the chain's end, nor one that a message's data happens to
// hold, can continue a chain written later at that place.
func checksum(prev uint32, hdr, data []byte) uint32 {
	return crc32.Update(crc32.Update(prev, castagnoli, hdr), castagnoli, data)
}

// encode appends data as a record of Seq seq after a record of CRC prev
// to b, and returns its CRC.
func encode(b []byte, seq uint64, data []byte, prev uint32) ([]byte, uint32) {
	var h [hdrLen]byte
	h[0], h[1] = magic, format
	binary.LittleEndian.PutUint32(h[4:], uint32(len(data)))
	binary.LittleEndian.PutUint64(h[8:], seq)
	sum := checksum(prev, h[:16], data)
	binary.LittleEndian.PutUint32(h[16:], sum)
	return append(append(b, h[:]...), data...), sum
}

func recordsLen(recs []Record) int64 {
	var n int64
	for _, r := range recs {
		n += hdrLen + int64(len(r.Data))
	}
	return n
}
