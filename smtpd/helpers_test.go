package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/internal/testutil"
	"github.com/holdfast-mta/holdfast/store"
)

// baseConfig is the test relay: relay.test, like the Postfix anchors'.
var baseConfig = []string{
	"myhostname = relay.test",
	"mynetworks = 127.0.0.0/8",
	"relay_domains = customer.test, empty.test",
	"smtpd_error_sleep_time = 0",
	"smtpd_forbid_unauth_pipelining = no",
	// Loopback clients are in mynetworks; bare newline rules apply to
	// them as to outside clients unless a test says otherwise.
	"smtpd_forbid_bare_newline_exclusions =",
	"smtpd_peername_lookup = no", // the transcripts expect unknown[127.0.0.1]; peer_test.go turns it on
}

// waker counts the flush service's wake-ups of the (absent) scheduler.
type waker struct{ n atomic.Int64 }

func (w *waker) Wake() { w.n.Add(1) }

// env is a running server on 127.0.0.1:0 over a real store.
type env struct {
	t     testing.TB
	addr  string
	dbDir string
	st    *store.Store
	srv   *Server
	cfg   *config.Config
	opts  Options
	queue Queue // what the server enqueues into (st unless wrapped)
	logw  io.Writer
}

// withLog sends the server's log to w.
func withLog(w io.Writer) envOption { return func(e *env) { e.logw = w } }

// newConfig returns the base configuration with extra "name = value" lines.
func newConfig(t testing.TB, lines ...string) *config.Config {
	t.Helper()
	text := strings.Join(append(append([]string{}, baseConfig...), lines...), "\n") + "\n"
	c, err := config.Parse("test.cf", []byte(text))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return c
}

// testOptions are the options of the base configuration (the defaults
// table with baseConfig), changed by set, for tests that call New
// themselves.
func testOptions(t testing.TB, set func(o *Options)) Options {
	t.Helper()
	o, err := OptionsFromConfig(newConfig(t))
	if err != nil {
		t.Fatalf("OptionsFromConfig: %v", err)
	}
	if set != nil {
		set(&o)
	}
	return o
}

type envOption func(*env)

func withTLS(e *env) {
	cfg, err := testutil.SelfSignedTLS("relay.test", "127.0.0.1")
	if err != nil {
		e.t.Fatal(err)
	}
	e.opts.TLS = cfg
}

func withOptions(f func(*Options)) envOption { return func(e *env) { f(&e.opts) } }

func withQueue(wrap func(*store.Store) Queue) envOption {
	return func(e *env) { e.queue = wrap(e.st) }
}

// startServer opens a store in a temporary directory and serves on
// loopback; everything is closed in t.Cleanup.
func startServer(t testing.TB, c *config.Config, opt ...envOption) *env {
	t.Helper()
	opts, err := OptionsFromConfig(c)
	if err != nil {
		t.Fatalf("OptionsFromConfig: %v", err)
	}
	pol, err := flush.New(c)
	if err != nil {
		t.Fatalf("flush.New: %v", err)
	}
	e := &env{t: t, cfg: c, opts: opts, dbDir: t.TempDir()}
	e.st, err = store.Open(filepath.Join(e.dbDir, "queue.db"), store.Options{
		NoSync: true, Eligible: pol.Eligible, PolicyKey: pol.Key(),
	})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	e.queue = e.st
	for _, o := range opt {
		o(e)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	if e.logw != nil {
		log = zerolog.New(e.logw)
	}
	svc := flush.NewService(pol, e.st, &waker{}, log).As("etrn")
	e.srv, err = New(e.opts, e.queue, svc, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { e.srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
		<-done
		if err := e.st.Check(); err != nil {
			t.Errorf("store check: %v", err)
		}
		e.st.Close()
	})
	return e
}

// client is a raw SMTP client for transcripts.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// dial connects from the given local address ("" = any).
func (e *env) dial(from string) *client {
	e.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	e.t.Cleanup(func() { c.Close() })
	return &client{t: e.t, conn: c, r: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) line() (string, error) {
	l, err := c.r.ReadString('\n')
	return strings.TrimSuffix(l, "\r\n"), err
}

// expect reads one reply line and compares it; a trailing '*' in want
// matches any rest of the line.
func (c *client) expect(want string) string {
	c.t.Helper()
	got, err := c.line()
	if err != nil {
		c.t.Fatalf("want %q, read error %v", want, err)
	}
	if !match(want, got) {
		c.t.Fatalf("reply mismatch\n want %q\n  got %q", want, got)
	}
	return got
}

func match(want, got string) bool {
	if p, ok := strings.CutSuffix(want, "*"); ok {
		return strings.HasPrefix(got, p)
	}
	return want == got
}

// expectClose waits for the server to hang up.
func (c *client) expectClose() {
	c.t.Helper()
	l, err := c.line()
	if err == nil {
		c.t.Fatalf("want close, got %q", l)
	}
}

// starttls sends STARTTLS, expects its 220 and runs the handshake.
func (c *client) starttls() {
	c.t.Helper()
	c.send("STARTTLS\r\n")
	c.expect("220 2.0.0 Ready to start TLS")
	c.startTLS()
}

func (c *client) startTLS() {
	c.t.Helper()
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, ServerName: "relay.test"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

// ehlo sends EHLO and reads the whole multi-line reply.
func (c *client) ehlo() {
	c.t.Helper()
	c.send("EHLO client.test\r\n")
	for {
		l := c.expect("250*")
		if strings.HasPrefix(l, "250 ") {
			return
		}
	}
}

// queued counts the messages in the store.
func (e *env) queued() int64 {
	e.t.Helper()
	s, err := e.st.Stats()
	if err != nil {
		e.t.Fatal(err)
	}
	return s.Incoming + s.Active + s.Deferred + s.Hold
}

// seed enqueues one message for rcpt directly in the store.
func (e *env) seed(rcpt string) {
	e.t.Helper()
	m := &store.Message{ID: store.NewID(), Sender: "a@sender.test", Arrival: time.Now(),
		State: store.StateIncoming, Recipients: []store.Recipient{{Addr: rcpt}}}
	body := []byte("Subject: seed\r\n\r\nhello\r\n")
	m.Size = int64(len(body))
	if err := e.st.Enqueue(m, body); err != nil {
		e.t.Fatal(err)
	}
}

// serve runs srv on a loopback listener until the test ends.
func serve(t testing.TB, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

// waitSessions waits until srv has at most n sessions: the event that a
// session noticed its lost client and ended.
func waitSessions(t testing.TB, srv *Server, n int) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("at most %d sessions", n), func() bool {
		return srv.sessions.Len() <= n
	})
}
