package wal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen opens a log of 16 KiB whose first bytes are the input (the
// rest zeros, or the input again for the second half): Open must not
// panic; it returns the records after applied without a hole, or
// ErrGap; an Append after it takes the next Seq and is replayed with
// them.
func FuzzOpen(f *testing.F) {
	valid := func(n int, second bool) []byte {
		var b []byte
		var sum uint32
		for i := 1; i <= n; i++ {
			b, sum = encode(b, uint64(i), payload(i, 10*i), sum)
		}
		if second {
			half := make([]byte, 8<<10)
			copy(half, b)
			b, _ = encode(half, uint64(n+1), []byte("in the second half"), 0)
		}
		return b
	}
	f.Add(valid(5, false), uint8(0))
	f.Add(valid(5, false), uint8(3))
	f.Add(valid(3, true), uint8(2))
	f.Add(valid(1, false)[:30], uint8(0))
	f.Add([]byte{}, uint8(7))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, in []byte, a uint8) {
		const size = 16 << 10
		applied := uint64(a)
		b := make([]byte, size)
		copy(b, in)
		path := filepath.Join(dir, "j")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		l, recs, err := Open(path, size, applied)
		if errors.Is(err, ErrGap) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range recs {
			if r.Seq != applied+1+uint64(i) {
				l.Close()
				t.Fatalf("record %d has Seq %d, applied %d", i, r.Seq, applied)
			}
		}
		seq, err := l.Append([]byte("new"))
		l.Close()
		if errors.Is(err, ErrFull) {
			return
		}
		if err != nil || seq != applied+uint64(len(recs))+1 {
			t.Fatalf("Append: %d, %v; want Seq %d", seq, err, applied+uint64(len(recs))+1)
		}
		l, again, err := Open(path, size, applied)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		l.Close()
		if len(again) != len(recs)+1 || !bytes.Equal(again[len(recs)].Data, []byte("new")) {
			t.Fatalf("reopen: %d records, want the %d before and the new one", len(again), len(recs))
		}
		for i, r := range recs {
			if again[i].Seq != r.Seq || !bytes.Equal(again[i].Data, r.Data) {
				t.Fatalf("reopen: record %d changed", r.Seq)
			}
		}
	})
}
