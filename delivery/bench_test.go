package delivery

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// benchRig is a scheduler on the system clock relaying to a go-smtp sink.
type benchRig struct {
	s    *store.Store
	d    *Scheduler
	sink *testutil.MTA
}

// withTLSLevel is o with smtp_tls_security_level = level.
func withTLSLevel(o Options, level string) Options {
	o.TLSLevel = level
	return o
}

func newBenchRig(b *testing.B, sync bool, o Options) *benchRig {
	return newBenchRigSink(b, sync, o, testutil.MTAOptions{})
}

func newBenchRigSink(b *testing.B, sync bool, o Options, so testutil.MTAOptions) *benchRig {
	b.Helper()
	r := &benchRig{sink: testutil.NewMTA(b, so)}
	r.s = testutil.Store(b, store.Options{NoSync: !sync, Eligible: func(string) bool { return true }})
	o.Hostname = "relay.test"
	o.Transports = mapTable{
		"customer.test": fmt.Sprintf("smtp:[127.0.0.1]:%d", r.sink.Port),
		"etrn.test":     fmt.Sprintf("etrn-only:[127.0.0.1]:%d", r.sink.Port),
	}
	o.DeferTransports = []string{"etrn-only"}
	d, err := New(o, r.s, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	r.d = d
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return r
}

var benchBody = []byte("From: <a@origin.test>\r\nTo: <b@customer.test>\r\nSubject: bench\r\n\r\n" +
	"A short message body of a few lines.\r\nSecond line.\r\n")

// enqueueParallel enqueues n messages from 32 goroutines, as concurrent
// SMTP sessions do (the store's group commit shares their fsyncs).
func (r *benchRig) enqueueParallel(b *testing.B, n int, rcpt string) {
	const producers = 32
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := p; i < n; i += producers {
				m := &store.Message{Sender: "a@origin.test", Recipients: []store.Recipient{{Addr: rcpt}}}
				if err := r.s.Enqueue(m, benchBody); err != nil {
					errs <- err
					return
				}
				r.d.Wake()
			}
		}(p)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// waitEmpty waits until the queue holds nothing (bounded).
func (r *benchRig) waitEmpty(b *testing.B) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		st, err := r.s.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if st.Incoming+st.Active+st.Deferred == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("queue not empty: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkRelay: end-to-end throughput, store enqueue -> scheduler ->
// SMTP client -> go-smtp sink on loopback, one recipient per message.
func BenchmarkRelay(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprintf("fsync=%v", sync), func(b *testing.B) {
			r := newBenchRig(b, sync, testOptions(b))
			b.ResetTimer()
			start := time.Now()
			r.enqueueParallel(b, b.N, "b@customer.test")
			if got := len(r.sink.Wait(b.N, 5*time.Minute)); got < b.N {
				b.Fatalf("delivered %d of %d", got, b.N)
			}
			r.waitEmpty(b)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.ReportMetric(float64(r.sink.Conns()), "newconns")
		})
	}
}

// BenchmarkRelayTLSMay: BenchmarkRelay (fsync off) at
// smtp_tls_security_level = may, to a sink that offers STARTTLS and to
// one that does not (plaintext: one EHLO per session). newconns counts the
// sink's SMTP sessions (go-smtp starts a second one on a connection after
// STARTTLS): 20 and 40 for 300 messages are the hop's 20 connections,
// reused from the cache. 2 shared cores, load 17: 1,253 msgs/s plaintext,
// 831 with STARTTLS.
//
//	go test -run '^$' -bench RelayTLSMay -benchtime 300x ./delivery
func BenchmarkRelayTLSMay(b *testing.B) {
	for _, starttls := range []bool{false, true} {
		b.Run(fmt.Sprintf("starttls=%v", starttls), func(b *testing.B) {
			r := newBenchRigSink(b, false, withTLSLevel(testOptions(b), TLSMay), testutil.MTAOptions{TLS: starttls})
			b.ResetTimer()
			start := time.Now()
			r.enqueueParallel(b, b.N, "b@customer.test")
			if got := len(r.sink.Wait(b.N, 5*time.Minute)); got < b.N {
				b.Fatalf("delivered %d of %d", got, b.N)
			}
			r.waitEmpty(b)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.ReportMetric(float64(r.sink.Conns()), "newconns")
		})
	}
}

// BenchmarkFlushBurst1000: 1,000 messages for an ETRN-only domain wait
// in the queue; one flush; time until the sink has all of them.
func BenchmarkFlushBurst1000(b *testing.B) {
	const n = 1000
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprintf("fsync=%v", sync), func(b *testing.B) {
			r := newBenchRig(b, sync, testOptions(b))
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				r.sink.Reset()
				r.enqueueParallel(b, n, "b@etrn.test")
				waitDeferred(b, r.s, n)
				b.StartTimer()
				start := time.Now()
				res, err := r.s.Flush("etrn.test", false)
				if err != nil || res.Messages != n {
					b.Fatalf("flush %+v %v", res, err)
				}
				r.d.Wake()
				if got := len(r.sink.Wait(n, 5*time.Minute)); got < n {
					b.Fatalf("delivered %d of %d", got, n)
				}
				r.waitEmpty(b)
				total += time.Since(start)
			}
			b.ReportMetric(total.Seconds()*1000/float64(b.N), "ms/burst")
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "msgs/s")
			b.ReportMetric(float64(r.sink.Conns()), "newconns")
		})
	}
}

// waitDeferred waits until n messages are deferred.
func waitDeferred(b *testing.B, s *store.Store, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		st, err := s.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if st.Deferred >= int64(n) && st.Active == 0 && st.Incoming == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("not deferred: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
}
