package odmr

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/auth"
	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/delivery"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// BenchmarkTransfer1000 moves 1,000 queued messages for one destination
// to the customer's server: over one ODMR connection (AUTH, ATRN, the
// turnaround), and, for comparison, by the scheduler after an ETRN
// (store.Flush, delivery over a new connection from the hop's pool). The
// store syncs (fsync on) as in production. Reports messages per second.
func BenchmarkTransfer1000(b *testing.B) {
	const n = 1000
	for _, mode := range []string{"odmr", "etrn"} {
		b.Run(mode, func(b *testing.B) {
			sink := newCountSink(b)
			st := testutil.Store(b, store.Options{Eligible: func(string) bool { return true }})
			do := deliveryOptions(b, "defer_transports", "etrn-only")
			do.Transports = tableFunc(func(string) (string, bool, error) {
				return fmt.Sprintf("etrn-only:[127.0.0.1]:%d", sink.port), true, nil
			})
			d, err := delivery.New(do, st, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); d.Run(ctx) }()
			b.Cleanup(func() { cancel(); <-done })
			addr := ""
			if mode == "odmr" {
				addr = startBenchODMR(b, st, d)
			}
			q := d.Admit(st)
			body := []byte("From: <s@origin.test>\r\nTo: <u@a.test>\r\nSubject: bench\r\n\r\nA short message body.\r\n")
			b.ResetTimer()
			var total time.Duration
			for range b.N {
				b.StopTimer()
				for range n {
					m := &store.Message{Sender: "s@origin.test", Recipients: []store.Recipient{{Addr: "u@a.test"}}}
					if err := q.Enqueue(m, body); err != nil {
						b.Fatal(err)
					}
				}
				sink.count.Store(0)
				b.StartTimer()
				start := time.Now()
				if mode == "odmr" {
					atrnOnce(b, addr, sink)
				} else {
					if _, err := st.Flush("a.test", false); err != nil {
						b.Fatal(err)
					}
					d.Wake()
				}
				sink.wait(b, n)
				total += time.Since(start)
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "msgs/s")
		})
	}
}

type tableFunc func(string) (string, bool, error)

func (f tableFunc) Lookup(k string) (string, bool, error) { return f(k) }

func startBenchODMR(b *testing.B, st *store.Store, d *delivery.Scheduler) string {
	pw := filepath.Join(b.TempDir(), "passwd")
	os.WriteFile(pw, []byte("alice:{PLAIN}secret\n"), 0o600)
	backend, err := auth.OpenPasswdFile(pw, "relay.test")
	if err != nil {
		b.Fatal(err)
	}
	owners, err := config.OpenTable("inline:{ a.test=alice }")
	if err != nil {
		b.Fatal(err)
	}
	o := DefaultOptions()
	o.Hostname, o.Backend, o.Owners = "relay.test", backend, auth.NewOwners(owners)
	srv, err := New(o, st, d, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() {
		ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		srv.Shutdown(ctx)
	})
	return l.Addr().String()
}

// atrnOnce authenticates, says ATRN and serves the turned connection
// with the sink's go-smtp server until the provider quits.
func atrnOnce(b *testing.B, addr string, sink *countSink) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	r := bufio.NewReader(c)
	for _, step := range []struct{ send, want string }{
		{"", "220 "}, {"EHLO customer.test", ""},
		{"AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")), "235 "},
		{"ATRN a.test", "250 "},
	} {
		if step.send != "" {
			fmt.Fprintf(c, "%s\r\n", step.send)
		}
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(l) >= 4 && l[3] == ' ' {
				if step.want != "" && l[:4] != step.want {
					b.Fatalf("%s: %q", step.send, l)
				}
				break
			}
		}
	}
	// Bytes the reader holds (none: the provider waits for our 220).
	srv := smtp.NewServer(sink)
	srv.Domain, srv.ErrorLog = "customer.test", nopLog{}
	srv.Serve(&oneConn{c: c, done: make(chan struct{})})
}

// oneConn is a listener that yields one connection, then blocks until
// that connection is closed.
type oneConn struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
	used bool
}

func (l *oneConn) Accept() (net.Conn, error) {
	if !l.used {
		l.used = true
		return &closeNotify{Conn: l.c, l: l}, nil
	}
	<-l.done
	return nil, net.ErrClosed
}
func (l *oneConn) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }

type closeNotify struct {
	net.Conn
	l *oneConn
}

func (c *closeNotify) Close() error { c.l.Close(); return c.Conn.Close() }

// countSink is a go-smtp server that counts messages.
type countSink struct {
	port  int
	count atomic.Int64
}

func newCountSink(b *testing.B) *countSink {
	s := &countSink{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	sinkSrv := smtp.NewServer(s)
	sinkSrv.Domain, sinkSrv.ErrorLog = "customer.test", nopLog{}
	go sinkSrv.Serve(l)
	b.Cleanup(func() { sinkSrv.Close() })
	return s
}

func (s *countSink) wait(b *testing.B, n int64) {
	deadline := time.Now().Add(5 * time.Minute)
	for s.count.Load() < n {
		if time.Now().After(deadline) {
			b.Fatalf("sink got %d of %d", s.count.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (s *countSink) NewSession(*smtp.Conn) (smtp.Session, error) { return sinkSession{s}, nil }

type sinkSession struct{ s *countSink }

func (sinkSession) Reset()                               { /* nothing kept */ }
func (sinkSession) Logout() error                        { return nil }
func (sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (x sinkSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	x.s.count.Add(1)
	return nil
}

type nopLog struct{}

func (nopLog) Printf(string, ...any) {}
func (nopLog) Println(...any)        {}
