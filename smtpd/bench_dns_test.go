package smtpd

import (
	"bufio"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/dnsr"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// BenchmarkAcceptDNSChecks: messages/s accepted by 10 concurrent
// clients, one session per message (connect, HELO, MAIL, RCPT, DATA,
// QUIT), real fsync, by a server without DNS checks and by one with the
// client name lookup (PTR plus forward confirmation),
// reject_unknown_client_hostname and reject_rbl_client against a
// miekg/dns server on loopback, cache warm as for a busy ISP's clients.
// The two servers take turns in batches of 100 messages, so that load
// and disk drift fall on both alike; ratio is on/off msgs/s. The nosync
// variant (no fsync) shows the checks' CPU cost without the disk.
func BenchmarkAcceptDNSChecks(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		name := "fsync"
		if noSync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) { benchDNSChecks(b, noSync) })
	}
}

func benchDNSChecks(b *testing.B, noSync bool) {
	ds := testutil.NewDNS(b,
		"5.0.0.127.in-addr.arpa. 3600 IN PTR client.bench.test.",
		"client.bench.test. 3600 IN A 127.0.0.5",
	)
	res, err := dnsr.New(dnsr.Options{Server: ds.Addr, HostsFile: "-"})
	if err != nil {
		b.Fatal(err)
	}
	off := testOptions(b, func(o *Options) { o.MaxConnections = 200 })
	on := off
	on.PeernameLookup, on.Resolver = true, res
	on.ClientRestrictions = []string{"reject_unknown_client_hostname", "reject_rbl_client", "zen.bench.test"}
	addrs := []string{benchServer(b, off, noSync), benchServer(b, on, noSync)}
	body := "Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 62)+"\r\n", 16)
	for _, a := range addrs {
		if err := oneSession(a, body); err != nil { // warms the DNS cache
			b.Fatal(err)
		}
	}
	const batch = 100
	var took [2]time.Duration
	var sent [2]int
	b.ResetTimer()
	for round := 0; sent[0]+sent[1] < b.N; round++ {
		for k := range 2 {
			i := (round + k) % 2
			start := time.Now()
			if err := sessions(addrs[i], body, batch, 10); err != nil {
				b.Fatal(err)
			}
			took[i] += time.Since(start)
			sent[i] += batch
		}
	}
	b.StopTimer()
	if ds.Asked("5.0.0.127.in-addr.arpa. PTR") == 0 || ds.Asked("5.0.0.127.zen.bench.test. A") == 0 {
		b.Fatal("the DNS checks did not ask the DNS server")
	}
	rate := func(i int) float64 { return float64(sent[i]) / took[i].Seconds() }
	b.ReportMetric(rate(0), "off-msgs/s")
	b.ReportMetric(rate(1), "on-msgs/s")
	b.ReportMetric(rate(1)/rate(0), "ratio")
}

// benchServer serves o over a real store until the benchmark ends.
func benchServer(b *testing.B, o Options, noSync bool) string {
	st, err := store.Open(filepath.Join(benchDir(b), "queue.db"), store.Options{NoSync: noSync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	srv, err := New(o, st, nil, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	return serve(b, srv)
}

// sessions sends n messages to addr over clients concurrent clients,
// one session per message.
func sessions(addr, body string, n, clients int) error {
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < n; i += clients {
				if err := oneSession(addr, body); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// oneSession sends one message in its own session from 127.0.0.5.
func oneSession(addr, body string) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	bc := &benchClient{conn: c, r: bufio.NewReader(c)}
	if _, err := bc.expect("220"); err != nil {
		return err
	}
	c.Write([]byte("HELO bench.test\r\n"))
	if _, err := bc.expect("250"); err != nil {
		return err
	}
	if err := bc.send(body); err != nil {
		return err
	}
	c.Write([]byte("QUIT\r\n"))
	_, err = bc.expect("221")
	return err
}
