package main

// Benchmark of issue 6: with 10k / 100k / 1M deferred messages over 10k
// domains, how long the ETRN reply takes and how long until a domain's
// 100 messages are all at the customer's server (a loopback go-smtp sink).
// The claim is that both are independent of the queue size: the 1M/10k
// ratio must stay <= 1.5.
//
//	go test -run '^$' -bench ETRN -benchtime 5x -count 1 -timeout 60m ./cmd/holdfast/
//
// Each size fills a fresh queue through the store API (NoSync) before the
// daemon starts; 1M takes minutes and about 1.5 GB of disk. Every
// iteration queues 100 new messages for target.tld (deferred, ETRN-only),
// then times one ETRN and the delivery; the medians of the iterations are
// reported as reply-ms and deliver-ms (and the minima, less sensitive to a
// busy machine, as reply-min-ms and deliver-min-ms).

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

const (
	benchDomains = 10000
	benchTarget  = "target.tld"
	benchPerDom  = 100
)

func BenchmarkETRN(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		// The testing package calls a sub-benchmark more than once (b.N =
		// 1, then the real N); each run leaves the queue as it found it,
		// so the filled queue is kept for all of them.
		dir := b.TempDir()
		filled := false
		b.Run(fmt.Sprintf("queued=%d", n), func(b *testing.B) {
			r := newBenchRelay(b, n, dir, !filled, "")
			filled = true
			r.rounds(b)
		})
	}
}

// BenchmarkETRNCold is BenchmarkETRN at 10k queued with the sessions to
// the sink closed before each round, as in make bench-compare, where
// Postfix's run comes between two of holdfast's and the connection
// cache (smtp_connection_cache_time_limit, 1s here) has closed them:
// every round dials its sessions anew, during the flush's commit
// (Scheduler.Predial). Each round waits about a second, untimed.
//
//	go test -run '^$' -bench ETRNCold -benchtime 10x ./cmd/holdfast/
func BenchmarkETRNCold(b *testing.B) {
	dir := b.TempDir()
	filled := false
	b.Run("queued=10000", func(b *testing.B) {
		r := newBenchRelay(b, 10_000, dir, !filled, "smtp_connection_cache_time_limit = 1s\n")
		r.cold = true
		filled = true
		r.rounds(b)
	})
}

// BenchmarkETRNRatio runs the 10k and the 1M queue side by side and
// alternates their rounds, so that load from other processes on the
// machine hits both alike; it reports the 1M/10k ratios of the medians.
//
//	go test -run '^$' -bench ETRNRatio -benchtime 40x -count 1 -timeout 60m ./cmd/holdfast/
func BenchmarkETRNRatio(b *testing.B) {
	dirs := []string{b.TempDir(), b.TempDir()}
	sizes := []int{10_000, 1_000_000}
	filled := false
	b.Run("1M/10k", func(b *testing.B) {
		var rs []*benchRelay
		for i, n := range sizes {
			rs = append(rs, newBenchRelay(b, n, dirs[i], !filled, ""))
		}
		filled = true
		replies := make([][]time.Duration, len(rs))
		delivered := make([][]time.Duration, len(rs))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for j := range rs {
				k := (i + j) % len(rs) // alternate which size goes first
				reply, deliver := rs[k].round(b)
				replies[k], delivered[k] = append(replies[k], reply), append(delivered[k], deliver)
			}
		}
		b.StopTimer()
		report(b, "10k-", replies[0], delivered[0])
		report(b, "1M-", replies[1], delivered[1])
		b.ReportMetric(float64(median(replies[1]))/float64(median(replies[0])), "reply-ratio")
		b.ReportMetric(float64(median(delivered[1]))/float64(median(delivered[0])), "deliver-ratio")
	})
}

// rounds times b.N ETRN rounds and reports their reply and delivery
// times.
func (r *benchRelay) rounds(b *testing.B) {
	var replies, delivered []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		reply, deliver := r.round(b)
		replies, delivered = append(replies, reply), append(delivered, deliver)
	}
	b.StopTimer()
	report(b, "", replies, delivered)
}

// report adds the medians and minima of one size to the benchmark line.
func report(b *testing.B, prefix string, replies, delivered []time.Duration) {
	b.ReportMetric(ms(median(replies)), prefix+"reply-ms")
	b.ReportMetric(ms(median(delivered)), prefix+"deliver-ms")
	b.ReportMetric(ms(slices.Min(replies)), prefix+"reply-min-ms")
	b.ReportMetric(ms(slices.Min(delivered)), prefix+"deliver-min-ms")
}

// benchRelay is a daemon over a queue of `queued` deferred messages, with
// target.tld routed to its own sink.
type benchRelay struct {
	d      *daemon
	sink   *testutil.MTA
	addr   string
	queued int
	// cold: each round waits until the cached sessions to the sink are
	// closed (BenchmarkETRNCold).
	cold bool
}

// newBenchRelay starts the daemon; extra is configuration lines added
// to the benchmark's.
func newBenchRelay(b *testing.B, queued int, dir string, fill bool, extra string) *benchRelay {
	sink := testutil.NewMTA(b, testutil.MTAOptions{})
	tpath := filepath.Join(dir, "transport")
	tbl := fmt.Sprintf("%s etrn-only:[%s]:%d\n", benchTarget, sink.Host, sink.Port)
	if err := os.WriteFile(tpath, []byte(tbl), 0o600); err != nil {
		b.Fatal(err)
	}
	text := fmt.Sprintf(`myhostname = relay.test
mynetworks = 127.0.0.0/8
relay_domains = tld
defer_transports = etrn-only, smtp, relay
transport_maps = texthash:%s
smtpd_etrn_restrictions = permit_mynetworks, reject
smtpd_listen = 127.0.0.1:0
queue_directory = %s
control_socket =
%s`, tpath, filepath.Join(dir, "queue"), extra)
	c, err := config.Parse(filepath.Join(dir, "holdfast.cf"), []byte(text))
	if err != nil {
		b.Fatal(err)
	}
	if fill {
		start := time.Now()
		fillQueue(b, c, filepath.Join(dir, "queue"), queued)
		b.Logf("filled %d deferred messages over %d domains in %v", queued, benchDomains, time.Since(start))
	}
	d, err := startDaemon(c, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.shutdown() })
	return &benchRelay{d: d, sink: sink, addr: d.smtpAddrs()[0], queued: queued}
}

// round queues 100 messages for target.tld and waits until they are
// deferred (timer stopped), then times the ETRN reply and the delivery of
// all 100 to the sink, and waits until the queue is back where it was.
func (r *benchRelay) round(b *testing.B) (reply, deliver time.Duration) {
	b.StopTimer()
	r.sink.Reset()
	queueTarget(b, r.d.store)
	r.d.sched.Wake()
	waitStats(b, r.d.store, func(s store.Stats) bool {
		return s.Deferred == int64(r.queued+benchPerDom) && s.Incoming+s.Active == 0
	})
	if r.cold && !testutil.WaitFor(time.Minute, func() bool { return r.sink.Open() == 0 }) {
		b.Fatalf("%d sessions to the sink still open", r.sink.Open())
	}
	cl := dialSMTP(b, r.addr)
	cl.cmd("EHLO client.test")
	b.StartTimer()

	t0 := time.Now()
	if got := cl.cmd("ETRN %s", benchTarget); got != "250 Queuing started" {
		b.Fatalf("ETRN: %q", got)
	}
	reply = time.Since(t0)
	if got := r.sink.Wait(benchPerDom, time.Minute); len(got) != benchPerDom {
		b.Fatalf("%d of %d delivered", len(got), benchPerDom)
	}
	deliver = time.Since(t0)

	b.StopTimer()
	cl.cmd("QUIT")
	waitStats(b, r.d.store, func(s store.Stats) bool {
		return s.Deferred == int64(r.queued) && s.Incoming+s.Active == 0
	})
	b.StartTimer()
	return reply, deliver
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// fillQueue writes n deferred messages, one recipient each, spread over
// benchDomains domains, due in a day, through the store API.
func fillQueue(b *testing.B, c *config.Config, qdir string, n int) {
	b.Helper()
	p, err := flush.New(c)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(qdir, 0o700); err != nil {
		b.Fatal(err)
	}
	s, err := store.Open(filepath.Join(qdir, queueDBName), store.Options{
		NoSync: true, Eligible: p.Eligible, PolicyKey: p.Key(),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := []byte("Subject: filler\r\nFrom: a@sender.test\r\n\r\n" + strings.Repeat("x", 1000) + "\r\n")
	const workers, chunk = 32, 1000
	later := time.Now().Add(24 * time.Hour)
	for done := 0; done < n; {
		k := min(chunk*workers, n-done)
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := w; j < k; j += workers {
					i := done + j
					m := &store.Message{Sender: "a@sender.test", Recipients: []store.Recipient{
						{Addr: fmt.Sprintf("u%d@d%05d.tld", i, i%benchDomains)},
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
			b.Fatal(err)
		}
		deferAll(b, s, later)
		done += k
	}
}

// deferAll leases every due message and defers its recipients until t.
func deferAll(b *testing.B, s *store.Store, t time.Time) {
	b.Helper()
	for {
		ms, err := s.Lease(time.Now(), 1000)
		if err != nil {
			b.Fatal(err)
		}
		if len(ms) == 0 {
			return
		}
		for _, m := range ms {
			f := store.Finish{}
			for i := range m.Recipients {
				f.Outcomes = append(f.Outcomes, store.Outcome{Rcpt: i, Result: store.RcptPending,
					Reply: "deferred transport", DSN: "4.3.2", NextAttempt: t})
			}
			if err := s.Finish(m.ID, f); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// queueTarget queues benchPerDom messages for target.tld; the running
// scheduler defers them (defer_transports).
func queueTarget(b *testing.B, s *store.Store) {
	b.Helper()
	body := []byte("Subject: target\r\nFrom: a@sender.test\r\n\r\n" + strings.Repeat("y", 1000) + "\r\n")
	for i := range benchPerDom {
		m := &store.Message{Sender: "a@sender.test", Recipients: []store.Recipient{
			{Addr: fmt.Sprintf("t%d@%s", i, benchTarget)},
		}}
		if err := s.Enqueue(m, body); err != nil {
			b.Fatal(err)
		}
	}
}

func waitStats(b *testing.B, s *store.Store, cond func(store.Stats) bool) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := s.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if cond(st) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("queue did not settle: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
