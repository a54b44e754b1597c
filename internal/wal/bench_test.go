package wal

import (
	"path/filepath"
	"sync"
	"testing"
)

// BenchmarkAppend appends records of 1.4 KiB (a small message) with
// fdatasync on, from one writer and from ten at once, releasing each
// record once appended so that the log wraps as in the queue. us/record
// is the time per record over all writers; fsyncs/record shows the
// group commit (1 for a lone writer).
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 10} {
		b.Run(map[int]string{1: "lone", 10: "10writers"}[writers], func(b *testing.B) {
			l, _, err := Open(filepath.Join(b.TempDir(), "j"), DefaultSize, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			data := payload(0, 1400)
			syncs := l.syncs.Load()
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range writers {
				n := b.N / writers
				if w < b.N%writers {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range n {
						seq, err := l.Append(data)
						if err != nil {
							b.Error(err)
							return
						}
						l.Release(seq)
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/record")
			b.ReportMetric(float64(l.syncs.Load()-syncs)/float64(b.N), "fsyncs/record")
		})
	}
}

// BenchmarkOpen opens a log of DefaultSize whose first half is full of
// records of 1.4 KiB not applied (the most a start-up replays, but for
// a second half), and returns them.
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), "j")
	l, _, err := Open(path, DefaultSize, 0)
	if err != nil {
		b.Fatal(err)
	}
	data := payload(0, 1400)
	n := 0
	for l.pos+hdrLen+int64(len(data)) <= l.half {
		if _, err := l.Append(data); err != nil {
			b.Fatal(err)
		}
		n++
	}
	l.Close()
	b.ResetTimer()
	for range b.N {
		l, recs, err := Open(path, DefaultSize, 0)
		if err != nil || len(recs) != n {
			b.Fatalf("%d records, %v; want %d", len(recs), err, n)
		}
		l.Close()
	}
	b.ReportMetric(float64(n), "records")
}
