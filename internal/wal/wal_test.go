package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
	var wg sync.WaitGroup
	var quit atomic.Int32
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer quit.Add(1)
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
			}
		}()
	}
	for round := range 3 {
		for {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n > (round+1)*50 {
				break
			}
			if quit.Load() == 4 {
				t.Fatalf("the writers stopped after %d records", n)
			}
			time.Sleep(time.Millisecond)
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
			// A new record 6 of the old one's length must not be followed
			// by the old 7 and 8, which were never acknowledged.
			if seq := mustAppend(t, l, data(6)); seq != 6 {
				t.Fatalf("Append after the torn record: Seq %d, want 6", seq)
			}
			l.Close()
			l, recs = mustOpen(t, path, 16<<10, 0)
			wantRecords(t, recs, 1, 6, data)
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
	copy(b[8<<10:], encode(nil, 12, data(12)))
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
