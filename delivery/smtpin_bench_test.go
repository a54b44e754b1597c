package delivery_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/delivery"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/smtpd"
	"github.com/holdfast-mta/holdfast/store"
)

// wakingQueue enqueues and wakes the scheduler, as the daemon wires it.
type wakingQueue struct {
	s *store.Store
	d *delivery.Scheduler
}

func (q wakingQueue) Spool(id store.ID) (store.Content, error) {
	sp, err := q.s.Spool(id)
	if err != nil {
		return nil, err
	}
	return wakingContent{sp, q.d}, nil
}

type wakingContent struct {
	store.Content
	d *delivery.Scheduler
}

func (c wakingContent) Enqueue(m *store.Message) error {
	if err := c.Content.Enqueue(m); err != nil {
		return err
	}
	c.d.Wake()
	return nil
}

// BenchmarkSMTPRelay is the whole relay path on loopback: 16 SMTP clients
// send through smtpd into the store (fsync on), the scheduler relays each
// message to a go-smtp sink. Reports end-to-end messages per second.
func BenchmarkSMTPRelay(b *testing.B) {
	sink := testutil.NewMTA(b, testutil.MTAOptions{})
	c := testutil.Config(b,
		"myhostname", "relay.test",
		"mynetworks", "127.0.0.0/8",
		"relay_domains", "customer.test",
		"transport_maps", fmt.Sprintf("inline:{customer.test=smtp:[127.0.0.1]:%d}", sink.Port),
		"smtpd_client_connection_count_limit", "0",
	)
	s := testutil.Store(b, store.Options{})
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
	srv, err := smtpd.New(so, wakingQueue{s, d}, nil, zerolog.Nop())
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
	start := time.Now()
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
}
