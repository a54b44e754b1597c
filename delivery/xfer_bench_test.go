package delivery

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// BenchmarkRelayRTT: what pipelining changes. The go-smtp sink sits
// behind a proxy that holds back every byte it sends by rtt, as a next
// hop rtt away; one connection to it (destination concurrency 1), so a
// message costs its round trips: four without PIPELINING (MAIL FROM, RCPT
// TO, DATA, the dot), two with it (the envelope and DATA, the dot), and
// one when the final dot goes in one write with the next message's
// envelope (handoff.go: the other messages wait for the connection). The
// store runs without fsync; ms/msg is the wall time per message.
//
//	go test -run '^$' -bench RelayRTT -benchtime 200x ./delivery
func BenchmarkRelayRTT(b *testing.B) {
	for _, rtt := range []time.Duration{0, 2 * time.Millisecond} {
		b.Run(fmt.Sprintf("rtt=%v", rtt), func(b *testing.B) {
			sink := testutil.NewMTA(b, testutil.MTAOptions{})
			addr := rttProxy(b, fmt.Sprintf("127.0.0.1:%d", sink.Port), rtt)
			s := testutil.Store(b, store.Options{NoSync: true, Eligible: func(string) bool { return true }})
			o := testOptions(b)
			o.DefaultDestinationLimit, o.DestinationLimit = 1, nil
			o.Transports = mapTable{"customer.test": "smtp:[127.0.0.1]:" + portOf(addr)}
			d, err := New(o, s, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < b.N; i++ {
				m := &store.Message{Sender: "a@origin.test", Recipients: []store.Recipient{{Addr: "b@customer.test"}}}
				if err := s.Enqueue(m, benchBody); err != nil {
					b.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			b.ResetTimer()
			start := time.Now()
			go func() { defer close(done); d.Run(ctx) }()
			b.Cleanup(func() { cancel(); <-done })
			if got := len(sink.Wait(b.N, 5*time.Minute)); got < b.N {
				b.Fatalf("delivered %d of %d", got, b.N)
			}
			el := time.Since(start)
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			b.ReportMetric(el.Seconds()*1000/float64(b.N), "ms/msg")
			b.ReportMetric(float64(sink.Conns()), "newconns")
		})
	}
}

func portOf(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

// rttProxy accepts connections on 127.0.0.1 and forwards them to addr:
// what the client sends goes on at once, what the server sends rtt later
// (in order), so every reply the client waits for costs rtt.
func rttProxy(b testing.TB, addr string, rtt time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(s, c); s.Close() }()
			go func() { delayed(c, s, rtt); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// delayed copies src to dst, each piece rtt after it was read.
func delayed(dst io.Writer, src io.Reader, rtt time.Duration) {
	type piece struct {
		b  []byte
		at time.Time
	}
	ch := make(chan piece, 256)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- piece{buf[:n], time.Now().Add(rtt)}
			}
			if err != nil {
				return
			}
		}
	}()
	for p := range ch {
		time.Sleep(time.Until(p.at))
		if _, err := dst.Write(p.b); err != nil {
			for range ch {
			}
			return
		}
	}
}

// BenchmarkDotWriter: the content of DATA through dotWriter and through
// net/textproto's dot writer (MB/s of content), 1 MiB of 80-byte lines.
//
//	go test -run '^$' -bench DotWriter ./delivery
func BenchmarkDotWriter(b *testing.B) {
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tem.\r\n"
	content := []byte(strings.Repeat(line, 1<<20/len(line)))
	for _, impl := range []string{"dotWriter", "textproto"} {
		b.Run(impl, func(b *testing.B) {
			bw := bufio.NewWriterSize(io.Discard, connBuf)
			b.SetBytes(int64(len(content)))
			for i := 0; i < b.N; i++ {
				var w io.WriteCloser = &dotWriter{w: bw}
				if impl == "textproto" {
					w = textproto.NewWriter(bw).DotWriter()
				}
				w.Write(content)
				w.Close()
			}
		})
	}
}
