package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// ensureTools installs the Debian packages that provide the given
// programs when one of them is missing: postfix (smtp-source, smtp-sink,
// postfix) and gnuplot-nox (gnuplot). Idempotent; needs root. Postfix is
// installed with "No configuration", so Debian starts no daemon on port 25.
func ensureTools(c *Config, progs ...string) error {
	pkgs := map[string]string{"smtp-source": "postfix", "smtp-sink": "postfix", "postfix": "postfix", "gnuplot": "gnuplot-nox"}
	var need []string
	for _, p := range progs {
		if _, err := exec.LookPath(p); err == nil {
			continue
		}
		if pkg := pkgs[p]; pkg != "" && !slices.Contains(need, pkg) {
			need = append(need, pkg)
		}
	}
	if len(need) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s missing; install Debian package(s) %s (as root)", strings.Join(progs, ", "), strings.Join(need, " "))
	}
	c.logf("installing %s", strings.Join(need, " "))
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	steps := [][]string{
		{"sh", "-c", "echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections"},
		{"apt-get", "update", "-q"},
		append([]string{"apt-get", "install", "-y", "-q", "--no-install-recommends"}, need...),
	}
	for _, s := range steps {
		cmd := exec.Command(s[0], s[1:]...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(s, " "), err, tail(out, 2000))
		}
	}
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%s still missing after installing %s", p, strings.Join(need, " "))
		}
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// freePort returns a loopback TCP port that was free a moment ago, for
// the external programs that take a port number rather than a socket.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// sink is the receiving MTA: it counts the messages it has accepted.
type sink interface {
	Addr() string
	Count() int64
	// Reached is sent the moment the count reaches want (at once when
	// it has already).
	Reached(want int64) <-chan time.Time
	Close() error
}

// waitCount waits until s has counted want messages, and returns when
// that happened: the moment the count was seen to reach want, not the
// next look at it, so that a round is timed to when its last message was
// counted.
func waitCount(ctx context.Context, s sink, want int64, limit time.Duration) (time.Time, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case at := <-s.Reached(want):
		return at, nil
	case <-t.C:
		return time.Time{}, fmt.Errorf("sink %s has %d messages, want %d after %s", s.Addr(), s.Count(), want, limit)
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// counter is a sink's message count, which tells those waiting for a
// count (Reached) when it gets there.
type counter struct {
	mu      sync.Mutex
	n       int64
	waiters []countWaiter
}

type countWaiter struct {
	want int64
	ch   chan time.Time
}

// set makes the count n (add: n more) and tells the waiters it satisfies.
func (c *counter) set(n int64) { c.update(func(int64) int64 { return n }) }
func (c *counter) add(n int64) { c.update(func(old int64) int64 { return old + n }) }

func (c *counter) update(f func(int64) int64) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = f(c.n)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if c.n >= w.want {
			w.ch <- now
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

func (c *counter) Count() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *counter) Reached(want int64) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= want {
		ch <- time.Now()
		return ch
	}
	c.waiters = append(c.waiters, countWaiter{want, ch})
	return ch
}

func newSink(c *Config, dir string) (sink, error) {
	if c.Sink == "go" {
		return newGoSink()
	}
	return newSMTPSink(dir)
}

// smtpSink runs Postfix's smtp-sink -c and follows its running counters
// ("sess=N quit=N mesg=N", updated at every final dot).
type smtpSink struct {
	counter
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

func newSMTPSink(dir string) (*smtpSink, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &smtpSink{addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan struct{})}
	args := []string{"-c"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // required when run as root
	}
	args = append(args, s.addr, "1024")
	s.cmd = exec.Command("smtp-sink", args...)
	s.cmd.Dir = dir
	s.cmd.Stderr = os.Stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("smtp-sink: %w", err)
	}
	go s.follow(out)
	if err := waitListen(s.addr, 5*time.Second); err != nil {
		s.Close()
		return nil, fmt.Errorf("smtp-sink: %w", err)
	}
	return s, nil
}

func (s *smtpSink) follow(r io.Reader) {
	defer close(s.done)
	br := bufio.NewReaderSize(r, 4096)
	for {
		rec, err := br.ReadString('\r')
		if i := strings.LastIndex(rec, "mesg="); i >= 0 {
			f := strings.TrimRight(rec[i+len("mesg="):], "\r\n ")
			if n, perr := strconv.ParseInt(f, 10, 64); perr == nil {
				s.set(n)
			}
		}
		if err != nil {
			return
		}
	}
}

func (s *smtpSink) Addr() string { return s.addr }
func (s *smtpSink) Close() error {
	if s.cmd.Process == nil {
		return nil
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
		s.cmd.Process.Kill()
	}
	s.cmd.Wait()
	return nil
}

// goSink is a go-smtp server that counts messages; it lets the smoke
// test run without Postfix's tools.
type goSink struct {
	counter
	addr string
	srv  *smtp.Server
	l    net.Listener
}

func newGoSink() (*goSink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &goSink{addr: l.Addr().String(), l: l}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "sink.bench.test"
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	s.srv.ErrorLog = quietLog{}
	go s.srv.Serve(l)
	return s, nil
}

func (s *goSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &goSinkSession{s: s}, nil }
func (s *goSink) Addr() string                                { return s.addr }
func (s *goSink) Close() error                                { return s.srv.Close() }

type goSinkSession struct{ s *goSink }

func (g *goSinkSession) Reset()                               {}
func (g *goSinkSession) Logout() error                        { return nil }
func (g *goSinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (g *goSinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (g *goSinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	g.s.add(1)
	return nil
}

type quietLog struct{}

func (quietLog) Printf(string, ...any) {}
func (quietLog) Println(...any)        {}

// waitListen dials addr until it accepts a connection.
func waitListen(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %w", addr, limit, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// load is one load-generator run: msgs messages of about 1 KiB to rcpt
// over sessions concurrent sessions, one connection per message (as
// smtp-source does by default). It returns when the last message was
// accepted.
func load(ctx context.Context, c *Config, addr, rcpt string, sessions, msgs int) error {
	if c.Load == "go" {
		return goLoad(ctx, addr, sessions, msgs, func(int) string { return rcpt }, 1)
	}
	cmd := exec.CommandContext(ctx, "smtp-source", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(msgs),
		"-l", "1024", "-f", "bench@source.test", "-t", rcpt, addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("smtp-source: %w: %s", err, tail(out.Bytes(), 1000))
	}
	if bytes.Contains(out.Bytes(), []byte("fatal:")) || bytes.Contains(out.Bytes(), []byte("error:")) {
		return fmt.Errorf("smtp-source: %s", tail(out.Bytes(), 1000))
	}
	return nil
}

// payload is the 1 KiB message text the Go client sends (the same size
// as smtp-source -l 1024 plus its headers).
var payload = func() []byte {
	var b bytes.Buffer
	b.WriteString("From: <bench@source.test>\r\nSubject: holdfast benchmark\r\n\r\n")
	line := strings.Repeat("x", 62) + "\r\n"
	for b.Len() < 1024+60 {
		b.WriteString(line)
	}
	return b.Bytes()
}()

// goLoad sends msgs messages over sessions concurrent clients; rcpt
// names the recipient of message i. perConn > 1 reuses a connection for
// that many messages (used to fill Postfix's queue fast).
func goLoad(ctx context.Context, addr string, sessions, msgs int, rcpt func(int) string, perConn int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for w := 0; w < sessions; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cl *smtp.Client
			sent := 0
			defer func() {
				if cl != nil {
					cl.Quit()
				}
			}()
			for {
				i := int(next.Add(1)) - 1
				if i >= msgs || ctx.Err() != nil {
					return
				}
				if cl == nil || sent >= perConn {
					if cl != nil {
						cl.Quit()
					}
					var err error
					if cl, err = dialClient(addr); err != nil {
						errs <- err
						return
					}
					sent = 0
				}
				if err := sendOne(cl, rcpt(i)); err != nil {
					cl.Close()
					cl = nil
					errs <- fmt.Errorf("message %d to %s: %w", i, rcpt(i), err)
					return
				}
				sent++
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

func dialClient(addr string) (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	cl := smtp.NewClient(conn)
	cl.CommandTimeout = time.Minute
	cl.SubmissionTimeout = time.Minute
	if err := cl.Hello("source.bench.test"); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

func sendOne(cl *smtp.Client, rcpt string) error {
	if err := cl.Mail("bench@source.test", nil); err != nil {
		return err
	}
	if err := cl.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := cl.Data()
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "To: <%s>\r\n", rcpt); err != nil {
		return err
	}
	if _, err := w.Write(payload); err != nil {
		return err
	}
	return w.Close()
}

// etrn opens a session, sends ETRN domain and returns the reply, when
// the command was written and how long the reply took.
func etrn(addr, domain string) (reply string, start time.Time, took time.Duration, err error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", start, 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	br := bufio.NewReader(conn)
	if _, err := readReply(br); err != nil {
		return "", start, 0, fmt.Errorf("banner: %w", err)
	}
	if _, err := io.WriteString(conn, "EHLO client.bench.test\r\n"); err != nil {
		return "", start, 0, err
	}
	if r, err := readReply(br); err != nil || !strings.HasPrefix(r, "250") {
		return "", start, 0, fmt.Errorf("EHLO: %q %v", r, err)
	}
	start = time.Now()
	if _, err := io.WriteString(conn, "ETRN "+domain+"\r\n"); err != nil {
		return "", start, 0, err
	}
	reply, err = readReply(br)
	took = time.Since(start)
	if err != nil {
		return "", start, took, fmt.Errorf("ETRN: %w", err)
	}
	io.WriteString(conn, "QUIT\r\n")
	readReply(br)
	if !strings.HasPrefix(reply, "25") {
		return reply, start, took, fmt.Errorf("ETRN %s: %q", domain, reply)
	}
	return reply, start, took, nil
}

// readReply reads one (possibly multi-line) SMTP reply and returns its
// last line.
func readReply(br *bufio.Reader) (string, error) {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 || line[3] != '-' {
			return line, nil
		}
	}
}

// awaitBanner dials addr until the 220 greeting arrives.
func awaitBanner(ctx context.Context, addr string, limit time.Duration, alive func() error) error {
	deadline := time.Now().Add(limit)
	for {
		if err := alive(); err != nil {
			return err
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			line, rerr := readReply(bufio.NewReader(conn))
			io.WriteString(conn, "QUIT\r\n")
			conn.Close()
			if rerr == nil && strings.HasPrefix(line, "220") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s gave no 220 greeting within %s", addr, limit)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(time.Millisecond)
	}
}
