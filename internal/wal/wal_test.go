package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// payload is the data of the i-th record of a test, of n bytes.
func payload(i, n int) []byte {
	s := fmt.Sprintf("record %d;", i)
	return bytes.Repeat([]byte(s), n/len(s)+1)[:n]
}

func mustOpen(t testing.TB, path string, size int64, applied uint64) (*Log, []Record) {
	t.Helper()
	l, recs, err := Open(path, size, applied)
	if err != nil {
		t.Fatal(err)
	}
	return l, recs
}

func mustAppend(t testing.TB, l *Log, data []byte) uint64 {
	t.Helper()
	seq, err := l.Append(data)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// wantRecords checks that recs are Seqs from..to with data(seq).
func wantRecords(t testing.TB, recs []Record, from, to uint64, data func(seq uint64) []byte) {
	t.Helper()
	if uint64(len(recs)) != to-from+1 {
		t.Fatalf("replayed %d records, want %d..%d (%d)", len(recs), from, to, to-from+1)
	}
	for i, r := range recs {
		if r.Seq != from+uint64(i) {
			t.Fatalf("record %d: Seq %d, want %d", i, r.Seq, from+uint64(i))
		}
		if !bytes.Equal(r.Data, data(r.Seq)) {
			t.Fatalf("record %d: data %.40q, want %.40q", r.Seq, r.Data, data(r.Seq))
		}
	}
}

func TestCreateAndSize(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ size, want int64 }{{0, DefaultSize}, {1, 8 << 10}, {20 << 10, 24 << 10}, {64 << 10, 64 << 10}} {
		path := filepath.Join(dir, fmt.Sprint(c.size))
		l, recs := mustOpen(t, path, c.size, 0)
		if len(recs) != 0 {
			t.Errorf("size %d: new log replayed %d records", c.size, len(recs))
		}
		l.Close()
		fi, err := os.Stat(path)
		if err != nil || fi.Size() != c.want {
			t.Errorf("size %d: file %v, %v; want %d bytes", c.size, fi.Size(), err, c.want)
		}
		if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
			t.Errorf("size %d: temporary file left: %v", c.size, err)
		}
	}
}

func TestReplayAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	l, _ := mustOpen(t, path, 64<<10, 0)
	data := func(seq uint64) []byte { return payload(int(seq), int(seq)*37%500) }
	for i := uint64(1); i <= 40; i++ {
		if seq := mustAppend(t, l, data(i)); seq != i {
			t.Fatalf("Append %d returned Seq %d", i, seq)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	for _, applied := range []uint64{0, 1, 17, 39, 40} {
		l, recs := mustOpen(t, path, 64<<10, applied)
		wantRecords(t, recs, applied+1, 40, data)
		l.Close()
	}
	// Writing continues after the last record, with the next Seq.
	l, _ = mustOpen(t, path, 64<<10, 10)
	if seq := mustAppend(t, l, data(41)); seq != 41 {
		t.Fatalf("first Append after reopening: Seq %d, want 41", seq)
	}
	l.Close()
	l, recs := mustOpen(t, path, 64<<10, 10)
	wantRecords(t, recs, 11, 41, data)
	l.Close()
	// Applied past the last record (the caller filed records some other
	// way): the next Seq follows applied, in a chain of its own.
	l, recs = mustOpen(t, path, 64<<10, 50)
	if len(recs) != 0 {
		t.Fatalf("applied 50: %d records replayed", len(recs))
	}
	if seq := mustAppend(t, l, data(51)); seq != 51 {
		t.Fatalf("Append after Open with applied 50: Seq %d, want 51", seq)
	}
	l.Close()
	l, recs = mustOpen(t, path, 64<<10, 50)
	l.Close()
	wantRecords(t, recs, 51, 51, data)
	if _, _, err := Open(path, 64<<10, 40); !errors.Is(err, ErrGap) {
		t.Fatalf("Open with applied 40: %v, want ErrGap (41-50 were never written)", err)
	}
}

// TestReplayAfterCrash copies the file while appends run, as a crash
// would leave it: every record acknowledged before the copy is in it.
func TestReplayAfterCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "j")
	l, _ := mustOpen(t, path, 1<<20, 0)
	defer l.Close()
	var mu sync.Mutex
	acked := map[uint64][]byte{}
	stop := make(chan struct{})
	tick := make(chan struct{}, 1) // an Append returned
	var wg sync.WaitGroup
	var quit atomic.Int32
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				quit.Add(1)
				select {
				case tick <- struct{}{}:
				default:
				}
			}()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d := payload(g*100000+i, 300)
				seq, err := l.Append(d)
				if errors.Is(err, ErrFull) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[seq] = d
				mu.Unlock()
				select {
				case tick <- struct{}{}:
				default:
				}
			}
		}()
	}
	for round := range 3 {
		for {
			<-tick
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n > (round+1)*50 {
				break
			}
			if quit.Load() == 4 {
				t.Fatalf("the writers stopped after %d records", n)
			}
		}
		mu.Lock()
		before := map[uint64][]byte{}
		for s, d := range acked {
			before[s] = d
		}
		mu.Unlock()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cp := filepath.Join(dir, fmt.Sprint("copy", round))
		if err := os.WriteFile(cp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cl, recs := mustOpen(t, cp, 1<<20, 0)
		cl.Close()
		got := map[uint64][]byte{}
		for i, r := range recs {
			if r.Seq != uint64(i)+1 {
				t.Fatalf("copy %d: record %d has Seq %d", round, i, r.Seq)
			}
			got[r.Seq] = r.Data
		}
		for s, d := range before {
			if !bytes.Equal(got[s], d) {
				t.Fatalf("copy %d: acknowledged record %d missing or changed", round, s)
			}
		}
		t.Logf("copy %d: %d acknowledged before, %d replayed", round, len(before), len(recs))
	}
	close(stop)
	wg.Wait()
}

// recordOffset returns where the record of Seq seq starts, for a log
// whose records are all data(seq) in the first half.
func recordOffset(seq uint64, data func(uint64) []byte) int64 {
	var off int64
	for s := uint64(1); s < seq; s++ {
		off += hdrLen + int64(len(data(s)))
	}
	return off
}

func TestTornRecordEndsChain(t *testing.T) {
	data := func(seq uint64) []byte { return payload(int(seq), 100+int(seq)) }
	for _, c := range []struct {
		name  string
		spoil func(b []byte, at int64)
	}{
		{"data garbled", func(b []byte, at int64) { b[at+hdrLen+7] ^= 1 }},
		{"header garbled", func(b []byte, at int64) { b[at+9] ^= 0x80 }},
		{"length too long", func(b []byte, at int64) { b[at+7] = 0x7f }},
		{"second part missing", func(b []byte, at int64) { clear(b[at+hdrLen+50 : at+hdrLen+105]) }},
		{"first part missing", func(b []byte, at int64) { clear(b[at : at+50]) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j")
			l, _ := mustOpen(t, path, 16<<10, 0)
			for i := uint64(1); i <= 8; i++ {
				mustAppend(t, l, data(i))
			}
			l.Close()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			c.spoil(b, recordOffset(6, data))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			l, recs := mustOpen(t, path, 16<<10, 0)
			wantRecords(t, recs, 1, 5, data)
			// A new record 6 of the old one's length (another message)
			// must not be followed by the old 7 and 8, which were never
			// acknowledged.
			new6 := payload(1006, len(data(6)))
			if seq := mustAppend(t, l, new6); seq != 6 {
				t.Fatalf("Append after the torn record: Seq %d, want 6", seq)
			}
			l.Close()
			l, recs = mustOpen(t, path, 16<<10, 0)
			wantRecords(t, recs, 1, 6, func(seq uint64) []byte {
				if seq == 6 {
					return new6
				}
				return data(seq)
			})
			l.Close()
		})
	}
}

// TestStaleRecordsNotReplayed writes a half over: the records of the
// earlier lap left past the new ones must not be replayed.
func TestStaleRecordsNotReplayed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	const size = 16 << 10 // halves of 8 KiB
	l, _ := mustOpen(t, path, size, 0)
	data := func(seq uint64) []byte { return payload(int(seq), 1000) }
	// Seqs 1-8 fill the first half (8 x 1020 bytes), 9-16 the second,
	// 17-18 go at the start of the first again.
	for i := uint64(1); i <= 18; i++ {
		mustAppend(t, l, data(i))
		l.Release(i)
	}
	l.Close()
	if b, _ := os.ReadFile(path); !bytes.Contains(b[:size/2], data(5)) {
		t.Fatal("the first half does not hold the old record 5 any more: the test proves nothing")
	}
	l, recs := mustOpen(t, path, size, 12)
	wantRecords(t, recs, 13, 18, data)
	if seq := mustAppend(t, l, data(19)); seq != 19 {
		t.Fatalf("Append after reopening: Seq %d, want 19", seq)
	}
	l.Close()
	l, recs = mustOpen(t, path, size, 16)
	wantRecords(t, recs, 17, 19, data)
	l.Close()
	// Records 1-8 are gone from the log: a caller that says it applied
	// none of them has lost them, and Open says so.
	if _, _, err := Open(path, size, 0); !errors.Is(err, ErrGap) {
		t.Fatalf("Open with applied 0: %v, want ErrGap", err)
	}
}

func TestGap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	data := func(seq uint64) []byte { return payload(int(seq), 500) }
	l, _ := mustOpen(t, path, 16<<10, 0)
	for i := uint64(1); i <= 10; i++ {
		mustAppend(t, l, data(i))
	}
	l.Close()
	// Damage in the middle of the first half: 4-10 are lost, although
	// the second half (empty here) could hold later ones.
	b, _ := os.ReadFile(path)
	b[recordOffset(4, data)+hdrLen] ^= 1
	// Put record 12 at the start of the second half, as if 11 had not
	// fitted, and the chain of the first half ends at 3.
	r12, _ := encode(nil, 12, data(12), 0)
	copy(b[8<<10:], r12)
	os.WriteFile(path, b, 0o600)
	_, _, err := Open(path, 16<<10, 0)
	if !errors.Is(err, ErrGap) {
		t.Fatalf("Open: %v, want ErrGap", err)
	}
	t.Log(err)
	// Applied past the hole: nothing is missing.
	l, recs := mustOpen(t, path, 16<<10, 11)
	wantRecords(t, recs, 12, 12, data)
	l.Close()
}

func TestFullUntilReleased(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	l, _ := mustOpen(t, path, 16<<10, 0)
	defer l.Close()
	d := payload(0, 1000)
	var n uint64
	for {
		seq, err := l.Append(d)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n = seq
	}
	if n != 16 {
		t.Fatalf("%d records of 1020 bytes fitted in 16 KiB, want 16", n)
	}
	// Releasing records of the second half frees nothing: the first is
	// the one written next.
	l.Release(7)
	if _, err := l.Append(d); !errors.Is(err, ErrFull) {
		t.Fatalf("Append with the first half not wholly released: %v", err)
	}
	l.Release(8)
	if seq, err := l.Append(d); err != nil || seq != 17 {
		t.Fatalf("Append after Release: %d, %v; want 17", seq, err)
	}
	if _, err := l.Append(make([]byte, 8<<10)); !errors.Is(err, ErrTooBig) {
		t.Fatalf("Append of more than a half: %v, want ErrTooBig", err)
	}
	if seq, err := l.Append(make([]byte, 8<<10-hdrLen)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append of a whole half with the other unreleased: %d, %v, want ErrFull", seq, err)
	}
}

// TestConcurrentAppends: many goroutines append at once; each Seq is
// given once, and all records are replayed with their data.
func TestConcurrentAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	l, _ := mustOpen(t, path, 1<<20, 0)
	const G, N = 20, 50
	seqs := make([][]uint64, G)
	var wg sync.WaitGroup
	for g := range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range N {
				seq, err := l.Append(payload(g*N+i, 200))
				if err != nil {
					t.Error(err)
					return
				}
				seqs[g] = append(seqs[g], seq)
			}
		}()
	}
	wg.Wait()
	l.Close()
	which := map[uint64]int{} // Seq -> payload index
	for g := range G {
		for i, s := range seqs[g] {
			if _, ok := which[s]; ok {
				t.Fatalf("Seq %d given twice", s)
			}
			which[s] = g*N + i
		}
	}
	l2, recs := mustOpen(t, path, 1<<20, 0)
	l2.Close()
	wantRecords(t, recs, 1, G*N, func(seq uint64) []byte { return payload(which[seq], 200) })
	t.Logf("%d records in %d fdatasyncs", G*N, l.syncs.Load())
}

// tracker plays the caller that applies records: it keeps the data of
// each acknowledged Seq and says how far it may release, lag records
// behind the highest Seq acknowledged with all before it.
type tracker struct {
	mu      sync.Mutex
	data    map[uint64][]byte
	applied uint64
	lag     uint64
}

func newTracker(applied, lag uint64) *tracker {
	return &tracker{data: map[uint64][]byte{}, applied: applied, lag: lag}
}

// ack records seq and returns the Seq to release.
func (k *tracker) ack(seq uint64, d []byte) uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.data[seq] = d
	for k.data[k.applied+1] != nil {
		k.applied++
	}
	return k.applied - min(k.applied, k.lag)
}

// snapshot copies the log's file to dst between two batches, as a crash
// would leave it there, and returns the released Seq and the records
// acknowledged at that moment.
func snapshot(t *testing.T, l *Log, k *tracker, src, dst string) (uint64, map[uint64][]byte) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.running {
		l.idle.Wait()
	}
	b, err := os.ReadFile(src)
	if err == nil {
		err = os.WriteFile(dst, b, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return l.released, maps.Clone(k.data)
}

// TestWrapUnderConcurrentAppends: writers append records of random
// sizes to a small log while the applied records are released, so that
// writing switches halves many times; snapshots taken meanwhile and the
// log after Close replay every acknowledged record not released.
func TestWrapUnderConcurrentAppends(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "j")
	const size = 32 << 10
	l, _ := mustOpen(t, path, size, 0)
	k := newTracker(0, 5)
	var full atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < 150; {
				d := payload(g*1000+i, 50+r.IntN(1450))
				seq, err := l.Append(d)
				if errors.Is(err, ErrFull) {
					full.Add(1)
					runtime.Gosched()
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				l.Release(k.ack(seq, d))
				i++
			}
		}()
	}
	check := func(name string, released uint64, acked map[uint64][]byte) {
		t.Helper()
		l, recs, err := Open(name, size, released)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		l.Close()
		got := map[uint64][]byte{}
		for _, r := range recs {
			got[r.Seq] = r.Data
		}
		for s, d := range acked {
			if s > released && !bytes.Equal(got[s], d) {
				t.Fatalf("%s: acknowledged record %d (released %d) missing or changed", name, s, released)
			}
		}
	}
	for i := range 5 {
		cp := filepath.Join(dir, fmt.Sprint("copy", i))
		released, acked := snapshot(t, l, k, path, cp)
		check(cp, released, acked)
	}
	wg.Wait()
	released := l.released
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if released != 8*150-5 {
		t.Fatalf("released %d, want %d", released, 8*150-5)
	}
	check(path, released, k.data)
	t.Logf("%d records, %.1f laps of a half, %d ErrFull, %d fdatasyncs",
		len(k.data), float64(k.bytes())/float64(size/2), full.Load(), l.syncs.Load())
}

func (k *tracker) bytes() int {
	n := 0
	for _, d := range k.data {
		n += hdrLen + len(d)
	}
	return n
}

// TestRecordInsideData: a message may hold bytes that look like a
// record, here with the Seq and at the offset where a later chain in the
// same half ends; it must not continue that chain.
func TestRecordInsideData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	const size = 16 << 10
	l, _ := mustOpen(t, path, size, 0)
	// Record 1 holds a forged record 12 at offset 20+500 of the half;
	// records 2-11 fill the halves so that 11 is the first of the
	// first half's second lap and ends at that offset.
	forged, _ := encode(nil, 12, []byte("forged"), 0)
	d1 := append(append(payload(1, 500), forged...), payload(1, 200)...)
	mustAppend(t, l, d1)
	for i := 2; i <= 10; i++ {
		mustAppend(t, l, payload(i, 1580))
		l.Release(uint64(i))
	}
	if seq := mustAppend(t, l, payload(11, 500)); seq != 11 {
		t.Fatalf("Seq %d, want 11", seq)
	}
	l.Close()
	b, _ := os.ReadFile(path)
	if binary.LittleEndian.Uint64(b[8:]) != 11 || !bytes.Equal(b[520:520+len(forged)], forged) {
		t.Fatal("record 11 is not followed by the forged record: the test proves nothing")
	}
	l, recs := mustOpen(t, path, size, 10)
	l.Close()
	wantRecords(t, recs, 11, 11, func(uint64) []byte { return payload(11, 500) })
}

func TestResize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	data := func(seq uint64) []byte { return payload(int(seq), 1500) }
	l, _ := mustOpen(t, path, 64<<10, 0)
	for i := uint64(1); i <= 10; i++ {
		mustAppend(t, l, data(i))
	}
	l.Close()
	fileSize := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	// Records 3-10 do not fit in a half of 16 KiB: the file keeps its
	// size and its records.
	l, recs := mustOpen(t, path, 16<<10, 2)
	l.Close()
	wantRecords(t, recs, 3, 10, data)
	if n := fileSize(); n != 64<<10 {
		t.Fatalf("file of %d bytes, want it kept at 64 KiB", n)
	}
	// Records 6-10 fit in 8 KiB: the file is made anew with them.
	l, recs = mustOpen(t, path, 16<<10, 5)
	wantRecords(t, recs, 6, 10, data)
	if n := fileSize(); n != 16<<10 {
		t.Fatalf("file of %d bytes, want 16 KiB", n)
	}
	if seq := mustAppend(t, l, data(11)); seq != 11 {
		t.Fatalf("Append after resize: Seq %d, want 11", seq)
	}
	l.Close()
	l, recs = mustOpen(t, path, 16<<10, 5)
	l.Close()
	wantRecords(t, recs, 6, 11, data)
	// All applied: the file grows back, empty.
	l, recs = mustOpen(t, path, 64<<10, 11)
	if len(recs) != 0 || fileSize() != 64<<10 {
		t.Fatalf("%d records, %d bytes; want none, 64 KiB", len(recs), fileSize())
	}
	if seq := mustAppend(t, l, data(12)); seq != 12 {
		t.Fatalf("Append after resize: Seq %d, want 12", seq)
	}
	l.Close()
	l, recs = mustOpen(t, path, 64<<10, 11)
	l.Close()
	wantRecords(t, recs, 12, 12, data)
}

// TestOpenGarbage: a file of random bytes, or of bad size, is refused
// or read as an empty log, never a panic.
func TestOpenGarbage(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 20 {
		b := make([]byte, 16<<10)
		for j := range b {
			b[j] = byte(r.IntN(256))
		}
		if i%2 == 1 {
			// Headers that look right, with random lengths and Seqs.
			for off := 0; off+hdrLen < len(b); off += 1 + r.IntN(600) {
				b[off], b[off+1], b[off+2], b[off+3] = magic, format, 0, 0
			}
		}
		path := filepath.Join(dir, fmt.Sprint(i))
		os.WriteFile(path, b, 0o600)
		l, recs, err := Open(path, 16<<10, 0)
		if err == nil {
			l.Close()
		}
		if len(recs) != 0 {
			t.Fatalf("random file %d: %d records", i, len(recs))
		}
	}
	path := filepath.Join(dir, "odd")
	os.WriteFile(path, make([]byte, 1000), 0o600)
	if _, _, err := Open(path, 16<<10, 0); err == nil {
		t.Fatal("Open of a file of 1000 bytes: no error")
	}
	// An empty file (never one this package wrote) is made anew.
	os.WriteFile(path, nil, 0o600)
	l, _ := mustOpen(t, path, 16<<10, 0)
	l.Close()
}

// TestSyncFailure: after a failed fdatasync the log refuses appends (the
// state of the disk is unknown), and what was acknowledged before is
// replayed from the file.
func TestSyncFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	data := func(seq uint64) []byte { return payload(int(seq), 300) }
	l, _ := mustOpen(t, path, 64<<10, 0)
	for i := uint64(1); i <= 3; i++ {
		mustAppend(t, l, data(i))
	}
	l.syncData = func(int) error { return syscall.EIO }
	if _, err := l.Append(data(4)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Append with fdatasync failing: %v, want EIO", err)
	}
	l.syncData = unix.Fdatasync
	if _, err := l.Append(data(4)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Append after a failed fdatasync: %v, want the EIO again", err)
	}
	l.Close()
	// Record 4 was written, not acknowledged: it may come back.
	l, recs := mustOpen(t, path, 64<<10, 0)
	l.Close()
	if len(recs) < 3 {
		t.Fatalf("%d records replayed, want 1-3 at least", len(recs))
	}
	wantRecords(t, recs, 1, uint64(len(recs)), data)
}

// TestCloseWhileAppending: Appends racing with Close either return a
// Seq, and the record is replayed, or ErrClosed.
func TestCloseWhileAppending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	l, _ := mustOpen(t, path, 1<<20, 0)
	var mu sync.Mutex
	acked := map[uint64][]byte{}
	var wg sync.WaitGroup
	started := make(chan struct{}, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				d := payload(g*10000+i, 100)
				seq, err := l.Append(d)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[seq] = d
				mu.Unlock()
				if i == 10 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range 8 {
		<-started
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	l, recs := mustOpen(t, path, 1<<20, 0)
	l.Close()
	wantRecords(t, recs, 1, uint64(len(acked)), func(seq uint64) []byte { return acked[seq] })
}

// TestLocked: a second Open of a file in use fails at once.
func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	l, _ := mustOpen(t, path, 16<<10, 0)
	if _, _, err := Open(path, 16<<10, 0); err == nil {
		t.Fatal("second Open of a log in use: no error")
	} else {
		t.Log(err)
	}
	l.Close()
	l, _ = mustOpen(t, path, 16<<10, 0)
	l.Close()
}

// TestOpenReadsLittle: Open of a default-size log reads the halves
// through a small buffer, up to the end of their chains, so that the
// daemon does not keep a half's worth of heap (8 MiB) from its start.
func TestOpenReadsLittle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	l, _ := mustOpen(t, path, DefaultSize, 0)
	for i := range 3 {
		mustAppend(t, l, payload(i, 1400))
	}
	l.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	l, recs := mustOpen(t, path, DefaultSize, 1)
	runtime.ReadMemStats(&after)
	l.Close()
	if len(recs) != 2 {
		t.Fatalf("replayed %d records, want 2", len(recs))
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("Open allocated %d bytes, want under 1 MiB", n)
	}
}
