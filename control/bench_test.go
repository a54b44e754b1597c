package control

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/store"
)

// benchQueue is the queue size of the listing and bulk benchmarks.
const benchQueue = 100000

// benchEnv fills a store with benchQueue messages (in batches of
// concurrent enqueues) and serves it.
func benchEnv(b *testing.B) (*Client, *store.Store) {
	b.Helper()
	dir := b.TempDir()
	c := config.Default()
	c.Set("fast_flush_domains", "customer.test")
	p, err := flush.New(c)
	if err != nil {
		b.Fatal(err)
	}
	s, err := store.Open(filepath.Join(dir, "queue.db"), store.Options{NoSync: true, Eligible: p.Eligible, PolicyKey: p.Key()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	body := []byte("Subject: bench\r\n\r\n" + string(make([]byte, 512)) + "\r\n")
	const workers = 64
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := w; i < benchQueue; i += workers {
				m := &store.Message{Sender: "a@sender.test", Recipients: []store.Recipient{{Addr: fmt.Sprintf("u%d@customer.test", i)}}}
				if err := s.Enqueue(m, body); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	srv, err := New(Options{Store: s, Flush: flush.NewService(p, s, nil, zerolog.Nop()), Config: c, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	l, err := Listen(sock)
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return NewClient(sock), s
}

// heapPeak samples the live heap while fn runs.
func heapPeak(fn func()) uint64 {
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var max uint64
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > max {
				max = ms.HeapAlloc
			}
			select {
			case <-done:
				peak <- max
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	fn()
	close(done)
	return <-peak
}

// BenchmarkList streams a listing of the whole queue through the socket;
// server and client share this process, so heap_peak_MB bounds both.
func BenchmarkList(b *testing.B) {
	cl, _ := benchEnv(b)
	runtime.GC()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := 0
		peak := heapPeak(func() {
			if _, err := cl.List(context.Background(), Filter{}, "", 0, func(*Message) error { n++; return nil }); err != nil {
				b.Fatal(err)
			}
		})
		if n != benchQueue {
			b.Fatalf("listed %d", n)
		}
		b.ReportMetric(float64(peak)/(1<<20), "heap_peak_MB")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchQueue), "ns/msg")
}

// BenchmarkHoldRelease holds and releases the whole queue in chunks.
func BenchmarkHoldRelease(b *testing.B) {
	cl, _ := benchEnv(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, op := range []string{"hold", "release"} {
			p, err := cl.Operate(context.Background(), op, OpRequest{All: true}, nil)
			if err != nil || p.Done != benchQueue {
				b.Fatalf("%s = %+v, %v", op, p, err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N*benchQueue), "ns/msg")
}
