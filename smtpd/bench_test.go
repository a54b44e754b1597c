package smtpd

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/delivery"
	"github.com/holdfast-mta/holdfast/store"
)

// benchDir is where benchmark stores live: HOLDFAST_BENCH_DIR (to measure
// a particular disk) or the test's temporary directory.
func benchDir(b *testing.B) string {
	if d := os.Getenv("HOLDFAST_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "smtpd-bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// fsyncCost measures one 4 KiB write + fsync in dir: the disk's price of
// a commit (bbolt syncs more than once per commit).
func fsyncCost(b *testing.B, dir string) time.Duration {
	f, err := os.Create(filepath.Join(dir, "fsync-probe"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	const n = 50
	start := time.Now()
	for range n {
		f.WriteAt(buf, 0)
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start) / n
}

// commitCounter wraps the store and records when each Enqueue returned;
// callers served by one group commit (DB.Batch) return together, so
// clusters of return times count the commits.
type commitCounter struct {
	q     Queue
	mu    sync.Mutex
	times []time.Time
}

func (c *commitCounter) Spool(id store.ID) (store.Content, error) {
	sp, err := c.q.Spool(id)
	if err != nil {
		return nil, err
	}
	return countedContent{sp, c}, nil
}

type countedContent struct {
	store.Content
	c *commitCounter
}

func (cc countedContent) Enqueue(m *store.Message) error {
	err := cc.Content.Enqueue(m)
	now := time.Now()
	cc.c.mu.Lock()
	cc.c.times = append(cc.c.times, now)
	cc.c.mu.Unlock()
	return err
}

// commits counts clusters of return times separated by more than gap.
func (c *commitCounter) commits(gap time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := slices.Clone(c.times)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	n := 0
	for i := range ts {
		if i == 0 || ts[i].Sub(ts[i-1]) > gap {
			n++
		}
	}
	return n
}

// BenchmarkAccept: messages/s accepted on loopback with 1, 10 and 50
// concurrent clients, 1 KiB messages, real fsync. Reported: msgs/s, the
// disk's fsync cost, and msgs/commit (the group-commit factor).
func BenchmarkAccept(b *testing.B) {
	for _, clients := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			dir := benchDir(b)
			st, err := store.Open(filepath.Join(dir, "queue.db"), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			cc := &commitCounter{q: st}
			srv, err := New(testOptions(b, func(o *Options) { o.MaxConnections = 200 }), cc, nil, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			addr := serve(b, srv)
			body := "Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 62)+"\r\n", 16)
			conns := make([]*benchClient, clients)
			for i := range conns {
				conns[i] = dialBench(b, addr)
			}
			fs := fsyncCost(b, dir)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			per := (b.N + clients - 1) / clients
			errc := make(chan error, clients)
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						if err := c.send(body); err != nil {
							errc <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			select {
			case err := <-errc:
				b.Fatal(err)
			default:
			}
			total := per * clients
			commits := cc.commits(fs / 4)
			b.ReportMetric(float64(total)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(fs.Microseconds()), "fsync-µs")
			b.ReportMetric(float64(total)/float64(max(commits, 1)), "msgs/commit")
		})
	}
}

type benchClient struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialBench(b *testing.B, addr string) *benchClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	bc := &benchClient{conn: c, r: bufio.NewReader(c)}
	if _, err := bc.expect("220"); err != nil {
		b.Fatal(err)
	}
	c.Write([]byte("EHLO bench.test\r\n"))
	for {
		l, err := bc.r.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		if strings.HasPrefix(l, "250 ") {
			break
		}
	}
	return bc
}

func (c *benchClient) expect(code string) (string, error) {
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(l, code) {
		return "", fmt.Errorf("got %q, want %s", l, code)
	}
	return l, nil
}

// send transfers one message with pipelined MAIL/RCPT/DATA.
func (c *benchClient) send(body string) error { return c.sendTo("u@customer.test", body) }

// sendTo is send with another recipient.
func (c *benchClient) sendTo(rcpt, body string) error {
	c.conn.Write([]byte("MAIL FROM:<a@sender.test>\r\nRCPT TO:<" + rcpt + ">\r\nDATA\r\n"))
	for _, code := range []string{"250", "250", "354"} {
		if _, err := c.expect(code); err != nil {
			return err
		}
	}
	c.conn.Write([]byte(body + ".\r\n"))
	_, err := c.expect("250")
	return err
}

// BenchmarkAcceptETRN: BenchmarkAccept with a running scheduler and
// mail for an ETRN-only domain (its transport is in defer_transports), as
// serve wires them. msgs/s is the acceptance rate; settled-msgs/s counts
// until every message is deferred in the queue, i.e. includes whatever
// commits the scheduler spends on them.
func BenchmarkAcceptETRN(b *testing.B) {
	for _, clients := range []int{10, 50} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			dir := benchDir(b)
			st, err := store.Open(filepath.Join(dir, "queue.db"), store.Options{Eligible: func(string) bool { return true }})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			do, err := delivery.OptionsFromConfig(newConfig(b, "default_transport = etrn-only", "defer_transports = etrn-only"))
			if err != nil {
				b.Fatal(err)
			}
			sched, err := delivery.New(do, st, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); sched.Run(ctx) }()
			defer func() { cancel(); <-done }()
			cc := &commitCounter{q: benchQueue(st, sched)}
			srv, err := New(testOptions(b, func(o *Options) { o.MaxConnections = 200 }), cc, nil, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			addr := serve(b, srv)
			body := "Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 62)+"\r\n", 16)
			conns := make([]*benchClient, clients)
			for i := range conns {
				conns[i] = dialBench(b, addr)
			}
			fs := fsyncCost(b, dir)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			per := (b.N + clients - 1) / clients
			errc := make(chan error, clients)
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						if err := c.sendTo("u@etrn.test", body); err != nil {
							errc <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			accepted := time.Since(start)
			select {
			case err := <-errc:
				b.Fatal(err)
			default:
			}
			total := per * clients
			deadline := time.Now().Add(5 * time.Minute)
			for {
				s, err := st.Stats()
				if err != nil {
					b.Fatal(err)
				}
				if s.Deferred == int64(total) {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("not all deferred: %+v", s)
				}
				time.Sleep(time.Millisecond)
			}
			settled := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(total)/accepted.Seconds(), "msgs/s")
			b.ReportMetric(float64(total)/settled.Seconds(), "settled-msgs/s")
			b.ReportMetric(float64(fs.Microseconds()), "fsync-µs")
		})
	}
}

// benchQueue is the queue serve gives smtpd (less the metrics): the
// scheduler's Admit over the store.
func benchQueue(st *store.Store, d *delivery.Scheduler) Queue { return d.Admit(st) }

// BenchmarkIdleSession measures the memory an idle session costs (heap
// plus goroutine stack), with 500 sessions after the greeting.
func BenchmarkIdleSession(b *testing.B) {
	const n = 500
	st, err := store.Open(filepath.Join(b.TempDir(), "queue.db"), store.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	srv, err := New(testOptions(b, func(o *Options) { o.MyNetworks, o.MaxConnections = nil, 2*n }), st, nil, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	addr := serve(b, srv)
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		conns := make([]*benchClient, n)
		for i := range conns {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			conns[i] = &benchClient{conn: c, r: bufio.NewReader(c)}
			if _, err := conns[i].expect("220"); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		used := (after.HeapInuse + after.StackInuse) - (before.HeapInuse + before.StackInuse)
		// The clients live in this process too (a 4 KiB bufio.Reader and
		// a net.Conn each), so this is an upper bound for the server.
		b.ReportMetric(float64(used)/n, "B/session+client")
		for _, c := range conns {
			c.conn.Close()
		}
	}
}

// BenchmarkAcceptSessionCPU is the CPU and the allocations one message
// costs smtpd and the store, without the disk (NoSync): one connection
// per message as smtp-source makes them (greeting, HELO, MAIL, RCPT,
// DATA, 1 KiB, QUIT), one client at a time. ns/op and allocs/op are the
// figures; the fsync is BenchmarkAccept's and the store's.
//
//	go test -run '^$' -bench AcceptSessionCPU -benchmem -benchtime 2000x ./smtpd
func BenchmarkAcceptSessionCPU(b *testing.B) {
	st, err := store.Open(filepath.Join(b.TempDir(), "queue.db"), store.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	// smtpd_forbid_unauth_pipelining as the daemon's default (yes): each
	// command but QUIT looks for pipelined input (peek.go).
	srv, err := New(testOptions(b, func(o *Options) { o.MaxConnections, o.ForbidUnauthPipelining = 200, true }), st, nil, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	addr := serve(b, srv)
	body := "Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 62)+"\r\n", 16) + ".\r\n"
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		bc := &benchClient{conn: c, r: bufio.NewReader(c)}
		for _, step := range []struct{ send, want string }{
			{"", "220"}, {"HELO bench.test\r\n", "250"}, {"MAIL FROM:<a@sender.test>\r\n", "250"},
			{"RCPT TO:<u@customer.test>\r\n", "250"}, {"DATA\r\n", "354"}, {body, "250"}, {"QUIT\r\n", "221"},
		} {
			if step.send != "" {
				c.Write([]byte(step.send))
			}
			if _, err := bc.expect(step.want); err != nil {
				b.Fatal(err)
			}
		}
		c.Close()
	}
}
