package delivery_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/delivery"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/smtpd"
	"github.com/holdfast-mta/holdfast/store"
)

// BenchmarkSMTPRelay is the whole relay path on loopback: 16 SMTP clients
// send through smtpd into the store (fsync on), admitted by the scheduler
// as the daemon wires it (Scheduler.Admit), and the scheduler relays each
// message to a go-smtp sink. Reports end-to-end messages per second and
// the store's commits per message (each commit costs bbolt two
// fdatasyncs) and the CPU time per message of the whole process.
func BenchmarkSMTPRelay(b *testing.B) {
	sink := testutil.NewMTA(b, testutil.MTAOptions{})
	c := testutil.Config(b,
		"myhostname", "relay.test",
		"mynetworks", "127.0.0.0/8",
		"relay_domains", "customer.test",
		"transport_maps", fmt.Sprintf("inline:{customer.test=smtp:[127.0.0.1]:%d}", sink.Port),
		"smtpd_client_connection_count_limit", "0",
	)
	var commits atomic.Int64
	s := testutil.Store(b, store.Options{OnCommit: func(time.Duration, int) { commits.Add(1) }})
	do, err := delivery.OptionsFromConfig(c)
	if err != nil {
		b.Fatal(err)
	}
	d, err := delivery.New(do, s, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	so, err := smtpd.OptionsFromConfig(c)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := smtpd.New(so, d.Admit(s), nil, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	b.Cleanup(func() {
		sctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer c2()
		srv.Shutdown(sctx)
		cancel()
		<-done
	})

	body := []byte("From: <a@origin.test>\r\nTo: <b@customer.test>\r\nSubject: bench\r\n\r\nA short body.\r\n")
	const clients = 16
	b.ResetTimer()
	start, commits0, cpu0 := time.Now(), commits.Load(), cpuTime(b)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for k := 0; k < clients; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			cl, err := smtp.Dial(l.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			if err := cl.Hello("client.test"); err != nil {
				errs <- err
				return
			}
			for i := k; i < b.N; i += clients {
				if err := cl.SendMail("a@origin.test", []string{"b@customer.test"}, bytes.NewReader(body)); err != nil {
					errs <- err
					return
				}
			}
			cl.Quit()
		}(k)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if got := len(sink.Wait(b.N, 5*time.Minute)); got < b.N {
		b.Fatalf("delivered %d of %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	// The last Finishes commit after the sink has the mail: wait for them.
	waitQueueEmpty(b, s)
	b.ReportMetric(float64(commits.Load()-commits0)/float64(b.N), "commits/msg")
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
}

// cpuTime is the CPU time (user and system) the process has used: the
// clients', the relay's and the sink's, all in this process.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitQueueEmpty waits until s holds no message still to deliver.
func waitQueueEmpty(b *testing.B, s *store.Store) {
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := s.Stats()
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
