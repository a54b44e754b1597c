package flush

// Issue 18, item 3: an ETRN flood on a destination with 20,000 queued
// messages must not starve acceptance. The flood is what repeated ETRNs
// do (Service.Flush in a loop, as the SMTP handler calls it), while a
// delivery loop plays the scheduler against a customer that is down:
// it leases what the flush made due, 20 at a time, and defers it again,
// so that every flush finds the destination deferred and rewrites it.
// Acceptance is what an SMTP session's DATA commit costs: store.Enqueue
// with fsync, from concurrent submitters. Measured: the p50 of Enqueue
// with the store idle, and under the flood.
//
//	go test -run '^$' -bench FlushFlood -benchtime 1x -count 3 ./flush/

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/store"
)

const floodDest = "customer.tld"

// floodStore returns a store (fsync on) holding n deferred messages for
// floodDest, and the service over it.
func floodStore(tb testing.TB, n int) (*Service, *store.Store) {
	tb.Helper()
	c := config.Default()
	c.Set("relay_domains", "customer.tld, other.tld")
	p, err := New(c)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "queue.db")
	o := store.Options{Timeout: time.Second, Eligible: p.Eligible, PolicyKey: p.Key()}
	fo := o
	fo.NoSync = true // filling only
	s, err := store.Open(path, fo)
	if err != nil {
		tb.Fatal(err)
	}
	later := time.Now().Add(24 * time.Hour)
	body := make([]byte, 1024)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				m := &store.Message{Sender: "a@sender.test", Recipients: []store.Recipient{
					{Addr: fmt.Sprintf("u%d@%s", i, floodDest), NextAttempt: later},
				}}
				if err := s.Enqueue(m, body); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatal(err)
	}
	s.Close()
	if s, err = store.Open(path, o); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	svc := NewService(p, s, nil, zerolog.Nop())
	tb.Cleanup(svc.Close)
	return svc, s
}

// acceptP50 runs 4 submitters for d and returns the median Enqueue time.
func acceptP50(tb testing.TB, s *store.Store, d time.Duration) (time.Duration, int) {
	tb.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	body := make([]byte, 4096)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				// Deferred on arrival (defer_transports), so that the
				// delivery loop only meets the flushed mail.
				m := &store.Message{Sender: "a@sender.test", Recipients: []store.Recipient{
					{Addr: "x@other.tld", NextAttempt: time.Now().Add(time.Hour)}}}
				t0 := time.Now()
				if err := s.Enqueue(m, body); err != nil {
					tb.Error(err)
					return
				}
				l := time.Since(t0)
				mu.Lock()
				lat = append(lat, l)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	if len(lat) == 0 {
		tb.Fatal("no message accepted")
	}
	return lat[len(lat)/2], len(lat)
}

// flood runs repeated flushes of floodDest and the failing delivery loop
// until ctx ends; it returns how many flushes were requested and how many
// messages were re-deferred.
func flood(ctx context.Context, tb testing.TB, svc *Service, s *store.Store) (func() (int, int), func()) {
	var wg sync.WaitGroup
	var flushes, deferred int
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := svc.Flush(floodDest, false); err != nil {
				tb.Error(err)
				return
			}
			flushes++
			// One ETRN per SMTP round trip of the attacking client.
			time.Sleep(time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			ms, err := s.Lease(time.Now(), 20)
			if err != nil {
				tb.Error(err)
				return
			}
			if len(ms) == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			// The scheduler's workers finish concurrently, sharing commits.
			var fw sync.WaitGroup
			for _, m := range ms {
				fw.Add(1)
				go func() {
					defer fw.Done()
					f := store.Finish{Outcomes: []store.Outcome{{Rcpt: 0, Result: store.RcptPending,
						Reply: "451 try later", NextAttempt: time.Now().Add(time.Hour)}}}
					if err := s.Finish(m.ID, f); err != nil {
						tb.Error(err)
					}
				}()
			}
			fw.Wait()
			deferred += len(ms)
		}
	}()
	return func() (int, int) { return flushes, deferred }, wg.Wait
}

// floodRatio measures acceptance p50 idle and under the flood.
func floodRatio(tb testing.TB, svc *Service, s *store.Store, d time.Duration) (idle, busy time.Duration, flushes, redeferred int) {
	idle, _ = acceptP50(tb, s, d)
	ctx, cancel := context.WithCancel(context.Background())
	counts, wait := flood(ctx, tb, svc, s)
	busy, _ = acceptP50(tb, s, d)
	cancel()
	wait()
	flushes, redeferred = counts()
	return idle, busy, flushes, redeferred
}

// TestETRNFloodAcceptance asserts a generous bound (5x idle) on the
// acceptance p50 under an ETRN flood of a 20,000-message destination, so
// that a return to one transaction per flush (x377, docs/reliability.md)
// fails here. A busy machine can spoil one measurement: it is taken up to
// three times and the best counts. BenchmarkFlushFlood reports figures.
func TestETRNFloodAcceptance(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 5000
	}
	bound := 5.0
	if raceEnabled {
		bound = 10 // one transaction per flush measured x377 without it
	}
	svc, s := floodStore(t, n)
	best := 0.0
	for try := 0; try < 3 && (try == 0 || best > bound); try++ {
		idle, busy, flushes, redeferred := floodRatio(t, svc, s, time.Second)
		ratio := float64(busy) / float64(idle)
		t.Logf("%d queued: acceptance p50 idle %v, under flood %v (x%.2f); %d flush requests, %d re-deferred",
			n, idle, busy, ratio, flushes, redeferred)
		if redeferred == 0 {
			t.Fatalf("the flood re-deferred nothing: it did not flush")
		}
		if try == 0 || ratio < best {
			best = ratio
		}
	}
	if best > bound {
		t.Errorf("acceptance p50 under an ETRN flood is %.1fx idle; want < %gx", best, bound)
	}
}

func BenchmarkFlushFlood(b *testing.B) {
	for range b.N {
		svc, s := floodStore(b, 20000)
		idle, busy, flushes, redeferred := floodRatio(b, svc, s, 3*time.Second)
		b.ReportMetric(float64(idle)/float64(time.Millisecond), "idle-p50-ms")
		b.ReportMetric(float64(busy)/float64(time.Millisecond), "flood-p50-ms")
		b.ReportMetric(float64(busy)/float64(idle), "ratio")
		b.ReportMetric(float64(flushes), "flushes")
		b.ReportMetric(float64(redeferred), "redeferred")
	}
}
