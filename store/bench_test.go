package store

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// benchDir holds the large fixtures of one test-binary run; TestMain
// removes it.
var (
	benchDirOnce sync.Once
	benchDir     string
	benchStores  = map[int]*benchStore{}
	benchMu      sync.Mutex
)

func TestMain(m *testing.M) {
	code := m.Run()
	benchMu.Lock()
	for _, bs := range benchStores {
		if bs.s != nil {
			bs.s.Close()
		}
	}
	benchMu.Unlock()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

func tempBenchDir(b *testing.B) string {
	benchDirOnce.Do(func() {
		d, err := os.MkdirTemp("", "holdfast-store-bench-")
		if err != nil {
			b.Fatal(err)
		}
		benchDir = d
	})
	return benchDir
}

var body1K = func() []byte {
	b := make([]byte, 1024)
	for i := range b {
		b[i] = "abcdefghijklmnopqrstuvwxyz0123456789\r\n"[i%38]
	}
	return b
}()

// BenchmarkEnqueue: 1 KiB messages, fsync on, W concurrent writers. The
// msgs/s metric is what group commit buys: compare writers=32 to
// writers=1. commit=group is the store's committer (commit.go),
// group-gather200us the same waiting up to 200 us after a shared commit
// (Options.gather; faster here, slower with SMTP sessions), bbolt-1ms
// bbolt's DB.Batch with the 1 ms MaxBatchDelay used before (damage.go's
// batcher); writers=1 is the lone SMTP session (its target: no delay).
//
//	go test -run '^$' -bench 'Enqueue$' -benchtime 200x ./store
func BenchmarkEnqueue(b *testing.B) {
	for _, w := range []int{1, 8, 32} {
		for _, c := range []struct {
			name          string
			delay, gather time.Duration
			sparse        bool
		}{{"group", 0, 0, false}, {"group-sparse", 0, 0, true}, {"group-gather200us", 0, 200 * time.Microsecond, false}, {"bbolt-1ms", time.Millisecond, 0, false}} {
			b.Run(fmt.Sprintf("writers=%d/commit=%s", w, c.name), func(b *testing.B) {
				benchEnqueue(b, w, Options{Eligible: eligibleTLD, PolicyKey: "tld", batchDelay: c.delay, gather: c.gather, sparse: c.sparse})
			})
		}
	}
}

func benchEnqueue(b *testing.B, writers int, o Options) {
	benchWriters(b, writers, o, func(s *Store, m *Message) error { return s.Enqueue(m, body1K) })
}

// benchWriters runs b.N enqueue calls of 1 KiB messages to
// u@customer.tld over writers goroutines on a new store and reports
// msgs/s.
func benchWriters(b *testing.B, writers int, o Options, enqueue func(*Store, *Message) error) {
	s, err := Open(filepath.Join(b.TempDir(), "queue.db"), o)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.SetBytes(int64(len(body1K)))
	b.ResetTimer()
	start := time.Now()
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := enqueue(s, newMsg("u@customer.tld")); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkEnqueueBatchDelay measures the MaxBatchDelay choice of
// bbolt's DB.Batch (before the committer replaced it).
func BenchmarkEnqueueBatchDelay(b *testing.B) {
	for _, d := range []time.Duration{100 * time.Microsecond, 500 * time.Microsecond, 1 * time.Millisecond, 2 * time.Millisecond, 10 * time.Millisecond} {
		for _, w := range []int{1, 32} {
			b.Run(fmt.Sprintf("delay=%v/writers=%d", d, w), func(b *testing.B) {
				benchEnqueue(b, w, Options{Eligible: eligibleTLD, PolicyKey: "tld", batchDelay: d})
			})
		}
	}
}

// benchStore is a big queue: n deferred 1 KiB messages over 10,000
// destinations (d0000.tld ...), due over the next hour, plus 100
// deferred messages for target.tld.
type benchStore struct {
	path string
	s    *Store
	now  time.Time
}

const benchTarget = "target.tld"

var benchT0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func getBenchStore(b *testing.B, n int) *benchStore {
	benchMu.Lock()
	defer benchMu.Unlock()
	if bs, ok := benchStores[n]; ok {
		if bs.s == nil {
			bs.open(b)
		}
		return bs
	}
	bs := &benchStore{path: filepath.Join(tempBenchDir(b), fmt.Sprintf("queue-%d.db", n)), now: benchT0}
	start := time.Now()
	bs.open(b)
	if err := bs.fill(n); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d-message store in %v", n, time.Since(start).Round(time.Millisecond))
	benchStores[n] = bs
	return bs
}

func (bs *benchStore) open(b *testing.B) {
	s, err := Open(bs.path, Options{Eligible: eligibleTLD, PolicyKey: "tld", NoSync: true,
		Now: func() time.Time { return bs.now }})
	if err != nil {
		b.Fatal(err)
	}
	bs.s = s
}

// fill inserts in big NoSync transactions, bypassing Batch.
func (bs *benchStore) fill(n int) error {
	const chunk = 20000
	total := n + 100
	for done := 0; done < total; {
		err := bs.s.update("fill", func(w *wtx) error {
			for i := 0; i < chunk && done < total; i, done = i+1, done+1 {
				dom := fmt.Sprintf("d%04d.tld", done%10000)
				if done >= n {
					dom = benchTarget
				}
				m := newMsg("user@" + dom)
				if err := prepare(m, body1K, benchT0); err != nil {
					return err
				}
				m.Recipients[0].Attempts = 1
				m.Recipients[0].NextAttempt = benchT0.Add(time.Hour + time.Duration(done)*time.Millisecond)
				schedule(m, benchT0)
				if err := w.insert(m, body1K); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// redefer puts target.tld's messages back to deferred (untimed).
func (bs *benchStore) redefer(b *testing.B) {
	err := bs.s.update("redefer", func(w *wtx) error {
		for _, p := range flushPrefixes(benchTarget, false) {
			var ids []ID
			c := w.flush.Cursor()
			for k, _ := c.Seek(p); k != nil && hasPrefix(k, p); k, _ = c.Next() {
				_, id, _ := parseFlushKey(k)
				ids = append(ids, id)
			}
			for _, id := range ids {
				old, err := w.load(id)
				if err != nil {
					return err
				}
				m := clone(old)
				m.Recipients[0].Forced = false
				m.Recipients[0].NextAttempt = bs.now.Add(2 * time.Hour)
				schedule(m, bs.now)
				if err := w.save(old, m); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

var benchSizes = []int{10_000, 100_000, 1_000_000}

// BenchmarkFlush: Flush(target.tld) of 100 deferred messages with n other
// deferred messages in the store (NoSync: the cost of the transaction,
// not of the disk's fsync).
func BenchmarkFlush(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("queue=%d", n), func(b *testing.B) {
			bs := getBenchStore(b, n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				bs.redefer(b)
				b.StartTimer()
				res, err := bs.s.Flush(benchTarget, false)
				if err != nil || res.Messages != 100 {
					b.Fatalf("Flush = %+v, %v", res, err)
				}
			}
		})
	}
}

// BenchmarkFlushLeased: the flush chunk of an ETRN (FlushRun.NextLeased)
// of 100 deferred messages with n other deferred messages in the store,
// leasing all 100 in its transaction (NoSync: the cost of the
// transaction, not of the disk's fsync).
func BenchmarkFlushLeased(b *testing.B) {
	for _, n := range benchSizes[:1] {
		b.Run(fmt.Sprintf("queue=%d", n), func(b *testing.B) {
			bs := getBenchStore(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				bs.redefer(b)
				b.StartTimer()
				res, leased, err := bs.s.NewFlushRun(benchTarget, false).NextLeased(FlushChunk)
				if err != nil || res.Messages != 100 || len(leased) != 100 {
					b.Fatalf("NextLeased = %+v, %d leased, %v", res, len(leased), err)
				}
			}
		})
	}
}

// BenchmarkLease: lease the 10 earliest due messages (then, untimed, give
// them back) with n messages in the store.
func BenchmarkLease(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("queue=%d", n), func(b *testing.B) {
			bs := getBenchStore(b, n)
			now := benchT0.Add(1000 * time.Hour)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ms, err := bs.s.Lease(now, 10)
				if err != nil || len(ms) != 10 {
					b.Fatalf("Lease = %d, %v", len(ms), err)
				}
				b.StopTimer()
				for _, m := range ms {
					if err := bs.s.Unlease(m.ID); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkOpenHeap opens the 1M store afresh, leases from it, and
// reports the Go heap in use, the open time and the file bytes per
// queued message.
func BenchmarkOpenHeap(b *testing.B) {
	n := benchSizes[len(benchSizes)-1]
	bs := getBenchStore(b, n)
	benchMu.Lock()
	bs.s.Close()
	bs.s = nil
	benchMu.Unlock()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	start := time.Now()
	bs.open(b)
	openTime := time.Since(start)
	ms, err := bs.s.Lease(benchT0.Add(1000*time.Hour), 100)
	if err != nil || len(ms) != 100 {
		b.Fatal(err)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	for _, m := range ms {
		bs.s.Unlease(m.ID)
	}
	fi, _ := os.Stat(bs.path)
	b.ReportMetric(float64(after.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "heap-delta-MiB")
	b.ReportMetric(float64(openTime.Milliseconds()), "open-ms")
	b.ReportMetric(float64(fi.Size())/float64(n+100), "file-bytes/msg")
}

// BenchmarkChurn: 10 rounds of enqueue-100k / deliver-100k; reports the
// file size after each round and after Compact. It runs its rounds once,
// whatever b.N.
func BenchmarkChurn(b *testing.B) {
	for _, v := range []struct {
		name string
		o    Options
	}{
		{"map-syncfreelist", Options{}},
		{"map-nosyncfreelist", Options{noSyncFreelist: true}},
		{"array-syncfreelist", Options{arrayFreelist: true}},
	} {
		b.Run(v.name, func(b *testing.B) { benchChurn(b, v.o) })
	}
}

func benchChurn(b *testing.B, o Options) {
	const rounds, per = 10, 100_000
	path := filepath.Join(b.TempDir(), "queue.db")
	o.Eligible, o.PolicyKey, o.NoSync = eligibleTLD, "tld", true
	s, err := Open(path, o)
	if err != nil {
		b.Fatal(err)
	}
	var sizes []int64
	start := time.Now()
	for r := 0; r < rounds; r++ {
		var next atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < 32; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= per {
					if err := s.Enqueue(newMsg(fmt.Sprintf("u@d%d.tld", next.Load()%10000)), body1K); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		for {
			ms, err := s.Lease(time.Now().Add(time.Hour), 1000)
			if err != nil {
				b.Fatal(err)
			}
			if len(ms) == 0 {
				break
			}
			for _, m := range ms {
				if err := s.Finish(m.ID, Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered}}}); err != nil {
					b.Fatal(err)
				}
			}
		}
		fi, _ := os.Stat(path)
		sizes = append(sizes, fi.Size())
	}
	s.Close()
	elapsed := time.Since(start)
	dst := path + ".compact"
	if err := Compact(path, dst); err != nil {
		b.Fatal(err)
	}
	ci, _ := os.Stat(dst)
	b.Logf("%v: file MiB per round: %v; after compact %.2f MiB; %v", b.Name(), mib(sizes), float64(ci.Size())/(1<<20), elapsed.Round(time.Millisecond))
	b.ReportMetric(float64(sizes[0])/(1<<20), "round1-MiB")
	b.ReportMetric(float64(sizes[len(sizes)-1])/(1<<20), "round10-MiB")
	b.ReportMetric(float64(ci.Size())/(1<<20), "compact-MiB")
}

func mib(s []int64) []string {
	var out []string
	for _, v := range s {
		out = append(out, fmt.Sprintf("%.0f", float64(v)/(1<<20)))
	}
	return out
}

// BenchmarkDiskPerMessage compares page size and fill for the file bytes
// per queued 1 KiB message (100k messages, built like the big stores).
func BenchmarkDiskPerMessage(b *testing.B) {
	for _, v := range []struct {
		name string
		page int
		fill float64
	}{{"page4k-fill0.5", 4096, 0.5}, {"page4k-fill0.9", 4096, 0.9}, {"page4k-fill1.0", 4096, 1.0}, {"page16k-fill0.9", 16384, 0.9}} {
		b.Run(v.name, func(b *testing.B) {
			const n = 100_000
			bs := &benchStore{path: filepath.Join(b.TempDir(), "q.db"), now: benchT0}
			s, err := Open(bs.path, Options{Eligible: eligibleTLD, PolicyKey: "tld", NoSync: true, pageSize: v.page, fill: v.fill})
			if err != nil {
				b.Fatal(err)
			}
			bs.s = s
			if err := bs.fill(n); err != nil {
				b.Fatal(err)
			}
			reportPages(b, s, n)
			s.Close()
			fi, _ := os.Stat(bs.path)
			b.ReportMetric(float64(fi.Size())/float64(n+100), "file-bytes/msg")
		})
	}
}

// reportPages reports the live bytes per message: the high-water mark
// minus free pages.
func reportPages(b *testing.B, s *Store, n int) {
	s.db.View(func(tx *bolt.Tx) error {
		free := int64(s.db.Stats().FreeAlloc)
		b.ReportMetric(float64(tx.Size()-free)/float64(n), "live-bytes/msg")
		b.ReportMetric(float64(free)/(1<<20), "free-MiB")
		return nil
	})
}

// BenchmarkFinish: fsync on, W concurrent delivery workers each ending an
// attempt (the message delivered: record, body and due entry deleted).
// Messages are queued and leased untimed first. msgs/s is what group
// commit of delivery results buys: compare writers=32 to writers=1.
func BenchmarkFinish(b *testing.B) {
	for _, w := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "queue.db"), Options{Eligible: eligibleTLD, PolicyKey: "tld"})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var ids []ID
			err = s.db.Update(func(tx *bolt.Tx) error {
				wt := s.begin(tx)
				for i := 0; i < b.N; i++ {
					m := newMsg("u@customer.tld")
					if err := prepare(m, body1K, s.now()); err != nil {
						return err
					}
					if err := wt.insert(m, body1K); err != nil {
						return err
					}
				}
				return wt.commit()
			})
			if err != nil {
				b.Fatal(err)
			}
			for len(ids) < b.N {
				ms, err := s.Lease(s.now().Add(time.Hour), 1000)
				if err != nil || len(ms) == 0 {
					b.Fatalf("Lease = %d, %v", len(ms), err)
				}
				for _, m := range ms {
					ids = append(ids, m.ID)
				}
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for g := 0; g < w; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(len(ids)) {
							return
						}
						f := Finish{Outcomes: []Outcome{{Rcpt: 0, Result: RcptDelivered, Reply: "250 2.0.0 Ok", DSN: "2.0.0"}}}
						if err := s.Finish(ids[i], f); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkEnqueueGrow compares, for a lone writer with fsync on, the
// file kept written ahead (growAhead) against bbolt growing it with
// holes (Options.sparse): two stores, one Enqueue into each in turn, so
// that both see the same load on a shared machine. sparse/zeros is the
// ratio of the mean commit times (above 1: the zeros are faster).
//
//	go test -run '^$' -bench EnqueueGrow -benchtime 1000x ./store
func BenchmarkEnqueueGrow(b *testing.B) {
	dir := b.TempDir()
	var stores [2]*Store
	for i, sparse := range []bool{false, true} {
		s, err := Open(filepath.Join(dir, fmt.Sprintf("queue-%d.db", i)), Options{Eligible: eligibleTLD, PolicyKey: "tld", sparse: sparse})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	var took [2]time.Duration
	b.SetBytes(int64(len(body1K)))
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i, s := range stores {
			start := time.Now()
			if err := s.Enqueue(newMsg("u@customer.tld"), body1K); err != nil {
				b.Fatal(err)
			}
			took[i] += time.Since(start)
		}
	}
	b.ReportMetric(float64(took[0].Microseconds())/float64(b.N), "zeros-us/msg")
	b.ReportMetric(float64(took[1].Microseconds())/float64(b.N), "sparse-us/msg")
	b.ReportMetric(float64(took[1])/float64(took[0]), "sparse/zeros")
}

// BenchmarkCommitPages: what the commit of one accepted message writes
// into a queue of 10,000 (bench fill: 10,000 destinations): a lone
// writer's Spool.Enqueue of 1 KiB, deferred on arrival (as at acceptance
// to an ETRN-only domain), NoSync. pages/commit and nodes/commit are
// bbolt's TxStats (PageCount: pages allocated, including the freelist;
// NodeCount: pages read into nodes, the work of copy-on-write);
// writes/commit the pwrites, the meta page's included. The layout sets
// them: the leaf and branches of msg, body, due and flush, the root.
//
//	go test -run '^$' -bench CommitPages -benchmem -benchtime 2000x ./store
func BenchmarkCommitPages(b *testing.B) {
	bs := &benchStore{path: filepath.Join(b.TempDir(), "queue.db"), now: benchT0}
	bs.open(b)
	defer bs.s.Close()
	if err := bs.fill(10_000); err != nil {
		b.Fatal(err)
	}
	s := bs.s
	before := s.db.Stats()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := newMsg("u@customer.tld")
		m.Recipients[0].NextAttempt = bs.now.Add(time.Hour)
		sp, err := s.Spool(NewID())
		if err != nil {
			b.Fatal(err)
		}
		sp.Write(body1K)
		if err := sp.Enqueue(m); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	after := s.db.Stats()
	d := after.Sub(&before)
	n := float64(b.N)
	b.ReportMetric(float64(d.TxStats.GetPageCount())/n, "pages/commit")
	b.ReportMetric(float64(d.TxStats.GetNodeCount())/n, "nodes/commit")
	b.ReportMetric(float64(d.TxStats.GetWrite())/n, "writes/commit")
}

// BenchmarkSpoolEnqueue: the acceptance path, Spool then Spool.Enqueue of
// 1 KiB messages, fsync on, W concurrent writers (W SMTP sessions), through
// the journal (the default: one sequential append and one fdatasync
// shared by the writers of the moment, the filing in queue.db batched
// after it) against the direct commit to queue.db (JournalSize -1, the
// way before it). Its time per op is what a session waits for its 250.
//
//	go test -run '^$' -bench 'SpoolEnqueue$' -benchtime 2000x ./store
func BenchmarkSpoolEnqueue(b *testing.B) {
	for _, w := range []int{1, 10} {
		for _, c := range []struct {
			name string
			size int64
		}{{"journal", 0}, {"direct", -1}} {
			b.Run(fmt.Sprintf("writers=%d/%s", w, c.name), func(b *testing.B) {
				benchSpoolEnqueue(b, w, Options{Eligible: eligibleTLD, PolicyKey: "tld", JournalSize: c.size})
			})
		}
	}
}

func benchSpoolEnqueue(b *testing.B, writers int, o Options) {
	benchWriters(b, writers, o, func(s *Store, m *Message) error {
		m.ID = NewID()
		c, err := s.Spool(m.ID)
		if err != nil {
			return err
		}
		c.Write(body1K)
		return c.Enqueue(m)
	})
}
